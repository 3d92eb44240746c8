/**
 * One call sets up a realistic world for the action: Cloudflare (a management token and the R2
 * token in use), GitHub (the repository, its secrets holding the current credentials, a deploy
 * workflow), R2 (a bucket with the object the app reads) and the sample app, deployed with the
 * current credentials. A successful deploy run redeploys the app with the secrets it was
 * dispatched with, as a real workflow would; a failed run leaves the app as it was. A run's
 * `rollout` (see `RunBehavior`) makes a deploy stale, or roll out and then fail; the `consumer`
 * option replaces the deploy by an app that reads the secrets at every health check.
 */
import { randomBytes } from 'node:crypto'
import YAML from 'yaml'
import { RequestLog, type RequestEntry } from './log.js'
import { CloudflareSim, PERMISSION_GROUPS, type CfOwner } from './cloudflare.js'
import {
  scaledClock,
  GitHubSim,
  type EnterpriseServerOptions,
  type RunBehavior,
  type SecretScope,
  type SimClock,
  type SimRun
} from './github.js'
import { R2Sim, sha256Hex } from './r2.js'
import { httpGet } from './http-get.js'
import { SampleApp, type AppCredentials } from './app.js'
import { WORKERS_GROUPS } from './workers.js'
import { ACCESS_GROUPS, type SeededServiceToken } from './access.js'
import { AccessProtectedApp } from './access-app.js'
import {
  ACCESS_CLIENT_HEADER,
  AccessClientApp,
  type AccessClientCredentials
} from './access-client.js'

export interface SecretNames {
  token: string
  accessKeyId: string
  secretAccessKey: string
}

export interface SandboxPolicy {
  effect: 'allow' | 'deny'
  permission_groups: { id: string }[]
  resources: Record<string, unknown>
}

/**
 * A further place that holds the current credentials (under `secretNames`) at start. The
 * repositories, environments and organization it names are created; an org secret gets the
 * visibility given, and `selectedRepositories` (names of sandbox repositories) when `selected`.
 */
export type SandboxTarget =
  | Exclude<SecretScope, { kind: 'org' }>
  | {
      kind: 'org'
      org: string
      visibility: 'all' | 'private' | 'selected'
      selectedRepositories?: string[]
    }

/** The GitHub secrets that hold a service token's credentials (`credential: 'access-service-token'`). */
export interface AccessSecretNames {
  clientId: string
  clientSecret: string
}

