/**
 * R2 facts as pure functions: S3 credentials derived from a token, bucket resource names, the S3
 * endpoint, and the least-privilege classification of a token's policies (the Security Matrix
 * in the action's contract). No network.
 */
import type { Jurisdiction, PolicyScope, ScopeClass, TokenPolicy, TokenScope } from '../model.js'
import { sha256Hex } from '../redact.js'

export type { Jurisdiction, PolicyScope, ScopeClass, TokenScope } from '../model.js'
export { sha256Hex }

export interface S3Credentials {
  accessKeyId: string
  secretAccessKey: string
}

/**
 * Access Key ID = token id; Secret Access Key = lowercase hex SHA-256 of the token value (UTF-8)
 * (developers.cloudflare.com/r2/api/tokens/, "Get S3 API credentials from an API token").
 */
export function deriveS3Credentials(token: { id: string; value: string }): S3Credentials {
  return { accessKeyId: token.id, secretAccessKey: sha256Hex(token.value) }
}

const BUCKET_PREFIX = 'com.cloudflare.edge.r2.bucket.'
const ACCOUNT_PREFIX = 'com.cloudflare.api.account.'
const ALL_BUCKETS_KEY = `${BUCKET_PREFIX}*`

/** `com.cloudflare.edge.r2.bucket.<account>_<jurisdiction>_<bucket>` */
export function bucketResource(
  accountId: string,
  bucket: string,
  jurisdiction: Jurisdiction = 'default'
): string {
  return `${BUCKET_PREFIX}${accountId}_${jurisdiction}_${bucket}`
}

// Account ids are hex (no `_`) and bucket names hold only lowercase letters, digits and hyphens,
// so the first two underscores split the key unambiguously.
const BUCKET_RESOURCE = /^com\.cloudflare\.edge\.r2\.bucket\.([^_]+)_(default|eu|fedramp)_(.+)$/

export function parseBucketResource(
  key: string
): { accountId: string; jurisdiction: Jurisdiction; bucket: string } | undefined {
  const match = BUCKET_RESOURCE.exec(key)
  if (!match) return undefined
  const [, accountId, jurisdiction, bucket] = match
  if (!accountId || !bucket || bucket === '*') return undefined
  return { accountId, jurisdiction: jurisdiction as Jurisdiction, bucket }
}

/**
 * `https://<account>.r2.cloudflarestorage.com`; jurisdictional buckets are reachable only through
 * `<account>.eu.` / `<account>.fedramp.` (developers.cloudflare.com/r2/api/tokens/). `override`
 * (input `r2-endpoint`) wins.
 */
export function r2Endpoint(
  accountId: string,
  jurisdiction: Jurisdiction = 'default',
  override?: string
): string {
  if (override) return override.replace(/\/+$/, '')
  const region = jurisdiction === 'default' ? '' : `${jurisdiction}.`
  return `https://${accountId}.${region}r2.cloudflarestorage.com`
}

export interface ClassifyOptions {
  /** The bucket the app uses (input `r2-bucket`), to spell out the narrower resource. */
  bucket?: string
}

type R2Group = { level: 'admin' | 'object'; write: boolean }

/**
 * The four R2 permission groups by name. Cloudflare renamed "Edit" to "Write" in the dashboard;
 * both spellings are accepted.
 */
const R2_GROUPS_BY_NAME = new Map<string, R2Group>([
  ['workers r2 storage write', { level: 'admin', write: true }],
  ['workers r2 storage edit', { level: 'admin', write: true }],
  ['workers r2 storage read', { level: 'admin', write: false }],
  ['workers r2 storage bucket item write', { level: 'object', write: true }],
  ['workers r2 storage bucket item edit', { level: 'object', write: true }],
  ['workers r2 storage bucket item read', { level: 'object', write: false }]
])

/**
 * Documented ids (api-facts), used only when neither the permission-groups API nor the policy
 * names a group: ids have been reported to change, so names come first.
 */
const R2_GROUP_NAMES_BY_ID = new Map<string, string>([
  ['bf7481a1826f439697cb59a20b22293e', 'Workers R2 Storage Write'],
  ['b4992e1108244f5d8bfbd5744320c2e1', 'Workers R2 Storage Read'],
  ['2efd5506f9c8494dacb1fa10a3e7d5b6', 'Workers R2 Storage Bucket Item Write'],
  ['6a018a9f2fc74eb6b293b0c548f38b39', 'Workers R2 Storage Bucket Item Read']
])

