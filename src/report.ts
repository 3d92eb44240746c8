/**
 * Outputs and the job summary. Only ids, names, links, counts and durations reach them — never a
 * value (the report type carries none).
 */
import type { PhaseName, RotationReport } from './model.js'
import { RotationError, errorMessage } from './errors.js'
import { type Due, isoSeconds, workerRollbackNote } from './decide.js'
import { log, setOutput, summaryBuilder, writeSummary } from './log.js'

/** An empty report of a run that has not rotated yet. */
export function newReport(targets: string[]): RotationReport {
  return {
    result: 'failed',
    phases: [],
    warnings: [],
    secretsWritten: [],
    targets,
    smoke: [],
    evidence: [],
    plan: []
  }
}

/** Runs one phase in a log group and records its status and duration. The failure is reported once, by main. */
export async function phase<T>(
  report: RotationReport,
  name: PhaseName,
  body: () => Promise<T>
): Promise<T> {
  const started = Date.now()
  log.startGroup(`Phase: ${name}`)
  try {
    const value = await body()
    report.phases.push({ name, status: 'ok', durationMs: Date.now() - started })
    return value
  } catch (error) {
    const wrapped =
      error instanceof RotationError ? error : new RotationError(name, errorMessage(error))
    report.phases.push({
      name,
      status: 'failed',
      durationMs: Date.now() - started,
      detail: wrapped.message
    })
    log.info(`Phase ${name} failed.`)
    throw wrapped
  } finally {
    log.endGroup()
  }
}

/** A warning: in the log as an annotation, and in the job summary. */
export function warn(report: RotationReport, message: string): void {
  report.warnings.push(message)
  log.warning(message)
}

export function writeOutputs(report: RotationReport): void {
  setOutput('result', report.result)
  const optional: Record<string, string | number | undefined> = {
    'token-id': report.tokenId,
    'previous-token-id': report.previousTokenId,
    'access-key-id': report.accessKeyId,
    'expires-on': report.expiresOn,
    'deploy-run-id': report.deployRunId,
    'deploy-run-url': report.deployRunUrl,
    'token-scope': report.tokenScope
  }
  for (const [name, value] of Object.entries(optional)) {
    if (value !== undefined && value !== '') setOutput(name, String(value))
  }
}

const RESULT_HEADLINE: Record<RotationReport['result'], string> = {
  rotated: 'Token rotated',
  skipped: 'Rotation skipped: the token is not due yet',
  'rolled-back': 'Rotation rolled back',
  'dry-run': 'Dry run: nothing was changed',
  failed: 'Rotation failed'
}

/** The summary's tables are HTML: escape what came from outside (names, URLs). */
function escape(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
}

function code(text: string): string {
  return `<code>${escape(text)}</code>`
}

