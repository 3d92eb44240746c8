/**
 * probeBucket against a tiny local S3-ish server that checks each request is SigV4-signed for the
 * expected access key (credential scope `<date>/auto/s3/aws4_request`), serves ListObjectsV2 and
 * object PUT/GET/DELETE path-style, and can be told to refuse or break requests.
 */
import { jest } from '@jest/globals'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { probeBucket, PROBE_PREFIX } from '../src/cloudflare/probe.js'
import { virtualClock } from '../src/backoff.js'
import { deriveS3Credentials } from '../src/cloudflare/r2.js'

const TOKEN = { id: 'ed17574386854bf78a67040be0a770b0', value: 'cfut_probe-test-token-value' }
const credentials = deriveS3Credentials(TOKEN)
const BUCKET = 'avatars-bucket'

type Rule = (req: { method: string; key?: string }) => { status: number; code: string } | undefined

interface Seen {
  method: string
  path: string
  query: URLSearchParams
  accessKeyId?: string
  scope?: string
  signedHeaders?: string
}

class FakeS3 {
  readonly objects = new Map<string, Buffer>()
  readonly seen: Seen[] = []
  /** Checked in order before normal handling; the first rule that answers wins. */
  rules: Rule[] = []
  /** Answer GETs of objects with different bytes. */
  corruptReads = false
  private server?: http.Server
  url = ''

  async start(): Promise<string> {
    this.server = http.createServer((req, res) => void this.handle(req, res))
    await new Promise<void>(resolve => this.server!.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this.url
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections()
    await new Promise<void>(resolve => this.server?.close(() => resolve()))
  }

  /** Fail the first `times` requests (matching `method`, when given) with a status and S3 code. */
  failFirst(times: number, status: number, code: string, method?: string): void {
    let left = times
    this.rules.push(req => {
      if (left <= 0 || (method && req.method !== method)) return undefined
      left--
      return { status, code }
    })
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const url = new URL(req.url ?? '/', this.url)
    const method = req.method ?? 'GET'
    // AWS4-HMAC-SHA256 Credential=<akid>/<date>/<region>/<service>/aws4_request, SignedHeaders=…, Signature=…
    const auth =
      /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8}\/[^,]+), SignedHeaders=([^,]+), Signature=[0-9a-f]{64}$/.exec(
        String(req.headers.authorization ?? '')
      )
    const seen: Seen = {
      method,
      path: url.pathname,
      query: url.searchParams,
      accessKeyId: auth?.[1],
      scope: auth?.[2],
      signedHeaders: auth?.[3]
    }
    this.seen.push(seen)
    const error = (status: number, code: string): void => {
      res.writeHead(status, { 'content-type': 'application/xml' })
      res.end(
        `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>m</Message></Error>`
      )
    }
    if (
      !auth ||
      auth[1] !== credentials.accessKeyId ||
      !/^\d{8}\/auto\/s3\/aws4_request$/.test(auth[2]!)
    ) {
      return error(403, 'InvalidAccessKeyId')
    }
    const [, bucket, ...rest] = url.pathname.split('/')
    const key = rest.length > 0 ? decodeURIComponent(rest.join('/')) : undefined
    for (const rule of this.rules) {
      const answer = rule({ method, key })
      if (answer) return error(answer.status, answer.code)
    }
    if (bucket !== BUCKET) return error(404, 'NoSuchBucket')
    if (key === undefined && method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/xml' })
      res.end(
        `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>${BUCKET}</Name><KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>`
      )
      return
    }
    if (key === undefined) return error(405, 'MethodNotAllowed')
    if (method === 'PUT') {
      this.objects.set(key, Buffer.concat(chunks))
      res.writeHead(200, { etag: '"x"' })
      res.end()
      return
    }
    if (method === 'GET') {
      const body = this.objects.get(key)
      if (!body) return error(404, 'NoSuchKey')
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(this.corruptReads ? Buffer.from('something else') : body)
      return
    }
    if (method === 'DELETE') {
      this.objects.delete(key)
      res.writeHead(204)
      res.end()
      return
    }
    error(405, 'MethodNotAllowed')
  }
}

let s3: FakeS3
beforeEach(async () => {
  s3 = new FakeS3()
  await s3.start()
})
afterEach(async () => {
  await s3.stop()
  jest.restoreAllMocks()
})

/** Time passes only by the probe's own pauses (a virtual clock): no test depends on the machine's speed. */
const probe = (mode: 'read' | 'write', deadlineMs = 3000, bucket = BUCKET) =>
  probeBucket({
    endpoint: `${s3.url}/`,
    bucket,
    credentials,
    mode,
    deadlineMs,
    initialDelayMs: 10,
    clock: virtualClock()
  })