/** What one resource entry covers: one bucket, or every bucket of an account (`*` = all accounts). */
type Target =
  | { kind: 'bucket'; accountId: string; jurisdiction: Jurisdiction; bucket: string }
  | { kind: 'account'; accountId: string }

function groupName(
  group: { id: string; name?: string },
  groupNames: Map<string, string>
): string | undefined {
  return groupNames.get(group.id) ?? group.name ?? R2_GROUP_NAMES_BY_ID.get(group.id)
}

function r2Group(name: string | undefined): R2Group | undefined {
  return name === undefined ? undefined : R2_GROUPS_BY_NAME.get(name.trim().toLowerCase())
}

/**
 * The R2 targets a policy's resources name. Forms (api-facts, "Resources"):
 * one bucket `com.cloudflare.edge.r2.bucket.<acct>_<jur>_<bucket>`; all buckets
 * `{"com.cloudflare.api.account.<acct>": {"com.cloudflare.edge.r2.bucket.*": "*"}}`; account
 * level `com.cloudflare.api.account.<acct>` (which covers every bucket); `…account.*` = every
 * account. A bucket nested under its account is read as that bucket. Zone resources name no bucket.
 */
function targetsOf(resources: Record<string, unknown>): Target[] {
  const targets: Target[] = []
  for (const [key, value] of Object.entries(resources)) {
    const bucket = parseBucketResource(key)
    if (bucket) {
      targets.push({ kind: 'bucket', ...bucket })
      continue
    }
    const accountId = accountOfKey(key)
    if (accountId === undefined) continue
    if (value !== null && typeof value === 'object') {
      for (const nestedKey of Object.keys(value)) {
        const nested = parseBucketResource(nestedKey)
        if (nested) targets.push({ kind: 'bucket', ...nested })
        else if (nestedKey === ALL_BUCKETS_KEY) targets.push({ kind: 'account', accountId })
      }
    } else {
      targets.push({ kind: 'account', accountId })
    }
  }
  return targets
}

/** `com.cloudflare.api.account.<id>` → id (`*` for all accounts); zone keys are not accounts. */
function accountOfKey(key: string): string | undefined {
  if (!key.startsWith(ACCOUNT_PREFIX)) return undefined
  const rest = key.slice(ACCOUNT_PREFIX.length)
  if (rest === '' || rest.includes('.')) return undefined
  return rest
}

function covers(denied: Target, allowed: Target): boolean {
  if (denied.kind === 'account') {
    return denied.accountId === '*' || denied.accountId === allowed.accountId
  }
  return (
    allowed.kind === 'bucket' &&
    allowed.accountId === denied.accountId &&
    allowed.jurisdiction === denied.jurisdiction &&
    allowed.bucket === denied.bucket
  )
}

/**
 * Classify a token's R2 access from its policies and a permission-group id→name map (names
 * resolved through the permission-groups API; the policy's own group names and the documented
 * ids are fallbacks). Classes follow the Security Matrix, strongest first: admin-read-write,
 * admin-read, object-read-write, object-read.
 *
 * Deny policies: a deny of a Write group removes read and write on its targets (the group holds
 * both), a deny of a Read group removes read. A deny removes an allowed target only when it covers
 * it entirely (the same bucket, or every bucket of that account); a deny of some buckets leaves an
 * account-wide grant account-wide, so the least-privilege warning stays.
 *
 * Warnings follow Cloudflare's guidance for R2 tokens (developers.cloudflare.com/r2/api/tokens/):
 * the narrowest permission (object-level Bucket Item groups rather than the admin Storage groups)
 * on the specific buckets the app uses, never every bucket of the account.
 */
