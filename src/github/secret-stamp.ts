/**
 * Reading a secret's write back: its metadata (name and dates, never a value) and GitHub's time
 * with it. A write is confirmed when the secret exists afterwards and its `updated_at` is no
 * earlier than GitHub's time just before the write (whole seconds, as GitHub gives both).
 */
import type { SecretTarget } from '../model.js'
import { type GitHubClient, describeGitHubError, httpStatus } from './client.js'
import { describeTarget } from './secrets.js'

export interface SecretStamp {
  /** The secret's `updated_at`; undefined when it does not exist. */
  updatedAt?: string
  /** GitHub's time when it answered (its `Date` header), in epoch milliseconds. */
  serverTime?: number
}

/** The secret's `updated_at` and GitHub's time, read with one GET of its metadata. */
export async function readSecretStamp(
  github: GitHubClient,
  target: SecretTarget,
  name: string
): Promise<SecretStamp> {
  try {
    const { data, headers } = await getMetadata(github, target, name)
    return { updatedAt: data.updated_at, ...serverTime(headers) }
  } catch (error) {
    if (httpStatus(error) === 404) {
      const headers = (error as { response?: { headers?: Record<string, unknown> } }).response
        ?.headers
      return serverTime(headers ?? {})
    }
    throw new Error(
      `secret-targets line '${target.line}' (${describeTarget(target)}): reading secret ${name} back failed. ${describeGitHubError(error)}.`,
      // A GET: the request carries no value that the cause could expose.
      { cause: error }
    )
  }
}

/** Whether `after` shows a write made after `before` was read. */
export function confirmsWrite(before: SecretStamp, after: SecretStamp): boolean {
  if (after.updatedAt === undefined) return false
  const updated = Date.parse(after.updatedAt)
  if (Number.isNaN(updated)) return false
  const since =
    before.serverTime ?? (before.updatedAt !== undefined ? Date.parse(before.updatedAt) : 0)
  return updated >= Math.floor(since / 1000) * 1000
}

function serverTime(headers: Record<string, unknown>): { serverTime?: number } {
  const date = Date.parse(String(headers.date ?? ''))
  return Number.isNaN(date) ? {} : { serverTime: date }
}

function getMetadata(
  github: GitHubClient,
  target: SecretTarget,
  name: string
): Promise<{ data: { updated_at: string }; headers: Record<string, unknown> }> {
  if (target.kind === 'repo') {
    return github.request('GET /repos/{owner}/{repo}/actions/secrets/{secret_name}', {
      owner: target.owner,
      repo: target.repo,
      secret_name: name
    })
  }
  if (target.kind === 'env') {
    return github.request(
      'GET /repos/{owner}/{repo}/environments/{environment_name}/secrets/{secret_name}',
      {
        owner: target.owner,
        repo: target.repo,
        environment_name: target.environment,
        secret_name: name
      }
    )
  }
  if (target.kind === 'org') {
    return github.request('GET /orgs/{org}/actions/secrets/{secret_name}', {
      org: target.org,
      secret_name: name
    })
  }
  if (target.kind === 'dependabot') {
    return github.request('GET /repos/{owner}/{repo}/dependabot/secrets/{secret_name}', {
      owner: target.owner,
      repo: target.repo,
      secret_name: name
    })
  }
  throw new Error(`${describeTarget(target)}: a secret there cannot be read back.`)
}
