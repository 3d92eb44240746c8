/**
 * The one GitHub client against a local server: which answers are retried and how long it waits,
 * that a dispatch (any POST) is never repeated, that rate limits go to the throttling plugin
 * alone, and that writes to a loopback server are not spaced a second apart.
 */
import { RequestLog } from '../sandbox/log.js'
import { Service, type Handler, type OutgoingResponse } from '../sandbox/service.js'
import {
  createGitHubClient,
  isLoopbackUrl,
  negotiatedVersion,
  type GitHubClient
} from '../src/github/client.js'

const DISPATCH = 'POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches'

interface Harness {
  service: Service
  log: RequestLog
  github: GitHubClient
  warnings: string[]
}

const running: Service[] = []

const SCALE = 0.05

async function harness(handler: Handler): Promise<Harness> {
  const log = new RequestLog()
  const service = new Service('github', log, handler)
  await service.start()
  running.push(service)
  const warnings: string[] = []
  // Retry waits run 20 times as fast (the client's own time scale); rate-limit waits are the
  // throttling plugin's and stay real.
  const github = createGitHubClient({
    token: 'ghp_test',
    baseUrl: service.url,
    timeScale: SCALE,
    log: { info: () => {}, debug: () => {}, warning: m => warnings.push(m) }
  })
  return { service, log, github, warnings }
}

afterEach(async () => {
  while (running.length) await running.pop()!.stop()
})

const repoOk: OutgoingResponse = { status: 200, body: { default_branch: 'main' } }

/** Answers `first` to the first request, then `then` to every later one. */
function firstThen(first: OutgoingResponse, then: OutgoingResponse): Handler {
  let n = 0
  return () => (n++ === 0 ? first : then)
}

async function statusOf(promise: Promise<unknown>): Promise<number | undefined> {
  try {
    await promise
    return undefined
  } catch (error) {
    return (error as { status?: number }).status
  }
}

