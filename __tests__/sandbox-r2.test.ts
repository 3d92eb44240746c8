/**
 * The R2 simulator against an independent SigV4 client (aws4fetch, as the action and the app use):
 * credentials derived from seeded Cloudflare tokens (id, sha256(value)) work exactly as far as the
 * tokens' policies reach, and every signing mistake is rejected the way S3/R2 rejects it.
 */
import { AwsClient } from 'aws4fetch'
import { RequestLog } from '../sandbox/log.js'
import {
  CloudflareSim,
  PERMISSION_GROUPS,
  type CfTokenRecord,
  type SeedToken
} from '../sandbox/cloudflare.js'
import { R2Sim, sha256Hex } from '../sandbox/r2.js'

const ACCOUNT = 'f0e1d2c3b4a5968778695a4b3c2d1e0f'
const bucketResource = (bucket: string): string =>
  `com.cloudflare.edge.r2.bucket.${ACCOUNT}_default_${bucket}`
const allBuckets = {
  [`com.cloudflare.api.account.${ACCOUNT}`]: { 'com.cloudflare.edge.r2.bucket.*': '*' }
}
const account = { [`com.cloudflare.api.account.${ACCOUNT}`]: '*' }

function group(name: string): { id: string } {
  const found = PERMISSION_GROUPS.find(g => g.name === name)
  if (!found) throw new Error(`no permission group ${name}`)
  return { id: found.id }
}

let log: RequestLog
let cloudflare: CloudflareSim
let r2: R2Sim

beforeAll(async () => {
  log = new RequestLog()
  cloudflare = new CloudflareSim(log)
  r2 = new R2Sim(log, cloudflare, { accountId: ACCOUNT })
  await cloudflare.start()
  await r2.start()
  r2.addBucket('avatars')
  r2.addBucket('other')
  r2.addBucket('eu-assets', 'eu')
  r2.putObject('avatars', 'hello.txt', 'hi there')
  r2.putObject('other', 'note.txt', 'other bucket')
  r2.putObject('eu-assets', 'logo.svg', '<svg/>')
})

afterAll(async () => {
  await r2.stop()
  await cloudflare.stop()
})

function seed(
  name: string,
  policies: SeedToken['policies'],
  extra: Partial<SeedToken> = {}
): CfTokenRecord {
  return cloudflare.addToken({ name, policies, ...extra })
}

function allow(
  groupName: string,
  resources: Record<string, unknown>
): SeedToken['policies'][number] {
  return { effect: 'allow', permission_groups: [group(groupName)], resources }
}

function client(token: CfTokenRecord, secretAccessKey = sha256Hex(token.value)): AwsClient {
  return new AwsClient({
    accessKeyId: token.id,
    secretAccessKey,
    region: 'auto',
    service: 's3',
    retries: 0
  })
}

function objectUrl(bucket: string, key: string): string {
  return `${r2.url}/${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`
}

async function s3Code(response: Response): Promise<string | undefined> {
  return /<Code>([^<]+)<\/Code>/.exec(await response.text())?.[1]
}

