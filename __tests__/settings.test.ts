import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { parse } from 'yaml'
import { getSettings, INPUT_DEFAULTS, InputError, parseDuration } from '../src/settings.js'
import type { Settings } from '../src/model.js'

const ENV = { GITHUB_REPOSITORY: 'octo/app', GITHUB_RUN_ID: '4242' }
const TOKEN_ID = '023e105f4ecef8ad9ca31a8372d0c353'
const ACCOUNT_ID = '01a7362d577a6c3019a474fd6f485823'
const MANAGEMENT_TOKEN = 'mgmtSECRETvalue0123456789abcdefghijklmno'
const GITHUB_TOKEN = 'github_pat_SECRETvalue0123456789'
const CURRENT_TOKEN = 'cfut_currentSECRETvalue0123456789abcdef'
const REQUIRED = {
  'cloudflare-api-token': MANAGEMENT_TOKEN,
  'github-token': GITHUB_TOKEN,
  secrets: 'R2_TOKEN=token',
  'current-access-key-id': TOKEN_ID,
  'deploy-workflow': 'none'
}

type Inputs = Record<string, string>

const actionYml = parse(readFileSync(new URL('../action.yml', import.meta.url), 'utf8')) as {
  inputs: Record<string, { required?: boolean; default?: string }>
}
const INPUT_NAMES = Object.keys(actionYml.inputs)

function settings(inputs: Inputs = {}, env: NodeJS.ProcessEnv = ENV): Settings {
  const all: Inputs = { ...REQUIRED, ...inputs }
  return getSettings(name => {
    if (!INPUT_NAMES.includes(name))
      throw new Error(`read an input action.yml does not declare: ${name}`)
    return all[name] ?? ''
  }, env)
}

function inputError(inputs: Inputs, env: NodeJS.ProcessEnv = ENV): InputError {
  try {
    settings(inputs, env)
  } catch (error) {
    if (error instanceof InputError) return error
    throw error
  }
  throw new Error(`expected an InputError for ${JSON.stringify(inputs)}`)
}

describe('getSettings: defaults', () => {
  it('applies the action.yml defaults to every empty input', () => {
    const s = settings()
    expect(s).toEqual({
      credential: 'api-token',
      cloudflareApiToken: MANAGEMENT_TOKEN,
      cloudflareApiUrl: 'https://api.cloudflare.com/client/v4',
      tokenOwner: 'auto',
      currentAccessKeyId: TOKEN_ID,
      secrets: [{ name: 'R2_TOKEN', field: 'token' }],
      secretTargets: [{ kind: 'repo', owner: 'octo', repo: 'app', line: 'repo' }],
      githubToken: GITHUB_TOKEN,
      githubApiUrl: 'https://api.github.com',
      githubServerUrl: 'https://github.com',
      repository: { owner: 'octo', repo: 'app' },
      runId: '4242',
      runAttempt: 1,
      smoke: { checks: [], headers: {}, timeoutMs: 5 * 60_000 },
      r2: { probe: 'auto' },
      tokenName: '{name} (rotated {date})',
      rotateAfterMs: 0,
      force: false,
      leastPrivilege: 'warn',
      revoke: 'delete',
      revokeWatchMs: 2 * 60_000,
      revokeGraceMs: 0,
      onFailure: 'rollback',
      dryRun: false
    })
    // Optional values are absent, not present-and-undefined.
    for (const key of ['accountId', 'currentToken', 'deploy', 'tokenTtlMs', 'stateVariable']) {
      expect(Object.keys(s)).not.toContain(key)
    }
  })

  it('knows the same defaults as action.yml (state-variable excepted: empty disables it)', () => {
    const fromYml = Object.fromEntries(
      Object.entries(actionYml.inputs)
        .filter(([name, spec]) => spec.default && name !== 'state-variable')
        .map(([name, spec]) => [name, spec.default])
    )
    expect(INPUT_DEFAULTS).toEqual(fromYml)
    expect(actionYml.inputs['state-variable']?.default).toBe('R2_ROTATION_STATE')
  })

  it('reads only the inputs that action.yml declares, and every one of them', () => {
    const read = new Set<string>()
    getSettings(name => {
      read.add(name)
      return (REQUIRED as Inputs)[name] ?? ''
    }, ENV)
    expect([...read].sort()).toEqual([...INPUT_NAMES].sort())
  })

  it('trims values and tolerates a reader that returns undefined', () => {
    const s = getSettings(
      name => (name === 'token-owner' ? '  user \n' : (REQUIRED as Inputs)[name]) as string,
      ENV
    )
    expect(s.tokenOwner).toBe('user')
  })

  it('reads the runner environment', () => {
    const s = settings(
      {},
      {
        GITHUB_REPOSITORY: 'Octo-Org/my.app_x',
        GITHUB_API_URL: 'https://ghe.example.com/api/v3/',
        GITHUB_SERVER_URL: 'http://ghe.example.com/',
        GITHUB_RUN_ID: ''
      }
    )
    expect(s.repository).toEqual({ owner: 'Octo-Org', repo: 'my.app_x' })
    expect(s.githubApiUrl).toBe('https://ghe.example.com/api/v3')
    expect(s.githubServerUrl).toBe('http://ghe.example.com')
    expect(s.runId).toBe('')
    expect(
      settings({}, { GITHUB_REPOSITORY: 'o/r', GITHUB_API_URL: 'http://127.0.0.1:4010' })
        .githubApiUrl
    ).toBe('http://127.0.0.1:4010')
  })
})

