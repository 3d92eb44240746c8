/**
 * Smoke checks against a local app: status ranges, `contains`, headers on every request (never
 * echoed), retry until pass, failure at the deadline, redirects not followed.
 */
import { RequestLog } from '../sandbox/log.js'
import { Service } from '../sandbox/service.js'
import {
  resolvePlaceholders,
  runSmokeChecks as run,
  runSmokeRound,
  type SmokeOptions
} from '../src/smoke.js'
import { virtualClock } from '../src/backoff.js'
import type { SmokeCheck } from '../src/model.js'

const HEADERS = {
  'CF-Access-Client-Id': 'client.access',
  'CF-Access-Client-Secret': 'hunter2-secret'
}
const ok2xx = { min: 200, max: 299 }

/** The former positional form: checks, headers, timeout, and a clock whose sleeps return at once. */
function runSmokeChecks(
  checks: SmokeCheck[],
  headers: Record<string, string>,
  timeoutMs: number,
  options: Partial<SmokeOptions> = {}
) {
  return run(checks, timeoutMs, { headers, clock: virtualClock(), ...options })
}

let log: RequestLog
let app: Service
let flakyCalls = 0

beforeEach(async () => {
  log = new RequestLog()
  flakyCalls = 0
  app = new Service('app', log, req => {
    switch (req.path) {
      case '/health':
        return { status: 200, body: 'hello world, version 2' }
      case '/created':
        return { status: 201, body: { id: 1 } }
      case '/missing':
        return { status: 404, body: 'not here' }
      case '/private':
        return req.headers['cf-access-client-secret'] === 'hunter2-secret'
          ? { status: 200, body: 'welcome' }
          : { status: 403, body: 'forbidden' }
      case '/login-wall':
        return { status: 302, headers: { location: '/login?next=%2Fadmin&state=abc' } }
      case '/flaky':
        return ++flakyCalls < 3
          ? { status: 503, body: 'warming up' }
          : { status: 200, body: 'ready' }
      default:
        return { status: 500, body: 'broken' }
    }
  })
  await app.start()
})

afterEach(async () => {
  await app.stop()
})

function check(path: string, expect = ok2xx, contains?: string): SmokeCheck {
  return { url: `${app.url}${path}`, expect, ...(contains === undefined ? {} : { contains }) }
}

describe('runSmokeChecks', () => {
  it('passes on a status within the expected range and the expected text', async () => {
    const results = await runSmokeChecks(
      [
        check('/health', ok2xx, 'version 2'),
        check('/created'),
        check('/missing', { min: 404, max: 404 })
      ],
      HEADERS,
      1000
    )
    expect(results.map(r => [r.ok, r.status, r.attempts])).toEqual([
      [true, 200, 1],
      [true, 201, 1],
      [true, 404, 1]
    ])
    expect(results.every(r => r.reason === undefined)).toBe(true)
  })

  it('fails when the status is outside the range or the text is missing', async () => {
    const results = await runSmokeChecks(
      [check('/created', { min: 200, max: 200 }), check('/health', ok2xx, 'version 3')],
      {},
      300
    )
    expect(results.map(r => [r.ok, r.status, r.reason])).toEqual([
      [false, 201, 'status 201, expected 200'],
      [false, 200, 'status 200, but the body does not contain the expected text']
    ])
    expect(results.every(r => r.attempts > 1)).toBe(true)
  })

  it('sends the headers with every request and never repeats their values', async () => {
    const results = await runSmokeChecks([check('/private'), check('/health')], HEADERS, 1000)
    expect(results.every(r => r.ok)).toBe(true)
    for (const request of log.requests()) {
      expect(request.headers['cf-access-client-id']).toBe('client.access')
      expect(request.headers['cf-access-client-secret']).toBe('hunter2-secret')
    }
    const failed = await runSmokeChecks([check('/missing')], HEADERS, 100)
    expect(JSON.stringify(failed)).not.toContain('hunter2-secret')
  })

  it('retries with backoff until the check passes', async () => {
    const clock = virtualClock()
    const [result] = await runSmokeChecks([check('/flaky', ok2xx, 'ready')], {}, 10_000, {
      clock
    })
    expect(result).toMatchObject({ ok: true, status: 200, attempts: 3 })
    // Two pauses: about 250 ms and 500 ms (±20 % jitter), on the action's clock.
    expect(clock.slept).toHaveLength(2)
    expect(clock.slept[0]).toBeGreaterThanOrEqual(200)
    expect(clock.slept[1]).toBeGreaterThanOrEqual(400)
    expect(result!.durationMs).toBeGreaterThanOrEqual(600)
  })

  it('fails with the last reason once the timeout has elapsed', async () => {
    const clock = virtualClock()
    const [result] = await runSmokeChecks([check('/down')], {}, 600, { clock })
    expect(result).toMatchObject({ ok: false, status: 500, reason: 'status 500, expected 200-299' })
    expect(result!.attempts).toBeGreaterThanOrEqual(2)
    expect(clock.slept.reduce((a, b) => a + b, 0)).toBeCloseTo(600, 0)
  })

  it('does not follow a redirect (a login page must not pass for the app)', async () => {
    const [followed, expected] = await runSmokeChecks(
      [check('/login-wall'), check('/login-wall', { min: 302, max: 302 })],
      {},
      100
    )
    expect(followed).toMatchObject({ ok: false, status: 302 })
    expect(followed!.reason).toBe(`status 302, expected 200-299 (redirect to ${app.url}/login)`)
    expect(expected).toMatchObject({ ok: true, status: 302 })
    expect(log.requests().every(r => r.path === '/login-wall')).toBe(true)
  })

  it('reports an unreachable app', async () => {
    const url = app.url
    await app.stop()
    const [result] = await runSmokeChecks([{ url: `${url}/health`, expect: ok2xx }], {}, 100)
    expect(result!.ok).toBe(false)
    expect(result!.status).toBeUndefined()
    expect(result!.reason).toMatch(/ECONNREFUSED/)
    await app.start()
  })

  it('reaches its deadline with an injected sleep that returns at once', async () => {
    const clock = virtualClock()
    const slept = clock.slept
    const [result] = await runSmokeChecks([check('/down')], {}, 60_000, { clock })
    expect(result!.ok).toBe(false)
    expect(slept.reduce((a, b) => a + b, 0)).toBeCloseTo(60_000, 0)
    expect(Math.max(...slept)).toBeLessThanOrEqual(5000 * 1.2)
    expect(result!.attempts).toBe(slept.length + 1)
  })

  it('runs the checks concurrently', async () => {
    const results = await runSmokeChecks(
      [check('/flaky', ok2xx, 'ready'), check('/health')],
      {},
      10_000
    )
    expect(results.map(r => r.url)).toEqual([`${app.url}/flaky`, `${app.url}/health`])
    const health = log.requests().findIndex(r => r.path === '/health')
    const flaky = log
      .requests()
      .filter(r => r.path === '/flaky')
      .map(r => r.seq)
    // /health is asked while /flaky is still retrying.
    expect(log.requests()[health]!.seq).toBeLessThan(flaky.at(-1)!)
  })

  it('stops retrying once its signal aborts', async () => {
    const stop = new AbortController()
    const clock = virtualClock(undefined, () => stop.abort())
    const [result] = await runSmokeChecks([check('/down')], {}, 60_000, {
      clock,
      signal: stop.signal
    })
    expect(result).toMatchObject({ ok: false, attempts: 1 })
    expect(log.requests()).toHaveLength(1)
  })
})

