/**
 * `npm run docs` regenerates the README's inputs and outputs tables from action.yml, between the
 * `<!-- action-docs:start -->` and `<!-- action-docs:end -->` markers. `npm run docs -- --check`
 * fails (exit 1) when the README is out of date; CI runs it.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { format, resolveConfig } from 'prettier'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const START = '<!-- action-docs:start -->'
const END = '<!-- action-docs:end -->'

interface ActionYaml {
  inputs: Record<string, { description: string; required?: boolean; default?: string }>
  outputs: Record<string, { description: string }>
}

/** Table cells: one line, pipes escaped. */
function cell(text: string): string {
  return text
    .replace(/\s*\n\s*/g, ' ')
    .replace(/\|/g, '\\|')
    .trim()
}

export function renderActionDocs(action: ActionYaml): string {
  const lines = [
    '### Inputs',
    '',
    '| input | required | default | description |',
    '|---|---|---|---|'
  ]
  for (const [name, input] of Object.entries(action.inputs)) {
    const fallback =
      input.default === undefined || input.default === '' ? '' : `\`${cell(input.default)}\``
    lines.push(
      `| \`${name}\` | ${input.required ? 'yes' : 'no'} | ${fallback} | ${cell(input.description)} |`
    )
  }
  lines.push('', '### Outputs', '', '| output | description |', '|---|---|')
  for (const [name, output] of Object.entries(action.outputs)) {
    lines.push(`| \`${name}\` | ${cell(output.description)} |`)
  }
  return lines.join('\n')
}

async function main(): Promise<number> {
  const action = parse(readFileSync(path.join(root, 'action.yml'), 'utf8')) as ActionYaml
  const readmePath = path.join(root, 'README.md')
  const readme = readFileSync(readmePath, 'utf8')
  const start = readme.indexOf(START)
  const end = readme.indexOf(END)
  if (start < 0 || end < start) {
    console.error(`README.md has no ${START} … ${END} section.`)
    return 1
  }
  // Formatted as `npm run lint` (Prettier) wants it, so that the two checks agree.
  const updated = await format(
    `${readme.slice(0, start + START.length)}\n${renderActionDocs(action)}\n${readme.slice(end)}`,
    { ...(await resolveConfig(readmePath)), parser: 'markdown' }
  )
  if (process.argv.includes('--check')) {
    if (updated !== readme) {
      console.error('README.md is out of date with action.yml: run `npm run docs` and commit it.')
      return 1
    }
    console.log('README.md inputs and outputs are in step with action.yml.')
    return 0
  }
  writeFileSync(readmePath, updated)
  console.log('README.md inputs and outputs regenerated from action.yml.')
  return 0
}

process.exitCode = await main()