describe('getSettings: good values', () => {
  it('parses every scalar input', () => {
    const s = settings({
      'cloudflare-api-url': 'http://127.0.0.1:8787/client/v4//',
      'account-id': ACCOUNT_ID.toUpperCase(),
      'token-owner': 'account',
      'current-token': CURRENT_TOKEN,
      'current-access-key-id': TOKEN_ID.toUpperCase(),
      'current-secret-access-key': createHash('sha256')
        .update(CURRENT_TOKEN)
        .digest('hex')
        .toUpperCase(),
      'r2-bucket': 'avatars-bucket',
      'r2-probe': 'write',
      'r2-endpoint': 'https://ACCOUNT.eu.r2.cloudflarestorage.com/',
      'token-name': 'ci {repository} #{run_id} {date}',
      'token-ttl': '90d',
      'rotate-after': '30d',
      force: 'True',
      'least-privilege': 'enforce',
      revoke: 'disable',
      'revoke-grace': '1h30m',
      'on-failure': 'keep-both',
      'state-variable': 'MY_STATE_2',
      'dry-run': 'TRUE'
    })
    expect(s).toMatchObject({
      cloudflareApiUrl: 'http://127.0.0.1:8787/client/v4',
      accountId: ACCOUNT_ID,
      tokenOwner: 'account',
      currentToken: CURRENT_TOKEN,
      currentAccessKeyId: TOKEN_ID,
      currentSecretAccessKey: createHash('sha256').update(CURRENT_TOKEN).digest('hex'),
      r2: {
        bucket: 'avatars-bucket',
        probe: 'write',
        endpoint: 'https://account.eu.r2.cloudflarestorage.com'
      },
      tokenName: 'ci {repository} #{run_id} {date}',
      tokenTtlMs: 90 * 86_400_000,
      rotateAfterMs: 30 * 86_400_000,
      force: true,
      leastPrivilege: 'enforce',
      revoke: 'disable',
      revokeGraceMs: 90 * 60_000,
      onFailure: 'keep-both',
      stateVariable: 'MY_STATE_2',
      dryRun: true
    })
  })

  it.each([
    ['true', true],
    ['True', true],
    ['TRUE', true],
    ['false', false],
    ['False', false],
    ['FALSE', false]
  ])('accepts the YAML 1.2 boolean %s', (text, value) => {
    expect(settings({ force: text, 'dry-run': text })).toMatchObject({
      force: value,
      dryRun: value
    })
  })

  it.each([
    ['http://localhost:9000', 'http://localhost:9000'],
    ['http://127.9.8.7', 'http://127.9.8.7'],
    ['http://[::1]:8080/', 'http://[::1]:8080'],
    ['https://r2.example.com', 'https://r2.example.com']
  ])('accepts r2-endpoint %s', (text, endpoint) => {
    expect(settings({ 'r2-endpoint': text }).r2.endpoint).toBe(endpoint)
  })

  it('accepts current-token alone, and both the token and its id', () => {
    expect(
      settings({ 'current-access-key-id': '', 'current-token': CURRENT_TOKEN }).currentToken
    ).toBe(CURRENT_TOKEN)
    expect(settings({ 'current-token': CURRENT_TOKEN })).toMatchObject({
      currentToken: CURRENT_TOKEN,
      currentAccessKeyId: TOKEN_ID
    })
  })
})

describe('getSettings: secrets', () => {
  it('parses lines, skipping blanks and comments; a field may go to several names', () => {
    const s = settings({
      secrets: [
        '# the S3 pair',
        'R2_ACCESS_KEY_ID = access-key-id',
        '',
        '  R2_SECRET_ACCESS_KEY=secret-access-key  ',
        'CLOUDFLARE_API_TOKEN=token',
        '_LEGACY_TOKEN=token\r'
      ].join('\n')
    })
    expect(s.secrets).toEqual([
      { name: 'R2_ACCESS_KEY_ID', field: 'access-key-id' },
      { name: 'R2_SECRET_ACCESS_KEY', field: 'secret-access-key' },
      { name: 'CLOUDFLARE_API_TOKEN', field: 'token' },
      { name: '_LEGACY_TOKEN', field: 'token' }
    ])
  })
})