export interface SandboxOptions {
  /**
   * What the world's rotated credential is (default 'api-token': the R2 token alone). With
   * 'access-service-token' the sandbox also seeds an Access service token on the account, the
   * Access-protected app that admits it, its secrets in GitHub (`accessSecretNames`), "Access:
   * Service Tokens Write" on the account for the management token, and the deployable client of
   * the protected app (sandbox/access-client.ts), deployed with the current pair; deploy runs
   * redeploy it with the dispatched secrets, as they redeploy the R2 sample app.
   */
  credential?: 'api-token' | 'access-service-token'
  /** Default ACCESS_CLIENT_ID and ACCESS_CLIENT_SECRET. */
  accessSecretNames?: AccessSecretNames
  /** The seeded service token's duration (default the API's, 8760h). */
  serviceTokenDuration?: string
  /** Who owns the rotated R2 token (default 'user'). */
  owner?: 'user' | 'account'
  /** Default: a fixed 32-hex id. */
  accountId?: string
  /** Default 'avatars-bucket'. */
  bucket?: string
  /** Default 'acme/site': where the action runs, holds the secrets and the deploy workflow. */
  repository?: string
  /** When set, the app's deploy reads secrets of this environment (created in the repository). */
  environment?: string
  /** Default CLOUDFLARE_API_TOKEN, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY. */
  secretNames?: SecretNames
  /** Default: one allow policy, Bucket Item Write on the one bucket. */
  rotatedPolicies?: (ctx: { accountId: string; bucket: string }) => SandboxPolicy[]
  /** Default { request_ip: { in: ['192.0.2.0/24'], not_in: [] } }, which admits `appAddress`. */
  condition?: unknown
  /** Default { queuedMs: 150, runningMs: 400, conclusion: 'success' } (rollout 'on-success'). */
  run?: RunBehavior
  rejectReturnRunDetails?: boolean
  /** The REST API versions GitHub serves (see `GitHubSimOptions.apiVersions`). */
  githubApiVersions?: string[]
  /** GitHub acts as GitHub Enterprise Server (see `EnterpriseServerOptions`; default github.com). */
  enterpriseServer?: EnterpriseServerOptions
  /**
   * GitHub's clock: runs move, and tokens expire, on it. Default the real clock; a `ManualClock`
   * lets a test move runs by hand.
   */
  githubClock?: SimClock
  /**
   * Real milliseconds per simulated millisecond for GitHub's clock (run timers, timestamps) and
   * for the action run against the sandbox (`R2_ROTATION_TIME_SCALE`), so that simulated minutes
   * pass in seconds. Default `SANDBOX_TIME_SCALE`; 1 is real time (the demo).
   */
  timeScale?: number
  /** When the GitHub token expires (default never; see `TokenOptions.expiresAt`). */
  githubTokenExpiresAt?: Date | number
  /**
   * Who uses the R2 credentials (default 'deployed'):
   * - 'deployed': the sample app holds the credentials its latest deploy gave it; a deploy run
   *   replaces them when it rolls out (see `RunBehavior.rollout`);
   * - 'reads-secrets': nothing is deployed; at every health check the app reads the deploy
   *   scope's secrets as they are then (org < repository < `environment`), as a job started
   *   later reads them. Deploy runs still run and conclude, but change nothing in the app and log
   *   no `app.deployed`.
   */
  consumer?: 'deployed' | 'reads-secrets'
  /**
   * The internet address the sample app's R2 requests come from, sent as the sandbox-only header
   * `x-sandbox-client-address` (see sandbox/app.ts). Default '192.0.2.10', inside the default
   * `condition` (192.0.2.0/24), so that the app can read R2 when IP conditions are enforced.
   */
  appAddress?: string
  /** What the management token may do with API tokens (default 'write'). */
  managementPermissions?: 'write' | 'read' | 'none'
  /**
   * What the management token may do with the account's Workers scripts (default none): 'write'
   * adds "Workers Scripts Write" on the account (to write a Worker's secrets, `worker:SCRIPT`
   * targets), 'read' adds "Workers Scripts Read" only.
   */
  managementWorkers?: 'write' | 'read'
  githubPermissions?: {
    secrets?: boolean
    environments?: boolean
    actions?: boolean
    variables?: boolean
    contents?: boolean
  }
  /** Further repositories, with their environments, that hold no secrets (default none). */
  repositories?: Array<{ name: string; environments?: string[] }>
  /** Further organizations, without secrets (default none). */
  organizations?: string[]
  /** Further places holding the current credentials at start (default none). The deploy still
   *  reads `repository` (and `environment`): org secrets visible to it, then its own. */
  targets?: SandboxTarget[]
}

/**
 * The sandbox's default time scale: GitHub's clock and the action run 50 times as fast as real
 * time, so that a two-minute watch takes 2.4 s. Real work (HTTP, the other simulators) is not
 * scaled.
 */
export const SANDBOX_TIME_SCALE = 0.02

