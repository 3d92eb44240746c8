/**
 * GitHub secrets, written as libsodium sealed boxes for repository, environment, organization
 * and Dependabot targets. Values and ciphertexts never reach a log or an error message; masking
 * them is the caller's job (each value is masked before its first use).
 *
 * Protocol (docs.github.com/rest/actions/secrets, "Create or update a repository secret"): GET the
 * target's public key, seal the value with `crypto_box_seal`, PUT `{encrypted_value, key_id}`;
 * the answer is 201 when the secret was created and 204 when it was updated.
 */
import type { GitHubTarget, SecretTarget, WorkerTarget } from '../model.js'
import type { WorkerSecret, WorkerSecrets } from '../cloudflare/workers.js'
import { register } from '../redact.js'
import {
  type GitHubClient,
  GITHUB_TOKEN_REFUSED,
  describeGitHubError,
  httpStatus
} from './client.js'

/** GitHub stores secret values of up to 48 KB (docs: "Secrets can store up to 48 KB"). */
const MAX_SECRET_BYTES = 48 * 1024

/**
 * libsodium, loaded on the first seal (its WebAssembly takes a while to start, and most runs that
 * fail, fail before they write a secret). The module's default export is the API.
 */
let libsodium: Promise<typeof import('libsodium-wrappers').default> | undefined
function loadSodium(): Promise<typeof import('libsodium-wrappers').default> {
  return (libsodium ??= import('libsodium-wrappers').then(async module => {
    await module.default.ready
    return module.default
  }))
}

/** Seals `value` for a GitHub public key; both the key and the result are base64 ORIGINAL. */
export async function sealSecret(value: string, publicKeyBase64: string): Promise<string> {
  const sodium = await loadSodium()
  let key: Uint8Array
  try {
    key = sodium.from_base64(publicKeyBase64, sodium.base64_variants.ORIGINAL)
  } catch {
    throw new Error('The public key GitHub returned is not valid base64.')
  }
  if (key.length !== sodium.crypto_box_PUBLICKEYBYTES) {
    throw new Error(
      `The public key GitHub returned has ${key.length} bytes; a sealed box needs ${sodium.crypto_box_PUBLICKEYBYTES}.`
    )
  }
  const sealed = sodium.crypto_box_seal(sodium.from_string(value), key)
  const ciphertext = sodium.to_base64(sealed, sodium.base64_variants.ORIGINAL)
  // A server's error answer may echo the request body: the ciphertext must never be printed.
  register(ciphertext)
  return ciphertext
}

export interface TargetKey {
  keyId: string
  key: string
}

/** What an org secret keeps across a rotation: who may use it. */
interface OrgSecretAccess {
  visibility: 'all' | 'private' | 'selected'
  selectedRepositoryIds?: number[]
}

/** A short, stable name for a target in logs, the summary and errors. */
export function describeTarget(target: SecretTarget): string {
  switch (target.kind) {
    case 'repo':
      return `repo ${target.owner}/${target.repo}`
    case 'env':
      return `env ${target.owner}/${target.repo}:${target.environment}`
    case 'org':
      return `org ${target.org}`
    case 'dependabot':
      return `dependabot ${target.owner}/${target.repo}`
    case 'worker':
      return `worker ${target.script}`
  }
}

/** The permission the github-token needs on a target, in the words of GitHub's settings pages. */
function permissionNeeded(target: GitHubTarget): string {
  switch (target.kind) {
    case 'repo':
      return `the repository permission "Secrets: write" on ${target.owner}/${target.repo} (a fine-grained PAT or a GitHub App token; GITHUB_TOKEN cannot write secrets)`
    case 'env':
      return `the repository permission "Environments: write" on ${target.owner}/${target.repo}, and the environment '${target.environment}' must exist`
    case 'org':
      return `the organization permission "Secrets: write" on ${target.org} (classic PAT: admin:org)`
    case 'dependabot':
      return `the repository permission "Dependabot secrets: write" on ${target.owner}/${target.repo}`
  }
}