describe('getSettings: secret-targets', () => {
  it('resolves every form against GITHUB_REPOSITORY', () => {
    const s = settings({
      'secret-targets': [
        'repo',
        'repo:octo/site',
        '# environments',
        'env:production',
        'env:review/pr-12',
        'env:octo/site:staging',
        'env:octo/site:a:b',
        'org:octo-org',
        'dependabot:octo/app'
      ].join('\n')
    })
    expect(s.secretTargets).toEqual([
      { kind: 'repo', owner: 'octo', repo: 'app', line: 'repo' },
      { kind: 'repo', owner: 'octo', repo: 'site', line: 'repo:octo/site' },
      {
        kind: 'env',
        owner: 'octo',
        repo: 'app',
        environment: 'production',
        line: 'env:production'
      },
      {
        kind: 'env',
        owner: 'octo',
        repo: 'app',
        environment: 'review/pr-12',
        line: 'env:review/pr-12'
      },
      {
        kind: 'env',
        owner: 'octo',
        repo: 'site',
        environment: 'staging',
        line: 'env:octo/site:staging'
      },
      { kind: 'env', owner: 'octo', repo: 'site', environment: 'a:b', line: 'env:octo/site:a:b' },
      { kind: 'org', org: 'octo-org', line: 'org:octo-org' },
      { kind: 'dependabot', owner: 'octo', repo: 'app', line: 'dependabot:octo/app' }
    ])
  })

  it('treats the same place written two ways as a duplicate', () => {
    const e = inputError({ 'secret-targets': 'repo\nrepo:OCTO/App' })
    expect(e.input).toBe('secret-targets')
    expect(e.message).toContain("line 2: 'repo:OCTO/App' is the same target as line 1")
    expect(inputError({ 'secret-targets': 'env:Prod\nenv:octo/app:prod' }).message).toContain(
      'same target as line 1'
    )
  })

  it('reads worker:SCRIPT as a Worker of the account-id account', () => {
    expect(
      settings({ 'account-id': ACCOUNT_ID, 'secret-targets': 'repo\nworker:avatars-worker' })
        .secretTargets
    ).toEqual([
      { kind: 'repo', owner: 'octo', repo: 'app', line: 'repo' },
      {
        kind: 'worker',
        accountId: ACCOUNT_ID,
        script: 'avatars-worker',
        line: 'worker:avatars-worker'
      }
    ])
    expect(
      settings({ 'account-id': ACCOUNT_ID, 'secret-targets': 'worker: api_v2-staging' })
        .secretTargets
    ).toEqual([
      {
        kind: 'worker',
        accountId: ACCOUNT_ID,
        script: 'api_v2-staging',
        line: 'worker: api_v2-staging'
      }
    ])
  })

  it('needs account-id for a Worker, and names that input', () => {
    const e = inputError({ 'secret-targets': 'repo\nworker:avatars-worker' })
    expect(e.input).toBe('account-id')
    expect(e.message).toContain("required by secret-targets line 2 ('worker:avatars-worker')")
    expect(e.message).toContain('32-character account id')
  })

  it('refuses a Worker name Cloudflare would not accept, and the same Worker twice', () => {
    for (const bad of [
      'worker:',
      'worker:Avatars',
      'worker:-api',
      'worker:a/b',
      `worker:${'w'.repeat(64)}`
    ]) {
      const e = inputError({ 'account-id': ACCOUNT_ID, 'secret-targets': bad })
      expect(e.input).toBe('secret-targets')
      expect(e.message).toContain('line 1: invalid Worker name')
    }
    const twice = inputError({
      'account-id': ACCOUNT_ID,
      'secret-targets': 'worker:api\nworker: api'
    })
    expect(twice.message).toContain("line 2: 'worker: api' is the same target as line 1")
  })

  it('keeps targets that differ only by kind', () => {
    expect(settings({ 'secret-targets': 'repo\ndependabot:octo/app' }).secretTargets).toHaveLength(
      2
    )
  })
})

describe('getSettings: deploy', () => {
  it('is undefined for deploy-workflow: none, which must be said', () => {
    expect(settings({ 'deploy-workflow': 'none', 'deploy-inputs': '{}' }).deploy).toBeUndefined()
  })

  it('parses a file name, repository, ref and inputs', () => {
    const s = settings({
      'deploy-workflow': 'deploy.yaml',
      'deploy-repository': 'octo/infra',
      'deploy-ref': 'refs/heads/release/v1.2',
      'deploy-inputs':
        '{"environment": "production", "replicas": 3, "canary": false, "__proto__": "x"}',
      'deploy-timeout': '1.5h'
    })
    expect(s.deploy).toEqual({
      workflow: 'deploy.yaml',
      repository: { owner: 'octo', repo: 'infra' },
      ref: 'refs/heads/release/v1.2',
      inputs: { environment: 'production', replicas: '3', canary: 'false', ['__proto__']: 'x' },
      timeoutMs: 90 * 60_000
    })
    expect(Object.getPrototypeOf(s.deploy?.inputs)).toBe(Object.prototype)
  })

  it('parses a numeric id and defaults to this repository, its default branch and 30m', () => {
    expect(settings({ 'deploy-workflow': '161335' }).deploy).toEqual({
      workflow: 161335,
      repository: { owner: 'octo', repo: 'app' },
      inputs: {},
      timeoutMs: 30 * 60_000
    })
  })

  it('accepts 25 inputs', () => {
    const inputs = Object.fromEntries(Array.from({ length: 25 }, (_, i) => [`in_${i}`, i]))
    const s = settings({ 'deploy-workflow': 'd.yml', 'deploy-inputs': JSON.stringify(inputs) })
    expect(Object.keys(s.deploy?.inputs ?? {})).toHaveLength(25)
  })
})

