import {
  accountIdFromPolicies,
  bucketResource,
  classifyScope,
  deriveS3Credentials,
  parseBucketResource,
  r2Endpoint,
  sha256Hex
} from '../src/cloudflare/r2.js'
import type { TokenPolicy } from '../src/cloudflare/tokens.js'

const ACCT = '0123456789abcdef0123456789abcdef'
const OTHER = 'fedcba9876543210fedcba9876543210'

// Ids as Cloudflare documents them today; classification must go by the names in `names`.
const ADMIN_WRITE = 'bf7481a1826f439697cb59a20b22293e'
const ADMIN_READ = 'b4992e1108244f5d8bfbd5744320c2e1'
const ITEM_WRITE = '2efd5506f9c8494dacb1fa10a3e7d5b6'
const ITEM_READ = '6a018a9f2fc74eb6b293b0c548f38b39'
const DNS_WRITE = '4755a26eedb94da69e1066d98aa820be'
const names = new Map([
  [ADMIN_WRITE, 'Workers R2 Storage Write'],
  [ADMIN_READ, 'Workers R2 Storage Read'],
  [ITEM_WRITE, 'Workers R2 Storage Bucket Item Write'],
  [ITEM_READ, 'Workers R2 Storage Bucket Item Read'],
  [DNS_WRITE, 'DNS Write']
])

const policy = (
  groups: string[],
  resources: Record<string, unknown>,
  effect: 'allow' | 'deny' = 'allow'
): TokenPolicy => ({
  id: 'f267e341f3dd4697bd3b9f71dd96247f',
  effect,
  permission_groups: groups.map(id => ({ id })),
  resources
})
const oneBucket = (bucket: string, jurisdiction: 'default' | 'eu' | 'fedramp' = 'default') => ({
  [bucketResource(ACCT, bucket, jurisdiction)]: '*'
})
const allBuckets = (account = ACCT) => ({
  [`com.cloudflare.api.account.${account}`]: { 'com.cloudflare.edge.r2.bucket.*': '*' }
})
const accountLevel = (account = ACCT) => ({ [`com.cloudflare.api.account.${account}`]: '*' })