describe('createGitHubClient', () => {
  it('retries a GET on 503 after the retry-after the server asked for', async () => {
    const h = await harness(() => repoOk)
    h.service.inject({ method: 'GET', path: /^\/repos\/acme\/site$/, status: 503, retryAfter: 1 })
    const started = Date.now()
    const { data } = await h.github.request('GET /repos/{owner}/{repo}', {
      owner: 'acme',
      repo: 'site'
    })
    expect(data.default_branch).toBe('main')
    expect(h.log.requests().map(r => r.status)).toEqual([503, 200])
    // retry-after: 1 (s), on the scaled clock.
    expect(Date.now() - started).toBeGreaterThanOrEqual(950 * SCALE)
  })

  it('retries a plain 429 after its retry-after (not a rate limit: the retry plugin handles it)', async () => {
    const h = await harness(
      firstThen(
        { status: 429, headers: { 'retry-after': '1' }, body: { message: 'Too many requests' } },
        repoOk
      )
    )
    await h.github.request('GET /repos/{owner}/{repo}', { owner: 'acme', repo: 'site' })
    expect(h.log.requests().map(r => r.status)).toEqual([429, 200])
  })

  it('gives up at once when retry-after asks for more than five minutes', async () => {
    const h = await harness(() => repoOk)
    h.service.inject({
      method: 'GET',
      path: /^\/repos\/acme\/site$/,
      status: 503,
      retryAfter: 3600
    })
    const started = Date.now()
    expect(
      await statusOf(h.github.request('GET /repos/{owner}/{repo}', { owner: 'acme', repo: 'site' }))
    ).toBe(503)
    expect(h.log.requests()).toHaveLength(1)
    // No wait at all (an hour was asked for); generous, so that a loaded machine does not fail it.
    expect(Date.now() - started).toBeLessThan(5000)
  })

  it('does not retry 4xx answers', async () => {
    const h = await harness(() => ({ status: 404, body: { message: 'Not Found' } }))
    expect(
      await statusOf(h.github.request('GET /repos/{owner}/{repo}', { owner: 'acme', repo: 'site' }))
    ).toBe(404)
    expect(h.log.requests()).toHaveLength(1)
  })

  it('retries an idempotent PUT on a 5xx', async () => {
    const h = await harness(() => ({ status: 204 }))
    h.service.inject({ method: 'PUT', path: /secrets\/TOKEN$/, status: 502, retryAfter: 0 })
    await h.github.request('PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}', {
      owner: 'acme',
      repo: 'site',
      secret_name: 'TOKEN',
      encrypted_value: 'AAAA',
      key_id: '1'
    })
    expect(h.log.requests().map(r => `${r.method} ${r.status}`)).toEqual(['PUT 502', 'PUT 204'])
  })

  it('sends a dispatch exactly once when the server answers 500', async () => {
    const h = await harness(() => ({ status: 500, body: { message: 'Server Error' } }))
    const params = { owner: 'acme', repo: 'site', workflow_id: 'deploy.yml', ref: 'main' }
    expect(await statusOf(h.github.request(DISPATCH, params))).toBe(500)
    expect(await statusOf(h.github.request(DISPATCH, { ...params, request: { retries: 0 } }))).toBe(
      500
    )
    expect(h.log.requests({ method: 'POST' })).toHaveLength(2)
  })

  it('never repeats any POST on a 5xx unless the caller opts in', async () => {
    const h = await harness(() => ({ status: 502, body: { message: 'Bad Gateway' } }))
    expect(
      await statusOf(
        h.github.request('POST /repos/{owner}/{repo}/actions/variables', {
          owner: 'acme',
          repo: 'site',
          name: 'STATE',
          value: '{}'
        })
      )
    ).toBe(502)
    expect(h.log.requests()).toHaveLength(1)
  })

  it('retries a GET after a secondary rate limit, with a warning', async () => {
    const h = await harness(
      firstThen(
        {
          status: 403,
          headers: { 'retry-after': '1' },
          body: { message: 'You have exceeded a secondary rate limit. Please wait a few minutes.' }
        },
        repoOk
      )
    )
    await h.github.request('GET /repos/{owner}/{repo}', { owner: 'acme', repo: 'site' })
    expect(h.log.requests().map(r => r.status)).toEqual([403, 200])
    expect(h.warnings.join('\n')).toMatch(
      /secondary rate limit on GET \/repos\/\{owner\}\/\{repo\}; retrying in 1 s/
    )
  })

  it('does not repeat a dispatch that hit a secondary rate limit', async () => {
    const h = await harness(() => ({
      status: 403,
      headers: { 'retry-after': '1' },
      body: { message: 'You have exceeded a secondary rate limit.' }
    }))
    expect(
      await statusOf(
        h.github.request(DISPATCH, {
          owner: 'acme',
          repo: 'site',
          workflow_id: 1,
          ref: 'main',
          request: { retries: 0 }
        })
      )
    ).toBe(403)
    expect(h.log.requests()).toHaveLength(1)
    expect(h.warnings.join('\n')).toMatch(/dispatches; not retried/)
  })

  it('leaves an exhausted primary rate limit to the throttling plugin alone (one retry, not several)', async () => {
    const reset = Math.floor(Date.now() / 1000)
    const h = await harness(
      firstThen(
        {
          status: 429,
          headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(reset) },
          body: { message: 'API rate limit exceeded' }
        },
        repoOk
      )
    )
    await h.github.request('GET /repos/{owner}/{repo}', { owner: 'acme', repo: 'site' })
    expect(h.log.requests().map(r => r.status)).toEqual([429, 200])
    expect(h.warnings.join('\n')).toMatch(/GitHub rate limit on GET/)
  })

  it('gives up after two rate-limit retries', async () => {
    const h = await harness(() => ({
      status: 403,
      headers: {
        'x-ratelimit-remaining': '0',
        'x-ratelimit-reset': String(Math.floor(Date.now() / 1000))
      },
      body: { message: 'API rate limit exceeded' }
    }))
    expect(
      await statusOf(h.github.request('GET /repos/{owner}/{repo}', { owner: 'acme', repo: 'site' }))
    ).toBe(403)
    expect(h.log.requests()).toHaveLength(3)
    expect(h.warnings.at(-1)).toMatch(/giving up/)
  }, 20_000)

  it('does not space writes to a loopback server a second apart', async () => {
    const h = await harness(() => ({ status: 204 }))
    const started = Date.now()
    for (const name of ['A', 'B', 'C', 'D']) {
      await h.github.request('PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}', {
        owner: 'acme',
        repo: 'site',
        secret_name: name,
        encrypted_value: 'AAAA',
        key_id: '1'
      })
    }
    expect(h.log.requests({ method: 'PUT' })).toHaveLength(4)
    // Spaced a second apart, the four writes would take at least 3 s.
    expect(Date.now() - started).toBeLessThan(2500)
  })

  it('sends the token and the user agent', async () => {
    const h = await harness(() => repoOk)
    await h.github.request('GET /repos/{owner}/{repo}', { owner: 'acme', repo: 'site' })
    const [entry] = h.log.requests()
    expect(entry!.headers.authorization).toBe('token ghp_test')
    expect(String(entry!.headers['user-agent'])).toMatch(/^r2-token-rotation/)
  })
})

describe('isLoopbackUrl', () => {
  it.each([
    ['http://127.0.0.1:8080', true],
    ['http://127.1.2.3', true],
    ['http://localhost:3000/api', true],
    ['http://[::1]:9000', true],
    ['https://api.github.com', false],
    ['https://github.example.com/api/v3', false],
    ['http://128.0.0.1', false],
    ['not a url', false]
  ])('%s → %s', (url, expected) => {
    expect(isLoopbackUrl(url)).toBe(expected)
  })
})

describe('negotiatedVersion: the version to use after GitHub refused the one asked for', () => {
  const refusal = (supported: string): unknown =>
    Object.assign(
      new Error(
        `The version you specified in the "X-GitHub-Api-Version" request header, "2022-11-28", is not a supported version. The following versions are currently supported: ${supported}.`
      ),
      { status: 400 }
    )
  it.each<[string, unknown, string | undefined]>([
    ['only 2026-03-10', refusal('"2026-03-10" (most recent)'), '2026-03-10'],
    ['a newer one too', refusal('"2031-01-01" (most recent), "2026-03-10"'), '2026-03-10'],
    ['none the action knows', refusal('"2031-01-01" (most recent)'), undefined],
    ['the one asked for (nothing better)', refusal('"2022-11-28"'), undefined],
    ['another 400', Object.assign(new Error('Problems parsing JSON'), { status: 400 }), undefined],
    ['a 404', Object.assign(new Error('Not Found'), { status: 404 }), undefined]
  ])('%s', (_, error, expected) => {
    expect(negotiatedVersion(error, '2022-11-28')).toBe(expected)
  })
})