describe('getSettings: smoke', () => {
  it('parses URLs with expect= and contains=, which takes the rest of the line', () => {
    const s = settings({
      'smoke-urls': [
        'https://app.example.com/health',
        '# comment',
        'https://app.example.com/ready expect=204',
        'http://127.0.0.1:3000/api expect=200-399 contains=  "status": "ok" ',
        'https://app.example.com/ contains=expect=200'
      ].join('\n'),
      'smoke-headers': 'CF-Access-Client-Id: abc.access\nCF-Access-Client-Secret:  s3cr3t value ',
      'smoke-timeout': '0'
    })
    expect(s.smoke).toEqual({
      checks: [
        { url: 'https://app.example.com/health', expect: { min: 200, max: 299 } },
        { url: 'https://app.example.com/ready', expect: { min: 204, max: 204 } },
        {
          url: 'http://127.0.0.1:3000/api',
          expect: { min: 200, max: 399 },
          contains: '"status": "ok"'
        },
        { url: 'https://app.example.com/', expect: { min: 200, max: 299 }, contains: 'expect=200' }
      ],
      headers: { 'CF-Access-Client-Id': 'abc.access', 'CF-Access-Client-Secret': 's3cr3t value' },
      timeoutMs: 0
    })
  })
})

// [input, value, what the message must say, other inputs, input named by the error]
type Bad = [string, string, string, Inputs?, string?]
const BAD: Bad[] = [
  ['credential', 'api_token', "expected 'api-token' or 'access-service-token'"],
  ['service-token-id', 'f174e90a-fafe-4643-bbbc-4a0ed4fc8415', "credential is 'api-token'"],
  ['current-client-secret', 'cfast_abc', "credential is 'api-token'"],
  ['cloudflare-api-token', '', 'required and not supplied'],
  ['github-token', '', 'required and not supplied'],
  ['secrets', '', 'required and not supplied; give one line per GitHub secret: NAME=field'],
  ['secrets', '# only a comment\n\n', 'required and not supplied'],
  ['cloudflare-api-url', 'api.cloudflare.com', 'expected an absolute URL'],
  [
    'cloudflare-api-url',
    'http://api.cloudflare.com/client/v4',
    'must use https (http only on loopback'
  ],
  ['cloudflare-api-url', 'http://127.0.0.1.example.com', 'must use https'],
  ['cloudflare-api-url', 'ftp://127.0.0.1/', 'must use https'],
  ['cloudflare-api-url', 'https://api.cloudflare.com/client/v4?x=1', 'without a query or fragment'],
  ['account-id', 'abc', 'expected a Cloudflare account id: 32 hexadecimal characters'],
  ['account-id', `${ACCOUNT_ID}0`, '32 hexadecimal characters'],
  ['token-owner', 'org', "expected 'user', 'account' or 'auto', got 'org'"],
  ['token-owner', 'User', "expected 'user', 'account' or 'auto'"],
  ['token-owner', 'account', "required when token-owner is 'account'", {}, 'account-id'],
  [
    'current-access-key-id',
    'not-an-id',
    'expected a token id: 32 hexadecimal characters, got something else (9 characters).'
  ],
  ['current-access-key-id', '', 'give current-token', {}, 'current-token'],
  ['current-secret-access-key', 'xyz', 'expected 64 hexadecimal characters'],
  ['secrets', 'R2_TOKEN', 'line 1: expected one line per GitHub secret: NAME=field'],
  ['secrets', 'R2_TOKEN=value', "line 1: unknown field 'value' for R2_TOKEN; expected 'token'"],
  ['secrets', '# names\nR2-TOKEN=token', "line 2: 'R2-TOKEN' is not a valid secret name"],
  ['secrets', '2FA=token', 'must not start with a digit'],
  ['secrets', 'github_token=token', 'must not start with GITHUB_'],
  ['secrets', '=token', "'' is not a valid secret name"],
  [
    'secrets',
    'A=token\nB=access-key-id\na=secret-access-key',
    'line 3: secret a is already mapped on line 1'
  ],
  ['secret-targets', 'repository', 'line 1: expected `repo`, `repo:OWNER/REPO`'],
  [
    'secret-targets',
    'repo:octo',
    "invalid repository 'octo' in 'repo:octo'. Expected format {owner}/{repo}."
  ],
  ['secret-targets', 'repo:octo/app/x', 'Expected format {owner}/{repo}'],
  ['secret-targets', 'repo:-octo/app', 'Expected format {owner}/{repo}'],
  ['secret-targets', 'repo:octo/..', 'Expected format {owner}/{repo}'],
  ['secret-targets', 'repo:octo/a b', 'Expected format {owner}/{repo}'],
  ['secret-targets', 'repo:', 'Expected format {owner}/{repo}'],
  ['secret-targets', 'env:', 'line 1: expected `repo`'],
  ['secret-targets', 'env:octo:prod', "invalid repository 'octo'"],
  ['secret-targets', `env:${'e'.repeat(256)}`, 'an environment name has 1 to 255 characters'],
  ['secret-targets', 'env:octo/app:', 'an environment name has 1 to 255 characters'],
  ['secret-targets', 'org:octo_org', "invalid organization 'octo_org'"],
  ['rotate-management-token', 'CF-TOKEN', 'not its value; a secret name may hold only letters'],
  [
    'rotate-management-token',
    'CF_MANAGEMENT_TOKEN',
    'rotate-management-token rotates the management token',
    { 'current-access-key-id': '' },
    'secrets'
  ],
  ['secret-targets', 'org:', "invalid organization ''"],
  ['secret-targets', 'dependabot', 'expected `repo`'],
  ['secret-targets', 'dependabot:octo', "invalid repository 'octo'"],
  ['secret-targets', 'Repo', 'expected `repo`'],
  ['deploy-workflow', '.github/workflows/deploy.yml', 'the workflow file name only (deploy.yml'],
  ['deploy-workflow', 'deploy', 'ending in .yml or .yaml'],
  ['deploy-workflow', 'deploy.json', 'ending in .yml or .yaml'],
  ['deploy-workflow', '0', 'or a positive workflow id'],
  ['deploy-workflow', '99999999999999999999', 'or a positive workflow id'],
  [
    'deploy-repository',
    'infra',
    "invalid repository 'infra'. Expected format {owner}/{repo}.",
    { 'deploy-workflow': 'd.yml' }
  ],
  [
    'deploy-workflow',
    '',
    "required: the file name of the workflow that deploys the app with the new secrets (deploy.yml) or its id, or 'none' when nothing is deployed"
  ],
  ['deploy-repository', 'octo/infra', "is set but deploy-workflow is 'none'"],
  ['deploy-ref', 'main', "is set but deploy-workflow is 'none'"],
  ['deploy-inputs', '{"a": "b"}', "is set but deploy-workflow is 'none'"],
  ['revoke-watch', '2', "expected a duration such as 90s, 30m, 12h or 7d, got '2'."],
  ['revoke-watch', '25d', 'must be at most 24d'],
  ...[
    'my branch',
    'a..b',
    'a~1',
    'a^',
    'a:b',
    'a?',
    'a*',
    'a[',
    'a\\b',
    '/main',
    'main/',
    'a//b',
    'main.',
    'a/.b',
    'x.lock',
    'a@{1}',
    '@',
    '-main'
  ].map((ref): Bad => [
    'deploy-ref',
    ref,
    'is not a valid branch or tag name',
    { 'deploy-workflow': 'd.yml' }
  ]),
  [
    'deploy-inputs',
    '{',
    'expected a JSON object such as {"environment": "production"}; it does not parse'
  ],
  [
    'deploy-inputs',
    '[]',
    'expected a JSON object such as {"environment": "production"}, got an array'
  ],
  ['deploy-inputs', 'null', 'got null'],
  ['deploy-inputs', '"x"', 'got a string'],
  [
    'deploy-inputs',
    '{"a": null}',
    "the value of 'a' is null; expected a string, number or boolean"
  ],
  ['deploy-inputs', '{"a": {"b": 1}}', "the value of 'a' is an object"],
  ['deploy-inputs', '{"a": [1]}', "the value of 'a' is an array"],
  ['deploy-inputs', '{"1st": "x"}', "'1st' is not a valid workflow input id"],
  ['deploy-inputs', '{"a b": "x"}', "'a b' is not a valid workflow input id"],
  [
    'deploy-inputs',
    JSON.stringify(Object.fromEntries(Array.from({ length: 26 }, (_, i) => [`k${i}`, 'v']))),
    'has 26 keys; a workflow dispatch takes at most 25 inputs',
    { 'deploy-workflow': 'd.yml' }
  ],
  ['deploy-timeout', 'soon', "expected a duration such as 90s, 30m, 12h or 7d, got 'soon'."],
  ['deploy-timeout', '0', 'must be at least 1s'],
  ['deploy-timeout', '25d', 'must be at most 24d (the longest wait a Node.js timer supports)'],
  [
    'smoke-urls',
    'app.example.com/health',
    "line 1: expected an absolute URL such as https://app.example.com/health, got 'app.example.com/health'."
  ],
  [
    'smoke-urls',
    'https://ok.example.com\nhttp://app.example.com',
    'line 2: must use https (http only on loopback'
  ],
  [
    'smoke-urls',
    'https://user:pw@app.example.com',
    'line 1: must not carry a user name or password'
  ],
  [
    'smoke-urls',
    'https://app.example.com expect=600',
    "expect= takes an HTTP status (100-599) such as 200, or a range such as 200-299, got '600'"
  ],
  ['smoke-urls', 'https://app.example.com expect=99', 'expect= takes an HTTP status'],
  ['smoke-urls', 'https://app.example.com expect=299-200', 'expect= takes an HTTP status'],
  ['smoke-urls', 'https://app.example.com expect=2xx', 'expect= takes an HTTP status'],
  ['smoke-urls', 'https://app.example.com expect=', 'expect= takes an HTTP status'],
  ['smoke-urls', 'https://app.example.com expect=200 expect=201', "unexpected 'expect=201'"],
  [
    'smoke-urls',
    'https://app.example.com status=200',
    "unexpected 'status=200'; after the URL only expect=200"
  ],
  ['smoke-urls', 'https://app.example.com contains=', 'contains= needs the text'],
  ['smoke-headers', 'X-Token: v', 'is set but smoke-urls is empty'],
  ['smoke-timeout', '5', 'expected a duration such as 90s'],
  ['smoke-timeout', '-5m', 'expected a duration'],
  ['r2-bucket', 'ab', 'is not an R2 bucket name: 3 to 63 lowercase letters, digits and hyphens'],
  ['r2-bucket', 'My-Bucket', 'is not an R2 bucket name'],
  ['r2-bucket', 'bucket-', 'is not an R2 bucket name'],
  ['r2-bucket', 'my_bucket', 'is not an R2 bucket name'],
  ['r2-bucket', 'my.bucket', 'is not an R2 bucket name'],
  ['r2-bucket', 'b'.repeat(64), 'is not an R2 bucket name'],
  ['r2-probe', 'list', "expected 'auto', 'write', 'read' or 'off', got 'list'"],
  ['r2-endpoint', 'http://abc.r2.cloudflarestorage.com', 'must use https'],
  ['r2-endpoint', 'https://abc.r2.cloudflarestorage.com/bucket', 'without a path or query'],
  ['r2-endpoint', 'https://abc.r2.cloudflarestorage.com?x', 'without a path or query'],
  ['token-name', 'x'.repeat(121), "at most 120 characters (Cloudflare's limit"],
  [
    'token-name',
    '{name} {time}',
    'unknown placeholder {time}; known: {name}, {date}, {run_id}, {repository}'
  ],
  ['token-name', '{Name}', 'unknown placeholder {Name}'],
  ['token-name', '{}', 'unknown placeholder {}'],
  ['token-name', 'a\tb', 'must not contain tabs, line breaks or other control characters'],
  ['token-ttl', '90', 'expected a duration'],
  ['token-ttl', '30m', "must be at least 1h, got '30m'"],
  ['token-ttl', '0', 'must be at least 1h'],
  ['rotate-after', '30 days', 'expected a duration'],
  ['force', 'yes', "expected true or false, got 'yes'"],
  ['force', 'tRUE', 'expected true or false'],
  ['dry-run', '1', 'expected true or false'],
  ['least-privilege', 'strict', "expected 'warn', 'enforce' or 'off'"],
  ['revoke', 'rotate', "expected 'delete', 'disable' or 'keep'"],
  ['revoke-grace', '1w', 'expected a duration'],
  ['revoke-grace', '30d', 'must be at most 24d'],
  ['on-failure', 'rollback-and-keep', "expected 'rollback' or 'keep-both'"],
  ['state-variable', 'R2-STATE', "'R2-STATE' is not a valid Actions variable name"],
  ['state-variable', 'GITHUB_STATE', 'must not start with GITHUB_'],
  ['state-variable', '9LIVES', 'must not start with a digit']
]