export interface Sandbox {
  /** Real milliseconds per simulated millisecond (see `SandboxOptions.timeScale`). */
  timeScale: number
  log: RequestLog
  cloudflare: CloudflareSim
  github: GitHubSim
  r2: R2Sim
  app: SampleApp
  accountId: string
  bucket: string
  repository: string
  environment?: string
  secretNames: SecretNames
  /** The GitHub id of each repository the sandbox created, by `OWNER/REPO` (as given). */
  repositoryIds: Record<string, number>
  cloudflareApiUrl: string
  githubApiUrl: string
  r2Endpoint: string
  appUrl: string
  /** Value of a Cloudflare token with API Tokens Write (user) or Account API Tokens Write (account owner). */
  managementToken: string
  githubToken: string
  /** The token in use at start. */
  current: { id: string; value: string; secretAccessKey: string }
  /** The token id of the credentials the app uses right now (deployed, or read from the secrets). */
  liveAccessKeyId(): string | undefined
  /**
   * Every value that must never appear in output: all token values ever seen (management, rotated
   * old and new), their SHA-256 hex, the GitHub token, and every ciphertext written to GitHub.
   * Call it after a run.
   */
  secretValues(): string[]
  /**
   * With `credential: 'access-service-token'`: the seeded service token (its first secret), the
   * Access-protected app, the deployed client of it, and the secrets' names.
   */
  serviceToken?: SeededServiceToken & { name: string }
  accessApp?: AccessProtectedApp
  accessClient?: AccessClientApp
  accessSecretNames?: AccessSecretNames
  /** Polls the Access client's GET /healthz (throws without a service token world). */
  watchAccessClient(intervalMs?: number): {
    stop(): Promise<Array<{ at: number; status: number }>>
  }
  /** Polls GET /healthz every `intervalMs` until stopped; returns the failures seen. */
  watchHealth(intervalMs?: number): { stop(): Promise<Array<{ at: number; status: number }>> }
  stop(): Promise<void>
}

export const DEFAULT_ACCOUNT_ID = '0a1b2c3d4e5f60718293a4b5c6d7e8f9'
export const HEALTH_OBJECT_KEY = 'healthz.txt'
export const DEPLOY_WORKFLOW_PATH = '.github/workflows/deploy.yml'
/**
 * The caller's workflow that runs the action: every run of the action in the sandbox is a run of
 * it (GITHUB_RUN_ID), in progress while the action runs, so that the lock and the journal see
 * whether a rotation is still going as they would on GitHub.
 */
export const ROTATE_WORKFLOW_PATH = '.github/workflows/rotate-r2-token.yml'
export const DEFAULT_APP_ADDRESS = '192.0.2.10'
/** Marks the requests of `watchHealth` (a person watching the app), so that counts leave them out. */
export const HEALTH_WATCHER_HEADER = 'x-sandbox-health-watcher'
const DAY_MS = 24 * 60 * 60 * 1000

/** A permission group id by its Cloudflare name (ids are data; the names are the contract). */
function groupId(name: string): string {
  const group = PERMISSION_GROUPS.find(g => g.name === name)
  if (!group)
    throw new Error(`sandbox: permission group "${name}" is missing from PERMISSION_GROUPS`)
  return group.id
}