/**
 * Deliberately without `cause`: Octokit's RequestError keeps the request, and for a PUT its body
 * is the ciphertext, which must not reach a log through someone printing the error chain. Only
 * the HTTP status is kept, to tell a bad github-token (the same for every target) from the rest.
 */
class TargetError extends Error {
  constructor(
    message: string,
    readonly status: number | undefined
  ) {
    super(message)
    this.name = 'TargetError'
  }
}

/**
 * `diagnosis` is what a follow-up read found out about a 404 (the environment or repository is
 * missing); without one, a 403 or 404 is put down to the permission the github-token lacks.
 */
function targetError(
  target: GitHubTarget,
  doing: string,
  error: unknown,
  diagnosis?: string
): TargetError {
  const status = httpStatus(error)
  const hint =
    status === 401
      ? GITHUB_TOKEN_REFUSED
      : status === 403 || status === 404
        ? `The github-token needs ${permissionNeeded(target)}.${diagnosis ? ` ${diagnosis}` : ''}`
        : 'Check the target and try again.'
  return new TargetError(
    `secret-targets line '${target.line}' (${describeTarget(target)}): ${doing} failed. ${describeGitHubError(error)}. ${hint}`,
    status
  )
}

function cacheKey(target: SecretTarget): string {
  // Owner, repository and organization names are case-insensitive on GitHub.
  return describeTarget(target).toLowerCase()
}

/**
 * Writes the secrets of every kind of target: GitHub's (sealed boxes) here, a Worker's through
 * `workers` (cloudflare/workers.ts), which the action builds with the management token.
 */
export class SecretWriter {
  private readonly keys = new Map<string, Promise<TargetKey>>()
  private readonly orgAccess = new Map<string, Promise<OrgSecretAccess>>()

  constructor(
    private readonly octokit: GitHubClient,
    private readonly workers?: WorkerSecrets
  ) {}

  /**
   * Reads (once per target per run, cached) the target's public key; for an org target also the
   * existing secret's visibility and selected repository ids when it exists. Errors name the
   * target line and the permission needed. Read-only.
   */
  async preflight(target: SecretTarget, secretNames: string[]): Promise<void> {
    if (target.kind === 'worker') return this.workerApi().preflight(target)
    await this.publicKey(target)
    if (target.kind === 'org') {
      for (const name of secretNames) await this.orgSecretAccess(target, name)
    }
  }

  /**
   * Preflight of every target, in order: all of them are checked, and one error names every line
   * that cannot be written, so that a run shows everything to fix at once. A github-token that
   * GitHub rejects (401) fails on the first target: every other would say the same. Read-only.
   */
  async preflightAll(targets: SecretTarget[], secretNames: string[]): Promise<void> {
    const failures: string[] = []
    for (const target of targets) {
      try {
        await this.preflight(target, secretNames)
      } catch (error) {
        if (error instanceof TargetError && error.status === 401) throw error
        failures.push(error instanceof Error ? error.message : String(error))
      }
    }
    if (failures.length === 1) throw new Error(failures[0])
    if (failures.length > 1) {
      throw new Error(
        `${failures.length} of ${targets.length} secret-targets cannot be written:\n${failures.join('\n')}`
      )
    }
  }

  /**
   * Seals and PUTs one secret; 'created' (201) or 'updated' (204). An org secret keeps its
   * visibility and selected repositories; a new one is 'private'.
   */
  async write(target: GitHubTarget, name: string, value: string): Promise<'created' | 'updated'> {
    if (Buffer.byteLength(value, 'utf8') > MAX_SECRET_BYTES) {
      throw new Error(`Secret ${name} is larger than GitHub's 48 KB limit.`)
    }
    const key = await this.publicKey(target)
    const access = target.kind === 'org' ? await this.orgSecretAccess(target, name) : undefined
    const sealed = { encrypted_value: await sealSecret(value, key.key), key_id: key.keyId }
    try {
      const { status } = await this.put(target, name, sealed, access)
      return status === 201 ? 'created' : 'updated'
    } catch (error) {
      throw targetError(target, `writing secret ${name}`, error)
    }
  }