describe('the serving credential in contains=', () => {
  it('stands for the id given now, and says so when the body names another', async () => {
    const app2 = new Service('app', log, () => ({ status: 200, body: 'ok v2 access-key-id=aaa' }))
    await app2.start()
    try {
      const probe = {
        url: `${app2.url}/healthz`,
        expect: ok2xx,
        contains: 'access-key-id={access-key-id}'
      }
      const [pass] = await runSmokeChecks([probe], {}, 0, {
        placeholders: { 'access-key-id': 'aaa' }
      })
      expect(pass!.ok).toBe(true)
      const [stale] = await runSmokeChecks([probe], {}, 0, {
        placeholders: { 'access-key-id': 'bbb' }
      })
      expect(stale).toMatchObject({ ok: false, status: 200 })
      expect(stale!.reason).toBe(
        'status 200, but the body does not name the credential that should be serving (access-key-id=bbb): the app runs on other credentials'
      )
      // Either of two tokens may serve while an earlier rotation is finished or undone.
      const [either] = await runSmokeChecks([probe], {}, 0, {
        placeholders: { 'access-key-id': ['bbb', 'aaa'] }
      })
      expect(either!.ok).toBe(true)
      // One round: one attempt per check, however it ends.
      const round = await runSmokeRound([probe, { ...probe, contains: 'nope' }], {
        headers: {},
        placeholders: { 'access-key-id': 'aaa' }
      })
      expect(round.map(r => [r.ok, r.attempts])).toEqual([
        [true, 1],
        [false, 1]
      ])
    } finally {
      await app2.stop()
    }
  })

  it('expands only known placeholders; other braces are text', () => {
    expect(
      resolvePlaceholders('{"status":"ok"} {access-key-id}', { 'access-key-id': 'x' })
    ).toEqual(['{"status":"ok"} x'])
    expect(resolvePlaceholders('{client-id}', {})).toEqual(['{client-id}'])
    expect(resolvePlaceholders('a={access-key-id}', { 'access-key-id': ['1', '2'] })).toEqual([
      'a=1',
      'a=2'
    ])
  })
})

describe('service token placeholders in headers and URLs', () => {
  const TEMPLATE = {
    'CF-Access-Client-Id': '{client-id}',
    'CF-Access-Client-Secret': '{client-secret}'
  }

  it('fills {client-id} and {client-secret} in headers, and {client-id} in the URL and contains=', async () => {
    const results = await runSmokeChecks(
      [
        { url: `${app.url}/private?who={client-id}`, expect: ok2xx },
        check('/health', ok2xx, 'hello')
      ],
      TEMPLATE,
      1000,
      {
        values: { 'client-id': 'client.access', 'client-secret': 'hunter2-secret' },
        placeholders: { 'client-id': 'client.access' }
      }
    )
    expect(results.map(r => r.ok)).toEqual([true, true])
    const request = log.requests({ service: 'app' }).find(e => e.path.startsWith('/private'))!
    expect(request.path).toBe('/private?who=client.access')
    expect(request.headers['cf-access-client-secret']).toBe('hunter2-secret')
    // The result names the URL as the input wrote it.
    expect(results[0]!.url).toBe(`${app.url}/private?who={client-id}`)
  })

  it('sends a template as it is when no value is given (the check then fails at Access)', async () => {
    const [result] = await runSmokeChecks([check('/private')], TEMPLATE, 0)
    expect(result!.ok).toBe(false)
    const request = log.requests({ service: 'app' }).at(-1)!
    expect(request.headers['cf-access-client-secret']).toBe('{client-secret}')
  })
})