describe('getSettings: bad values', () => {
  it.each(BAD)("rejects %s '%s'", (input, value, says, others = {}, named = input) => {
    const e = inputError({ ...others, [input]: value })
    expect(e).toBeInstanceOf(InputError)
    expect(e.name).toBe('InputError')
    expect(e.input).toBe(named)
    expect(e.message.startsWith(`Input '${named}': `)).toBe(true)
    expect(e.message).toContain(says)
  })

  it('covers every input of action.yml with at least one bad value', () => {
    const covered = new Set(BAD.map(([input, , , , named = input]) => [input, named]).flat())
    expect(INPUT_NAMES.filter(name => !covered.has(name))).toEqual([])
  })

  it.each([
    [{}, 'the environment variable is not set'],
    [{ GITHUB_REPOSITORY: 'octo' }, "invalid repository 'octo'. Expected format {owner}/{repo}."]
  ])('rejects GITHUB_REPOSITORY %j', (env, says) => {
    const e = inputError({}, env)
    expect(e.input).toBe('GITHUB_REPOSITORY')
    expect(e.message).toContain(says)
  })

  it('rejects a plain-http GITHUB_API_URL that is not loopback', () => {
    const e = inputError({}, { ...ENV, GITHUB_API_URL: 'http://ghe.example.com/api/v3' })
    expect(e.input).toBe('GITHUB_API_URL')
    expect(e.message).toContain('must use https')
  })

  it('rejects a GITHUB_SERVER_URL that is not an http(s) URL', () => {
    expect(inputError({}, { ...ENV, GITHUB_SERVER_URL: 'github.com' }).input).toBe(
      'GITHUB_SERVER_URL'
    )
    expect(inputError({}, { ...ENV, GITHUB_SERVER_URL: 'ssh://github.com' }).message).toContain(
      'expected an http(s) URL'
    )
  })
})