  /** Every secret of a Worker in one bulk patch: one new version, deployed at once. */
  writeWorker(target: WorkerTarget, secrets: WorkerSecret[]): Promise<void> {
    return this.workerApi().write(target, secrets)
  }

  private workerApi(): WorkerSecrets {
    if (!this.workers) throw new Error('No Cloudflare client to write Worker secrets with.')
    return this.workers
  }

  /**
   * Whether a repository or environment secret of this name exists (a read of its metadata: name
   * and dates, never a value). Undefined when the github-token may not tell (403).
   */
  async exists(
    where: { owner: string; repo: string; environment?: string },
    name: string
  ): Promise<boolean | undefined> {
    try {
      if (where.environment === undefined) {
        await this.octokit.request('GET /repos/{owner}/{repo}/actions/secrets/{secret_name}', {
          owner: where.owner,
          repo: where.repo,
          secret_name: name
        })
      } else {
        await this.octokit.request(
          'GET /repos/{owner}/{repo}/environments/{environment_name}/secrets/{secret_name}',
          {
            owner: where.owner,
            repo: where.repo,
            environment_name: where.environment,
            secret_name: name
          }
        )
      }
      return true
    } catch (error) {
      const status = httpStatus(error)
      if (status === 404) return false
      if (status === 403) return undefined
      throw new Error(
        `Cannot tell whether ${where.environment === undefined ? `${where.owner}/${where.repo}` : `environment '${where.environment}' of ${where.owner}/${where.repo}`} holds a secret ${name}: ${describeGitHubError(error)}.`,
        // A GET: the request carries no value that the cause could expose.
        { cause: error }
      )
    }
  }

  private put(
    target: GitHubTarget,
    name: string,
    sealed: { encrypted_value: string; key_id: string },
    access: OrgSecretAccess | undefined
  ): Promise<{ status: number }> {
    switch (target.kind) {
      case 'repo':
        return this.octokit.request('PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}', {
          owner: target.owner,
          repo: target.repo,
          secret_name: name,
          ...sealed
        })
      case 'env':
        return this.octokit.request(
          'PUT /repos/{owner}/{repo}/environments/{environment_name}/secrets/{secret_name}',
          {
            owner: target.owner,
            repo: target.repo,
            environment_name: target.environment,
            secret_name: name,
            ...sealed
          }
        )
      case 'org': {
        const visibility = access?.visibility ?? 'private'
        return this.octokit.request('PUT /orgs/{org}/actions/secrets/{secret_name}', {
          org: target.org,
          secret_name: name,
          ...sealed,
          visibility,
          ...(visibility === 'selected'
            ? { selected_repository_ids: access?.selectedRepositoryIds ?? [] }
            : {})
        })
      }
      case 'dependabot':
        return this.octokit.request('PUT /repos/{owner}/{repo}/dependabot/secrets/{secret_name}', {
          owner: target.owner,
          repo: target.repo,
          secret_name: name,
          ...sealed
        })
    }
  }

  private publicKey(target: GitHubTarget): Promise<TargetKey> {
    const id = cacheKey(target)
    let key = this.keys.get(id)
    if (!key) {
      key = this.readPublicKey(target)
      this.keys.set(id, key)
      // A failed read is not cached: the run fails on it anyway, and a caller may retry.
      key.catch(() => this.keys.delete(id))
    }
    return key
  }

  private async readPublicKey(target: GitHubTarget): Promise<TargetKey> {
    try {
      const { data } = await this.getPublicKey(target)
      return { keyId: data.key_id, key: data.key }
    } catch (error) {
      const diagnosis = httpStatus(error) === 404 ? await this.diagnoseNotFound(target) : undefined
      throw targetError(target, 'reading the public key', error, diagnosis)
    }
  }

