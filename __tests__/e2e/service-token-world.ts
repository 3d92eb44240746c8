/**
 * Shared pieces of the service token scenarios (not a test file itself): the world
 * (`startSandbox({ credential: 'access-service-token' })`), the secrets as GitHub decrypts them,
 * the ordered mutating requests as a reader checks them, the journal, and the leak scan.
 */
import { startSandbox, type Sandbox, type SandboxOptions } from '../../sandbox/index.js'
import { runAction, serviceTokenInputs, type ActionResult } from '../../sandbox/runner.js'
import { apiMutations, expectNoLeaks, secretScope } from './scenario.js'

export const ACCESS_JOURNAL = 'R2_ROTATION_STATE_ACCESS'

export function startServiceTokenWorld(options: SandboxOptions = {}): Promise<Sandbox> {
  return startSandbox({ ...options, credential: 'access-service-token' })
}

/** Both Access secrets as they are now (decrypted by the simulator). */
export function accessSecrets(sb: Sandbox): { clientId?: string; clientSecret?: string } {
  const scope = secretScope(sb)
  const names = sb.accessSecretNames!
  return {
    clientId: sb.github.getSecret(scope, names.clientId),
    clientSecret: sb.github.getSecret(scope, names.clientSecret)
  }
}

/** Every client secret issued so far, in order: the seeded one first. */
export function issuedSecrets(sb: Sandbox): string[] {
  return sb.cloudflare.access.secretValues()
}

/** A secret's role: `{old}` (seeded), `{new}` (first rotate), `{new#2}`… */
export function secretRole(sb: Sandbox, value: string | undefined): string {
  if (value === sb.serviceToken!.clientId) return '{client-id}'
  const i = issuedSecrets(sb).indexOf(value ?? '')
  if (i < 0) return '{unknown value}'
  return i === 0 ? '{old}' : i === 1 ? '{new}' : `{new#${i}}`
}

export function accessJournal(sb: Sandbox): Record<string, unknown> {
  return JSON.parse(sb.github.getVariable(sb.repository, ACCESS_JOURNAL) ?? '{}') as Record<
    string,
    unknown
  >
}

/**
 * The ordered mutating requests to Cloudflare and GitHub, one line each:
 *
 *   POST variable R2_ROTATION_STATE_ACCESS phase=rotating
 *   POST /accounts/{account}/access/service_tokens/{token}/rotate grace=open
 *   PUT secret repo:acme/site ACCESS_CLIENT_SECRET ← {new}
 *   PUT /accounts/{account}/access/service_tokens/{token} grace=closed
 */
export function accessMutations(sb: Sandbox, afterSeq = 0): string[] {
  const tokenId = sb.serviceToken!.id
  return apiMutations(sb.log.requests().filter(e => e.seq > afterSeq)).map(entry => {
    const path = entry.path.split('?')[0]!
    const failed =
      entry.faulted === true && (entry.status ?? 0) < 300
        ? entry.status === 0
          ? ' → no answer'
          : ', answer lost'
        : entry.status === undefined || entry.status >= 300
          ? ` → ${entry.status ?? 'no answer'}`
          : ''
    const body = (entry.body ?? {}) as Record<string, unknown>
    if (entry.service === 'cloudflare') {
      const cf = path
        .replace(/^\/client\/v4/, '')
        .replace(`/accounts/${sb.accountId}/`, '/accounts/{account}/')
        .replace(tokenId, '{token}')
      const until = body.previous_client_secret_expires_at
      const grace =
        typeof until === 'string'
          ? Date.parse(until) <= entry.at + sb.cloudflare.skewMs + 1000
            ? ' grace=closed'
            : ' grace=open'
          : ''
      return `${entry.method} ${cf}${grace}${failed}`
    }
    const variable = /\/actions\/variables(?:\/([^/]+))?$/.exec(path)
    if (variable) {
      const name = variable[1] ?? String(body.name)
      const phase = name.endsWith('_LOCK')
        ? undefined
        : (JSON.parse(String(body.value ?? '{}')) as { phase?: string }).phase
      return `${entry.method} variable ${name}${phase ? ` phase=${phase}` : ''}${failed}`
    }
    const secret = /^\/repos\/([^/]+\/[^/]+)\/actions\/secrets\/([^/]+)$/.exec(path)
    if (secret) {
      const write = sb.github.secretWrites.find(w => w.ciphertext === body.encrypted_value)
      return `PUT secret repo:${secret[1]} ${secret[2]} ← ${secretRole(sb, write?.plaintext)}${failed}`
    }
    if (path.endsWith('/dispatches')) return `POST dispatch${failed}`
    return `${entry.method} ${path}${failed}`
  })
}

/** Whether Access admits the seeded client id with `secret` now. */
export function admits(sb: Sandbox, secret: string | undefined): boolean {
  return sb.cloudflare.access.verifyClientCredentials(sb.serviceToken!.clientId, secret).ok
}

/** The Access app's refused requests (the deployed client's and the action's checks alike). */
export function accessFailures(sb: Sandbox): Array<{ at: number; reason?: string }> {
  return sb
    .accessApp!.failures()
    .map(f => ({ at: f.at, ...(f.reason ? { reason: f.reason } : {}) }))
}

/** Runs the action with the service token inputs (current-client-secret read from the secret now). */
export function runServiceToken(
  sb: Sandbox,
  overrides: Record<string, string> = {},
  options: Parameters<typeof runAction>[2] = {}
): Promise<ActionResult> {
  return runAction(sb, serviceTokenInputs(sb, overrides), options)
}

/** No value leaked: the scan covers every client secret issued (lost ones too). */
export function expectNoAccessLeaks(sb: Sandbox, results: ActionResult[]): void {
  expect(sb.secretValues()).toEqual(expect.arrayContaining(issuedSecrets(sb)))
  expectNoLeaks(sb, results)
  const journal = sb.github.getVariable(sb.repository, ACCESS_JOURNAL) ?? ''
  for (const value of issuedSecrets(sb)) expect(journal.includes(value)).toBe(false)
}