export function classifyScope(
  policies: TokenPolicy[],
  groupNames: Map<string, string>,
  options: ClassifyOptions = {}
): TokenScope {
  type Grant = { policy: number; name: string; group: R2Group; targets: Target[] }
  const allows: Grant[] = []
  const denyRead: Target[] = []
  const denyWrite: Target[] = []
  const other = new Set<string>()
  const rows: PolicyScope[] = []

  policies.forEach((policy, index) => {
    const targets = targetsOf(policy.resources)
    const names: string[] = []
    const r2Groups: R2Group[] = []
    for (const group of policy.permission_groups) {
      const name = groupName(group, groupNames)
      names.push(name ?? group.id)
      const r2 = r2Group(name)
      if (!r2) {
        if (policy.effect === 'allow') other.add(name ?? group.id)
        continue
      }
      r2Groups.push(r2)
      if (policy.effect === 'allow') {
        allows.push({ policy: index, name: name ?? group.id, group: r2, targets })
      } else {
        denyRead.push(...targets)
        if (r2.write) denyWrite.push(...targets)
      }
    }
    rows.push({
      ref: policyRef(policy, index),
      effect: policy.effect,
      permissions: names,
      ...(r2Groups.length > 0 ? { class: strongestClass(r2Groups) } : {}),
      reach: describeReach(policy.resources, targets)
    })
  })

  const survives = (target: Target, denied: Target[]): boolean =>
    !denied.some(d => covers(d, target))
  // Per grant, the targets still readable / writable after the denies.
  const effective = allows.map(grant => ({
    ...grant,
    read: grant.targets.filter(t => survives(t, denyRead)),
    write: grant.group.write ? grant.targets.filter(t => survives(t, denyWrite)) : []
  }))
  const live = effective.filter(e => e.read.length > 0 || e.write.length > 0)

  // The class goes by what survived the denies: a grant whose writes are all denied only reads.
  const cls =
    live.length > 0
      ? strongestClass(live.map(e => ({ level: e.group.level, write: e.write.length > 0 })))
      : undefined
  const reachable = live.flatMap(e => [...e.read, ...e.write])
  const accountWide = reachable.filter(t => t.kind === 'account')
  const buckets: TokenScope['buckets'] =
    accountWide.length > 0 ? 'all' : dedupeBuckets(reachable.filter(t => t.kind === 'bucket'))
  const accountIds = [...new Set(reachable.map(t => t.accountId).filter(id => id !== '*'))].sort()

  return {
    class: cls,
    canRead: effective.some(e => e.read.length > 0),
    canWrite: effective.some(e => e.write.length > 0),
    buckets,
    accountIds,
    otherPermissions: [...other].sort(),
    warnings: leastPrivilegeWarnings(live, policies, options),
    policies: rows,
    summary: summarize(cls, buckets)
  }
}

/** The object-level group an app needs instead of each R2 group (Security Matrix). */
function narrowerGroup(group: R2Group): string {
  return group.write
    ? 'Workers R2 Storage Bucket Item Write'
    : 'Workers R2 Storage Bucket Item Read'
}

/**
 * One warning per policy and finding: first the policies that reach every bucket of an account,
 * then those that hold an admin group. Each names the policy and what would be narrower.
 */
function leastPrivilegeWarnings(
  live: Array<{ policy: number; name: string; group: R2Group; read: Target[]; write: Target[] }>,
  policies: TokenPolicy[],
  options: ClassifyOptions
): string[] {
  const byPolicy = new Map<number, typeof live>()
  for (const grant of live)
    byPolicy.set(grant.policy, [...(byPolicy.get(grant.policy) ?? []), grant])
  const bucket = options.bucket ?? '<bucket>'
  const scoped: string[] = []
  const admin: string[] = []
  for (const [index, grants] of byPolicy) {
    const ref = `Policy ${policyRef(policies[index]!, index)}`
    const groups = [...new Set(grants.map(g => g.name))].join(', ')
    const accounts = [
      ...new Set(
        grants
          .flatMap(g => [...g.read, ...g.write])
          .flatMap(t => (t.kind === 'account' ? [t.accountId] : []))
      )
    ].sort()
    if (accounts.length > 0) {
      const narrower = [...new Set(grants.map(g => narrowerGroup(g.group)))].join(', ')
      const account = accounts.find(a => a !== '*') ?? '<account-id>'
      const where = accounts.includes('*')
        ? 'every R2 bucket of every account the token can access'
        : `every R2 bucket of account ${accounts.join(', ')} (account-scoped)`
      scoped.push(
        `${ref} (${groups}) reaches ${where}, buckets created later included. Narrower: ${narrower} on only the buckets the app uses, one resource per bucket (${bucketResource(account, bucket)}).`
      )
    }
    for (const grant of grants.filter(g => g.group.level === 'admin')) {
      // What survived the denies: a Storage Write grant whose writes are all denied only reads.
      const writes = grant.write.length > 0
      const may = writes
        ? 'it may create, configure and delete buckets'
        : 'it may list every bucket and read its configuration'
      const narrower: R2Group = { level: 'object', write: writes }
      admin.push(
        `${ref} holds ${grant.name}, the admin class ${classOf({ level: 'admin', write: writes })} (${may}). Narrower: ${narrowerGroup(narrower)} (${classOf(narrower)}) on the buckets the app uses, unless the app itself manages buckets.`
      )
    }
  }
  return [...scoped, ...admin]
}

