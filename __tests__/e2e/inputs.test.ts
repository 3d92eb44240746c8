/**
 * Bad inputs and missing permissions, end to end. Every malformed input and every missing required
 * one fails the step with exactly one `::error::` line that names the input, before a single
 * request (so nothing is changed). A management token that may only read tokens, and a GitHub
 * token without secrets or actions rights, fail in preflight — before anything is minted, with
 * no mutation at all — and the message names the permission that is missing.
 */
import { startSandbox, type Sandbox, type SandboxOptions } from '../../sandbox/index.js'
import { findLeaks, runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import { journalText, startAll } from './scenario.js'

/** The input the error must name, and the inputs that produce it. */
type Case = [input: string, overrides: (sb: Sandbox) => Record<string, string>]

const set = (values: Record<string, string>) => (): Record<string, string> => values

const CASES: Case[] = [
  // Required inputs left out.
  ['cloudflare-api-token', set({ 'cloudflare-api-token': '' })],
  ['secrets', set({ secrets: '' })],
  ['github-token', set({ 'github-token': '' })],
  ['current-token', set({ 'current-token': '', 'current-access-key-id': '' })],
  // Credentials.
  ['cloudflare-api-token', set({ 'cloudflare-api-token': 'Bearer abc' })],
  ['cloudflare-api-token', sb => ({ 'cloudflare-api-token': sb.current.value })],
  ['current-token', set({ 'current-token': 'two words' })],
  ['current-access-key-id', set({ 'current-access-key-id': 'not-hex' })],
  ['current-secret-access-key', set({ 'current-secret-access-key': 'abc123' })],
  // URLs.
  ['cloudflare-api-url', set({ 'cloudflare-api-url': 'not a url' })],
  ['cloudflare-api-url', set({ 'cloudflare-api-url': 'http://api.example.com/client/v4' })],
  ['cloudflare-api-url', set({ 'cloudflare-api-url': 'https://api.example.com/v4?x=1' })],
  ['r2-endpoint', set({ 'r2-endpoint': 'https://acct.r2.cloudflarestorage.com/bucket' })],
  ['r2-endpoint', set({ 'r2-endpoint': 'http://r2.example.com' })],
  ['smoke-urls', set({ 'smoke-urls': 'http://app.example.com/health' })],
  ['smoke-urls', set({ 'smoke-urls': 'https://app.example.com/ expect=999' })],
  ['smoke-urls', set({ 'smoke-urls': 'https://app.example.com/ colour=green' })],
  // Names and enums.
  ['account-id', set({ 'account-id': 'acme' })],
  ['account-id', set({ 'account-id': '', 'token-owner': 'account' })],
  ['token-owner', set({ 'token-owner': 'team' })],
  ['r2-probe', set({ 'r2-probe': 'sometimes' })],
  ['r2-bucket', set({ 'r2-bucket': 'Avatars_Bucket' })],
  ['least-privilege', set({ 'least-privilege': 'strict' })],
  ['revoke', set({ revoke: 'destroy' })],
  ['on-failure', set({ 'on-failure': 'retry' })],
  ['force', set({ force: 'yes' })],
  ['dry-run', set({ 'dry-run': 'maybe' })],
  ['state-variable', set({ 'state-variable': 'GITHUB_STATE' })],
  ['state-variable', set({ 'state-variable': '1STATE' })],
  ['token-name', set({ 'token-name': '{name} {colour}' })],
  // Durations.
  ['deploy-timeout', set({ 'deploy-timeout': '10x' })],
  ['deploy-timeout', set({ 'deploy-timeout': '0s' })],
  ['smoke-timeout', set({ 'smoke-timeout': 'soon' })],
  ['token-ttl', set({ 'token-ttl': 'forever' })],
  ['rotate-after', set({ 'rotate-after': '30 days' })],
  ['revoke-grace', set({ 'revoke-grace': 'later' })],
  // JSON.
  ['deploy-inputs', set({ 'deploy-inputs': '{"reason": ' })],
  ['deploy-inputs', set({ 'deploy-inputs': '["reason"]' })],
  ['deploy-inputs', set({ 'deploy-inputs': '{"reason": {"nested": true}}' })],
  ['deploy-inputs', set({ 'deploy-inputs': '{"1reason": "x"}' })],
  // Secret lines.
  ['secrets', set({ secrets: 'GITHUB_X=token' })],
  ['secrets', set({ secrets: '1ABC=token' })],
  ['secrets', set({ secrets: 'CLOUDFLARE_API_TOKEN token' })],
  ['secrets', set({ secrets: 'CLOUDFLARE_API_TOKEN=password' })],
  ['secrets', set({ secrets: 'R2_TOKEN=token\nr2_token=access-key-id' })],
  // Target lines.
  ['secret-targets', set({ 'secret-targets': 'repo:acme' })],
  ['secret-targets', set({ 'secret-targets': 'team:acme' })],
  ['secret-targets', set({ 'secret-targets': 'org:-acme' })],
  ['secret-targets', set({ 'secret-targets': 'repo\nrepo:acme/site' })],
  // Deploy.
  ['deploy-workflow', set({ 'deploy-workflow': '.github/workflows/deploy.yml' })],
  ['deploy-workflow', set({ 'deploy-workflow': 'deploy.txt' })],
  ['deploy-repository', set({ 'deploy-repository': 'acme' })],
  ['deploy-workflow', set({ 'deploy-workflow': '' })],
  ['deploy-repository', set({ 'deploy-workflow': 'none', 'deploy-repository': 'acme/site' })],
  ['deploy-ref', set({ 'deploy-ref': 'release..1' })],
  ['smoke-headers', set({ 'smoke-headers': 'X-Smoke-Check' })],
  ['smoke-headers', set({ 'smoke-urls': '' })]
]

/** A stand-in sandbox for naming the cases (values only from fixed test data). */
const fake = { current: { value: '<current-token>' } } as unknown as Sandbox

describe('bad inputs', () => {
  let sb: Sandbox
  let results: ActionResult[]
  beforeAll(async () => {
    sb = await startSandbox()
    // One sandbox for all: none of these runs may send it anything.
    results = await Promise.all(
      startAll(
        CASES.map(
          ([, overrides]) =>
            () =>
              runAction(sb, sandboxInputs(sb, overrides(sb)))
        ),
        4
      )
    )
  }, 120_000)
  afterAll(async () => {
    await sb?.stop()
  })

  it.each(
    CASES.map(([input, overrides], i) => [input, JSON.stringify(overrides(fake)), i] as const)
  )('%s %s: one ::error:: line naming the input, result failed', (input, _shown, i) => {
    const result = results[i]!
    expect(result.exitCode).toBe(1)
    const errors = result.stdout.split('\n').filter(l => l.startsWith('::error'))
    expect(errors).toHaveLength(1)
    expect(errors[0]).toContain(`Input '${input}'`)
    expect(result.stderr).toBe('')
    expect(result.outputs.result).toBe('failed')
    expect(findLeaks(result, sb.secretValues())).toEqual([])
  })

  it('the sandbox saw no request at all', () => {
    expect(sb.log.requests()).toEqual([])
  })
})

// ------------------------------------------------------------------ permissions

const PERMISSION_CASES: Array<[string, SandboxOptions, RegExp]> = [
  [
    'a management token that may only read API tokens',
    { managementPermissions: 'read' },
    /API Tokens Write/
  ],
  ['a GitHub token without secrets rights', { githubPermissions: { secrets: false } }, /Secrets/],
  [
    'a GitHub token without actions rights',
    { githubPermissions: { actions: false } },
    /Actions: write/
  ]
]

const permissionRuns = startAll(
  PERMISSION_CASES.map(([, options]) => async () => {
    const sb = await startSandbox(options)
    try {
      return { sb, result: await runAction(sb, sandboxInputs(sb)) }
    } finally {
      await sb.stop()
    }
  }),
  3
)

describe.each(PERMISSION_CASES.map(([name, , message], i) => [name, message, i] as const))(
  '%s',
  (_name, message, i) => {
    let sb: Sandbox
    let result: ActionResult
    beforeAll(async () => {
      ;({ sb, result } = await permissionRuns[i]!)
    }, 120_000)

    it('fails in preflight, naming the permission', () => {
      expect(result.exitCode).toBe(1)
      expect(result.outputs.result).toBe('failed')
      const errors = result.stdout.split('\n').filter(l => l.startsWith('::error'))
      expect(errors.length).toBeGreaterThan(0)
      expect(errors.join('\n')).toMatch(message)
      expect(errors.join('\n')).toMatch(/preflight/)
    })

    it('minted nothing and changed nothing', () => {
      expect(sb.log.requests({ service: 'cloudflare', method: 'POST' })).toEqual([])
      expect(sb.log.mutations()).toEqual([])
      expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
      expect(findLeaks(result, sb.secretValues(), [journalText(sb)])).toEqual([])
      expect(sb.log.violations).toEqual([])
    })
  }
)
