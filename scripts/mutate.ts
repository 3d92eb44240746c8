/**
 * `npm run mutate`: seeds one-line faults into the code that owns the invariant (decide.ts,
 * rotation.ts, steps.ts) and runs the project's own tests against each, to show that the tests
 * fail when the code is wrong. Prints one line per fault and the share caught.
 *
 *   npm run mutate [-- --only D03,R02 --unit-only --keep --list]
 *
 * Each fault runs in a copy of the project under $TMPDIR/r2-mutants (src, sandbox, __tests__, scripts and
 * the configs, with node_modules linked), never in the checkout. For each:
 *   1. the one-line change is applied (its text must occur exactly once) and type-checked: a fault
 *      that does not compile would be caught by the compiler, not by a test, so it is an error in
 *      this list;
 *   2. the unit tests (decide, journal, steps' collaborators) run against src/ through ts-jest;
 *   3. if they all pass, the fault is bundled with ncc into a private dist (R2_ROTATION_ENTRY,
 *      which sandbox/runner.ts honours) and the end-to-end tests that cover the invariant run
 *      against it.
 * A fault is caught when a test fails; `--bail` stops each run at its first failure. A run that
 * passes everything is a survivor: a missing test.
 *
 * Not part of `npm test` or CI: one pass takes about as long as the suite does per survivor.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import {
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

interface Fault {
  id: string
  file: string
  /** Text that occurs exactly once in `file`. */
  find: string
  replace: string
  /** What the fault does, in the words of the behaviour it breaks. */
  what: string
}

const D = 'src/decide.ts'
const R = 'src/rotation.ts'
const S = 'src/steps.ts'