const CLASS_ORDER: ScopeClass[] = [
  'admin-read-write',
  'admin-read',
  'object-read-write',
  'object-read'
]

function classOf(group: R2Group): ScopeClass {
  if (group.level === 'admin') return group.write ? 'admin-read-write' : 'admin-read'
  return group.write ? 'object-read-write' : 'object-read'
}

function strongestClass(groups: R2Group[]): ScopeClass {
  const classes = new Set(groups.map(classOf))
  return CLASS_ORDER.find(c => classes.has(c))!
}

/** `#2 (f267e341…)`: the position in the token (as the dashboard lists them) and the policy id. */
function policyRef(policy: TokenPolicy, index: number): string {
  return policy.id ? `#${index + 1} (${policy.id})` : `#${index + 1}`
}

/** What a policy's resources reach, for the summary: buckets, whole accounts, or the raw keys. */
function describeReach(resources: Record<string, unknown>, targets: Target[]): string {
  const parts: string[] = []
  for (const t of targets) {
    if (t.kind === 'account') {
      parts.push(
        t.accountId === '*'
          ? 'every bucket of every account'
          : `every bucket of account ${t.accountId}`
      )
    } else {
      parts.push(
        `bucket ${t.jurisdiction === 'default' ? t.bucket : `${t.jurisdiction}:${t.bucket}`}`
      )
    }
  }
  if (parts.length === 0) return Object.keys(resources).join(', ') || 'no resources'
  return [...new Set(parts)].join(', ')
}

function dedupeBuckets(
  targets: Target[]
): Array<{ accountId: string; jurisdiction: Jurisdiction; bucket: string }> {
  const seen = new Map<string, { accountId: string; jurisdiction: Jurisdiction; bucket: string }>()
  for (const t of targets) {
    if (t.kind !== 'bucket') continue
    const key = bucketResource(t.accountId, t.bucket, t.jurisdiction)
    if (!seen.has(key)) {
      seen.set(key, { accountId: t.accountId, jurisdiction: t.jurisdiction, bucket: t.bucket })
    }
  }
  return [...seen.values()].sort((a, b) =>
    `${a.bucket} ${a.jurisdiction} ${a.accountId}` < `${b.bucket} ${b.jurisdiction} ${b.accountId}`
      ? -1
      : 1
  )
}

/** `object-read-write bucket=avatars-bucket`, `… buckets=a,eu:b`, `admin-read-write buckets=all`, `none`. */
function summarize(cls: ScopeClass | undefined, buckets: TokenScope['buckets']): string {
  if (!cls) return 'none'
  if (buckets === 'all') return `${cls} buckets=all`
  const names = buckets.map(b =>
    b.jurisdiction === 'default' ? b.bucket : `${b.jurisdiction}:${b.bucket}`
  )
  return names.length === 1 ? `${cls} bucket=${names[0]}` : `${cls} buckets=${names.join(',')}`
}

/**
 * The one account id the policies name (account resources, bucket resources, nested keys included),
 * for user tokens when the `account-id` input is empty; undefined if none or more than one.
 */
export function accountIdFromPolicies(policies: TokenPolicy[]): string | undefined {
  const ids = new Set<string>()
  const visit = (key: string): void => {
    const bucket = parseBucketResource(key)
    if (bucket) {
      ids.add(bucket.accountId)
      return
    }
    const account = accountOfKey(key)
    if (account !== undefined && account !== '*') ids.add(account)
  }
  for (const policy of policies) {
    for (const [key, value] of Object.entries(policy.resources)) {
      visit(key)
      if (value !== null && typeof value === 'object') Object.keys(value).forEach(visit)
    }
  }
  return ids.size === 1 ? [...ids][0] : undefined
}