function seconds(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`
}

/** The caution about rolling back a Worker this run wrote, once a token it held is gone. */
function workerNote(report: RotationReport): string | undefined {
  const written = report.workersWritten
  if (!written) return undefined
  if (report.result === 'rolled-back') {
    return workerRollbackNote({ ...written, goneId: written.tokenId, gone: 'rolled-back' })
  }
  const revoked = report.revoked
  if (report.result !== 'rotated' || !report.previousTokenId) return undefined
  if (revoked !== 'deleted' && revoked !== 'disabled') return undefined
  return workerRollbackNote({ ...written, goneId: report.previousTokenId, gone: revoked })
}

/** Markdown of the job summary (exported for tests). */
export function summaryMarkdown(report: RotationReport): string {
  const s = summaryBuilder()
  const subject =
    report.subject === 'management-token'
      ? 'Management token rotation'
      : report.subject === 'access-service-token'
        ? 'Access service token rotation'
        : 'R2 token rotation'
  const serviceToken = report.subject === 'access-service-token'
  s.addHeading(`${subject}: ${RESULT_HEADLINE[report.result]}`, 2)
  const workers = workerNote(report)
  const warnings = workers ? [...report.warnings, workers] : report.warnings
  if (warnings.length > 0) {
    s.addRaw(`> [!WARNING]\n${warnings.map(w => `> ${w}`).join('\n')}\n\n`)
  }
  if (report.error) {
    s.addRaw(
      `> [!CAUTION]\n${report.error
        .split('\n')
        .map(l => `> ${l}`)
        .join('\n')}\n\n`
    )
  }
  s.addTable([
    [
      { data: 'Phase', header: true },
      { data: 'Status', header: true },
      { data: 'Duration', header: true }
    ],
    ...report.phases.map(p => [
      p.name,
      p.status === 'ok' ? '✅ ok' : '❌ failed',
      seconds(p.durationMs)
    ])
  ])
  const rows: Array<[string, string]> = []
  if (report.previousTokenId) {
    rows.push([
      'Previous token',
      `${code(report.previousTokenId)} ${escape(report.previousTokenName ?? '')}`
    ])
  }
  if (report.tokenId && serviceToken) {
    rows.push(['Service token', `${code(report.tokenId)} ${escape(report.tokenName ?? '')}`])
  } else if (report.tokenId) {
    rows.push(['New token', `${code(report.tokenId)} ${escape(report.tokenName ?? '')}`])
  }
  if (serviceToken && report.graceUntil) {
    rows.push([
      'Previous secret',
      report.revoked === 'grace-closed' && report.result === 'rotated'
        ? 'closed (its grace ended once the checks passed)'
        : `valid until ${escape(report.graceUntil)}`
    ])
  }
  if (report.owner) rows.push(['Owner', report.owner])
  if (report.tokenScope) rows.push(['Scope', code(report.tokenScope)])
  if (report.condition) rows.push(['IP condition', escape(report.condition)])
  rows.push(['Expires', report.tokenId ? (report.expiresOn ?? 'never') : '—'])
  if (report.probe) {
    rows.push([
      'R2 probe',
      `${report.probe.mode} on ${code(report.probe.bucket)}: ${report.probe.ok ? 'passed' : 'failed'}`
    ])
  }
  rows.push(['Targets', report.targets.map(escape).join('<br>')])
  rows.push(['Secrets written', String(report.secretsWritten.length)])
  if (report.deployRunId) {
    rows.push([
      'Deploy run',
      `<a href="${escape(report.deployRunUrl ?? '')}">#${report.deployRunId}</a> ${report.deployConclusion ?? ''}`
    ])
  }
  if (report.smoke.length > 0) {
    rows.push([
      'Smoke checks',
      report.smoke
        .map(r => `${r.ok ? '✅' : '❌'} ${escape(r.url)} (${r.status ?? 'no answer'})`)
        .join('<br>')
    ])
  }
  if (report.evidence.length > 0) {
    rows.push([
      'Evidence of use',
      report.evidence.map(e => `${e.role} ${code(e.tokenId)}: ${escape(e.verdict)}`).join('<br>')
    ])
  }
  if (report.revoked) rows.push(['Revocation', report.revoked])
  if (report.watch) {
    const w = report.watch
    rows.push([
      'Watch',
      w.outcome === 'passed'
        ? `passed: ${w.rounds} round(s) of checks over ${seconds(w.durationMs)} with the previous ${serviceToken ? 'secret closed' : 'token disabled'}`
        : w.outcome === 'skipped'
          ? 'skipped (no smoke-urls, or revoke-watch: 0s)'
          : `failed after ${seconds(w.durationMs)}: ${escape(w.detail ?? '')}; the previous ${serviceToken ? "secret's grace was re-opened" : 'token was enabled again'} (app failing for at most ${seconds(w.failingWindowMs ?? w.durationMs)})`
    ])
  }
  if (report.recovery) rows.push(['Recovery', escape(report.recovery)])
  if (report.rollback) rows.push(['After the failure', report.rollback])
  if (report.journalPhase) rows.push(['Journal', report.journalPhase])
  s.addTable([
    [
      { data: 'Detail', header: true },
      { data: 'Value', header: true }
    ],
    ...rows
  ])
  if (report.scope && report.scope.policies.length > 0) {
    s.addHeading('Token scope', 3)
    s.addTable([
      ['Policy', 'Effect', 'Permissions', 'R2 class', 'Reach'].map(data => ({
        data,
        header: true
      })),
      ...report.scope.policies.map(p => [
        escape(p.ref),
        p.effect,
        p.permissions.map(escape).join('<br>'),
        p.class ?? '—',
        escape(p.reach)
      ])
    ])
  }
  if (report.plan.length > 0 && report.result === 'dry-run') {
    s.addHeading('Plan', 3)
    s.addList(report.plan)
  }
  return s.stringify()
}

export async function writeReport(report: RotationReport): Promise<void> {
  await writeSummary(summaryMarkdown(report))
}

/**
 * Ends a run whose credential is not due (rotate-after): result `skipped`, and a notice that says
 * when it will be. `what` names it ("Token 0123…", "The service token …").
 */
export function skipNotDue(report: RotationReport, what: string, due: Due): RotationReport {
  report.result = 'skipped'
  const dueAt = due.due ? undefined : isoSeconds(due.dueAt)
  log.notice(
    `${what} is not due for rotation yet (rotate-after); it will be due on ${dueAt}. Set force: true to rotate now.`
  )
  return report
}