export async function startSandbox(options: SandboxOptions = {}): Promise<Sandbox> {
  const accountId = options.accountId ?? DEFAULT_ACCOUNT_ID
  const bucket = options.bucket ?? 'avatars-bucket'
  const repository = options.repository ?? 'acme/site'
  const environment = options.environment
  const secretNames = options.secretNames ?? {
    token: 'CLOUDFLARE_API_TOKEN',
    accessKeyId: 'R2_ACCESS_KEY_ID',
    secretAccessKey: 'R2_SECRET_ACCESS_KEY'
  }
  const ownerKind = options.owner ?? 'user'
  const consumer = options.consumer ?? 'deployed'
  const timeScale = options.timeScale ?? SANDBOX_TIME_SCALE

  const log = new RequestLog()
  const cloudflare = new CloudflareSim(log)
  const github = new GitHubSim(log, {
    rejectReturnRunDetails: options.rejectReturnRunDetails,
    enterpriseServer: options.enterpriseServer,
    ...(options.githubApiVersions ? { apiVersions: options.githubApiVersions } : {}),
    clock: options.githubClock ?? (timeScale === 1 ? undefined : scaledClock(timeScale))
  })
  const r2 = new R2Sim(log, cloudflare, { accountId })
  const started: Array<{ stop(): Promise<void> }> = []
  let app: SampleApp
  let accessApp: AccessProtectedApp | undefined
  let accessClient: AccessClientApp | undefined
  try {
    for (const service of [cloudflare, github, r2]) {
      await service.start()
      started.push(service)
    }
    // The app is configured with the R2 endpoint, which exists once R2 listens.
    app = new SampleApp(log, {
      r2Url: r2.url,
      bucket,
      key: HEALTH_OBJECT_KEY,
      clientAddress: options.appAddress ?? DEFAULT_APP_ADDRESS,
      readCredentials:
        consumer === 'reads-secrets'
          ? () => credentialsFrom(github.secretsForRun(repository, environment), secretNames)
          : undefined
    })
    await app.start()
    started.push(app)
    if (options.credential === 'access-service-token') {
      accessApp = new AccessProtectedApp(log, cloudflare.access, { accountId })
      await accessApp.start()
      started.push(accessApp)
      accessClient = new AccessClientApp(log, accessApp.url)
      await accessClient.start()
      started.push(accessClient)
    }
  } catch (error) {
    await Promise.all(started.map(s => s.stop()))
    throw error
  }

  // Cloudflare: the management token the action authenticates with, and the token in use.
  const userResource = `com.cloudflare.api.user.${cloudflare.userId}`
  const accountResource = `com.cloudflare.api.account.${accountId}`
  const managementPolicies = managementPoliciesFor(options.managementPermissions ?? 'write', {
    owner: ownerKind,
    userResource,
    accountResource
  })
  if (options.managementWorkers) {
    const group = options.managementWorkers === 'write' ? WORKERS_GROUPS.write : WORKERS_GROUPS.read
    managementPolicies.push({
      effect: 'allow',
      permission_groups: [{ id: groupId(group) }],
      resources: { [accountResource]: '*' }
    })
  }
  if (accessClient) {
    managementPolicies.push({
      effect: 'allow',
      permission_groups: [{ id: groupId(ACCESS_GROUPS.write) }],
      resources: { [accountResource]: '*' }
    })
  }
  const management = cloudflare.addToken({
    name: 'token-rotation-manager',
    owner: { kind: 'user' },
    policies: managementPolicies
  })
  const owner: CfOwner = ownerKind === 'account' ? { kind: 'account', accountId } : { kind: 'user' }
  const policies = (options.rotatedPolicies ?? defaultRotatedPolicies)({ accountId, bucket })
  const rotated = cloudflare.addToken({
    name: 'avatars-uploader',
    owner,
    policies,
    condition: options.condition ?? { request_ip: { in: ['192.0.2.0/24'], not_in: [] } },
    issued_on: new Date(Date.now() - 40 * DAY_MS).toISOString()
  })
  const current = {
    id: rotated.id,
    value: rotated.value,
    secretAccessKey: sha256Hex(rotated.value)
  }

  // GitHub: the repository, the secrets holding the current credentials, the deploy workflow.
  const githubToken = `github_pat_${randomBytes(30).toString('base64url')}`
  github.addToken(githubToken, {
    ...(options.githubPermissions ?? {
      secrets: true,
      environments: true,
      actions: true,
      variables: true,
      contents: true
    }),
    expiresAt: options.githubTokenExpiresAt
  })
  const targets = options.targets ?? []
  const repositoryIds = createRepositories(github, {
    repository,
    environment,
    repositories: options.repositories ?? [],
    organizations: options.organizations ?? [],
    targets
  })
  const deployScope: SandboxTarget = environment
    ? { kind: 'env', repo: repository, environment }
    : { kind: 'repo', repo: repository }
  for (const target of [deployScope, ...targets]) {
    const org =
      target.kind === 'org'
        ? {
            visibility: target.visibility,
            selectedRepositoryIds: (target.selectedRepositories ?? []).map(name =>
              repositoryId(repositoryIds, name)
            )
          }
        : undefined
    const scope: SecretScope = target.kind === 'org' ? { kind: 'org', org: target.org } : target
    github.setSecret(scope, secretNames.token, current.value, org)
    github.setSecret(scope, secretNames.accessKeyId, current.id, org)
    github.setSecret(scope, secretNames.secretAccessKey, current.secretAccessKey, org)
  }
  github.addWorkflow(repository, {
    path: ROTATE_WORKFLOW_PATH,
    name: 'Rotate R2 token',
    content: YAML.stringify({
      name: 'Rotate R2 token',
      on: { schedule: [{ cron: '17 6 * * 1' }], workflow_dispatch: {} },
      jobs: {
        rotate: {
          'runs-on': 'ubuntu-latest',
          steps: [{ uses: 'r2-token-rotation/r2-token-rotation@v1' }]
        }
      }
    })
  })
  github.addWorkflow(repository, {
    path: DEPLOY_WORKFLOW_PATH,
    name: 'Deploy',
    content: deployWorkflow(secretNames, environment)
  })
  github.runBehavior = options.run ?? { queuedMs: 150, runningMs: 400, conclusion: 'success' }

  // R2 and the app, serving with the current credentials.
  r2.addBucket(bucket)
  r2.putObject(bucket, HEALTH_OBJECT_KEY, 'ok\n', 'text/plain')
  app.deploy({ accessKeyId: current.id, secretAccessKey: current.secretAccessKey }, 'v1')

  // Access: the service token, its secrets beside the R2 ones, and its client deployed with them.
  const accessSecretNames = options.accessSecretNames ?? {
    clientId: 'ACCESS_CLIENT_ID',
    clientSecret: 'ACCESS_CLIENT_SECRET'
  }
  let serviceToken: (SeededServiceToken & { name: string }) | undefined
  if (accessClient) {
    const name = 'deploy-bot'
    serviceToken = {
      ...cloudflare.access.addServiceToken({
        accountId,
        name,
        ...(options.serviceTokenDuration ? { duration: options.serviceTokenDuration } : {}),
        // Seeded a while ago, as a token in use is.
        createdAt: new Date(Date.now() - 40 * DAY_MS).toISOString()
      }),
      name
    }
    for (const target of [deployScope, ...targets]) {
      const scope: SecretScope = target.kind === 'org' ? { kind: 'org', org: target.org } : target
      github.setSecret(scope, accessSecretNames.clientId, serviceToken.clientId)
      github.setSecret(scope, accessSecretNames.clientSecret, serviceToken.clientSecret)
    }
    accessClient.deploy(
      { clientId: serviceToken.clientId, clientSecret: serviceToken.clientSecret },
      'v1'
    )
  }

  if (consumer === 'deployed') {
    wireDeploys({
      log,
      github,
      app,
      repository,
      secretNames,
      ...(accessClient ? { access: { client: accessClient, names: accessSecretNames } } : {})
    })
  }

  const watchers = new Set<{ stop(): Promise<Array<{ at: number; status: number }>> }>()
  const sandbox: Sandbox = {
    timeScale,
    log,
    cloudflare,
    github,
    r2,
    app,
    accountId,
    bucket,
    repository,
    environment,
    secretNames,
    repositoryIds,
    cloudflareApiUrl: cloudflare.apiUrl,
    githubApiUrl: github.url,
    r2Endpoint: r2.url,
    appUrl: app.url,
    managementToken: management.value,
    githubToken,
    current,
    ...(serviceToken ? { serviceToken } : {}),
    ...(accessApp ? { accessApp } : {}),
    ...(accessClient ? { accessClient, accessSecretNames } : {}),
    watchAccessClient: intervalMs => {
      if (!accessClient)
        throw new Error('sandbox: no Access client (credential: access-service-token)')
      const watcher = watchHealth(`${accessClient.url}/healthz`, intervalMs ?? 100, log)
      const handle = {
        stop: async () => {
          watchers.delete(handle)
          return watcher.stop()
        }
      }
      watchers.add(handle)
      return handle
    },
    liveAccessKeyId: () => app.credentials()?.accessKeyId,
    secretValues: () => {
      const values = new Set<string>([githubToken])
      for (const token of [...cloudflare.tokens.values(), ...cloudflare.deletedTokens]) {
        values.add(token.value)
        values.add(sha256Hex(token.value))
      }
      for (const write of github.secretWrites) values.add(write.ciphertext)
      // Every client secret ever issued or seeded (current, previous, lost alike).
      for (const secret of cloudflare.access.secretValues()) values.add(secret)
      values.delete('')
      return [...values]
    },
    watchHealth: intervalMs => {
      const watcher = watchHealth(`${app.url}/healthz`, intervalMs ?? 100, log, {
        readsSecrets: consumer === 'reads-secrets'
      })
      const handle = {
        stop: async () => {
          watchers.delete(handle)
          return watcher.stop()
        }
      }
      watchers.add(handle)
      return handle
    },
    stop: async () => {
      await Promise.all([...watchers].map(w => w.stop()))
      await Promise.all(started.map(s => s.stop()))
    }
  }
  return sandbox
}

