/**
 * Proves that a set of R2 S3 credentials works against one bucket, through the S3 API
 * (SigV4 via aws4fetch, path-style `<endpoint>/<bucket>/<key>`, region `auto`).
 *
 * - read:  ListObjectsV2 with `max-keys=1` (works for a bucket-scoped token; ListBuckets would
 *          need account-level rights, api-facts "Probing").
 * - write: PUT a uniquely named object under `.r2-token-rotation/`, GET it back and compare,
 *          DELETE it; the object is deleted in `finally`, whatever happened.
 *
 * A new key may take up to a minute to work everywhere (api-facts "Propagation"), so 401, 403,
 * 429, 5xx and network errors are retried with capped, jittered exponential backoff until the
 * deadline. Anything else (e.g. 404 NoSuchBucket) fails at once.
 */
import { randomBytes } from 'node:crypto'
import { AwsClient } from 'aws4fetch'
import { type Clock, retryUntil, systemClock } from '../backoff.js'
import { rootCause } from '../errors.js'
import { log } from '../log.js'
import { quoteServer } from '../redact.js'
import type { S3Credentials } from './r2.js'

export interface ProbeOptions {
  endpoint: string
  bucket: string
  credentials: S3Credentials
  mode: 'read' | 'write'
  /** total time to keep retrying auth failures (propagation) */
  deadlineMs: number
  /** First pause between attempts (default 1 s); doubles up to 10 s, with jitter. */
  initialDelayMs?: number
  /** Stops the probe (e.g. when the smoke checks beside it failed): no further attempt. */
  signal?: AbortSignal
  clock?: Clock
}

export type ProbeResult =
  | { ok: true; attempts: number; mode: 'read' | 'write' }
  | { ok: false; attempts: number; mode: 'read' | 'write'; reason: string }

/** Prefix of probe objects, so that a leftover is recognisable (and easy to lifecycle away). */
export const PROBE_PREFIX = '.r2-token-rotation/'

const DEFAULT_INITIAL_DELAY_MS = 1000
const MAX_DELAY_MS = 10_000
/** One S3 request may take this long before it counts as a (retryable) network failure. */
const REQUEST_TIMEOUT_MS = 30_000

type Step = { ok: true } | { ok: false; retryable: boolean; reason: string }

class ProbeStepError extends Error {
  constructor(readonly step: Exclude<Step, { ok: true }>) {
    super(step.reason)
  }
}

export async function probeBucket(options: ProbeOptions): Promise<ProbeResult> {
  const { mode, signal } = options
  const base = `${options.endpoint.replace(/\/+$/, '')}/${encodeURIComponent(options.bucket)}`
  const aws = new AwsClient({
    accessKeyId: options.credentials.accessKeyId,
    secretAccessKey: options.credentials.secretAccessKey,
    service: 's3',
    region: 'auto',
    // aws4fetch retries 5xx/429 itself (10 times by default); the loop below owns retrying.
    retries: 0
  })
  const request = async (
    what: string,
    url: string,
    init: { method: string; body?: string; headers?: Record<string, string> }
  ): Promise<Response> => {
    const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS)
    try {
      return await aws.fetch(url, {
        ...init,
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout
      })
    } catch (error) {
      if (signal?.aborted)
        throw new ProbeStepError({ ok: false, retryable: false, reason: `${what}: aborted` })
      const cause = timeout.aborted ? 'timed out' : rootCause(error) || 'unknown'
      throw new ProbeStepError({
        ok: false,
        retryable: true,
        reason: `${what}: network error (${cause})`
      })
    }
  }

  const key = `${PROBE_PREFIX}probe-${randomBytes(12).toString('hex')}`
  const objectUrl = `${base}/${key}`
  const content = `r2-token-rotation probe ${randomBytes(16).toString('hex')}`
  // True while the probe object may exist in the bucket (a PUT may have stored it, no DELETE
  // succeeded since). The key is the same for every attempt, so one DELETE clears them all.
  let objectMayExist = false

  const readOnce = async (): Promise<Step> => {
    const res = await request('ListObjectsV2', `${base}?list-type=2&max-keys=1`, { method: 'GET' })
    return answer('ListObjectsV2', res)
  }

  const deleteObject = async (): Promise<Step> => {
    const res = await request('DELETE probe object', objectUrl, { method: 'DELETE' })
    // 404: already gone (R2 answers 204 either way, other S3 servers may not).
    if (res.ok || res.status === 404) {
      await res.body?.cancel()
      objectMayExist = false
      return { ok: true }
    }
    return answer('DELETE probe object', res)
  }

  const writeOnce = async (): Promise<Step> => {
    let putResponse: Response
    try {
      putResponse = await request('PUT probe object', objectUrl, {
        method: 'PUT',
        body: content,
        headers: { 'content-type': 'text/plain' }
      })
    } catch (error) {
      objectMayExist = true // no answer: the PUT may have been stored
      throw error
    }
    // A 4xx refusal stored nothing; success or a 5xx (ambiguous) may have.
    if (putResponse.ok || putResponse.status >= 500) objectMayExist = true
    const put = await answer('PUT probe object', putResponse)
    if (!put.ok) return put
    const res = await request('GET probe object', objectUrl, { method: 'GET' })
    if (!res.ok) return answer('GET probe object', res)
    const text = await res.text()
    if (text !== content) {
      return {
        ok: false,
        retryable: false,
        reason: `GET probe object: the content read back differs from what was written (${text.length} bytes instead of ${content.length})`
      }
    }
    return deleteObject()
  }

  const attemptOnce = async (): Promise<Step> => {
    try {
      return mode === 'read' ? await readOnce() : await writeOnce()
    } catch (error) {
      if (error instanceof ProbeStepError) return error.step
      throw error
    } finally {
      if (objectMayExist && !signal?.aborted) {
        // Cleanup even when the sequence failed half way; a failure here is reported at the end.
        await deleteObject().catch(() => undefined)
      }
    }
  }

  const outcome = await retryUntil<Step>(
    async () => {
      const step = await attemptOnce()
      return { done: step.ok || !step.retryable || signal?.aborted === true, value: step }
    },
    {
      deadlineMs: options.deadlineMs,
      initialDelayMs: options.initialDelayMs ?? DEFAULT_INITIAL_DELAY_MS,
      maxDelayMs: MAX_DELAY_MS,
      clock: options.clock ?? systemClock,
      ...(signal ? { signal } : {})
    }
  )

  if (objectMayExist) {
    log.warning(
      `The R2 probe could not delete its object ${key} from bucket ${options.bucket}; delete it by hand (objects under ${PROBE_PREFIX} are probe leftovers).`
    )
  }
  const step = outcome.value
  if (step.ok) return { ok: true, attempts: outcome.attempts, mode }
  const gaveUp = signal?.aborted
    ? ' (stopped: aborted)'
    : step.retryable
      ? ' (still failing at the deadline)'
      : ''
  return { ok: false, attempts: outcome.attempts, mode, reason: `${step.reason}${gaveUp}` }
}

/** A failed S3 answer → a step; the S3 error code comes from the XML body's `<Code>`. */
async function answer(what: string, res: Response): Promise<Step> {
  if (res.ok) {
    await res.body?.cancel()
    return { ok: true }
  }
  const body = await res.text().catch(() => '')
  const code = /<Code>([^<]{1,100})<\/Code>/.exec(body)?.[1]
  const retryable =
    res.status === 401 || res.status === 403 || res.status === 429 || res.status >= 500
  return {
    ok: false,
    retryable,
    reason: `${what}: HTTP ${res.status}${code ? ` ${quoteServer(code, 60)}` : ''}`
  }
}
