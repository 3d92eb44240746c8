/**
 * `npm run demo [-- --scenario NAME]`: starts the sandbox (Cloudflare, GitHub, R2 and a sample app
 * on 127.0.0.1, plus what the scenario adds: a Worker, a management token in a secret), runs
 * dist/index.js exactly as the Actions runner would, and prints the phases, the job summary as
 * text, and what the action did. Exit code 0 when every check held (for the default scenario,
 * `r2-token`: the token was rotated with the app serving throughout); 2 for an unknown scenario
 * or option, after the list of scenarios (sandbox/demo-scenarios.ts).
 *
 * The job summary is written as GitHub receives it (markdown with HTML tables) to a file the demo
 * names (`--summary FILE`, default `.tmp/demo/job-summary.md`; a second run's gets `-2`), next to
 * an HTML page of it as the run page renders it. Time is real (`--time-scale 1`): the demo is
 * watched by a person.
 */
import { existsSync } from 'node:fs'
import { parseDemoArgs, runDemo } from './demo-run.js'
import { ACTION_ENTRY } from './runner.js'

async function main(): Promise<number> {
  const args = parseDemoArgs(process.argv.slice(2))
  if (args.kind === 'exit') {
    if (args.code === 0) console.log(args.text)
    else console.error(args.text)
    return args.code
  }
  if (!existsSync(ACTION_ENTRY)) {
    console.error('dist/index.js is missing: run `npm run package` first.')
    return 1
  }
  return runDemo(args.options)
}

main().then(
  code => process.exit(code),
  error => {
    console.error(error)
    process.exit(1)
  }
)
