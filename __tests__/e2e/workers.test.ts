/**
 * End to end: a Worker's secrets as a secret target (`worker:SCRIPT`). The sandbox's Cloudflare
 * simulator holds the Workers script (sandbox/workers.ts); the sample Worker reads its LIVE
 * version's R2 secrets on every /healthz (sandbox/sample-worker.ts). Each scenario checks the
 * ordered mutating requests, the Worker's live secret values, and the Worker's health history.
 */
import type { ChildProcess } from 'node:child_process'
import {
  startSandbox,
  watchHealth,
  type Sandbox,
  type SandboxOptions
} from '../../sandbox/index.js'
import {
  startCredentialsWorldBeside,
  type CredentialsWorld
} from '../../sandbox/credentials-world.js'
import { findLeaks, runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import {
  expectOneLiveToken,
  journalOf,
  journalText,
  killWhen,
  lineage,
  mutationList,
  nextRunInputs,
  sha256,
  startNamed,
  waitForRuns,
  HEALTH_POLL_MS
} from './scenario.js'

const SCRIPT = 'avatars-worker'

interface World {
  sb: Sandbox
  world: CredentialsWorld
  results: ActionResult[]
  /** Every /healthz answer of the Worker and of the app that was not 200, while the runs went on. */
  workerFailures: Array<{ at: number; status: number }>
  appFailures: Array<{ at: number; status: number }>
  /** Log position before the last run (its mutations come after). */
  lastRunSeq: number
}

async function openWorld(
  options: SandboxOptions
): Promise<{ sb: Sandbox; world: CredentialsWorld }> {
  const sb = await startSandbox(options)
  const world = await startCredentialsWorldBeside(sb, { scriptName: SCRIPT })
  return { sb, world }
}

const workerSmoke = (world: CredentialsWorld): string =>
  `${world.workerUrl}/healthz expect=200 contains=access-key-id={access-key-id}`

/** Inputs for a Worker-only rotation: the two R2 fields, no deploy workflow. */
function workerOnlyInputs(
  sb: Sandbox,
  world: CredentialsWorld,
  overrides: Record<string, string> = {}
): Record<string, string> {
  return sandboxInputs(sb, {
    secrets: 'R2_ACCESS_KEY_ID=access-key-id\nR2_SECRET_ACCESS_KEY=secret-access-key',
    'secret-targets': `worker:${SCRIPT}`,
    'deploy-workflow': 'none',
    'deploy-inputs': '',
    'smoke-urls': workerSmoke(world),
    ...overrides
  })
}

type Run = (w: { sb: Sandbox; world: CredentialsWorld }) => Promise<ActionResult>

/** Runs `runs` in order while both /healthz are watched. */
async function scenario(
  runs: Run[],
  options: {
    prepare?: (w: { sb: Sandbox; world: CredentialsWorld }) => void
    sandbox?: SandboxOptions
  } = {}
): Promise<World> {
  const { sb, world } = await openWorld(options.sandbox ?? { managementWorkers: 'write' })
  options.prepare?.({ sb, world })
  const workerWatch = watchHealth(`${world.workerUrl}/healthz`, HEALTH_POLL_MS, sb.log)
  const appWatch = sb.watchHealth(HEALTH_POLL_MS)
  const results: ActionResult[] = []
  let lastRunSeq = 0
  try {
    for (const run of runs) {
      lastRunSeq = sb.log.entries.at(-1)?.seq ?? 0
      results.push(await run({ sb, world }))
    }
  } finally {
    // Stopped even when a run throws, so that no watcher outlives its sandbox.
    await Promise.all([workerWatch.stop(), appWatch.stop()])
  }
  return {
    sb,
    world,
    results,
    workerFailures: await workerWatch.stop(),
    appFailures: await appWatch.stop(),
    lastRunSeq
  }
}

function newToken(sb: Sandbox, role = 0): { id: string; value: string } {
  const id = sb.log.events('token.created')[role]!.detail.id as string
  const token = sb.cloudflare.findById(id) ?? sb.cloudflare.deletedTokens.find(t => t.id === id)!
  return { id, value: token.value }
}

/** The Worker's live secrets hold exactly the R2 pair of `token`. */
function expectWorkerHolds(w: World, token: { id: string; value: string }, names?: string[]): void {
  const secrets = w.sb.cloudflare.workers.secretsOf(SCRIPT)
  expect(secrets.R2_ACCESS_KEY_ID).toBe(token.id)
  expect(secrets.R2_SECRET_ACCESS_KEY).toBe(sha256(token.value))
  if (names) expect(Object.keys(secrets).sort()).toEqual(names)
}

function expectNoLeaks(w: World): void {
  // A token id is no secret (the Worker holds it as R2_ACCESS_KEY_ID); every other value is.
  const ids = new Set(
    [...w.sb.cloudflare.tokens.values(), ...w.sb.cloudflare.deletedTokens].map(t => t.id)
  )
  const values = [...new Set([...w.sb.secretValues(), ...w.world.secretValues()])].filter(
    v => !ids.has(v)
  )
  expect(values).toEqual(expect.arrayContaining([w.sb.current.value, w.sb.current.secretAccessKey]))
  for (const result of w.results) expect(findLeaks(result, values, [journalText(w.sb)])).toEqual([])
}

/** Every /healthz the Worker answered (the smoke checks' and the watcher's) was a 200. */
function expectWorkerNeverFailed(w: World): void {
  expect(w.workerFailures).toEqual([])
  expect(w.world.worker.healthChecks.length).toBeGreaterThan(0)
  expect(w.world.worker.healthChecks.filter(c => c.status !== 200)).toEqual([])
}

const START = [
  'POST variable R2_ROTATION_STATE_LOCK',
  'POST variable R2_ROTATION_STATE phase=minting',
  'POST /user/tokens → {new}',
  'PATCH variable R2_ROTATION_STATE phase=minted',
  'PATCH variable R2_ROTATION_STATE phase=publishing'
]
const REVOKE = [
  'PATCH variable R2_ROTATION_STATE phase=smoke',
  'PATCH variable R2_ROTATION_STATE phase=revoking',
  'PATCH variable R2_ROTATION_STATE phase=revoking',
  'PUT /user/tokens/{previous} status=disabled',
  'DELETE /user/tokens/{previous}',
  'PATCH variable R2_ROTATION_STATE phase=done',
  'DELETE variable R2_ROTATION_STATE_LOCK'
]

/** The crash point: killed once the bulk PATCH took effect, before its answer. */
function killAtWorkerPatch(sb: Sandbox, inputs: Record<string, string>): Promise<ActionResult> {
  let child: ChildProcess | undefined
  const unhook = killWhen(
    sb,
    () => child,
    e => e.method === 'PATCH' && e.path.endsWith(`/workers/scripts/${SCRIPT}/secrets-bulk`)
  )
  return runAction(sb, inputs, {
    onSpawn: c => {
      child = c
    }
  }).finally(unhook)
}

/** Worker first, then this repository: the kill leaves the repository on the previous token. */
const CRASH_TARGETS = {
  'worker first': `worker:${SCRIPT}\nrepo`,
  'repository first': `repo\nworker:${SCRIPT}`
} as const

function crashInputs(
  sb: Sandbox,
  world: CredentialsWorld,
  targets: string,
  base: Record<string, string>
): Record<string, string> {
  return {
    ...base,
    'secret-targets': targets,
    'smoke-urls': `${sb.appUrl}/healthz expect=200 contains=ok\n${workerSmoke(world)}`
  }
}

const runWorkerOnly: Run = ({ sb, world }) => runAction(sb, workerOnlyInputs(sb, world))

const scenarios = startNamed<World>(
  {
    'worker only': () => scenario([runWorkerOnly]),
    'worker and repository': () =>
      scenario([
        ({ sb, world }) =>
          runAction(
            sb,
            sandboxInputs(sb, {
              'secret-targets': `repo\nworker:${SCRIPT}`,
              'smoke-urls': `${sb.appUrl}/healthz expect=200 contains=ok\n${workerSmoke(world)}`
            })
          )
      ]),
    'gradual rollout': () =>
      scenario([runWorkerOnly], {
        prepare: ({ sb }) => {
          sb.cloudflare.workers.startGradualRollout(SCRIPT, { percentage: 10 })
        }
      }),
    // The sandbox's management token with its API-token rights only.
    'no Workers right': () => scenario([runWorkerOnly], { sandbox: {} }),
    rollback: () =>
      scenario([
        ({ sb, world }) =>
          runAction(
            sb,
            workerOnlyInputs(sb, world, {
              // The app keeps the credentials it was deployed with (no deploy here): this check
              // passes with the current token and fails once the new one should be serving.
              'smoke-urls': `${workerSmoke(world)}\n${sb.appUrl}/healthz expect=200 contains=access-key-id={access-key-id}`,
              'smoke-timeout': '10s'
            })
          )
      ]),
    ...Object.fromEntries(
      Object.entries(CRASH_TARGETS).map(([name, targets]) => [
        `crash ${name}`,
        () =>
          scenario([
            ({ sb, world }) =>
              killAtWorkerPatch(sb, crashInputs(sb, world, targets, sandboxInputs(sb))),
            async ({ sb, world }) => {
              await waitForRuns(sb)
              return runAction(sb, crashInputs(sb, world, targets, nextRunInputs(sb)))
            }
          ])
      ])
    )
  },
  2
)

async function settle(name: string): Promise<World> {
  return scenarios(name)
}

afterAll(async () => {
  for (const name of [
    'worker only',
    'worker and repository',
    'gradual rollout',
    'no Workers right',
    'rollback',
    ...Object.keys(CRASH_TARGETS).map(n => `crash ${n}`)
  ]) {
    const w = await scenarios(name).catch(() => undefined)
    if (!w) continue
    await w.world.stop()
    await w.sb.stop()
  }
})

describe('a Worker target rotated with an R2 token', () => {
  let w: World
  beforeAll(async () => {
    w = await settle('worker only')
  })

  it('rotates without a deploy workflow: one bulk patch, then the watched revoke', () => {
    const [result] = w.results
    expect(result!.stderr).toBe('')
    expect(result!.exitCode).toBe(0)
    expect(result!.outputs.result).toBe('rotated')
    expect(mutationList(w.sb)).toEqual([
      ...START,
      'PATCH worker avatars-worker secrets R2_ACCESS_KEY_ID ← {new}, R2_SECRET_ACCESS_KEY ← {new}',
      'PATCH variable R2_ROTATION_STATE phase=published',
      ...REVOKE
    ])
  })

  it("the Worker's live version holds the new pair, in one new version deployed at once", () => {
    expectWorkerHolds(w, newToken(w.sb), ['R2_ACCESS_KEY_ID', 'R2_SECRET_ACCESS_KEY'])
    const versions = w.sb.cloudflare.workers.versionsOf(SCRIPT)
    expect(versions.map(v => v.origin)).toEqual(['seed', 'secrets-bulk'])
    expect(w.sb.cloudflare.workers.liveVersion(SCRIPT)?.id).toBe(versions[1]!.id)
    expect(lineage(w.sb).map(t => t.id)).toEqual([newToken(w.sb).id])
  })

  it('the Worker never failed a health check, the new token serving from the patch on', () => {
    expectWorkerNeverFailed(w)
    const served = new Set(w.world.worker.healthChecks.map(c => c.accessKeyId))
    expect(served).toEqual(new Set([w.sb.current.id, newToken(w.sb).id]))
  })

  it('the summary warns that rolling the Worker back brings back the revoked token', () => {
    const summary = w.results[0]!.summary
    expect(summary).toContain(`Worker ${SCRIPT}: every version made before`)
    expect(summary).toContain(`holds the previous token ${w.sb.current.id}, now deleted`)
    expect(summary).toContain('brings back a revoked credential')
  })

  it('leaks no value', () => {
    expectNoLeaks(w)
  })
})

describe('a Worker target beside a repository target', () => {
  let w: World
  beforeAll(async () => {
    w = await settle('worker and repository')
  })

  it('writes the repository secrets one by one and the Worker in one patch, then deploys', () => {
    const [result] = w.results
    expect(result!.exitCode).toBe(0)
    expect(result!.outputs.result).toBe('rotated')
    expect(mutationList(w.sb)).toEqual([
      ...START,
      'PUT secret repo:acme/site CLOUDFLARE_API_TOKEN ← {new}',
      'PUT secret repo:acme/site R2_ACCESS_KEY_ID ← {new}',
      'PUT secret repo:acme/site R2_SECRET_ACCESS_KEY ← {new}',
      'PATCH worker avatars-worker secrets CLOUDFLARE_API_TOKEN ← {new}, R2_ACCESS_KEY_ID ← {new}, R2_SECRET_ACCESS_KEY ← {new}',
      'PATCH variable R2_ROTATION_STATE phase=published',
      'PATCH variable R2_ROTATION_STATE phase=deploying',
      'POST dispatch',
      'PATCH variable R2_ROTATION_STATE phase=deploying',
      ...REVOKE
    ])
  })

  it('the Worker, the repository and the deployed app all hold the new token', () => {
    const id = expectOneLiveToken(w.sb)
    expect(id).toBe(newToken(w.sb).id)
    expectWorkerHolds(w, newToken(w.sb), [
      'CLOUDFLARE_API_TOKEN',
      'R2_ACCESS_KEY_ID',
      'R2_SECRET_ACCESS_KEY'
    ])
    expect(w.sb.cloudflare.workers.secretsOf(SCRIPT).CLOUDFLARE_API_TOKEN).toBe(
      newToken(w.sb).value
    )
  })

  it('neither the Worker nor the app failed a health check', () => {
    expectWorkerNeverFailed(w)
    expect(w.appFailures).toEqual([])
  })

  it('leaks no value', () => {
    expectNoLeaks(w)
  })
})

describe('a Worker in a gradual rollout', () => {
  let w: World
  beforeAll(async () => {
    w = await settle('gradual rollout')
  })

  it('is refused in preflight, naming the Worker and what to do, before anything is minted', () => {
    const [result] = w.results
    expect(result!.exitCode).toBe(1)
    expect(result!.outputs.result).toBe('failed')
    expect(result!.stdout).toMatch(
      /::error::.*Worker avatars-worker is in a gradual rollout \(deployment [0-9a-f-]+: [0-9a-f-]+ at 10%25, [0-9a-f-]+ at 90%25\).*Finish the rollout/
    )
    expect(mutationList(w.sb)).toEqual([])
    expect(w.sb.log.events('worker.secret_write_refused')).toEqual([])
  })

  it('leaves the Worker, its rollout and the token as they were, and healthy', () => {
    expect(w.sb.cloudflare.workers.inRollout(SCRIPT)).toBe(true)
    expectWorkerHolds(w, w.sb.current)
    expect(lineage(w.sb).map(t => t.id)).toEqual([w.sb.current.id])
    expectWorkerNeverFailed(w)
    expectNoLeaks(w)
  })
})

describe('a management token without Workers Scripts Write', () => {
  it('is refused in preflight with the permission to add, before anything is minted', async () => {
    const w = await settle('no Workers right')
    const [result] = w.results
    expect(result!.exitCode).toBe(1)
    expect(result!.stdout).toMatch(
      /::error::Phase preflight failed: The management token \(cloudflare-api-token\) [0-9a-f]{32} lacks the permission 'Workers Scripts Write' on account 0a1b2c3d4e5f60718293a4b5c6d7e8f9, needed to write the secrets of Worker avatars-worker\./
    )
    expect(result!.stdout).toContain('Nothing was minted or changed.')
    expect(mutationList(w.sb)).toEqual([])
    expectWorkerHolds(w, w.sb.current)
  })
})

describe('a rollback after a smoke check fails on the new credentials', () => {
  let w: World
  beforeAll(async () => {
    w = await settle('rollback')
  })

  it('patches the previous values back in one patch and deletes the new token', () => {
    const [result] = w.results
    expect(result!.exitCode).toBe(1)
    expect(result!.outputs.result).toBe('rolled-back')
    expect(mutationList(w.sb)).toEqual([
      ...START,
      'PATCH worker avatars-worker secrets R2_ACCESS_KEY_ID ← {new}, R2_SECRET_ACCESS_KEY ← {new}',
      'PATCH variable R2_ROTATION_STATE phase=published',
      'PATCH variable R2_ROTATION_STATE phase=smoke',
      'PATCH variable R2_ROTATION_STATE phase=rolling-back',
      'PATCH worker avatars-worker secrets R2_ACCESS_KEY_ID ← {previous}, R2_SECRET_ACCESS_KEY ← {previous}',
      'DELETE /user/tokens/{new}',
      'PATCH variable R2_ROTATION_STATE phase=rolled-back',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    expect(journalOf(w.sb).phase).toBe('rolled-back')
  })

  it('the Worker serves the previous token again, from a third version; it never failed', () => {
    expectWorkerHolds(w, w.sb.current, ['R2_ACCESS_KEY_ID', 'R2_SECRET_ACCESS_KEY'])
    expect(w.sb.cloudflare.workers.versionsOf(SCRIPT).map(v => v.origin)).toEqual([
      'seed',
      'secrets-bulk',
      'secrets-bulk'
    ])
    expect(lineage(w.sb).map(t => t.id)).toEqual([w.sb.current.id])
    expectWorkerNeverFailed(w)
  })

  it('the summary warns about the version that holds the deleted token', () => {
    expect(w.results[0]!.summary).toContain(
      `holds the new token ${newToken(w.sb).id}, deleted by the rollback`
    )
    expectNoLeaks(w)
  })
})

/**
 * The next run after the kill. Worker first: the repository still holds the previous token, so the
 * inputs name it and the run restores every target (the Worker patched back), deletes the new
 * token, then rotates afresh. Repository first: the inputs name the new token, so the run
 * publishes it everywhere again and finishes.
 */
const AFTER_CRASH = {
  'worker first': [
    'POST variable R2_ROTATION_STATE_LOCK → 409',
    'PATCH variable R2_ROTATION_STATE_LOCK',
    'PATCH variable R2_ROTATION_STATE phase=rolling-back',
    'PATCH worker avatars-worker secrets CLOUDFLARE_API_TOKEN ← {previous}, R2_ACCESS_KEY_ID ← {previous}, R2_SECRET_ACCESS_KEY ← {previous}',
    'PUT secret repo:acme/site CLOUDFLARE_API_TOKEN ← {previous}',
    'PUT secret repo:acme/site R2_ACCESS_KEY_ID ← {previous}',
    'PUT secret repo:acme/site R2_SECRET_ACCESS_KEY ← {previous}',
    'POST dispatch',
    'PATCH variable R2_ROTATION_STATE phase=rolling-back',
    'DELETE /user/tokens/{new}',
    'PATCH variable R2_ROTATION_STATE phase=rolled-back',
    'PATCH variable R2_ROTATION_STATE phase=minting',
    'POST /user/tokens → {new#2}',
    'PATCH variable R2_ROTATION_STATE phase=minted',
    'PATCH variable R2_ROTATION_STATE phase=publishing',
    'PATCH worker avatars-worker secrets CLOUDFLARE_API_TOKEN ← {new#2}, R2_ACCESS_KEY_ID ← {new#2}, R2_SECRET_ACCESS_KEY ← {new#2}',
    'PUT secret repo:acme/site CLOUDFLARE_API_TOKEN ← {new#2}',
    'PUT secret repo:acme/site R2_ACCESS_KEY_ID ← {new#2}',
    'PUT secret repo:acme/site R2_SECRET_ACCESS_KEY ← {new#2}',
    'PATCH variable R2_ROTATION_STATE phase=published',
    'PATCH variable R2_ROTATION_STATE phase=deploying',
    'POST dispatch',
    'PATCH variable R2_ROTATION_STATE phase=deploying',
    'PATCH variable R2_ROTATION_STATE phase=smoke',
    'PATCH variable R2_ROTATION_STATE phase=revoking',
    'PATCH variable R2_ROTATION_STATE phase=revoking',
    'PUT /user/tokens/{previous} status=disabled',
    'DELETE /user/tokens/{previous}',
    'PATCH variable R2_ROTATION_STATE phase=done',
    'DELETE variable R2_ROTATION_STATE_LOCK'
  ],
  'repository first': [
    'POST variable R2_ROTATION_STATE_LOCK → 409',
    'PATCH variable R2_ROTATION_STATE_LOCK',
    'PATCH variable R2_ROTATION_STATE phase=publishing',
    'PUT secret repo:acme/site CLOUDFLARE_API_TOKEN ← {new}',
    'PUT secret repo:acme/site R2_ACCESS_KEY_ID ← {new}',
    'PUT secret repo:acme/site R2_SECRET_ACCESS_KEY ← {new}',
    'PATCH worker avatars-worker secrets CLOUDFLARE_API_TOKEN ← {new}, R2_ACCESS_KEY_ID ← {new}, R2_SECRET_ACCESS_KEY ← {new}',
    'PATCH variable R2_ROTATION_STATE phase=published',
    'PATCH variable R2_ROTATION_STATE phase=deploying',
    'POST dispatch',
    'PATCH variable R2_ROTATION_STATE phase=deploying',
    'PATCH variable R2_ROTATION_STATE phase=smoke',
    'PATCH variable R2_ROTATION_STATE phase=revoking',
    'PATCH variable R2_ROTATION_STATE phase=revoking',
    'PUT /user/tokens/{previous} status=disabled',
    'DELETE /user/tokens/{previous}',
    'PATCH variable R2_ROTATION_STATE phase=done',
    'DELETE variable R2_ROTATION_STATE_LOCK'
  ]
}

describe.each(Object.keys(CRASH_TARGETS))('killed right after the Worker patch (%s)', name => {
  let w: World
  beforeAll(async () => {
    w = await settle(`crash ${name}`)
  })

  it('the killed run ends at the patch, which took effect', () => {
    expect(w.results[0]!.signal).toBe('SIGKILL')
    const all = mutationList(w.sb)
    const killed = all.slice(0, all.length - mutationList(w.sb, {}, w.lastRunSeq).length)
    expect(killed.at(-1)).toBe(
      'PATCH worker avatars-worker secrets CLOUDFLARE_API_TOKEN ← {new}, R2_ACCESS_KEY_ID ← {new}, R2_SECRET_ACCESS_KEY ← {new}'
    )
    expect(killed.filter(m => m.startsWith('PUT secret'))).toHaveLength(
      name === 'worker first' ? 0 : 3
    )
  })

  it('the next run settles: one live token everywhere, no orphan, the Worker on it', () => {
    const rerun = w.results[1]!
    expect(rerun.exitCode).toBe(0)
    expect(rerun.outputs.result).toBe('rotated')
    const id = expectOneLiveToken(w.sb)
    const token = w.sb.cloudflare.findById(id)!
    expectWorkerHolds(w, { id, value: token.value })
    expect(journalOf(w.sb).phase).toBe('done')
  })

  it('what the next run did: finish forward, or restore and rotate afresh', () => {
    expect(mutationList(w.sb, {}, w.lastRunSeq)).toEqual(
      AFTER_CRASH[name as keyof typeof AFTER_CRASH]
    )
  })

  it('neither the Worker nor the app ever failed', () => {
    expectWorkerNeverFailed(w)
    expect(w.appFailures).toEqual([])
    expectNoLeaks(w)
  })
})