/** One-line faults on the paths that lead to a delete, a disable, an enable or a restore. */
export const FAULTS: Fault[] = [
  // ---------------------------------------------------------------- decide.mayDelete
  {
    id: 'D01',
    file: D,
    find: "if (request.publishStarted) return no('it may already be in a secret')",
    replace: '',
    what: 'an unpublished token may be deleted after its publish began'
  },
  {
    id: 'D02',
    file: D,
    find: "if (!request.mintedByThisRun) return no('this run did not mint it')",
    replace: '',
    what: 'a token this run did not mint may be deleted as unpublished'
  },
  {
    id: 'D03',
    file: D,
    find: 'if (request.tokenId === request.previousId || request.knownIds.includes(request.tokenId)) {',
    replace: 'if (request.tokenId === request.previousId) {',
    what: 'an orphan that the inputs name (in service) may be deleted'
  },
  {
    id: 'D04',
    file: D,
    find: 'request.tokenId !== request.journalPendingId &&\n        (!request.journalName || request.name !== request.journalName)',
    replace: 'false',
    what: 'any token may be deleted as an orphan, tied to the rotation or not'
  },
  {
    id: 'D05',
    file: D,
    find: "if (request.tokenId === request.nextId) return no('it is the token now in service')",
    replace: '',
    what: 'the previous token may be deleted when it is the token in service'
  },
  {
    id: 'D06',
    file: D,
    find: "if (!request.publishedEverywhere) return no('not every target holds its replacement')",
    replace: '',
    what: 'the previous token may be deleted before every target holds its replacement'
  },
  {
    id: 'D07',
    file: D,
    find: "if (request.deploy === 'not-concluded') {\n        return no('no deploy with its replacement concluded success')",
    replace:
      "if (request.deploy === 'never' as string) {\n        return no('no deploy with its replacement concluded success')",
    what: 'the previous token may be deleted before a deploy concluded success'
  },
  {
    id: 'D08',
    file: D,
    find: "if (!request.smokePassed) return no('the smoke checks did not pass')",
    replace: '',
    what: 'the previous token may be deleted though the smoke checks failed'
  },
  {
    id: 'D09',
    file: D,
    find: "if (request.watch === 'failed' || request.watch === 'not-run') {",
    replace: "if (request.watch === 'failed') {",
    what: 'the previous token may be deleted when the watch did not run'
  },
  {
    id: 'D10',
    file: D,
    find: 'if (request.runsGoing.length > 0) {',
    replace: 'if (request.runsGoing.length > 1) {',
    what: 'a rolled-back token may be deleted while a deploy run may still ship it'
  },
  {
    id: 'D11',
    file: D,
    // With the line before it: the management token's pending case makes the same check.
    find: "return no('it is the token restored to service')\n      if (!request.restoredEverywhere) return no('not every target holds the previous token again')",
    replace: "return no('it is the token restored to service')",
    what: 'a rolled-back token may be deleted before every target holds the previous one'
  },
  {
    id: 'D12',
    file: D,
    // With the case label: the management token's pending case makes the same check.
    find: "case 'rolled-back':\n      if (request.tokenId === request.previousId) return no('it is the token restored to service')",
    replace: "case 'rolled-back':",
    what: 'a rollback may delete the token it restored'
  },
  {
    id: 'D13',
    file: D,
    find: "if (request.inUse.includes(request.tokenId)) return no('it is in use in this rotation')",
    replace: '',
    what: 'a leftover that this rotation uses may be deleted'
  },
  {
    id: 'D14',
    file: D,
    find: "if (request.status !== 'disabled' && request.status !== 'expired') {",
    replace: 'if (request.status === undefined) {',
    what: 'a leftover someone enabled again may be deleted'
  },
  // ---------------------------------------------------------------- decide.afterFailure
  {
    id: 'D15',
    file: D,
    find: 'if (!facts.publishStarted) {',
    replace: 'if (!facts.publishStarted || facts.nextOrigin === "minted") {',
    what: 'a failure after publish began deletes the minted token'
  },
  {
    id: 'D16',
    file: D,
    find: 'if (!previous || previous.id === next.id) {',
    replace: 'if (!previous) {',
    what: 'a failure after a forward recovery "rolls back" to the new token and deletes it'
  },
  {
    id: 'D17',
    file: D,
    find: 'if (facts.previousDisabled) {',
    replace: 'if (facts.previousDisabled && Number.isNaN(0)) {',
    what: 'a rollback restores a previous token left disabled'
  },
  {
    id: 'D18',
    file: D,
    // With the line after it: the service token's failure path makes the same check.
    find: "if (facts.settings.onFailure === 'keep-both') {\n    return { kind: 'keep-both', why: 'on-failure is keep-both' }",
    replace:
      "if (facts.settings.onFailure === 'never' as string) {\n    return { kind: 'keep-both', why: 'on-failure is keep-both' }",
    what: 'on-failure: keep-both rolls back anyway'
  },
  {
    id: 'D19',
    file: D,
    find: "  if (missing.length > 0) {\n    return {\n      kind: 'keep-both',",
    replace: "  if (missing.length > 9) {\n    return {\n      kind: 'keep-both',",
    what: 'a rollback starts without every value the secrets need'
  },
  // ---------------------------------------------------------------- decide.decideRecovery
  {
    id: 'D20',
    file: D,
    // With the line before it: the management token's recovery makes the same check.
    find: "const { record } = facts\n  if (facts.journalRun === 'running') {",
    replace: "const { record } = facts\n  if (facts.journalRun === 'self' as string) {",
    what: 'a run recovers a rotation that another run is still doing'
  },
  {
    id: 'D21',
    file: D,
    find: 'if (nextMissing.length === 0) {',
    replace: 'if (nextMissing.length <= 1) {',
    what: 'a recovery finishes forward without every value of the pending token'
  },
  {
    id: 'D22',
    file: D,
    find: 'if (!facts.ownerTokens.some(t => t.id === previousId)) {',
    replace: 'if (false) {',
    what: 'a recovery restores a previous token that is gone'
  },
  {
    id: 'D23',
    file: D,
    find: "if (previous.status === 'disabled') return 'watch'",
    replace: "if (previous.status === 'disabled') return 'finish'",
    what: 'an interrupted watch is taken as finished (the disabled token is never deleted or watched)'
  },
  {
    id: 'D24',
    file: D,
    find: "return record.revoke?.disabled_at ? 'publish' : 'smoke'",
    replace: "return 'smoke'",
    what: 'a token re-enabled after a failed watch is disabled again without a new deploy'
  },
  {
    id: 'D25',
    file: D,
    find: "case 'smoke':\n      return 'smoke'",
    replace: "case 'smoke':\n      return 'finish'",
    what: 'a rotation killed during its smoke checks is taken as finished'
  },
  {
    id: 'D26',
    file: D,
    find: 'const inUse = new Set([...facts.known.map(k => k.id), record.previous_token_id])',
    replace: 'const inUse = new Set([record.previous_token_id])',
    what: 'the token the inputs name counts as an orphan'
  },
  {
    id: 'D27',
    file: D,
    find: "return !['minting', 'minted', 'done', 'rolled-back', 'rotating'].includes(phase)",
    replace:
      "return !['minting', 'minted', 'publishing', 'done', 'rolled-back', 'rotating'].includes(phase)",
    what: 'a rotation killed during its publish counts as unpublished (its token deleted)'
  },
  // ---------------------------------------------------------------- decide: lock, revocation, plan
  {
    id: 'D28',
    file: D,
    find: "return { kind: 'refuse', why: 'that run is still going' }",
    replace: "return { kind: 'take-over', why: 'that run is still going' }",
    what: 'the lock of a run still going is taken over'
  },
  {
    id: 'D29',
    file: D,
    find: 'if (settings.revokeWatchMs === 0 || checks === 0) {',
    replace: 'if (settings.revokeWatchMs >= 0 || checks === 0) {',
    what: 'the old token is deleted at once, without the watch'
  },
  {
    id: 'D30',
    file: D,
    // The R2 token's (`expires_on`); a service token's is `expiresAt`.
    find: 'EXPIRY_WARNING_MS) {\n    return { due: true, why: `it expires on ${token.expires_on}',
    replace: '0) {\n    return { due: true, why: `it expires on ${token.expires_on}',
    what: 'a token expiring within 7 days is not due'
  },
  {
    id: 'D31',
    file: D,
    find: "else if (token.status === 'disabled' || token.status === 'expired') remove.push(id)",
    replace: 'else if (token.status !== undefined) remove.push(id)',
    what: 'a leftover that was enabled again is deleted'
  },
  // ---------------------------------------------------------------- the executor
  {
    id: 'R01',
    file: R,
    find: "await phase(report, 'smoke', async () => {",
    replace: "void phase(report, 'smoke', async () => {",
    what: 'the smoke phase is not awaited before the revoke'
  },
  {
    id: 'R02',
    file: R,
    find: 'const outcome = await watchChecks(ctx, proof.nextId, revocation.watchMs, revocation.intervalMs)\n  if (!outcome.ok) {',
    replace:
      'const outcome = await watchChecks(ctx, proof.nextId, revocation.watchMs, revocation.intervalMs)\n  if (!outcome.ok && Number.isNaN(0)) {',
    what: 'a check that fails during the watch is ignored'
  },
  {
    id: 'R03',
    file: R,
    find: "    await setTokenStatus(ctx, report, plan.owner, previousId, 'active')\n",
    replace: '\n',
    what: 'a failed watch leaves the previous token disabled'
  },
  {
    id: 'R04',
    file: R,
    find: '  log.info(`Restoring the previous token ${previous.id} in every target`)\n  await publish(ctx, report, progress, previous)',
    replace: '  log.info(`Restoring the previous token ${previous.id} in every target`)',
    what: 'a rollback deletes the new token without restoring the secrets'
  },
  {
    id: 'R05',
    file: R,
    find: 'runsGoing: going',
    replace: 'runsGoing: []',
    what: 'a rollback deletes the new token while its deploy run may still ship it'
  },
  {
    id: 'R06',
    file: R,
    find: '  if (plan.deploy) await deploy(ctx, report, plan.deploy, progress)\n  const checked',
    replace: '  const checked',
    what: 'a rollback does not redeploy the previous token'
  },
  {
    id: 'R07',
    file: R,
    find: '    publishStarted: progress.publishStarted,\n    previous: plan.previous,',
    replace: '    publishStarted: false,\n    previous: plan.previous,',
    what: 'a failure after publish began is handled as before it'
  },
  {
    id: 'R08',
    file: R,
    find: '    progress = newProgress()\n',
    replace: '',
    what: "the rotation after a restore takes the restore's writes for its own publish (a failure rolls back instead of deleting its unpublished token)"
  },
  {
    id: 'R09',
    file: R,
    find: "  await journal(ctx, report, { phase: 'minted', pending_token_id: next.id })",
    replace: '',
    what: 'the minted token id is never journaled'
  },
  {
    id: 'R10',
    file: R,
    find: "    await journal(ctx, report, { phase: 'publishing' })",
    replace: '',
    what: 'the publish is not journaled before it starts'
  },
  {
    id: 'R11',
    file: R,
    find: "  await journal(ctx, report, { phase: 'revoking' })\n  const disabled",
    replace: '  const disabled',
    what: 'the revoke is not journaled before it starts'
  },
  {
    id: 'R12',
    file: R,
    find: '      revoke: { disabled_at: new Date().toISOString() }\n    })\n',
    replace: '      revoke: undefined\n    })\n',
    what: 'the disable is not journaled before it is done'
  },
  {
    id: 'R13',
    file: R,
    find: '  await removeLeftovers(ctx, report, plan, [previousId, next.id])',
    replace: '  await removeLeftovers(ctx, report, plan, [])',
    what: 'leftover clean-up may delete a token this rotation uses'
  },
  {
    id: 'R14',
    file: R,
    find: "      ? progress.deployConcludedAt || from !== 'publish'",
    replace: "      ? progress.deployConcludedAt || from === 'publish'",
    what: 'the revoke counts a deploy as concluded when it did not'
  },
  {
    id: 'R15',
    file: R,
    find: "    await journal(ctx, report, { phase: 'pending' })\n  } catch (error) {",
    replace: '  } catch (error) {',
    what: 'keeping both tokens is not journaled (the next run cannot finish it)'
  },
  {
    id: 'R16',
    file: R,
    find: '    if (plan.deploy) {\n      await journal',
    replace: '    if (plan.deploy && Number.isNaN(0)) {\n      await journal',
    what: 'the new token is never deployed before the revoke'
  },
  // ---------------------------------------------------------------- the phases' I/O
  {
    id: 'S01',
    file: S,
    find: '    beforeFirst: () => {\n      progress.publishStarted = true\n    },',
    replace: '    beforeFirst: () => {},',
    what: 'publishStarted is never set (a publish that fails midway deletes a sealed token)'
  },
  {
    id: 'S02',
    file: S,
    find: '  progress.publishedEverywhere = toNext',
    replace: '  progress.publishedEverywhere = true',
    what: 'a rollback counts as publishing the new token everywhere'
  },
  {
    id: 'S03',
    file: S,
    find: '    await probing.catch(() => undefined)\n  }\n  const probed = await probing',
    replace: '  }\n  const probed = await probing.catch(() => undefined)',
    what: "the smoke phase's R2 probe failure is swallowed"
  },
  {
    id: 'S04',
    file: S,
    find: '    if (failed.length > 0) return { ok: false, rounds, failed }',
    replace: '',
    what: 'the watch never fails'
  },
  {
    id: 'S05',
    file: S,
    find: "    if (run && run.status !== 'completed') going.push(runId)",
    replace: '',
    what: 'deploy runs still going are never seen'
  },
  {
    id: 'S06',
    file: S,
    find: "    return { placeholders: { 'access-key-id': credentials.id } }",
    replace: "    return { placeholders: { 'access-key-id': '' } }",
    what: 'the smoke checks cannot tell the new credentials from the old'
  }
]

