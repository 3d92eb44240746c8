/**
 * What `npm run demo` shows: the job summary as readable text (no HTML, tables as columns, no
 * line as long as the raw summary's), and a count of the action's own requests that leaves out a
 * person's health checks and the app's reads from R2.
 */
import { actionRequests, startSandbox } from '../sandbox/index.js'
import { summaryText } from '../sandbox/summary-view.js'

/** The shape the action writes to GITHUB_STEP_SUMMARY: a heading, an alert, HTML tables, a link. */
const SUMMARY = [
  '<h2>R2 token rotation: Token rotated</h2>',
  '> [!WARNING]',
  '> Policy #1 reaches every bucket of account 0a1b2c3d4e5f60718293a4b5c6d7e8f9.',
  '',
  '<table><tr><th>Phase</th><th>Status</th><th>Duration</th></tr><tr><td>preflight</td><td>✅ ok</td><td>1.6 s</td></tr><tr><td>revoke</td><td>✅ ok</td><td>10.1 s</td></tr></table>',
  '<table><tr><th>Detail</th><th>Value</th></tr><tr><td>New token</td><td><code>559a803d0a9fe990ad11427cc9f44df4</code> avatars-uploader (rotated 2026-12-04)</td></tr><tr><td>Deploy run</td><td><a href="https://github.com/acme/site/actions/runs/20000000001">#20000000001</a> success</td></tr><tr><td>Evidence of use</td><td>new <code>559a803d0a9fe990ad11427cc9f44df4</code>: used after it was minted (2026-12-04T23:35:02Z); the action’s own verify and R2 probe count too</td></tr></table>',
  ''
].join('\n')

describe('summaryText', () => {
  const text = summaryText(SUMMARY)

  it('prints no HTML and keeps every line readable in a terminal', () => {
    expect(text).not.toMatch(/<\/?[a-z][^>]*>/i)
    expect(Math.max(...text.split('\n').map(line => line.length))).toBeLessThanOrEqual(100)
  })

  it('keeps the heading, the alert, the tables as columns and the link target', () => {
    expect(text).toMatch(/^R2 token rotation: Token rotated$/m)
    expect(text).toMatch(/Policy #1 reaches every bucket/)
    expect(text).toMatch(/^PHASE\s+STATUS\s+DURATION$/m)
    expect(text).toMatch(/^preflight\s+✅ ok\s+1\.6 s$/m)
    expect(text).toMatch(/^New token\s+559a803d0a9fe990ad11427cc9f44df4 avatars-uploader/m)
    expect(text).toContain('[https://github.com/acme/site/actions/runs/20000000001]')
  })
})

describe('actionRequests', () => {
  it("leaves out the health watcher's requests and the app's reads from R2", async () => {
    const sb = await startSandbox()
    try {
      const watch = sb.watchHealth(5)
      const smoke = await fetch(`${sb.appUrl}/healthz`, { headers: { 'x-smoke-check': '1' } })
      await smoke.text()
      // Wait for events, not time: a few rounds of the watcher.
      while (sb.log.requests({ service: 'app' }).length < 4) {
        await new Promise(resolve => setTimeout(resolve, 5))
      }
      await watch.stop()

      const app = sb.log.requests({ service: 'app' })
      const counted = actionRequests(sb)
      expect(app.length).toBeGreaterThanOrEqual(4)
      expect(counted).toHaveLength(1)
      expect(counted[0]).toMatchObject({ service: 'app', path: '/healthz' })
      expect(counted[0]!.headers['x-smoke-check']).toBe('1')
    } finally {
      await sb.stop()
    }
  })
})
