/**
 * The simulators' shared HTTP base: faults (the ordinary one and the one that quotes the request
 * back, which hostile-error tests of the action's scrubbing use), headers sent with every answer,
 * and the peer address handed to the handler.
 */
import { RequestLog } from '../sandbox/log.js'
import { Service, type IncomingRequest } from '../sandbox/service.js'

let log: RequestLog
let seen: IncomingRequest[]
let service: Service

afterEach(async () => {
  await service.stop()
})

async function start(options: ConstructorParameters<typeof Service>[3] = {}): Promise<void> {
  log = new RequestLog()
  seen = []
  service = new Service(
    'github',
    log,
    req => {
      seen.push(req)
      return { status: 200, headers: { 'x-handler': 'yes' }, body: { ok: true } }
    },
    options
  )
  await service.start()
}

describe('Service faults', () => {
  it('answers an echoRequest fault with the Authorization header and raw body quoted back', async () => {
    await start()
    service.inject({ method: 'PUT', path: /^\/secrets\/TOKEN$/, status: 422, echoRequest: true })
    const body = '{"encrypted_value":"c2VhbGVk","key_id":"012345"}'
    const response = await fetch(`${service.url}/secrets/TOKEN?x=1`, {
      method: 'PUT',
      headers: {
        authorization: 'token ghp_secretsecretsecret',
        'content-type': 'application/json'
      },
      body
    })
    expect(response.status).toBe(422)
    const json = (await response.json()) as { message: string; errors: Array<{ message: string }> }
    expect(json.message).toBe(
      `Request rejected: PUT /secrets/TOKEN with Authorization: token ghp_secretsecretsecret and body: ${body}`
    )
    expect(json.errors[0]!.message).toBe(json.message)
    expect(seen).toEqual([])
    expect(log.requests()[0]).toMatchObject({ status: 422, faulted: true })

    // The next request is handled normally; a request without credentials echoes "(none)".
    expect((await fetch(`${service.url}/secrets/TOKEN`, { method: 'PUT', body })).status).toBe(200)
    service.inject({ path: /./, echoRequest: true })
    const anonymous = await fetch(`${service.url}/anything`)
    expect(anonymous.status).toBe(500)
    expect(((await anonymous.json()) as { message: string }).message).toBe(
      'Request rejected: GET /anything with Authorization: (none) and body: '
    )
  })

  it('keeps the ordinary fault body, and lets a simulator shape fault bodies', async () => {
    await start()
    service.inject({ path: /./, status: 503, retryAfter: 2 })
    const plain = await fetch(`${service.url}/x`)
    expect(plain.headers.get('retry-after')).toBe('2')
    expect(await plain.json()).toEqual({
      message: 'injected fault',
      success: false,
      errors: [{ code: 10000, message: 'injected fault' }]
    })
    await service.stop()

    await start({ faultBody: (message, status) => ({ shaped: message, status }) })
    service.inject({ path: /./, status: 418, echoRequest: true })
    const shaped = await fetch(`${service.url}/y`, { headers: { authorization: 'Bearer abc' } })
    expect(await shaped.json()).toEqual({
      shaped: 'Request rejected: GET /y with Authorization: Bearer abc and body: ',
      status: 418
    })
  })
})

describe('Service answers', () => {
  it('adds answerHeaders to every answer (faults too), the handler winning', async () => {
    await start({
      answerHeaders: req => ({
        date: 'Thu, 01 Jan 2026 00:00:00 GMT',
        'x-handler': 'base',
        'x-auth-seen': String(req.headers.authorization ?? '')
      })
    })
    const handled = await fetch(`${service.url}/a`, { headers: { authorization: 'Bearer t' } })
    expect(handled.headers.get('date')).toBe('Thu, 01 Jan 2026 00:00:00 GMT')
    expect(handled.headers.get('x-handler')).toBe('yes')
    expect(handled.headers.get('x-auth-seen')).toBe('Bearer t')
    service.inject({ path: /./, status: 500 })
    const faulted = await fetch(`${service.url}/b`)
    expect(faulted.headers.get('date')).toBe('Thu, 01 Jan 2026 00:00:00 GMT')
    expect(faulted.headers.get('x-handler')).toBe('base')
  })

  it('hands the handler the peer address', async () => {
    await start()
    await fetch(`${service.url}/c`)
    expect(seen[0]!.remoteAddress).toMatch(/^(::ffff:)?127\.0\.0\.1$/)
  })
})