describe('getSettings: secret values never appear in messages', () => {
  const SECRET = 'SECRETvalue0123456789'
  const sha = createHash('sha256').update(CURRENT_TOKEN).digest('hex')
  const cases: [string, Inputs, string][] = [
    [
      'current-access-key-id',
      { 'current-access-key-id': SECRET },
      'got something else (21 characters)'
    ],
    [
      'cloudflare-api-token',
      { 'cloudflare-api-token': `Bearer ${SECRET}` },
      'without spaces or line breaks'
    ],
    ['github-token', { 'github-token': `${SECRET}\n${SECRET}` }, 'without spaces or line breaks'],
    ['current-token', { 'current-token': `${SECRET} x` }, 'without spaces or line breaks'],
    [
      'cloudflare-api-token',
      { 'cloudflare-api-token': CURRENT_TOKEN, 'current-token': CURRENT_TOKEN },
      'must not be the token being rotated'
    ],
    [
      'current-secret-access-key',
      { 'current-secret-access-key': `${SECRET}zz` },
      '64 hexadecimal characters'
    ],
    [
      'smoke-headers',
      { 'smoke-urls': 'https://a.example', 'smoke-headers': SECRET },
      "line 1: expected 'Name: value'"
    ],
    [
      'smoke-headers',
      { 'smoke-urls': 'https://a.example', 'smoke-headers': `Bad Name: ${SECRET}` },
      "expected 'Name: value'"
    ],
    [
      'smoke-headers',
      { 'smoke-urls': 'https://a.example', 'smoke-headers': `${SECRET}: ${SECRET}\u0007` },
      'without control characters'
    ],
    [
      'smoke-headers',
      { 'smoke-urls': 'https://a.example', 'smoke-headers': 'X-Key:' },
      'line 1: a header needs a value on the same line'
    ],
    [
      'smoke-headers',
      { 'smoke-urls': 'https://a.example', 'smoke-headers': `X-Key: ${SECRET}\nx-key: ${SECRET}` },
      'line 2: the same header is already set on line 1'
    ],
    [
      'smoke-urls',
      { 'smoke-urls': `https://user:${SECRET}@app.example.com` },
      'must not carry a user name or password'
    ],
    ['smoke-urls', { 'smoke-urls': `not a url ${SECRET}@x` }, 'expected an absolute URL']
  ]

  it.each(cases)('%s: %j', (input, inputs, says) => {
    const e = inputError(inputs)
    expect(e.input).toBe(input)
    expect(e.message).toContain(says)
    expect(e.message).not.toContain(SECRET)
    expect(e.message).not.toContain(CURRENT_TOKEN)
    expect(e.message).not.toContain(sha)
  })

  it('accepts the S3 secret that belongs to current-token', () => {
    expect(
      settings({ 'current-token': CURRENT_TOKEN, 'current-secret-access-key': sha })
        .currentSecretAccessKey
    ).toBe(sha)
  })
})