describe('S3 credentials', () => {
  it('hashes UTF-8 text with SHA-256 as lowercase hex', () => {
    expect(sha256Hex('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
    expect(sha256Hex('abc')).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    )
    expect(sha256Hex('héllo ✓')).toBe(
      '5657cdef8a85a584e0e961e6f8247cf5d3f8ed21496ed6fdbcfd43a761e94245'
    )
  })

  it('derives the Access Key ID from the token id and the secret from its value', () => {
    expect(
      deriveS3Credentials({
        id: 'ed17574386854bf78a67040be0a770b0',
        value: 'cfut_Y1fXMsbRNIYVKrGo0t3FHk2fXhqgD1MKPo4a8MU5'
      })
    ).toEqual({
      accessKeyId: 'ed17574386854bf78a67040be0a770b0',
      secretAccessKey: '3037627803281220d19719e6a09ef479d9897d953ba34bfb46dbdd3ee6df3d25'
    })
  })
})

describe('bucket resources', () => {
  it.each(['default', 'eu', 'fedramp'] as const)('round-trips a %s bucket', jurisdiction => {
    const key = bucketResource(ACCT, 'avatars-bucket', jurisdiction)
    expect(key).toBe(`com.cloudflare.edge.r2.bucket.${ACCT}_${jurisdiction}_avatars-bucket`)
    expect(parseBucketResource(key)).toEqual({
      accountId: ACCT,
      jurisdiction,
      bucket: 'avatars-bucket'
    })
  })

  it('defaults to the default jurisdiction', () => {
    expect(bucketResource(ACCT, 'b')).toBe(`com.cloudflare.edge.r2.bucket.${ACCT}_default_b`)
  })

  it('rejects what is not one bucket', () => {
    expect(parseBucketResource('com.cloudflare.edge.r2.bucket.*')).toBeUndefined()
    expect(parseBucketResource(`com.cloudflare.edge.r2.bucket.${ACCT}_mars_b`)).toBeUndefined()
    expect(parseBucketResource(`com.cloudflare.api.account.${ACCT}`)).toBeUndefined()
    expect(parseBucketResource(`com.cloudflare.edge.r2.bucket.${ACCT}_default_`)).toBeUndefined()
  })
})

describe('r2Endpoint', () => {
  it('derives the endpoint per jurisdiction', () => {
    expect(r2Endpoint(ACCT)).toBe(`https://${ACCT}.r2.cloudflarestorage.com`)
    expect(r2Endpoint(ACCT, 'eu')).toBe(`https://${ACCT}.eu.r2.cloudflarestorage.com`)
    expect(r2Endpoint(ACCT, 'fedramp')).toBe(`https://${ACCT}.fedramp.r2.cloudflarestorage.com`)
  })

  it('lets an override win, without a trailing slash', () => {
    expect(r2Endpoint(ACCT, 'eu', 'http://127.0.0.1:9000/')).toBe('http://127.0.0.1:9000')
  })
})

describe('classifyScope', () => {
  it('object-read-write on one bucket', () => {
    const scope = classifyScope([policy([ITEM_WRITE], oneBucket('avatars-bucket'))], names)
    expect(scope).toEqual({
      class: 'object-read-write',
      canRead: true,
      canWrite: true,
      buckets: [{ accountId: ACCT, jurisdiction: 'default', bucket: 'avatars-bucket' }],
      accountIds: [ACCT],
      otherPermissions: [],
      warnings: [],
      policies: [
        {
          ref: '#1 (f267e341f3dd4697bd3b9f71dd96247f)',
          effect: 'allow',
          permissions: ['Workers R2 Storage Bucket Item Write'],
          class: 'object-read-write',
          reach: 'bucket avatars-bucket'
        }
      ],
      summary: 'object-read-write bucket=avatars-bucket'
    })
  })

  it('object-read on one eu bucket', () => {
    const scope = classifyScope([policy([ITEM_READ], oneBucket('logs', 'eu'))], names)
    expect(scope.class).toBe('object-read')
    expect(scope.canRead).toBe(true)
    expect(scope.canWrite).toBe(false)
    expect(scope.buckets).toEqual([{ accountId: ACCT, jurisdiction: 'eu', bucket: 'logs' }])
    expect(scope.summary).toBe('object-read bucket=eu:logs')
    expect(scope.warnings).toEqual([])
  })

  it('admin-read-write at account level: all buckets, two warnings', () => {
    const scope = classifyScope([policy([ADMIN_WRITE], accountLevel())], names)
    expect(scope.class).toBe('admin-read-write')
    expect(scope.canWrite).toBe(true)
    expect(scope.buckets).toBe('all')
    expect(scope.accountIds).toEqual([ACCT])
    expect(scope.summary).toBe('admin-read-write buckets=all')
    expect(scope.warnings).toHaveLength(2)
    expect(scope.warnings[0]).toMatch(/every R2 bucket of account/)
    expect(scope.warnings[1]).toMatch(/admin class admin-read-write/)
  })

  it('admin-read at account level', () => {
    const scope = classifyScope([policy([ADMIN_READ], accountLevel())], names)
    expect(scope.class).toBe('admin-read')
    expect(scope.canRead).toBe(true)
    expect(scope.canWrite).toBe(false)
    expect(scope.summary).toBe('admin-read buckets=all')
    expect(scope.warnings.some(w => w.includes('admin class admin-read'))).toBe(true)
  })

  it('object-read-write on every bucket of the account warns about account scope only', () => {
    const scope = classifyScope([policy([ITEM_WRITE], allBuckets())], names)
    expect(scope.class).toBe('object-read-write')
    expect(scope.buckets).toBe('all')
    expect(scope.summary).toBe('object-read-write buckets=all')
    expect(scope.warnings).toEqual([
      `Policy #1 (f267e341f3dd4697bd3b9f71dd96247f) (Workers R2 Storage Bucket Item Write) reaches every R2 bucket of account ${ACCT} (account-scoped), buckets created later included. Narrower: Workers R2 Storage Bucket Item Write on only the buckets the app uses, one resource per bucket (com.cloudflare.edge.r2.bucket.${ACCT}_default_<bucket>).`
    ])
    expect(scope.policies[0]!.reach).toBe(`every bucket of account ${ACCT}`)
  })

  it('names each offending policy and the narrower group, with the bucket the app uses', () => {
    const scope = classifyScope(
      [
        { ...policy([ITEM_READ], oneBucket('fine')), id: undefined },
        { ...policy([ADMIN_READ], accountLevel()), id: 'a1' },
        { ...policy([DNS_WRITE], { 'com.cloudflare.api.account.zone.*': '*' }), id: 'z9' }
      ],
      names,
      { bucket: 'avatars-bucket' }
    )
    expect(scope.class).toBe('admin-read')
    expect(scope.warnings).toEqual([
      `Policy #2 (a1) (Workers R2 Storage Read) reaches every R2 bucket of account ${ACCT} (account-scoped), buckets created later included. Narrower: Workers R2 Storage Bucket Item Read on only the buckets the app uses, one resource per bucket (com.cloudflare.edge.r2.bucket.${ACCT}_default_avatars-bucket).`,
      'Policy #2 (a1) holds Workers R2 Storage Read, the admin class admin-read (it may list every bucket and read its configuration). Narrower: Workers R2 Storage Bucket Item Read (object-read) on the buckets the app uses, unless the app itself manages buckets.'
    ])
    expect(scope.policies).toEqual([
      {
        ref: '#1',
        effect: 'allow',
        permissions: ['Workers R2 Storage Bucket Item Read'],
        class: 'object-read',
        reach: 'bucket fine'
      },
      {
        ref: '#2 (a1)',
        effect: 'allow',
        permissions: ['Workers R2 Storage Read'],
        class: 'admin-read',
        reach: `every bucket of account ${ACCT}`
      },
      {
        ref: '#3 (z9)',
        effect: 'allow',
        permissions: ['DNS Write'],
        reach: 'com.cloudflare.api.account.zone.*'
      }
    ])
  })

  it('a policy whose grant is fully denied raises no warning', () => {
    const scope = classifyScope(
      [policy([ADMIN_WRITE], accountLevel()), policy([ADMIN_WRITE], accountLevel(), 'deny')],
      names
    )
    expect(scope.warnings).toEqual([])
    expect(scope.policies.map(p => [p.effect, p.class])).toEqual([
      ['allow', 'admin-read-write'],
      ['deny', 'admin-read-write']
    ])
  })

  it('lists several buckets, deduplicated, with the strongest class', () => {
    const scope = classifyScope(
      [
        policy([ITEM_READ], { ...oneBucket('b-two'), ...oneBucket('a-one') }),
        policy([ITEM_WRITE], oneBucket('a-one')),
        policy([ITEM_READ], oneBucket('c-three', 'fedramp'))
      ],
      names
    )
    expect(scope.class).toBe('object-read-write')
    expect(scope.buckets).toEqual([
      { accountId: ACCT, jurisdiction: 'default', bucket: 'a-one' },
      { accountId: ACCT, jurisdiction: 'default', bucket: 'b-two' },
      { accountId: ACCT, jurisdiction: 'fedramp', bucket: 'c-three' }
    ])
    expect(scope.summary).toBe('object-read-write buckets=a-one,b-two,fedramp:c-three')
    expect(scope.warnings).toEqual([])
  })

  it('reports non-R2 permissions by name, or by id when unknown, and ignores them for the class', () => {
    const scope = classifyScope(
      [
        policy([DNS_WRITE, 'unknown0000000000000000000000000'], {
          'com.cloudflare.api.account.zone.22b1de5f1c0e4b3ea97bb1e963b06a43': '*'
        }),
        policy([ITEM_READ], oneBucket('avatars'))
      ],
      names
    )
    expect(scope.class).toBe('object-read')
    expect(scope.otherPermissions).toEqual(['DNS Write', 'unknown0000000000000000000000000'])
  })

  it('classifies a token without R2 permissions as none', () => {
    const scope = classifyScope(
      [policy([DNS_WRITE], { 'com.cloudflare.api.account.zone.*': '*' })],
      names
    )
    expect(scope).toMatchObject({
      class: undefined,
      canRead: false,
      canWrite: false,
      buckets: [],
      summary: 'none',
      warnings: []
    })
  })

  it('goes by name: a changed id still classifies when the API names it', () => {
    const renamed = new Map([
      ['0000000000000000000000000000abcd', 'Workers R2 Storage Bucket Item Write']
    ])
    const scope = classifyScope(
      [policy(['0000000000000000000000000000abcd'], oneBucket('b'))],
      renamed
    )
    expect(scope.class).toBe('object-read-write')
  })

  it('falls back to the names the policy carries, and accepts the older "Edit" spelling', () => {
    const scope = classifyScope(
      [
        {
          effect: 'allow',
          permission_groups: [{ id: 'x1', name: 'Workers R2 Storage Bucket Item Edit' }],
          resources: oneBucket('b')
        }
      ],
      new Map()
    )
    expect(scope.class).toBe('object-read-write')
  })

  it('warns about every account for com.cloudflare.api.account.*', () => {
    const scope = classifyScope(
      [policy([ITEM_READ], { 'com.cloudflare.api.account.*': '*' })],
      names
    )
    expect(scope.buckets).toBe('all')
    expect(scope.accountIds).toEqual([])
    expect(scope.warnings[0]).toMatch(/every account/)
  })

  describe('deny policies', () => {
    it('a write deny on the only bucket removes all access', () => {
      const scope = classifyScope(
        [policy([ITEM_WRITE], oneBucket('b')), policy([ITEM_WRITE], oneBucket('b'), 'deny')],
        names
      )
      expect(scope.class).toBeUndefined()
      expect(scope.canRead).toBe(false)
      expect(scope.summary).toBe('none')
    })

    it('a deny of a Write group also removes the reads it includes', () => {
      const scope = classifyScope(
        [
          policy([ADMIN_WRITE], accountLevel()),
          policy([ADMIN_READ], accountLevel()),
          policy([ADMIN_WRITE], accountLevel(), 'deny')
        ],
        names
      )
      expect(scope.class).toBeUndefined()
      expect(scope.canRead).toBe(false)
      expect(scope.warnings).toEqual([])
    })

    it('a deny in another account changes nothing', () => {
      const scope = classifyScope(
        [policy([ADMIN_WRITE], accountLevel()), policy([ADMIN_WRITE], accountLevel(OTHER), 'deny')],
        names
      )
      expect(scope.class).toBe('admin-read-write')
    })

    it('a deny of one bucket narrows a bucket list', () => {
      const scope = classifyScope(
        [
          policy([ITEM_WRITE], { ...oneBucket('keep'), ...oneBucket('drop') }),
          policy([ITEM_WRITE], oneBucket('drop'), 'deny')
        ],
        names
      )
      expect(scope.summary).toBe('object-read-write bucket=keep')
    })

    it('a deny of one bucket leaves an account-wide grant account-wide', () => {
      const scope = classifyScope(
        [policy([ITEM_WRITE], allBuckets()), policy([ITEM_WRITE], oneBucket('secret'), 'deny')],
        names
      )
      expect(scope.buckets).toBe('all')
      expect(scope.warnings).toHaveLength(1)
    })

    it('a read deny leaves write', () => {
      const scope = classifyScope(
        [policy([ITEM_WRITE], oneBucket('b')), policy([ITEM_READ], oneBucket('b'), 'deny')],
        names
      )
      expect(scope.canRead).toBe(false)
      expect(scope.canWrite).toBe(true)
      expect(scope.class).toBe('object-read-write')
    })
  })
})

describe('accountIdFromPolicies', () => {
  it('finds the one account named by bucket, nested or account resources', () => {
    expect(accountIdFromPolicies([policy([ITEM_WRITE], oneBucket('b'))])).toBe(ACCT)
    expect(accountIdFromPolicies([policy([ITEM_WRITE], allBuckets())])).toBe(ACCT)
    expect(
      accountIdFromPolicies([
        policy([ADMIN_READ], accountLevel()),
        policy([ITEM_WRITE], oneBucket('b'))
      ])
    ).toBe(ACCT)
  })

  it('is undefined when none or several accounts are named', () => {
    expect(
      accountIdFromPolicies([policy([DNS_WRITE], { 'com.cloudflare.api.account.zone.*': '*' })])
    ).toBeUndefined()
    expect(
      accountIdFromPolicies([policy([ITEM_READ], { 'com.cloudflare.api.account.*': '*' })])
    ).toBeUndefined()
    expect(
      accountIdFromPolicies([
        policy([ITEM_WRITE], oneBucket('b')),
        policy([ADMIN_READ], accountLevel(OTHER))
      ])
    ).toBeUndefined()
  })
})
