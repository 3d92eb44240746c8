/**
 * Sealed-box secrets against the GitHub simulator (real libsodium key pairs; it decrypts what it
 * receives): every target kind, one public-key read per target, org visibility kept, errors that
 * name the target and the permission, and no value or ciphertext in any error.
 */
import sodium from 'libsodium-wrappers'
import { RequestLog } from '../sandbox/log.js'
import { GitHubSim } from '../sandbox/github.js'
import { createGitHubClient, type GitHubClient } from '../src/github/client.js'
import { SecretWriter, describeTarget, sealSecret } from '../src/github/secrets.js'
import type { SecretTarget } from '../src/model.js'

const TOKEN = 'github_pat_secrets_test'
const NO_SECRETS = 'github_pat_no_secrets'
const quiet = { info: () => {}, warning: () => {}, debug: () => {} }

const repoTarget: SecretTarget = { kind: 'repo', owner: 'acme', repo: 'site', line: 'repo' }
const envTarget: SecretTarget = {
  kind: 'env',
  owner: 'acme',
  repo: 'site',
  environment: 'production',
  line: 'env:production'
}
const orgTarget: SecretTarget = { kind: 'org', org: 'acme', line: 'org:acme' }
const dependabotTarget: SecretTarget = {
  kind: 'dependabot',
  owner: 'acme',
  repo: 'site',
  line: 'dependabot:acme/site'
}

let log: RequestLog
let sim: GitHubSim
let github: GitHubClient

beforeEach(async () => {
  log = new RequestLog()
  sim = new GitHubSim(log)
  sim.addToken(TOKEN)
  sim.addToken(NO_SECRETS, { secrets: false })
  sim.addOrg('acme')
  sim.addRepo('acme/site', { environments: ['production'], id: 111 })
  await sim.start()
  github = createGitHubClient({ token: TOKEN, baseUrl: sim.url, log: quiet })
})

afterEach(async () => {
  await sim.stop()
})

/** Contract violations in what we sent (the simulator's own answers are its business). */
function requestViolations(): string[] {
  return log.violations.filter(v => /: request: |no such operation/.test(v))
}

function gets(pathPattern: RegExp): number {
  return log.requests({ method: 'GET' }).filter(r => pathPattern.test(r.path)).length
}

describe('sealSecret', () => {
  it('seals a value that only the private key opens', async () => {
    await sodium.ready
    const pair = sodium.crypto_box_keypair()
    const publicKey = sodium.to_base64(pair.publicKey, sodium.base64_variants.ORIGINAL)
    const sealed = await sealSecret('cfut_secret-token-value', publicKey)
    expect(sealed).toMatch(/^[A-Za-z0-9+/]+=*$/)
    const opened = sodium.crypto_box_seal_open(
      sodium.from_base64(sealed, sodium.base64_variants.ORIGINAL),
      pair.publicKey,
      pair.privateKey
    )
    expect(sodium.to_string(opened)).toBe('cfut_secret-token-value')
    // A sealed box uses a fresh ephemeral key each time.
    expect(await sealSecret('cfut_secret-token-value', publicKey)).not.toBe(sealed)
  })

  it('rejects a key that is not a 32-byte base64 key', async () => {
    await expect(sealSecret('v', 'not base64!')).rejects.toThrow(/not valid base64/)
    await expect(sealSecret('v', Buffer.alloc(16).toString('base64'))).rejects.toThrow(
      /16 bytes; a sealed box needs 32/
    )
  })
})

describe('describeTarget', () => {
  it('names each kind of target', () => {
    expect(describeTarget(repoTarget)).toBe('repo acme/site')
    expect(describeTarget(envTarget)).toBe('env acme/site:production')
    expect(describeTarget(orgTarget)).toBe('org acme')
    expect(describeTarget(dependabotTarget)).toBe('dependabot acme/site')
  })
})