/**
 * The requests the action made since `sinceMs`: everything that reached a simulator, less the
 * sample app's own reads of its health object from R2 (the app does those, not the action) and
 * the health watcher's requests (`watchHealth`).
 */
export function actionRequests(sb: Pick<Sandbox, 'log'>, sinceMs = 0): RequestEntry[] {
  return sb.log
    .requests()
    .filter(e => e.at >= sinceMs)
    .filter(
      e =>
        !(e.service === 'r2' && e.method === 'GET' && e.path.endsWith(`/${HEALTH_OBJECT_KEY}`)) &&
        e.headers[HEALTH_WATCHER_HEADER] === undefined &&
        e.headers[ACCESS_CLIENT_HEADER] === undefined
    )
}

/**
 * Repository ids given here start away from the simulator's own counter, so that a repository a
 * test adds later through `github.addRepo` cannot take an id that an org secret already selects.
 */
const FIRST_REPOSITORY_ID = 200_000_001

/**
 * Creates the organizations first (so that repositories they own are organization-owned), then
 * the deploy repository and every further repository with all the environments named for it.
 */
function createRepositories(
  github: GitHubSim,
  ctx: {
    repository: string
    environment: string | undefined
    repositories: Array<{ name: string; environments?: string[] }>
    organizations: string[]
    targets: SandboxTarget[]
  }
): Record<string, number> {
  const orgs = new Set<string>()
  for (const org of [
    ...ctx.organizations,
    ...ctx.targets.flatMap(t => (t.kind === 'org' ? [t.org] : []))
  ]) {
    if (!orgs.has(org.toLowerCase())) {
      orgs.add(org.toLowerCase())
      github.addOrg(org)
    }
  }
  // GitHub compares repository and environment names case-insensitively.
  const wanted = new Map<string, { name: string; environments: Map<string, string> }>()
  const want = (name: string, environment?: string): void => {
    let repo = wanted.get(name.toLowerCase())
    if (!repo) {
      repo = { name, environments: new Map() }
      wanted.set(name.toLowerCase(), repo)
    }
    if (environment !== undefined) repo.environments.set(environment.toLowerCase(), environment)
  }
  want(ctx.repository, ctx.environment)
  for (const repo of ctx.repositories) {
    want(repo.name)
    for (const env of repo.environments ?? []) want(repo.name, env)
  }
  for (const target of ctx.targets) {
    if (target.kind !== 'org')
      want(target.repo, target.kind === 'env' ? target.environment : undefined)
  }
  const ids: Record<string, number> = {}
  let id = FIRST_REPOSITORY_ID
  for (const repo of wanted.values()) {
    github.addRepo(repo.name, {
      defaultBranch: 'main',
      branches: ['main'],
      environments: [...repo.environments.values()],
      id
    })
    ids[repo.name] = id++
  }
  return ids
}

