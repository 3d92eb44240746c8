/**
 * `npm run lint:workflows` checks every workflow file (.github/workflows/, examples/, and the
 * workflows written out in README.md and docs/setup.md, see scripts/workflows/sources.ts):
 * - actionlint: syntax, expressions and their contexts, known actions' inputs;
 * - what actionlint cannot know (scripts/workflows/checks.ts): the reusable workflow mirrors
 *   action.yml and runs the action from its own commit; every caller passes only inputs and
 *   secrets that exist and every required one, `force` and `dry-run` on `workflow_dispatch`,
 *   `account-id`, and a `timeout-minutes` the worst case with a rollback fits in
 *   (scripts/workflows/timeout.ts); the docs' deploy workflow reads the secrets the rotation
 *   writes; every third-party action is pinned by commit SHA.
 * Exit code 1 on any finding. In GitHub Actions the findings are also error annotations.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import {
  ACTION,
  REUSABLE_PATH,
  checkCaller,
  checkDeploy,
  checkPins,
  checkReusable,
  object,
  type Contracts,
  type Doc
} from './workflows/checks.js'
import { actionlint, markdownWorkflows, type WorkflowSource } from './workflows/sources.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const DOCS = ['README.md', 'docs/setup.md']

interface Finding {
  file: string
  line?: number
  column?: number
  message: string
}

const read = (file: string): string => readFileSync(path.join(root, file), 'utf8')

function workflowSources(): WorkflowSource[] {
  const sources: WorkflowSource[] = []
  for (const dir of ['.github/workflows', 'examples']) {
    for (const name of readdirSync(path.join(root, dir)).sort()) {
      if (/\.ya?ml$/.test(name)) {
        const file = `${dir}/${name}`
        sources.push({ file, name: file, firstLine: 1, source: read(file) })
      }
    }
  }
  for (const file of DOCS.filter(f => existsSync(path.join(root, f))))
    sources.push(...markdownWorkflows(read(file), file))
  return sources
}

/** A workflow that runs a rotation: a job calls the action or the reusable workflow. */
function runsRotation(doc: Doc): boolean {
  return Object.values(object(doc.jobs)).some(value => {
    const job = object(value)
    const calls = (uses: unknown): boolean =>
      typeof uses === 'string' && uses.startsWith(`${ACTION}`)
    return (
      calls(job.uses) || (Array.isArray(job.steps) && job.steps.some(s => calls(object(s).uses)))
    )
  })
}

/**
 * What each file is checked for, besides actionlint and the pins. A block in the docs is a
 * rotation (checked as an example is), or a deploy workflow, checked against the rotations written
 * out in the same file.
 */
function checksFor(
  source: WorkflowSource,
  doc: Doc,
  contracts: Contracts,
  rotations: Doc[]
): string[] {
  if (source.file === REUSABLE_PATH) return checkReusable(contracts)
  if (source.file.startsWith('examples/')) return checkCaller(doc, contracts)
  if (source.file.startsWith('.github/')) return []
  if (runsRotation(doc)) return checkCaller(doc, contracts)
  return rotations.length > 0
    ? rotations.flatMap(rotation => checkDeploy(doc, rotation))
    : checkDeploy(doc, {})
}

async function main(): Promise<number> {
  const findings: Finding[] = []
  const sources = workflowSources()
  const contracts: Contracts = {
    action: object(parse(read('action.yml'))),
    reusable: object(parse(read(REUSABLE_PATH)))
  }
  const parsed = new Map<WorkflowSource, Doc>()
  for (const source of sources) {
    try {
      parsed.set(source, object(parse(source.source)))
    } catch {
      // actionlint reports the syntax error
    }
  }

  for (const source of sources) {
    const offset = source.firstLine - 1
    for (const r of await actionlint(source.source, source.name)) {
      findings.push({
        file: source.file.replace(/:\d+$/, ''),
        line: r.line + offset,
        column: r.column,
        message: `${r.message} [${r.kind}]`
      })
    }
    for (const message of checkPins(source.source)) findings.push({ file: source.file, message })
    const doc = parsed.get(source)
    if (!doc) continue
    const inSameFile = sources.filter(
      s => s !== source && s.file.split(':')[0] === source.file.split(':')[0]
    )
    const rotations = inSameFile
      .map(s => parsed.get(s))
      .filter((d): d is Doc => d !== undefined && runsRotation(d))
    for (const message of checksFor(source, doc, contracts, rotations))
      findings.push({ file: source.file, message })
  }

  for (const f of findings) {
    const where = f.line === undefined ? f.file : `${f.file}:${f.line}:${f.column ?? 1}`
    console.log(`${where}: ${f.message}`)
    if (process.env.GITHUB_ACTIONS === 'true') {
      const file = f.file.replace(/:\d+$/, '')
      const position = f.line === undefined ? '' : `,line=${f.line},col=${f.column ?? 1}`
      console.log(`::error file=${escapeProperty(file)}${position}::${escapeData(f.message)}`)
    }
  }
  console.log(
    findings.length === 0
      ? `${sources.length} workflow files: no findings.`
      : `${findings.length} finding(s) in ${new Set(findings.map(f => f.file)).size} of ${sources.length} workflow files.`
  )
  return findings.length === 0 ? 0 : 1
}

/** Workflow command escaping (actions/toolkit `command.ts`): data, then property values. */
function escapeData(text: string): string {
  return text.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A')
}

function escapeProperty(text: string): string {
  return escapeData(text).replace(/:/g, '%3A').replace(/,/g, '%2C')
}

process.exitCode = await main()
