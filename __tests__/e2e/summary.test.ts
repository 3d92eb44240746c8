/**
 * The job summary of a sandbox rotation, as a person sees it: rendered from the markdown the action
 * wrote and opened in headless Chromium, whose DOM must show the phases, the ids, the scope, the
 * targets, the run link and the smoke results — and no value.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startSandbox, type Sandbox } from '../../sandbox/index.js'
import { findLeaks, runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import { journalText } from './scenario.js'
import { chromiumPath, summaryPage, viewInChromium } from '../../sandbox/summary-view.js'

/** Text content of an HTML document, whitespace folded. */
function textOf(html: string): string {
  return html
    .replace(/<style[\s\S]*?<\/style>/g, '')
    .replace(/<[^>]+>/g, ' ')
    .replace(/&amp;/g, '&')
    .replace(/\s+/g, ' ')
}

describe('the job summary of a rotation', () => {
  let sb: Sandbox
  let result: ActionResult
  let dir: string
  beforeAll(async () => {
    sb = await startSandbox()
    result = await runAction(sb, sandboxInputs(sb))
    dir = mkdtempSync(path.join(tmpdir(), 'summary-test-'))
  })
  afterAll(async () => {
    await sb?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  it('renders in a headless browser with every fact a reader needs', async () => {
    expect(result.exitCode).toBe(0)
    const page = summaryPage(result.summary)
    const chromium = chromiumPath()
    if (!chromium && process.env.CI) throw new Error('CI must have Chromium (see .ci/run).')
    const screenshot = path.join(dir, 'summary.png')
    // Without Chromium (a developer machine), the rendered HTML itself is checked.
    const dom = chromium ? await viewInChromium(page, { screenshot }) : page
    const text = textOf(dom)
    expect(text).toContain('R2 token rotation: Token rotated')
    for (const phase of ['preflight', 'mint', 'verify', 'publish', 'deploy', 'smoke', 'revoke']) {
      expect(text).toMatch(new RegExp(`${phase} ✅ ok \\d+(\\.\\d)? m?s`))
    }
    expect(text).toContain(`Previous token ${sb.current.id} avatars-uploader`)
    expect(text).toContain(`New token ${result.outputs['token-id']} avatars-uploader (rotated `)
    expect(text).toContain(`Scope object-read-write bucket=${sb.bucket}`)
    expect(text).toContain(`Targets repo ${sb.repository}`)
    expect(text).toContain('Secrets written 3')
    expect(text).toContain(`Deploy run #${result.outputs['deploy-run-id']} success`)
    expect(text).toContain(`✅ ${sb.appUrl}/healthz (200)`)
    expect(text).toContain('Revocation deleted')
    expect(dom).toContain(`href="${result.outputs['deploy-run-url']}"`)
    expect(findLeaks(result, sb.secretValues(), [dom, journalText(sb)])).toEqual([])
    if (chromium) {
      const png = readFileSync(screenshot)
      expect(png.subarray(1, 4).toString('latin1')).toBe('PNG')
      expect(png.length).toBeGreaterThan(10_000)
    }
  })
})