describe('SecretWriter', () => {
  it('reads a repository public key once for several secrets and writes values GitHub can open', async () => {
    const writer = new SecretWriter(github)
    await writer.preflight(repoTarget, ['R2_TOKEN', 'R2_ACCESS_KEY_ID', 'R2_SECRET_ACCESS_KEY'])
    expect(await writer.write(repoTarget, 'R2_TOKEN', 'token-value-1')).toBe('created')
    expect(await writer.write(repoTarget, 'R2_ACCESS_KEY_ID', 'key-id-1')).toBe('created')
    expect(await writer.write(repoTarget, 'R2_SECRET_ACCESS_KEY', 'secret-1')).toBe('created')
    expect(await writer.write(repoTarget, 'r2_token', 'token-value-2')).toBe('updated')

    expect(gets(/\/actions\/secrets\/public-key$/)).toBe(1)
    expect(sim.getSecret({ kind: 'repo', repo: 'acme/site' }, 'R2_TOKEN')).toBe('token-value-2')
    expect(sim.getSecret({ kind: 'repo', repo: 'acme/site' }, 'R2_ACCESS_KEY_ID')).toBe('key-id-1')
    expect(requestViolations()).toEqual([])
  })

  it('reads the key lazily when write comes without preflight, and only once under concurrency', async () => {
    const writer = new SecretWriter(github)
    await Promise.all([
      writer.write(repoTarget, 'A_TOKEN', 'a'),
      writer.write(repoTarget, 'B_TOKEN', 'b')
    ])
    expect(gets(/\/actions\/secrets\/public-key$/)).toBe(1)
    expect(sim.getSecret({ kind: 'repo', repo: 'acme/site' }, 'B_TOKEN')).toBe('b')
  })

  it('writes environment secrets through the environment path', async () => {
    const writer = new SecretWriter(github)
    await writer.preflight(envTarget, ['R2_TOKEN'])
    expect(await writer.write(envTarget, 'R2_TOKEN', 'env-value')).toBe('created')
    expect(gets(/^\/repos\/acme\/site\/environments\/production\/secrets\/public-key$/)).toBe(1)
    expect(log.requests({ method: 'PUT' }).map(r => r.path)).toEqual([
      '/repos/acme/site/environments/production/secrets/R2_TOKEN'
    ])
    expect(
      sim.getSecret({ kind: 'env', repo: 'acme/site', environment: 'production' }, 'R2_TOKEN')
    ).toBe('env-value')
    expect(sim.getSecret({ kind: 'repo', repo: 'acme/site' }, 'R2_TOKEN')).toBeUndefined()
  })

  it('keeps an org secret visible to the same selected repositories; a new one is private', async () => {
    sim.setSecret({ kind: 'org', org: 'acme' }, 'R2_TOKEN', 'old', {
      visibility: 'selected',
      selectedRepositoryIds: [111]
    })
    sim.setSecret({ kind: 'org', org: 'acme' }, 'SHARED_TOKEN', 'old', { visibility: 'all' })
    const writer = new SecretWriter(github)
    await writer.preflight(orgTarget, ['R2_TOKEN', 'SHARED_TOKEN', 'NEW_TOKEN'])
    const mutationsBefore = log.mutations().length
    expect(mutationsBefore).toBe(0)

    expect(await writer.write(orgTarget, 'R2_TOKEN', 'new-r2')).toBe('updated')
    expect(await writer.write(orgTarget, 'SHARED_TOKEN', 'new-shared')).toBe('updated')
    expect(await writer.write(orgTarget, 'NEW_TOKEN', 'brand-new')).toBe('created')

    const bodies = log.requests({ method: 'PUT' }).map(r => {
      const { visibility, selected_repository_ids } = r.body as Record<string, unknown>
      return { path: r.path, visibility, selected_repository_ids }
    })
    expect(bodies).toEqual([
      {
        path: '/orgs/acme/actions/secrets/R2_TOKEN',
        visibility: 'selected',
        selected_repository_ids: [111]
      },
      {
        path: '/orgs/acme/actions/secrets/SHARED_TOKEN',
        visibility: 'all',
        selected_repository_ids: undefined
      },
      {
        path: '/orgs/acme/actions/secrets/NEW_TOKEN',
        visibility: 'private',
        selected_repository_ids: undefined
      }
    ])
    expect(sim.secretsForRun('acme/site').R2_TOKEN).toBe('new-r2')
    // One public key, one visibility read per secret, one repository list for the selected one.
    expect(gets(/^\/orgs\/acme\/actions\/secrets\/public-key$/)).toBe(1)
    expect(gets(/^\/orgs\/acme\/actions\/secrets\/R2_TOKEN\/repositories/)).toBe(1)
    expect(requestViolations()).toEqual([])
  })

  it('writes Dependabot secrets with the Dependabot key', async () => {
    const writer = new SecretWriter(github)
    expect(await writer.write(dependabotTarget, 'R2_TOKEN', 'dep-value')).toBe('created')
    expect(gets(/^\/repos\/acme\/site\/dependabot\/secrets\/public-key$/)).toBe(1)
    expect(sim.getSecret({ kind: 'dependabot', repo: 'acme/site' }, 'R2_TOKEN')).toBe('dep-value')
  })

  it('names the target line and the permission when the token may not write secrets', async () => {
    const writer = new SecretWriter(
      createGitHubClient({ token: NO_SECRETS, baseUrl: sim.url, log: quiet })
    )
    const error = await writer.preflight(repoTarget, ['R2_TOKEN']).then(
      () => undefined,
      (e: Error) => e
    )
    expect(error?.message).toMatch(
      /secret-targets line 'repo' \(repo acme\/site\): reading the public key failed/
    )
    expect(error?.message).toMatch(/GitHub answered 403/)
    expect(error?.message).toMatch(/"Secrets: write" on acme\/site/)
  })

  it('says the environment must exist when its key cannot be read', async () => {
    const writer = new SecretWriter(github)
    const missing: SecretTarget = { ...envTarget, environment: 'staging', line: 'env:staging' }
    await expect(writer.preflight(missing, ['R2_TOKEN'])).rejects.toThrow(
      /env:staging.*GitHub answered 404.*"Environments: write".*'staging' must exist/s
    )
  })

  it('never puts a value or a ciphertext into an error', async () => {
    const writer = new SecretWriter(github)
    await writer.preflight(repoTarget, ['R2_TOKEN'])
    sim.service.inject({ method: 'PUT', path: /secrets\/R2_TOKEN$/, status: 422 })
    const error = await writer.write(repoTarget, 'R2_TOKEN', 'very-secret-value').then(
      () => undefined,
      (e: Error) => e
    )
    expect(error?.message).toMatch(/writing secret R2_TOKEN failed\. GitHub answered 422/)
    const sent = (log.requests({ method: 'PUT' })[0]!.body as { encrypted_value: string })
      .encrypted_value
    expect(error?.message).not.toContain('very-secret-value')
    expect(error?.message).not.toContain(sent)
  })

  it('refuses a value over GitHub’s 48 KB limit before sending anything', async () => {
    const writer = new SecretWriter(github)
    await expect(writer.write(repoTarget, 'BIG', 'x'.repeat(48 * 1024 + 1))).rejects.toThrow(
      /larger than GitHub's 48 KB limit/
    )
    expect(log.requests()).toHaveLength(0)
  })
})