function repositoryId(ids: Record<string, number>, name: string): number {
  const found = Object.entries(ids).find(([repo]) => repo.toLowerCase() === name.toLowerCase())
  if (!found) throw new Error(`sandbox: selected repository '${name}' is not a sandbox repository`)
  return found[1]
}

function defaultRotatedPolicies({
  accountId,
  bucket
}: {
  accountId: string
  bucket: string
}): SandboxPolicy[] {
  return [
    {
      effect: 'allow',
      permission_groups: [{ id: groupId('Workers R2 Storage Bucket Item Write') }],
      resources: { [`com.cloudflare.edge.r2.bucket.${accountId}_default_${bucket}`]: '*' }
    }
  ]
}

function managementPoliciesFor(
  level: 'write' | 'read' | 'none',
  ctx: { owner: 'user' | 'account'; userResource: string; accountResource: string }
): SandboxPolicy[] {
  if (level === 'none') {
    // A working token that holds no API-token rights: it reads the account's zones, nothing else.
    return [
      {
        effect: 'allow',
        permission_groups: [{ id: groupId('Zone Read') }],
        resources: { [ctx.accountResource]: { 'com.cloudflare.api.account.zone.*': '*' } }
      }
    ]
  }
  const userGroups =
    level === 'write' ? ['API Tokens Write', 'API Tokens Read'] : ['API Tokens Read']
  const policies: SandboxPolicy[] = [
    {
      effect: 'allow',
      permission_groups: userGroups.map(name => ({ id: groupId(name) })),
      resources: { [ctx.userResource]: '*' }
    }
  ]
  if (ctx.owner === 'account') {
    const accountGroups =
      level === 'write'
        ? ['Account API Tokens Write', 'Account API Tokens Read']
        : ['Account API Tokens Read']
    policies.push({
      effect: 'allow',
      permission_groups: accountGroups.map(name => ({ id: groupId(name) })),
      resources: { [ctx.accountResource]: '*' }
    })
  }
  return policies
}