const UNIT_TESTS = ['__tests__/decide.test.ts', '__tests__/journal.test.ts']
const E2E_TESTS = [
  '__tests__/e2e/invariant.test.ts',
  '__tests__/e2e/proof.test.ts',
  '__tests__/e2e/crash.test.ts',
  '__tests__/e2e/faults.test.ts',
  '__tests__/e2e/rotation.test.ts',
  '__tests__/e2e/races.test.ts',
  '__tests__/e2e/deploy.test.ts',
  '__tests__/e2e/policy.test.ts',
  '__tests__/e2e/targets.test.ts'
]

function parseArgs(argv: string[]): {
  only?: Set<string>
  unitOnly: boolean
  keep: boolean
  list: boolean
} {
  const only = argv.indexOf('--only')
  return {
    ...(only >= 0 ? { only: new Set(argv[only + 1]!.split(',')) } : {}),
    unitOnly: argv.includes('--unit-only'),
    keep: argv.includes('--keep'),
    list: argv.includes('--list')
  }
}

const root = resolve(import.meta.dirname, '..')

function workspace(): string {
  const dir = join(tmpdir(), 'r2-mutants')
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  for (const entry of ['src', 'sandbox', '__tests__', 'scripts', 'action.yml']) {
    cpSync(join(root, entry), join(dir, entry), { recursive: true })
  }
  for (const file of ['package.json', 'tsconfig.json', 'jest.config.js']) {
    cpSync(join(root, file), join(dir, file))
  }
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))
  return dir
}

