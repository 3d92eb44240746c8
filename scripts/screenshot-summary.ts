/**
 * `npm run docs:screenshot`: runs a rotation against the sandbox and saves its job summary, as
 * headless Chromium renders it, to docs/summary.png (linked from the README).
 */
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startSandbox } from '../sandbox/index.js'
import { runAction, sandboxInputs } from '../sandbox/runner.js'
import { summaryPage, viewInChromium } from '../sandbox/summary-view.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const out = path.join(root, 'docs', 'summary.png')

const sb = await startSandbox({ environment: 'production' })
try {
  const result = await runAction(sb, sandboxInputs(sb))
  if (result.outputs.result !== 'rotated')
    throw new Error(`rotation ended ${result.outputs.result}`)
  await viewInChromium(summaryPage(result.summary), { screenshot: out, width: 900, height: 820 })
  console.log(`wrote ${path.relative(root, out)}`)
} finally {
  await sb.stop()
}