/** The caller's deploy workflow as a repository would hold it. */
function deployWorkflow(names: SecretNames, environment: string | undefined): string {
  const secret = (name: string): string => `\${{ secrets.${name} }}`
  return YAML.stringify({
    name: 'Deploy',
    on: {
      workflow_dispatch: {
        inputs: { reason: { description: 'Why this deploy runs', required: false, type: 'string' } }
      }
    },
    jobs: {
      deploy: {
        'runs-on': 'ubuntu-latest',
        ...(environment ? { environment } : {}),
        steps: [
          { uses: 'actions/checkout@v4' },
          {
            name: 'Deploy the app',
            run: './scripts/deploy.sh',
            env: {
              R2_ACCESS_KEY_ID: secret(names.accessKeyId),
              R2_SECRET_ACCESS_KEY: secret(names.secretAccessKey)
            }
          }
        ]
      }
    }
  })
}

/** The app's credentials among a run's secrets (undefined when either is missing). */
function credentialsFrom(
  secrets: Record<string, string>,
  names: SecretNames
): AppCredentials | undefined {
  const accessKeyId = secrets[names.accessKeyId.toUpperCase()]
  const secretAccessKey = secrets[names.secretAccessKey.toUpperCase()]
  return accessKeyId !== undefined && secretAccessKey !== undefined
    ? { accessKeyId, secretAccessKey }
    : undefined
}

/**
 * A run reads the secrets as they are when it is dispatched (a re-run's attempt reads them again).
 * The GitHub simulator tells `beforeComplete` about every attempt that completes, with what its
 * deploy shipped (`RunCompletion.deploy`, from the run's `rollout`):
 * - `fresh`: the app is redeployed with the dispatched secrets; `app.deployed` then precedes
 *   `run.completed`, whatever the conclusion (a run can fail after its rollout);
 * - `stale`: a new release that carries the credentials the app already had; `app.deployed`
 *   says `stale: true` and names the credential kept;
 * - `none`: the app stays as it was and nothing is logged.
 */
function wireDeploys(ctx: {
  log: RequestLog
  github: GitHubSim
  app: SampleApp
  repository: string
  secretNames: SecretNames
  /** The Access client, redeployed by the same runs with the service token's secrets. */
  access?: { client: AccessClientApp; names: AccessSecretNames }
}): void {
  const { log, github, app, repository, secretNames, access } = ctx
  const snapshots = new Map<string, Record<string, string>>()
  const attemptKey = (run: SimRun): string => `${run.id}/${run.attempt}`
  github.hooks.onDispatch = run => {
    if (run.repo !== repository) return
    // The environment is the one the workflow's job names, as on GitHub.
    snapshots.set(attemptKey(run), github.secretsForRun(repository, run.environment))
  }
  github.hooks.beforeComplete = (run, completion) => {
    if (run.repo !== repository) return
    const secrets =
      snapshots.get(attemptKey(run)) ?? github.secretsForRun(repository, run.environment)
    snapshots.delete(attemptKey(run))
    if (completion.deploy === 'none') return
    if (completion.deploy === 'stale') {
      const kept = app.credentials()
      app.deploy(kept, `run-${run.id}`)
      log.event('app', 'app.deployed', {
        run_id: run.id,
        access_key_id: kept?.accessKeyId,
        stale: true
      })
      if (access) {
        access.client.deploy(access.client.credentials(), `run-${run.id}`)
        log.event('access-client', 'access-client.deployed', { run_id: run.id, stale: true })
      }
      return
    }
    // A deploy whose secrets are missing ships an app without credentials, as a real one would.
    const credentials = credentialsFrom(secrets, secretNames)
    app.deploy(credentials, `run-${run.id}`)
    log.event('app', 'app.deployed', {
      run_id: run.id,
      access_key_id: secrets[secretNames.accessKeyId.toUpperCase()]
    })
    if (access) {
      const pair = accessCredentialsFrom(secrets, access.names)
      access.client.deploy(pair, `run-${run.id}`)
      log.event('access-client', 'access-client.deployed', {
        run_id: run.id,
        client_id: pair?.clientId ?? null
      })
    }
  }
}