describe('probeBucket read', () => {
  it('lists one object path-style, signed for the token id, and retries 403 until it works', async () => {
    s3.failFirst(2, 403, 'AccessDenied')
    const result = await probe('read')
    expect(result).toEqual({ ok: true, attempts: 3, mode: 'read' })
    expect(s3.seen).toHaveLength(3)
    for (const seen of s3.seen) {
      expect(seen).toMatchObject({ method: 'GET', path: `/${BUCKET}`, accessKeyId: TOKEN.id })
      expect(seen.query.get('list-type')).toBe('2')
      expect(seen.query.get('max-keys')).toBe('1')
      expect(seen.signedHeaders).toContain('host')
      expect(seen.signedHeaders).toContain('x-amz-date')
    }
  })

  it('fails at once on a missing bucket', async () => {
    const result = await probe('read', 3000, 'no-such-bucket')
    expect(result).toEqual({
      ok: false,
      attempts: 1,
      mode: 'read',
      reason: 'ListObjectsV2: HTTP 404 NoSuchBucket'
    })
  })

  it('gives up at the deadline, with the S3 code and status but no credential', async () => {
    s3.failFirst(1000, 403, 'InvalidAccessKeyId')
    const clock = virtualClock()
    const result = await probeBucket({
      endpoint: s3.url,
      bucket: BUCKET,
      credentials,
      mode: 'read',
      deadlineMs: 300,
      initialDelayMs: 10,
      clock
    })
    expect(clock.slept.reduce((a, b) => a + b, 0)).toBeCloseTo(300, 0)
    expect(result.ok).toBe(false)
    expect(result.attempts).toBeGreaterThan(1)
    const reason = result.ok ? '' : result.reason
    expect(reason).toMatch(/^ListObjectsV2: HTTP 403 InvalidAccessKeyId/)
    expect(reason).not.toContain(credentials.secretAccessKey)
    expect(reason).not.toContain(TOKEN.value)
  })

  it('retries 5xx and network errors', async () => {
    s3.failFirst(1, 503, 'SlowDown')
    expect(await probe('read')).toMatchObject({ ok: true, attempts: 2 })

    const url = s3.url
    await s3.stop()
    const result = await probeBucket({
      endpoint: url,
      bucket: BUCKET,
      credentials,
      mode: 'read',
      deadlineMs: 200,
      initialDelayMs: 10,
      clock: virtualClock()
    })
    expect(result.ok).toBe(false)
    expect(result.ok ? '' : result.reason).toMatch(/^ListObjectsV2: network error/)
    expect(result.attempts).toBeGreaterThan(1)
    await s3.start() // for afterEach
  })

  it('stops when aborted', async () => {
    s3.failFirst(1000, 403, 'AccessDenied')
    const controller = new AbortController()
    // Aborted during its third pause.
    const clock = virtualClock(undefined, () => {
      if (clock.slept.length === 3) controller.abort()
    })
    const result = await probeBucket({
      endpoint: s3.url,
      bucket: BUCKET,
      credentials,
      mode: 'read',
      deadlineMs: 30_000,
      initialDelayMs: 20,
      signal: controller.signal,
      clock
    })
    expect(result.ok).toBe(false)
    expect(result.attempts).toBe(3)
    expect(result.ok ? '' : result.reason).toMatch(/^ListObjectsV2: .* \(stopped: aborted\)$/)
  })
})

describe('probeBucket write', () => {
  it('puts, reads back and deletes a probe object', async () => {
    const result = await probe('write')
    expect(result).toEqual({ ok: true, attempts: 1, mode: 'write' })
    expect(s3.seen.map(r => r.method)).toEqual(['PUT', 'GET', 'DELETE'])
    const key = s3.seen[0]!.path.slice(`/${BUCKET}/`.length)
    expect(key).toMatch(new RegExp(`^${PROBE_PREFIX.replace('.', '\\.')}probe-[0-9a-f]+$`))
    expect(new Set(s3.seen.map(r => r.path)).size).toBe(1)
    expect(s3.seen.every(r => r.accessKeyId === TOKEN.id)).toBe(true)
    expect(s3.objects.size).toBe(0)
  })

  it('retries while the new key propagates (403 twice), then passes', async () => {
    s3.failFirst(2, 403, 'AccessDenied', 'PUT')
    const result = await probe('write')
    expect(result).toEqual({ ok: true, attempts: 3, mode: 'write' })
    expect(s3.objects.size).toBe(0)
  })

  it('deletes the object when the read-back differs, and fails without retrying', async () => {
    s3.corruptReads = true
    const result = await probe('write')
    expect(result.ok).toBe(false)
    expect(result.attempts).toBe(1)
    expect(result.ok ? '' : result.reason).toMatch(/differs/)
    expect(s3.seen.map(r => r.method)).toEqual(['PUT', 'GET', 'DELETE'])
    expect(s3.objects.size).toBe(0)
  })

  it('deletes the object when the read-back keeps failing until the deadline', async () => {
    s3.rules.push(req => (req.method === 'GET' ? { status: 403, code: 'AccessDenied' } : undefined))
    const result = await probe('write', 300)
    expect(result.ok).toBe(false)
    expect(result.ok ? '' : result.reason).toMatch(/^GET probe object: HTTP 403 AccessDenied/)
    expect(s3.seen.at(-1)!.method).toBe('DELETE')
    expect(s3.objects.size).toBe(0)
  })

  it('warns, naming the object, when it cannot delete it', async () => {
    const out = jest.spyOn(process.stdout, 'write').mockImplementation(() => true)
    s3.rules.push(req =>
      req.method === 'DELETE' ? { status: 403, code: 'AccessDenied' } : undefined
    )
    const result = await probe('write', 200)
    const printed = out.mock.calls.map(c => String(c[0])).join('')
    out.mockRestore()
    expect(result.ok).toBe(false)
    expect(result.ok ? '' : result.reason).toMatch(/^DELETE probe object: HTTP 403 AccessDenied/)
    expect(s3.objects.size).toBe(1)
    const [key] = [...s3.objects.keys()]
    expect(printed).toContain('::warning::')
    expect(printed).toContain(key)
  })

  it('does not try to delete what a refused PUT never stored', async () => {
    s3.rules.push(req =>
      req.method === 'PUT' ? { status: 400, code: 'InvalidRequest' } : undefined
    )
    const result = await probe('write')
    expect(result).toMatchObject({ ok: false, attempts: 1 })
    expect(s3.seen.map(r => r.method)).toEqual(['PUT'])
  })
})