  /**
   * Why a target's public key was not found: its environment or its repository is missing (or
   * hidden from the github-token, which GitHub answers with 404 too). Both reads need only read
   * access to the repository ("Anyone with read access to the repository can use this endpoint",
   * docs.github.com/rest/deployments/environments#get-an-environment). Undefined when it cannot
   * tell. An organization is not read (no such endpoint is needed otherwise): its 404 is explained.
   */
  private async diagnoseNotFound(target: GitHubTarget): Promise<string | undefined> {
    if (target.kind === 'org') {
      return `The organization ${target.org} was not found, or the github-token cannot see it (a fine-grained PAT must have it as its resource owner; a GitHub App must be installed on it).`
    }
    const repository = `${target.owner}/${target.repo}`
    const found = async (read: () => Promise<unknown>): Promise<boolean | undefined> => {
      try {
        await read()
        return true
      } catch (error) {
        return httpStatus(error) === 404 ? false : undefined
      }
    }
    const repoFound = await found(() =>
      this.octokit.request('GET /repos/{owner}/{repo}', { owner: target.owner, repo: target.repo })
    )
    if (repoFound === false) {
      return `The repository ${repository} was not found, or the github-token cannot see it (a fine-grained PAT must list it under "Repository access"; a GitHub App must be installed on it).`
    }
    if (target.kind !== 'env' || repoFound === undefined) return undefined
    const envFound = await found(() =>
      this.octokit.request('GET /repos/{owner}/{repo}/environments/{environment_name}', {
        owner: target.owner,
        repo: target.repo,
        environment_name: target.environment
      })
    )
    return envFound === false
      ? `It does not exist in ${repository}: create it (Settings → Environments) or correct the line.`
      : undefined
  }

  private getPublicKey(target: GitHubTarget): Promise<{ data: { key_id: string; key: string } }> {
    switch (target.kind) {
      case 'repo':
        return this.octokit.request('GET /repos/{owner}/{repo}/actions/secrets/public-key', {
          owner: target.owner,
          repo: target.repo
        })
      case 'env':
        return this.octokit.request(
          'GET /repos/{owner}/{repo}/environments/{environment_name}/secrets/public-key',
          { owner: target.owner, repo: target.repo, environment_name: target.environment }
        )
      case 'org':
        return this.octokit.request('GET /orgs/{org}/actions/secrets/public-key', {
          org: target.org
        })
      case 'dependabot':
        return this.octokit.request('GET /repos/{owner}/{repo}/dependabot/secrets/public-key', {
          owner: target.owner,
          repo: target.repo
        })
    }
  }

  private orgSecretAccess(
    target: Extract<SecretTarget, { kind: 'org' }>,
    name: string
  ): Promise<OrgSecretAccess> {
    // Secret names are case-insensitive on GitHub.
    const id = `${cacheKey(target)}/${name.toUpperCase()}`
    let access = this.orgAccess.get(id)
    if (!access) {
      access = this.readOrgSecretAccess(target, name)
      this.orgAccess.set(id, access)
      access.catch(() => this.orgAccess.delete(id))
    }
    return access
  }

  private async readOrgSecretAccess(
    target: Extract<SecretTarget, { kind: 'org' }>,
    name: string
  ): Promise<OrgSecretAccess> {
    let visibility: OrgSecretAccess['visibility']
    try {
      const { data } = await this.octokit.request('GET /orgs/{org}/actions/secrets/{secret_name}', {
        org: target.org,
        secret_name: name
      })
      visibility = data.visibility
    } catch (error) {
      // No such secret yet: it will be created, visible to private repositories only.
      if (httpStatus(error) === 404) return { visibility: 'private' }
      throw targetError(target, `reading the visibility of secret ${name}`, error)
    }
    if (visibility !== 'selected') return { visibility }
    try {
      const repositories = await this.octokit.paginate(
        'GET /orgs/{org}/actions/secrets/{secret_name}/repositories',
        { org: target.org, secret_name: name, per_page: 100 }
      )
      return { visibility, selectedRepositoryIds: repositories.map(r => r.id) }
    } catch (error) {
      throw targetError(target, `reading the selected repositories of secret ${name}`, error)
    }
  }
}