/** The Access client's pair among a run's secrets (undefined when either is missing). */
function accessCredentialsFrom(
  secrets: Record<string, string>,
  names: AccessSecretNames
): AccessClientCredentials | undefined {
  const clientId = secrets[names.clientId.toUpperCase()]
  const clientSecret = secrets[names.clientSecret.toUpperCase()]
  return clientId !== undefined && clientSecret !== undefined
    ? { clientId, clientSecret }
    : undefined
}

export interface WatchOptions {
  /**
   * The consumer reads the GitHub secrets at every check (the app with `consumer:
   * 'reads-secrets'`): a secret written is a change it sees. Default false: a secret reaches the
   * consumer through a deploy, which is a change of its own, so a write alone sets off no check.
   */
  readsSecrets?: boolean
}

/**
 * Requests `url` every `intervalMs` until stopped; returns every answer that was not 200. With a
 * `log`, it also checks
 * - as soon as the sandbox's state may have changed (`RequestLog.onChange`: a token disabled or
 *   deleted, a deploy, the simulators' clock moved, a secret written if the consumer reads the
 *   secrets). A change during a check starts one more check right after it;
 * - just after each instant at which time alone changes what a consumer sees
 *   (`RequestLog.nextTimedChange`: a token's expiry or not_before, an Access grace window's end).
 * A failing window begins with one of those, so it is seen however short it is; the interval is
 * only a backstop for a change no simulator announces.
 */
export function watchHealth(
  url: string,
  intervalMs: number,
  log?: RequestLog,
  options: WatchOptions = {}
): { stop(): Promise<Array<{ at: number; status: number }>> } {
  const failures: Array<{ at: number; status: number }> = []
  let stopped = false
  let timer: NodeJS.Timeout | undefined
  let inflight: Promise<void> | undefined
  let again = false
  // The next check: after `intervalMs`, or just past the next instant at which time alone changes
  // what a consumer sees (`RequestLog.nextTimedChange`), whichever comes first.
  const untilNextCheck = (): number => {
    const due = log?.nextTimedChange()
    return due === undefined ? intervalMs : Math.min(intervalMs, Math.max(0, due - Date.now()) + 1)
  }
  const tick = (): void => {
    timer = undefined
    again = false
    inflight = (async () => {
      const at = Date.now()
      try {
        const response = await httpGet(url, { [HEALTH_WATCHER_HEADER]: '1' })
        if (response.status !== 200) failures.push({ at, status: response.status })
      } catch {
        failures.push({ at, status: 0 })
      }
    })().finally(() => {
      inflight = undefined
      if (stopped) return
      if (again) tick()
      else timer = setTimeout(tick, untilNextCheck())
    })
  }
  const unsubscribe = log?.onChange(change => {
    if (stopped || (change === 'secret' && !options.readsSecrets)) return
    if (inflight) {
      again = true
    } else {
      clearTimeout(timer)
      tick()
    }
  })
  tick()
  return {
    stop: async () => {
      stopped = true
      unsubscribe?.()
      clearTimeout(timer)
      await inflight
      return [...failures]
    }
  }
}