describe('parseDuration', () => {
  it.each([
    ['0', 0],
    ['0s', 0],
    ['90s', 90_000],
    ['30m', 1_800_000],
    ['12h', 43_200_000],
    ['7d', 604_800_000],
    ['1.5h', 5_400_000],
    ['1h30m', 5_400_000],
    ['0.5s', 500],
    ['0.0001s', 0],
    [' 10m ', 600_000]
  ])('%s = %d ms', (text, ms) => {
    expect(parseDuration(text, 'x')).toBe(ms)
  })

  it.each([
    '',
    'soon',
    '10',
    '00',
    '-1m',
    '1 m',
    '1M',
    '1w',
    '1.m',
    '.5h',
    'm',
    '1h 30m',
    '1e3s',
    'Infinity'
  ])("rejects '%s', naming the input", text => {
    expect(() => parseDuration(text, 'deploy-timeout')).toThrow(
      new InputError(
        'deploy-timeout',
        `expected a duration such as 90s, 30m, 12h or 7d, got '${text}'.`
      )
    )
  })

  it('rejects a duration too long to count in milliseconds', () => {
    expect(() => parseDuration(`${'9'.repeat(20)}d`, 'rotate-after')).toThrow(/too long/)
  })
})

describe('getSettings: rotate-management-token', () => {
  const SELF: Inputs = {
    'rotate-management-token': 'CF_MANAGEMENT_TOKEN',
    secrets: '',
    'current-access-key-id': '',
    'deploy-workflow': ''
  }

  it('needs none of the inputs of a token rotation', () => {
    const s = settings(SELF)
    expect(s.rotateManagementToken).toBe('CF_MANAGEMENT_TOKEN')
    expect(s.secrets).toEqual([])
    expect(s.deploy).toBeUndefined()
    expect(s.secretTargets).toEqual([{ kind: 'repo', owner: 'octo', repo: 'app', line: 'repo' }])
    expect(Object.keys(settings()).includes('rotateManagementToken')).toBe(false)
  })

  it.each([
    ['current-token', 'a-token-value'],
    ['current-access-key-id', TOKEN_ID],
    ['secrets', 'R2_TOKEN=token'],
    ['deploy-workflow', 'deploy.yml'],
    ['smoke-urls', 'https://app.example.com/health'],
    ['r2-bucket', 'avatars']
  ])('refuses %s, an input of a token rotation', (name, value) => {
    const error = inputError({ ...SELF, [name]: value })
    expect(error.input).toBe(name)
    expect(error.message).toContain('rotate-management-token rotates the management token')
  })

  it('refuses a worker: target, whose writes cannot be read back', () => {
    const error = inputError({
      ...SELF,
      'account-id': '0123456789abcdef0123456789abcdef',
      'secret-targets': 'repo\nworker:avatars-worker'
    })
    expect(error.input).toBe('secret-targets')
    expect(error.message).toContain("line 'worker:avatars-worker'")
  })

  it('names the input and never quotes a value passed in place of a secret name', () => {
    const error = inputError({ ...SELF, 'rotate-management-token': 'cfut_abc-DEF.123' })
    expect(error.input).toBe('rotate-management-token')
    expect(error.message).toContain('not its value')
    expect(error.message).not.toContain('cfut_abc')
  })
})

