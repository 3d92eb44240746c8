/**
 * Races, skewed clocks, hostile error texts, rate limits, the token quota, and reports that tell
 * the truth when a rotation fails. Each scenario asserts the ordered mutating requests.
 *
 * - Two runs of the action on one journal, started at the same instant or with the second one
 *   starting while the first is in each later phase: exactly one rotates; the other changes
 *   nothing (a refused claim of the lock at most) and names the run that holds it.
 * - A runner whose clock is 3 s ahead of Cloudflare's: an ambiguous create, and a crash right
 *   after a create, leave no orphan (orphans are found by the journal's unique name).
 * - Error answers that quote the request back (its Authorization header, its body: a token, a
 *   ciphertext) on every kind of mutating call: nothing of it reaches any output.
 * - Cloudflare's rate limit: a five-minute block fails fast with nothing changed; a budget too
 *   small for a rotation is refused in preflight; a short Retry-After is waited out.
 */
import { startSandbox, type Sandbox, type SandboxOptions } from '../../sandbox/index.js'
import type { RequestEntry } from '../../sandbox/log.js'
import type { Fault } from '../../sandbox/service.js'
import { runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import {
  apiMutations,
  expectNoLeaks,
  expectOneLiveToken,
  journalOf,
  killWhen,
  lineage,
  mutationList,
  nextRunInputs,
  startAll,
  waitForRuns
} from './scenario.js'

const errors = (result: ActionResult): string[] =>
  result.stdout.split('\n').filter(l => l.startsWith('::error'))

/** A second GitHub token with the same rights, so that each run's requests can be told apart. */
function secondGitHubToken(sb: Sandbox): string {
  const token = `github_pat_second_${'x'.repeat(30)}`
  sb.github.addToken(token)
  return token
}

const byToken = (entries: RequestEntry[], token: string): RequestEntry[] =>
  entries.filter(e => String(e.headers.authorization ?? '').endsWith(token))

// ------------------------------------------------------------------ two runs, one journal

interface Race {
  sb: Sandbox
  first: ActionResult
  second: ActionResult
  /** The mutating GitHub requests of the second run (told apart by its token). */
  secondMutations: RequestEntry[]
  secondToken: string
}

/**
 * Starts one run, and a second one on the same sandbox either at the same instant or when the
 * first run's journal write of `phase` is answered. In the first case each run's lock claim is
 * held until both runs have sent theirs, so that the claims race however late a loaded machine
 * lets the second process start (it could otherwise read the first run's journal before claiming
 * anything, which is another test's case). In the second case the first run's next
 * GitHub request is held until the second run has ended, so that the second one always meets the
 * first one in that phase (whatever the machine's speed).
 */
async function race(phase?: string): Promise<Race> {
  const sb = await startSandbox()
  try {
    const secondToken = secondGitHubToken(sb)
    let startSecond!: () => void
    const go = new Promise<void>(resolve => (startSecond = resolve))
    let secondEnded: Promise<unknown> | undefined
    if (phase === undefined) {
      let claims = 0
      let release!: () => void
      const bothClaimed = new Promise<void>(resolve => (release = resolve))
      // Should one run never claim, the other is let go after a while (and the test says why).
      const giveUp = setTimeout(() => release(), 30_000)
      sb.github.service.hold = entry => {
        const body = entry.body as { name?: string } | undefined
        if (entry.method !== 'POST' || body?.name !== 'R2_ROTATION_STATE_LOCK') return undefined
        if (++claims === 2) {
          clearTimeout(giveUp)
          release()
        }
        return bothClaimed
      }
      startSecond()
    } else {
      sb.github.service.onAnswered = entry => {
        const body = entry.body as { value?: string } | undefined
        if (body?.value?.includes(`"phase":"${phase}"`)) startSecond()
      }
      sb.github.service.hold = entry =>
        secondEnded && String(entry.headers.authorization ?? '').endsWith(sb.githubToken)
          ? secondEnded.then(() => undefined)
          : undefined
    }
    const firstRun = runAction(sb, sandboxInputs(sb), { asWorkflowRun: true })
    // The second run reads its current-* from the secrets as they are when it starts.
    const secondRun = go.then(() => {
      const run = runAction(sb, nextRunInputs(sb, { 'github-token': secondToken }), {
        asWorkflowRun: true
      })
      if (phase !== undefined) secondEnded = run
      return run
    })
    const [first, second] = await Promise.all([firstRun, secondRun])
    sb.github.service.onAnswered = undefined
    sb.github.service.hold = undefined
    const secondMutations = byToken(apiMutations(sb.log.requests()), secondToken)
    return { sb, first, second, secondMutations, secondToken }
  } finally {
    await sb.stop()
  }
}

const PHASES = ['minting', 'minted', 'publishing', 'deploying', 'smoke', 'revoking'] as const
const races = startAll([() => race(), ...PHASES.map(phase => () => race(phase))], 3)

describe('two runs started at the same instant', () => {
  let r: Race
  beforeAll(async () => {
    r = await races[0]!
  }, 120_000)

  it('exactly one claims the lock and rotates', () => {
    const outcomes = [r.first, r.second].map(x => x.outputs.result).sort()
    expect(outcomes).toEqual(['failed', 'rotated'])
    expect(r.sb.log.events('token.created')).toHaveLength(1)
    const lockClaims = r.sb.log
      .requests({ service: 'github', method: 'POST' })
      .filter(e => (e.body as { name?: string }).name === 'R2_ROTATION_STATE_LOCK')
    expect(lockClaims.map(e => e.status).sort()).toEqual([201, 409])
    expectOneLiveToken(r.sb)
  })

  it('the other changes nothing but its refused claim, and names the run that holds the lock', () => {
    const firstWon = r.first.outputs.result === 'rotated'
    const loser = firstWon ? r.second : r.first
    const loserToken = firstWon ? r.secondToken : r.sb.githubToken
    const mutations = byToken(apiMutations(r.sb.log.requests()), loserToken)
    // Its claim refused (409), and nothing else.
    expect(mutations.map(e => `${e.method} ${e.status}`)).toEqual(['POST 409'])
    expect(loser.exitCode).toBe(1)
    expect(errors(loser)).toEqual([
      expect.stringMatching(
        /^::error::Phase preflight failed: Another rotation holds the lock R2_ROTATION_STATE_LOCK: run \d+ \(attempt 1\) https:\/\/github\.com\/acme\/site\/actions\/runs\/\d+; that run is still going\. Nothing was changed\./
      )
    ])
    expectNoLeaks(r.sb, [r.first, r.second])
    expect(r.sb.log.violations).toEqual([])
  })
})

describe.each(PHASES.map((phase, i) => [phase, i + 1] as const))(
  'a second run starting while the first is in phase %s',
  (phase, i) => {
    let r: Race
    beforeAll(async () => {
      r = await races[i]!
    }, 120_000)

    it('changes nothing (a refused claim at most) and names the first run; the first rotates', () => {
      expect(r.first.outputs.result).toBe('rotated')
      expect(r.second.exitCode).toBe(1)
      expect([[], ['POST 409']]).toContainEqual(
        r.secondMutations.map(e => `${e.method} ${e.status}`)
      )
      expect(r.sb.log.events('token.created')).toHaveLength(1)
      expect(errors(r.second)).toEqual([
        expect.stringMatching(
          /Another rotation (is in progress in run|holds the lock R2_ROTATION_STATE_LOCK: run) \d+/
        )
      ])
      expectOneLiveToken(r.sb)
      expectNoLeaks(r.sb, [r.first, r.second])
    })
  }
)

// ------------------------------------------------------------------ a runner clock ahead of Cloudflare's

describe("a runner clock 3 s ahead of Cloudflare's", () => {
  it('an ambiguous create leaves no orphan', async () => {
    const sb = await startSandbox()
    try {
      sb.cloudflare.skewMs = -3000
      sb.cloudflare.service.inject({
        method: 'POST',
        path: /^\/client\/v4\/user\/tokens$/,
        dropAfterHandling: true
      })
      const result = await runAction(sb, sandboxInputs(sb))
      expect(result.outputs.result).toBe('rotated')
      // The lost create's token, found by its unique name and deleted before the one more create.
      expect(sb.log.events('token.created')).toHaveLength(2)
      expect(mutationList(sb).filter(l => l.includes('/user/tokens'))).toEqual([
        'POST /user/tokens → {new}, answer lost',
        'DELETE /user/tokens/{new}',
        'POST /user/tokens → {new#2}',
        'PUT /user/tokens/{previous} status=disabled',
        'DELETE /user/tokens/{previous}'
      ])
      expectOneLiveToken(sb)
      expectNoLeaks(sb, [result])
    } finally {
      await sb.stop()
    }
  })

  it('a crash right after a create leaves no orphan: the next run deletes it by its name', async () => {
    const sb = await startSandbox()
    try {
      sb.cloudflare.skewMs = -3000
      let child: import('node:child_process').ChildProcess | undefined
      const unhook = killWhen(
        sb,
        () => child,
        entry => entry.method === 'POST' && entry.path === '/client/v4/user/tokens'
      )
      const killed = await runAction(sb, sandboxInputs(sb), { onSpawn: c => (child = c) })
      unhook()
      expect(killed.signal).toBe('SIGKILL')
      expect(journalOf(sb)).toMatchObject({ phase: 'minting' })
      await waitForRuns(sb)
      const next = await runAction(sb, nextRunInputs(sb))
      expect(next.outputs.result).toBe('rotated')
      expect(next.stdout).toMatch(
        /Unfinished rotation from run \d+ \(phase minting\): delete the unpublished token\(s\) [0-9a-f]{32}/
      )
      expect(lineage(sb)).toHaveLength(1)
      expectOneLiveToken(sb)
      expectNoLeaks(sb, [killed, next])
    } finally {
      await sb.stop()
    }
  })
})

// ------------------------------------------------------------------ hostile error texts

interface Echo {
  name: string
  service: 'cloudflare' | 'github'
  fault: Fault
}

const ID = '[0-9a-f]{32}'
const ECHOES: Echo[] = [
  {
    name: 'the token create',
    service: 'cloudflare',
    fault: { method: 'POST', path: /^\/client\/v4\/user\/tokens$/, status: 400, echoRequest: true }
  },
  {
    name: 'the verify as the new token',
    service: 'cloudflare',
    fault: { method: 'GET', path: /\/tokens\/verify$/, status: 400, echoRequest: true, times: 2 }
  },
  {
    name: 'the disable of the old token',
    service: 'cloudflare',
    fault: {
      method: 'PUT',
      path: new RegExp(`^/client/v4/user/tokens/${ID}$`),
      status: 400,
      echoRequest: true
    }
  },
  {
    name: 'the delete of the old token',
    service: 'cloudflare',
    fault: {
      method: 'DELETE',
      path: new RegExp(`^/client/v4/user/tokens/${ID}$`),
      status: 400,
      echoRequest: true
    }
  },
  {
    name: 'a secret write',
    service: 'github',
    fault: {
      method: 'PUT',
      path: /\/actions\/secrets\/R2_SECRET_ACCESS_KEY$/,
      status: 422,
      echoRequest: true
    }
  },
  {
    name: 'the dispatch',
    service: 'github',
    fault: { method: 'POST', path: /\/dispatches$/, status: 422, echoRequest: true }
  },
  {
    name: 'a journal write',
    service: 'github',
    fault: {
      method: 'PATCH',
      path: /\/actions\/variables\/R2_ROTATION_STATE$/,
      status: 422,
      echoRequest: true
    }
  },
  {
    name: 'the lock claim',
    service: 'github',
    fault: { method: 'POST', path: /\/actions\/variables$/, status: 422, echoRequest: true }
  }
]

const echoes = startAll(
  ECHOES.map(echo => async () => {
    const sb = await startSandbox()
    try {
      sb[echo.service].service.inject(echo.fault)
      const result = await runAction(sb, sandboxInputs(sb))
      return { sb, result }
    } finally {
      await sb.stop()
    }
  }),
  3
)

describe.each(ECHOES.map((echo, i) => [echo.name, i] as const))(
  'an error answer to %s that quotes the request back',
  (_name, i) => {
    it('reaches no output: no value, SHA-256, ciphertext or Authorization header', async () => {
      const { sb, result } = await echoes[i]!
      // The fault answered, and its echo carried what the scrubber must remove.
      const echoed = sb.log.requests().filter(e => e.faulted)
      expect(echoed.length).toBeGreaterThan(0)
      expectNoLeaks(sb, [result])
      for (const text of [result.stdout, result.stderr, result.summary, result.outputsFile]) {
        expect(text).not.toMatch(/Bearer [A-Za-z0-9_-]{20,}/)
        expect(text).not.toMatch(/token github_pat_/)
      }
      // One annotation for the failure, when the rotation failed.
      if (result.exitCode !== 0) expect(errors(result)).toHaveLength(1)
      expect(sb.log.violations.filter(v => !v.includes('injected'))).toEqual([])
    })
  }
)

// ------------------------------------------------------------------ rate limits

describe("Cloudflare's rate limit", () => {
  async function blocked(
    prepare: (sb: Sandbox) => void,
    options: SandboxOptions = {}
  ): Promise<{ sb: Sandbox; result: ActionResult; ms: number }> {
    const sb = await startSandbox(options)
    try {
      prepare(sb)
      const started = Date.now()
      const result = await runAction(sb, sandboxInputs(sb))
      return { sb, result, ms: Date.now() - started }
    } finally {
      await sb.stop()
    }
  }

  it('a five-minute block before the mint: fails fast, nothing changed', async () => {
    const { sb, result, ms } = await blocked(sb => sb.cloudflare.block(300))
    expect(result.exitCode).toBe(1)
    expect(mutationList(sb)).toEqual([])
    expect(errors(result)).toEqual([
      expect.stringMatching(
        /was refused for a rate limit \(HTTP 429\) and Cloudflare asks to wait (29\d|300) s, longer than the 60 s this action waits for one call\. The budget of 1200 requests per five minutes is shared by every person and tool of this Cloudflare user/
      )
    ])
    // No five-minute wait (nor three of them).
    expect(ms).toBeLessThan(15_000)
  })

  it('a block that begins between preflight and the mint: the create is refused, nothing minted', async () => {
    const { sb, result } = await blocked(sb => {
      sb.github.service.onAnswered = entry => {
        if ((entry.body as { name?: string } | undefined)?.name === 'R2_ROTATION_STATE_LOCK') {
          sb.cloudflare.block(300)
        }
      }
    })
    expect(result.exitCode).toBe(1)
    expect(sb.log.events('token.created')).toEqual([])
    expect(mutationList(sb)).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'POST variable R2_ROTATION_STATE phase=minting',
      'POST /user/tokens → 429',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    expect(errors(result)).toEqual([
      expect.stringMatching(/Phase mint failed: .*asks to wait 300 s/)
    ])
  })

  it('a budget too small for a rotation is refused in preflight', async () => {
    const { sb, result } = await blocked(sb => sb.cloudflare.setRateBudget({ remaining: 15 }))
    expect(result.exitCode).toBe(1)
    expect(mutationList(sb)).toEqual([])
    expect(errors(result)).toEqual([
      expect.stringMatching(
        /Only \d+ Cloudflare API requests are left in this five-minute window, and a rotation needs up to 25 after preflight/
      )
    ])
  })

  it('a short Retry-After is waited out', async () => {
    const { sb, result } = await blocked(sb =>
      sb.cloudflare.service.inject({
        method: 'GET',
        path: /\/user\/tokens\/permission_groups$/,
        status: 429,
        retryAfter: 2
      })
    )
    expect(result.outputs.result).toBe('rotated')
    expect(result.stdout).toMatch(
      /Cloudflare rate limit on list permission groups \(user-owned\): waiting 2 s as Cloudflare asks/
    )
    expectOneLiveToken(sb)
  })
})

// ------------------------------------------------------------------ the token quota

describe('a full token quota', () => {
  it('is refused before minting, saying how many exist and which to delete', async () => {
    const sb = await startSandbox()
    try {
      const fillers = sb.cloudflare.fillQuota()
      // Two of them left disabled by earlier rotations.
      fillers[0]!.status = 'disabled'
      fillers[1]!.status = 'disabled'
      const result = await runAction(sb, sandboxInputs(sb))
      expect(result.exitCode).toBe(1)
      expect(mutationList(sb)).toEqual([])
      expect(errors(result)).toEqual([
        expect.stringMatching(
          new RegExp(
            `Cloudflare allows 50 user-owned API tokens and 50 exist: the new token needs a free slot, because it is created before the old one is deleted\\. Delete tokens you no longer need, for example the 2 disabled one\\(s\\): ${fillers[0]!.id} "${fillers[0]!.name}", ${fillers[1]!.id}`
          )
        )
      ])
    } finally {
      await sb.stop()
    }
  })
})

// ------------------------------------------------------------------ reports that tell the truth

describe('a rollback tells what is in service', () => {
  it('outputs the previous token and the rollback run; counts distinct secrets; one annotation; stops the probe', async () => {
    const sb = await startSandbox()
    try {
      // The deploy ships the new token, then the app fails: the smoke phase fails while the R2
      // probe with the new credentials is kept failing too (it would retry for two minutes).
      sb.github.service.onAnswered = entry => {
        if (
          entry.method === 'POST' &&
          entry.path.endsWith('/dispatches') &&
          sb.log
            .requests({ service: 'github', method: 'POST' })
            .filter(e => e.path.endsWith('/dispatches')).length === 1
        ) {
          sb.app.service.inject({ path: /^\/healthz$/, status: 503, times: 1_000_000 })
          sb.r2.service.inject({ path: /\.r2-token-rotation\//, status: 503, times: 1_000_000 })
        }
        const body = entry.body as { value?: string } | undefined
        if (body?.value?.includes('"phase":"rolling-back"')) {
          sb.app.service.faults.length = 0
          sb.r2.service.faults.length = 0
        }
      }
      const result = await runAction(sb, sandboxInputs(sb, { 'smoke-timeout': '10s' }))
      expect(result.outputs.result).toBe('rolled-back')
      const dispatched = sb.log.events('run.completed').map(e => e.detail.run_id)
      expect(result.outputs['deploy-run-id']).toBe(String(dispatched.at(-1)))
      expect(result.outputs['token-id']).toBe(sb.current.id)
      expect(result.outputs['access-key-id']).toBe(sb.current.id)
      expect(result.summary).toMatch(/Secrets written<\/td><td>3</)
      expect(errors(result)).toHaveLength(1)
      // The probe stopped with the smoke phase: the rollback began well before its two minutes.
      const smokeFailed = sb.log
        .requests({ service: 'app' })
        .filter(e => e.status === 503)
        .at(-1)!
      const rollingBack = sb.log
        .requests({ service: 'github', method: 'PATCH' })
        .find(e => (e.body as { value?: string }).value?.includes('"phase":"rolling-back"'))!
      // Left running, it would retry about 25 times (every 5 s at most) before the rollback.
      const probesBetween = sb.log
        .requests({ service: 'r2' })
        .filter(
          e =>
            e.path.includes('.r2-token-rotation') &&
            e.seq > smokeFailed.seq &&
            e.seq < rollingBack.seq
        )
      expect(probesBetween.length).toBeLessThanOrEqual(3)
      expectOneLiveToken(sb)
      expectNoLeaks(sb, [result])
    } finally {
      await sb.stop()
    }
  })
})