describe('R2 simulator', () => {
  it('lists, puts, gets, heads and deletes with a Bucket Item Write token', async () => {
    const token = seed('writer', [
      allow('Workers R2 Storage Bucket Item Write', { [bucketResource('avatars')]: '*' })
    ])
    const s3 = client(token)

    const list = await s3.fetch(`${r2.url}/avatars?list-type=2&max-keys=1`)
    expect(list.status).toBe(200)
    const listing = await list.text()
    expect(listing).toContain('<Key>hello.txt</Key>')
    expect(listing).toContain('<KeyCount>1</KeyCount>')
    expect(listing).toContain('<MaxKeys>1</MaxKeys>')

    // Characters that SigV4 encodes differently from a URL (RFC 3986) prove path canonicalisation.
    const key = "probe/a b(c)!*'.txt"
    const put = await s3.fetch(objectUrl('avatars', key), { method: 'PUT', body: 'probe body' })
    expect(put.status).toBe(200)
    expect(put.headers.get('etag')).toMatch(/^"[0-9a-f]{32}"$/)
    expect(r2.getObject('avatars', key)?.toString()).toBe('probe body')

    const get = await s3.fetch(objectUrl('avatars', key))
    expect(get.status).toBe(200)
    expect(await get.text()).toBe('probe body')

    const head = await s3.fetch(objectUrl('avatars', key), { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(head.headers.get('content-length')).toBe('10')

    const prefixed = await s3.fetch(
      `${r2.url}/avatars?list-type=2&prefix=${encodeURIComponent('probe/')}`
    )
    expect(await prefixed.text()).toContain('<Key>probe/a b(c)!*&#39;.txt</Key>')

    const del = await s3.fetch(objectUrl('avatars', key), { method: 'DELETE' })
    expect(del.status).toBe(204)
    expect(r2.listKeys('avatars')).toEqual(['hello.txt'])

    const gone = await s3.fetch(objectUrl('avatars', key))
    expect(gone.status).toBe(404)
    expect(await s3Code(gone)).toBe('NoSuchKey')
    const headGone = await s3.fetch(objectUrl('avatars', key), { method: 'HEAD' })
    expect(headGone.status).toBe(404)

    const bucketHead = await s3.fetch(`${r2.url}/avatars`, { method: 'HEAD' })
    expect(bucketHead.status).toBe(200)
    expect(cloudflare.findById(token.id)?.last_used_on).not.toBeNull()
  })

  it('pages ListObjectsV2 with continuation tokens and common prefixes', async () => {
    const token = seed('lister', [
      allow('Workers R2 Storage Bucket Item Write', { [bucketResource('other')]: '*' })
    ])
    const s3 = client(token)
    for (const key of ['dir/a.txt', 'dir/b.txt', 'z.txt']) {
      expect((await s3.fetch(objectUrl('other', key), { method: 'PUT', body: key })).status).toBe(
        200
      )
    }
    const page1 = await (await s3.fetch(`${r2.url}/other?list-type=2&max-keys=2`)).text()
    expect(page1).toContain('<IsTruncated>true</IsTruncated>')
    expect(page1).toContain('<Key>dir/a.txt</Key>')
    const next = /<NextContinuationToken>([^<]+)</.exec(page1)?.[1]
    expect(next).toBeDefined()
    const page2 = await (
      await s3.fetch(
        `${r2.url}/other?list-type=2&max-keys=2&continuation-token=${encodeURIComponent(next!)}`
      )
    ).text()
    expect(page2).toContain('<Key>note.txt</Key>')
    expect(page2).toContain('<Key>z.txt</Key>')
    expect(page2).toContain('<IsTruncated>false</IsTruncated>')

    const grouped = await (await s3.fetch(`${r2.url}/other?list-type=2&delimiter=%2F`)).text()
    expect(grouped).toContain('<CommonPrefixes><Prefix>dir/</Prefix></CommonPrefixes>')
    expect(grouped).not.toContain('<Key>dir/a.txt</Key>')
  })

  it('rejects a wrong secret with SignatureDoesNotMatch', async () => {
    const token = seed('wrong-secret', [
      allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })
    ])
    const response = await client(token, sha256Hex('not the value')).fetch(
      objectUrl('avatars', 'hello.txt')
    )
    expect(response.status).toBe(403)
    expect(await s3Code(response)).toBe('SignatureDoesNotMatch')
  })

  it('rejects a request whose query was changed after signing', async () => {
    const token = seed('query', [
      allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })
    ])
    const signed = await client(token).sign(`${r2.url}/avatars?list-type=2&max-keys=1`)
    const tampered = new URL(signed.url)
    tampered.searchParams.set('max-keys', '1000')
    const response = await fetch(tampered, { headers: signed.headers })
    expect(response.status).toBe(403)
    expect(await s3Code(response)).toBe('SignatureDoesNotMatch')
  })

  it('denies a deleted token (InvalidAccessKeyId) and a disabled or expired one (AccessDenied)', async () => {
    const manager = seed('manager', [
      allow('API Tokens Write', { [`com.cloudflare.api.user.${cloudflare.userId}`]: '*' })
    ])
    const doomed = seed('doomed', [
      allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })
    ])
    const s3 = client(doomed)
    expect((await s3.fetch(objectUrl('avatars', 'hello.txt'))).status).toBe(200)

    const deleted = await fetch(`${cloudflare.apiUrl}/user/tokens/${doomed.id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${manager.value}` }
    })
    expect(deleted.status).toBe(200)
    const afterDelete = await s3.fetch(objectUrl('avatars', 'hello.txt'))
    expect(afterDelete.status).toBe(403)
    expect(await s3Code(afterDelete)).toBe('InvalidAccessKeyId')

    const disabled = seed(
      'disabled',
      [allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })],
      {
        status: 'disabled'
      }
    )
    const expired = seed(
      'expired',
      [allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })],
      {
        expires_on: new Date(Date.now() - 60_000).toISOString()
      }
    )
    const early = seed(
      'early',
      [allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })],
      {
        not_before: new Date(Date.now() + 3_600_000).toISOString()
      }
    )
    for (const token of [disabled, expired, early]) {
      const response = await client(token).fetch(objectUrl('avatars', 'hello.txt'))
      expect(response.status).toBe(403)
      expect(await s3Code(response)).toBe('AccessDenied')
    }
  })

  it('lets a Bucket Item Read token read but not write', async () => {
    const token = seed('reader', [
      allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })
    ])
    const s3 = client(token)
    expect((await s3.fetch(objectUrl('avatars', 'hello.txt'))).status).toBe(200)
    const put = await s3.fetch(objectUrl('avatars', 'nope.txt'), { method: 'PUT', body: 'x' })
    expect(put.status).toBe(403)
    expect(await s3Code(put)).toBe('AccessDenied')
    const del = await s3.fetch(objectUrl('avatars', 'hello.txt'), { method: 'DELETE' })
    expect(del.status).toBe(403)
    expect(r2.getObject('avatars', 'nope.txt')).toBeUndefined()
    expect(r2.getObject('avatars', 'hello.txt')).toBeDefined()
  })

  it('denies a token scoped to another bucket, even for a bucket that does not exist', async () => {
    const token = seed('other-only', [
      allow('Workers R2 Storage Bucket Item Write', { [bucketResource('other')]: '*' })
    ])
    const s3 = client(token)
    for (const url of [
      objectUrl('avatars', 'hello.txt'),
      `${r2.url}/avatars?list-type=2`,
      objectUrl('missing', 'x')
    ]) {
      const response = await s3.fetch(url)
      expect(response.status).toBe(403)
      expect(await s3Code(response)).toBe('AccessDenied')
    }
    expect((await s3.fetch(objectUrl('other', 'note.txt'))).status).toBe(200)
  })

  it('honours the all-buckets resource, account-level groups and deny policies', async () => {
    const everywhere = client(
      seed('all', [allow('Workers R2 Storage Bucket Item Write', allBuckets)])
    )
    expect((await everywhere.fetch(objectUrl('avatars', 'hello.txt'))).status).toBe(200)
    expect((await everywhere.fetch(objectUrl('eu-assets', 'logo.svg'))).status).toBe(200)
    expect(
      (await everywhere.fetch(objectUrl('other', 'all.txt'), { method: 'PUT', body: 'x' })).status
    ).toBe(200)
    const missing = await everywhere.fetch(objectUrl('missing', 'x'))
    expect(missing.status).toBe(404)
    expect(await s3Code(missing)).toBe('NoSuchBucket')
    // ListBuckets needs account-level rights.
    expect((await everywhere.fetch(`${r2.url}/`)).status).toBe(403)

    const accountReader = client(seed('account-read', [allow('Workers R2 Storage Read', account)]))
    const buckets = await accountReader.fetch(`${r2.url}/`)
    expect(buckets.status).toBe(200)
    expect(await buckets.text()).toContain('<Name>eu-assets</Name>')
    expect((await accountReader.fetch(objectUrl('other', 'note.txt'))).status).toBe(200)
    expect(
      (await accountReader.fetch(objectUrl('other', 'x.txt'), { method: 'PUT', body: 'x' })).status
    ).toBe(403)

    const accountWriter = client(
      seed('account-write', [allow('Workers R2 Storage Write', account)])
    )
    expect(
      (await accountWriter.fetch(objectUrl('other', 'w.txt'), { method: 'PUT', body: 'x' })).status
    ).toBe(200)

    const euOnly = client(
      seed('eu-only', [
        allow('Workers R2 Storage Bucket Item Read', {
          [`com.cloudflare.edge.r2.bucket.${ACCOUNT}_eu_eu-assets`]: '*'
        })
      ])
    )
    expect((await euOnly.fetch(objectUrl('eu-assets', 'logo.svg'))).status).toBe(200)

    const denied = client(
      seed('all-but-other', [
        allow('Workers R2 Storage Bucket Item Write', allBuckets),
        {
          effect: 'deny',
          permission_groups: [group('Workers R2 Storage Bucket Item Write')],
          resources: { [bucketResource('other')]: '*' }
        }
      ])
    )
    expect((await denied.fetch(objectUrl('avatars', 'hello.txt'))).status).toBe(200)
    expect((await denied.fetch(objectUrl('other', 'note.txt'))).status).toBe(403)
  })

  it('verifies the payload hash and the signed headers', async () => {
    const token = seed('payload', [
      allow('Workers R2 Storage Bucket Item Write', { [bucketResource('avatars')]: '*' })
    ])
    const s3 = client(token)
    const url = objectUrl('avatars', 'signed-payload.txt')

    const honest = await s3.fetch(url, {
      method: 'PUT',
      body: 'original',
      headers: { 'x-amz-content-sha256': sha256Hex('original') }
    })
    expect(honest.status).toBe(200)

    // The signature covers the declared hash, not the bytes: the body itself must be checked.
    const signed = await s3.sign(url, {
      method: 'PUT',
      body: 'original',
      headers: { 'x-amz-content-sha256': sha256Hex('original') }
    })
    const swappedBody = await fetch(signed.url, {
      method: 'PUT',
      headers: signed.headers,
      body: 'tampered'
    })
    expect(swappedBody.status).toBe(400)
    expect(await s3Code(swappedBody)).toBe('XAmzContentSHA256Mismatch')

    const headers = new Headers(signed.headers)
    headers.set('x-amz-content-sha256', sha256Hex('tampered'))
    const swappedHash = await fetch(signed.url, { method: 'PUT', headers, body: 'tampered' })
    expect(swappedHash.status).toBe(403)
    expect(await s3Code(swappedHash)).toBe('SignatureDoesNotMatch')
    expect(r2.getObject('avatars', 'signed-payload.txt')?.toString()).toBe('original')
  })

  it('rejects unsigned, stale and SigV2 requests', async () => {
    const token = seed('misc', [
      allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })
    ])
    const anonymous = await fetch(objectUrl('avatars', 'hello.txt'))
    expect(anonymous.status).toBe(403)
    expect(await s3Code(anonymous)).toBe('AccessDenied')

    const stale = new Date(Date.now() - 20 * 60 * 1000).toISOString().replace(/[:-]|\.\d{3}/g, '')
    const old = await client(token).fetch(objectUrl('avatars', 'hello.txt'), {
      aws: { datetime: stale }
    })
    expect(old.status).toBe(403)
    expect(await s3Code(old)).toBe('RequestTimeTooSkewed')

    const sigv2 = await fetch(objectUrl('avatars', 'hello.txt'), {
      headers: { authorization: `AWS ${token.id}:c2lnbmF0dXJl` }
    })
    expect(sigv2.status).toBe(401)
  })

  it('keeps its own time on the Cloudflare clock: skew check, Last-Modified and Date', async () => {
    const token = seed('clock', [
      allow('Workers R2 Storage Bucket Item Write', { [bucketResource('avatars')]: '*' })
    ])
    const s3 = client(token)
    const amzDate = (ms: number): string => new Date(ms).toISOString().replace(/[:-]|\.\d{3}/g, '')
    try {
      // R2 3 s behind the runner: a fresh signature is well inside the 15 minutes.
      cloudflare.skewMs = -3000
      const put = await s3.fetch(objectUrl('avatars', 'clock.txt'), { method: 'PUT', body: 'x' })
      expect(put.status).toBe(200)
      const date = Date.parse(put.headers.get('date')!)
      expect(date).toBeLessThanOrEqual(Date.now() - 3000)
      expect(date).toBeGreaterThan(Date.now() - 5000)
      const head = await s3.fetch(objectUrl('avatars', 'clock.txt'), { method: 'HEAD' })
      expect(Date.parse(head.headers.get('last-modified')!)).toBeLessThanOrEqual(Date.now() - 3000)
      expect((await s3.fetch(objectUrl('avatars', 'clock.txt'), { method: 'DELETE' })).status).toBe(
        204
      )

      // A signature 20 minutes old by the runner's clock is fresh for an R2 20 minutes behind it…
      cloudflare.skewMs = -20 * 60 * 1000
      const stale = amzDate(Date.now() - 20 * 60 * 1000)
      const behind = await s3.fetch(objectUrl('avatars', 'hello.txt'), { aws: { datetime: stale } })
      expect(behind.status).toBe(200)
      // …and a fresh one is 20 minutes in R2's future: too skewed.
      const ahead = await s3.fetch(objectUrl('avatars', 'hello.txt'))
      expect(ahead.status).toBe(403)
      expect(await s3Code(ahead)).toBe('RequestTimeTooSkewed')

      // Expiry follows the same clock.
      cloudflare.skewMs = 0
      const expiring = seed(
        'expiring',
        [allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })],
        { expires_on: new Date(Date.now() + 60_000).toISOString() }
      )
      expect((await client(expiring).fetch(objectUrl('avatars', 'hello.txt'))).status).toBe(200)
      cloudflare.skewMs = 61_000
      const expired = await client(expiring).fetch(objectUrl('avatars', 'hello.txt'), {
        aws: { datetime: amzDate(Date.now() + 61_000) }
      })
      expect(expired.status).toBe(403)
      expect(await s3Code(expired)).toBe('AccessDenied')
    } finally {
      cloudflare.skewMs = 0
    }
  })

  it('enforces IP conditions only when cloudflare.enforceConditions is on', async () => {
    const token = seed(
      'restricted',
      [allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })],
      { condition: { request_ip: { in: ['192.0.2.0/24'], not_in: ['192.0.2.7'] } } }
    )
    const s3 = client(token)
    const get = (headers: Record<string, string> = {}): Promise<Response> =>
      s3.fetch(objectUrl('avatars', 'hello.txt'), { headers })
    // Off by default: the request comes from 127.0.0.1, outside the condition, and passes.
    expect(cloudflare.enforceConditions).toBe(false)
    expect((await get()).status).toBe(200)
    try {
      cloudflare.enforceConditions = true
      // The socket address (127.0.0.1) is outside the condition.
      const loopback = await get()
      expect(loopback.status).toBe(403)
      expect(await s3Code(loopback)).toBe('AccessDenied')

      r2.clientAddress = '192.0.2.10'
      expect((await get()).status).toBe(200)
      r2.clientAddress = '192.0.2.7'
      expect((await get()).status).toBe(403)

      // The sample app's header wins over clientAddress, either way.
      r2.clientAddress = '198.51.100.1'
      expect((await get({ 'x-sandbox-client-address': '192.0.2.99' })).status).toBe(200)
      r2.clientAddress = '192.0.2.10'
      const fromApp = await get({ 'x-sandbox-client-address': '203.0.113.5' })
      expect(fromApp.status).toBe(403)
      expect(await s3Code(fromApp)).toBe('AccessDenied')
      expect(log.events('auth.denied').at(-1)?.detail).toEqual({
        reason: 'client address outside the token condition',
        access_key_id: token.id,
        client_address: '203.0.113.5'
      })

      // A token without a condition works from anywhere; so does the legacy key's in-range address.
      r2.clientAddress = '203.0.113.5'
      const open = seed('open', [
        allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })
      ])
      expect((await client(open).fetch(objectUrl('avatars', 'hello.txt'))).status).toBe(200)
      const legacy = seed(
        'legacy',
        [allow('Workers R2 Storage Bucket Item Read', { [bucketResource('avatars')]: '*' })],
        { condition: { 'request.ip': { in: ['203.0.113.0/24'] } } }
      )
      expect((await client(legacy).fetch(objectUrl('avatars', 'hello.txt'))).status).toBe(200)
    } finally {
      cloudflare.enforceConditions = false
      r2.clientAddress = undefined
    }
  })

  it('logs denials without any secret', () => {
    const denials = log.events('auth.denied')
    expect(denials.length).toBeGreaterThan(0)
    const logged = JSON.stringify(log.events())
    for (const token of cloudflare.tokens.values()) {
      expect(logged).not.toContain(token.value)
      expect(logged).not.toContain(sha256Hex(token.value))
    }
    expect(log.violations).toEqual([])
  })
})