describe('getSettings: credential: access-service-token', () => {
  const SERVICE_TOKEN_ID = 'f174e90a-fafe-4643-bbbc-4a0ed4fc8415'
  const CLIENT_SECRET = 'cfast_SECRETvalue0123456789abcdef'
  const ST: Inputs = {
    credential: 'access-service-token',
    'service-token-id': SERVICE_TOKEN_ID,
    'account-id': ACCOUNT_ID,
    'current-access-key-id': '',
    secrets: 'ACCESS_CLIENT_ID=client-id\nACCESS_CLIENT_SECRET=client-secret'
  }

  it('reads the service token inputs', () => {
    const s = settings({ ...ST, 'current-client-secret': CLIENT_SECRET })
    expect(s.credential).toBe('access-service-token')
    expect(s.serviceTokenId).toBe(SERVICE_TOKEN_ID)
    expect(s.currentClientSecret).toBe(CLIENT_SECRET)
    expect(s.secrets).toEqual([
      { name: 'ACCESS_CLIENT_ID', field: 'client-id' },
      { name: 'ACCESS_CLIENT_SECRET', field: 'client-secret' }
    ])
    expect(settings().credential).toBe('api-token')
  })

  it('takes the action.yml defaults of the inputs it refuses when set', () => {
    const defaults = Object.fromEntries(
      Object.entries(actionYml.inputs).map(([name, input]) => [name, input.default ?? ''])
    )
    const s = settings({ ...defaults, ...REQUIRED, ...ST })
    expect(s.credential).toBe('access-service-token')
  })

  it.each([
    ['credential', { credential: 'service-token' }, "'api-token' or 'access-service-token'"],
    ['service-token-id', { 'service-token-id': '' }, 'required with credential'],
    ['service-token-id', { 'service-token-id': 'not-a-uuid' }, 'expected a UUID'],
    ['account-id', { 'account-id': '' }, 'required with credential'],
    ['current-token', { 'current-token': CURRENT_TOKEN }, 'current-client-secret instead'],
    ['current-access-key-id', { 'current-access-key-id': TOKEN_ID }, 'R2 credential'],
    ['token-name', { 'token-name': '{name} v2' }, 'keeps its name'],
    ['token-ttl', { 'token-ttl': '90d' }, 'duration'],
    ['token-owner', { 'token-owner': 'user' }, 'account of account-id'],
    ['least-privilege', { 'least-privilege': 'enforce' }, 'no policies'],
    ['rotate-management-token', { 'rotate-management-token': 'CF_TOKEN' }, 'run of its own'],
    ['r2-bucket', { 'r2-bucket': 'avatars' }, 'no R2'],
    ['r2-probe', { 'r2-probe': 'write' }, 'no R2'],
    ['revoke', { revoke: 'disable' }, 'stops BOTH'],
    ['secrets', { secrets: 'R2_TOKEN=token' }, "'token' belongs to an API token"],
    ['secrets', { secrets: 'ACCESS_CLIENT_ID=client-id' }, 'maps no secret to client-secret'],
    [
      'secret-targets',
      { 'secret-targets': 'repo\nworker:avatars-worker' },
      'cannot hold a service token'
    ],
    [
      'smoke-urls',
      { 'smoke-urls': 'https://app.example.com/health contains={access-key-id}' },
      'use {client-id}'
    ],
    [
      'smoke-urls',
      { 'smoke-urls': 'https://app.example.com/health?s={client-secret}' },
      'smoke-headers only'
    ],
    [
      'current-client-secret',
      {
        'smoke-urls': 'https://app.example.com/health',
        'smoke-headers':
          'CF-Access-Client-Id: {client-id}\nCF-Access-Client-Secret: {client-secret}'
      },
      'required when smoke-headers use {client-secret}'
    ]
  ])('refuses a bad %s, naming it (%j)', (name, inputs, text) => {
    const error = inputError({ ...ST, ...inputs })
    expect(error.input).toBe(name)
    expect(error.message).toContain(text)
    expect(error.message).not.toContain(CLIENT_SECRET)
    expect(error.message).not.toContain(CURRENT_TOKEN)
  })

  it.each([
    ['service-token-id', { 'service-token-id': 'f174e90a-fafe-4643-bbbc-4a0ed4fc8415' }],
    ['current-client-secret', { 'current-client-secret': CLIENT_SECRET }],
    ['secrets', { secrets: 'ACCESS_CLIENT_SECRET=client-secret' }],
    [
      'smoke-headers',
      {
        'smoke-urls': 'https://app.example.com/health',
        'smoke-headers': 'CF-Access-Client-Id: {client-id}'
      }
    ]
  ])('refuses %s with credential: api-token', (name, inputs) => {
    const error = inputError(inputs)
    expect(error.input).toBe(name)
    expect(error.message).not.toContain(CLIENT_SECRET)
  })

  it('accepts {client-id} and {client-secret} in headers and {client-id} in contains=', () => {
    const s = settings({
      ...ST,
      'current-client-secret': CLIENT_SECRET,
      'smoke-urls': 'https://app.example.com/health contains=client-id={client-id}',
      'smoke-headers': 'CF-Access-Client-Id: {client-id}\nCF-Access-Client-Secret: {client-secret}'
    })
    expect(s.smoke.headers['CF-Access-Client-Secret']).toBe('{client-secret}')
  })
})