function run(dir: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): boolean {
  const result = spawnSync(command, args, {
    cwd: dir,
    env: { ...process.env, ...env, CI: 'true' },
    stdio: 'ignore'
  })
  return result.status === 0
}

function jest(dir: string, tests: string[], env: NodeJS.ProcessEnv = {}): boolean {
  return run(dir, 'node', ['node_modules/jest/bin/jest.js', '--bail', '--silent', ...tests], {
    NODE_OPTIONS: '--experimental-vm-modules',
    ...env
  })
}

type Verdict = 'caught by unit tests' | 'caught end to end' | 'SURVIVED' | 'does not compile'

function main(): void {
  const options = parseArgs(process.argv.slice(2))
  const faults = FAULTS.filter(f => !options.only || options.only.has(f.id))
  const pristine = new Map<string, string>()
  for (const f of faults) pristine.set(f.file, readFileSync(join(root, f.file), 'utf8'))
  for (const f of faults) {
    const count = pristine.get(f.file)!.split(f.find).length - 1
    if (count !== 1) throw new Error(`${f.id}: its text occurs ${count} times in ${f.file}`)
  }
  if (options.list) {
    for (const f of faults) console.log(`${f.id} ${f.file.padEnd(16)} ${f.what}`)
    return
  }
  const dir = workspace()
  const results: Array<{ fault: Fault; verdict: Verdict; seconds: number }> = []
  for (const fault of faults) {
    const started = Date.now()
    for (const [file, text] of pristine) writeFileSync(join(dir, file), text)
    writeFileSync(
      join(dir, fault.file),
      pristine.get(fault.file)!.replace(fault.find, fault.replace)
    )
    let verdict: Verdict
    if (!run(dir, 'node', ['node_modules/typescript/bin/tsc', '--noEmit', '-p', 'tsconfig.json'])) {
      verdict = 'does not compile'
    } else if (!jest(dir, UNIT_TESTS)) {
      verdict = 'caught by unit tests'
    } else if (options.unitOnly) {
      verdict = 'SURVIVED'
    } else {
      const bundle = join(dir, 'dist-mutant')
      rmSync(bundle, { recursive: true, force: true })
      execFileSync(
        'node',
        ['node_modules/@vercel/ncc/dist/ncc/cli.js', 'build', 'src/index.ts', '-o', bundle, '-q'],
        {
          cwd: dir,
          stdio: 'ignore'
        }
      )
      verdict = jest(dir, E2E_TESTS, { R2_ROTATION_ENTRY: join(bundle, 'index.js') })
        ? 'SURVIVED'
        : 'caught end to end'
    }
    const seconds = Math.round((Date.now() - started) / 1000)
    results.push({ fault, verdict, seconds })
    console.log(`${fault.id} ${verdict.padEnd(21)} ${String(seconds).padStart(4)} s  ${fault.what}`)
  }
  const valid = results.filter(r => r.verdict !== 'does not compile')
  const caught = valid.filter(r => r.verdict.startsWith('caught')).length
  console.log(
    `\n${caught} of ${valid.length} seeded faults caught (${Math.round((100 * caught) / Math.max(1, valid.length))}%)` +
      `; ${valid.filter(r => r.verdict === 'caught by unit tests').length} by the unit tests alone`
  )
  const broken = results.filter(r => r.verdict === 'does not compile')
  if (broken.length)
    console.log(
      `Faults that do not compile (fix the list): ${broken.map(r => r.fault.id).join(', ')}`
    )
  if (!options.keep) rmSync(dir, { recursive: true, force: true })
  if (broken.length || !existsSync(root)) process.exitCode = 2
  else if (caught < valid.length) process.exitCode = 1
}

main()
