/**
 * Shows a job summary as a person sees it: the markdown the action wrote to GITHUB_STEP_SUMMARY,
 * rendered to HTML (GitHub-flavoured, as the run page renders it) and opened in headless Chromium
 * for its text (the DOM after rendering) and a screenshot; or, for a terminal, as plain text.
 */
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { convert } from 'html-to-text'
import { marked } from 'marked'

const run = promisify(execFile)

/** Debian's chromium package (or Chrome on hosted runners); CHROMIUM overrides. */
export function chromiumPath(): string | undefined {
  const candidates = [
    process.env.CHROMIUM,
    '/usr/bin/chromium',
    '/usr/bin/chromium-browser',
    '/usr/bin/google-chrome' // GitHub's hosted Ubuntu runners
  ]
  return candidates.find((c): c is string => !!c && existsSync(c))
}

export function summaryPage(markdown: string, title = 'Job summary'): string {
  const body = marked.parse(markdown, { gfm: true, async: false })
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title>
<style>
  body { font: 14px/1.5 -apple-system, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; color: #1f2328; margin: 24px; max-width: 960px; }
  h2 { font-size: 20px; border-bottom: 1px solid #d1d9e0; padding-bottom: 6px; }
  h3 { font-size: 16px; }
  table { border-collapse: collapse; margin: 12px 0; }
  th, td { border: 1px solid #d1d9e0; padding: 6px 12px; text-align: left; vertical-align: top; }
  th { background: #f6f8fa; }
  code { background: #eff1f3; border-radius: 4px; padding: 1px 4px; font-size: 12px; }
  blockquote { margin: 12px 0; padding: 8px 16px; border-left: 4px solid #9a6700; background: #fff8c5; color: #1f2328; }
  a { color: #0969da; }
</style></head>
<body><div class="summary">${body}</div></body></html>`
}

/** The job summary in plain text, as a person reads the run page: tables as aligned columns. */
export function summaryText(markdown: string, width = 100): string {
  const html = marked.parse(markdown, { gfm: true, async: false })
  return convert(html, {
    wordwrap: width,
    selectors: [
      { selector: 'table', format: 'dataTable', options: { maxColumnWidth: 64 } },
      { selector: 'a', options: { hideLinkHrefIfSameAsText: true } },
      { selector: 'h2', options: { uppercase: false } },
      { selector: 'h3', options: { uppercase: false } }
    ]
  }).trim()
}

const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  // Without these Chromium reaches out to the network at start; this machine has none.
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
]

/** Renders `html` in headless Chromium: returns the DOM as serialised after rendering, and writes a PNG when `screenshot` is given. */
export async function viewInChromium(
  html: string,
  options: { screenshot?: string; width?: number; height?: number } = {}
): Promise<string> {
  const chromium = chromiumPath()
  if (!chromium) throw new Error('Chromium is not installed (apt-get install chromium).')
  const dir = mkdtempSync(path.join(tmpdir(), 'summary-view-'))
  try {
    const page = path.join(dir, 'summary.html')
    writeFileSync(page, html)
    const common = [...CHROMIUM_FLAGS, `--user-data-dir=${path.join(dir, 'profile')}`]
    const { stdout: dom } = await run(chromium, [...common, '--dump-dom', `file://${page}`], {
      maxBuffer: 16 * 1024 * 1024
    })
    if (options.screenshot) {
      await run(chromium, [
        ...common,
        '--hide-scrollbars',
        `--window-size=${options.width ?? 1000},${options.height ?? 900}`,
        `--screenshot=${options.screenshot}`,
        `file://${page}`
      ])
    }
    return dom
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
