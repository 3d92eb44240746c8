/**
 * The local loop as the README gives it: `npm run sandbox` in one terminal, and in another
 * `npx @github/local-action run . src/main.ts .env`, the official local runner, which imports
 * src/main.ts, stubs @actions/core and calls `run()`. The test starts both as a person would and
 * checks the rotation from the outside, over HTTP: the new token verifies, the old one is gone,
 * the app serves with the new one, the secrets hold it (the sandbox rewrote `.env` from them for
 * the next run), and no value reached the output.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseEnv } from 'node:util'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const sha256 = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex')

/**
 * The environment of a terminal on a developer's machine: none of the runner's variables (in CI
 * they would otherwise reach the action), nor Jest's NODE_OPTIONS.
 */
function terminalEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(
      ([key]) => !/^(GITHUB_|RUNNER_|INPUT_|ACTIONS_|NODE_OPTIONS$|CI$)/.test(key)
    )
  )
}

interface Started {
  child: ChildProcess
  output: () => string
  /** Resolves with the output once `pattern` appears in it. */
  waitFor: (pattern: RegExp, timeoutMs: number) => Promise<RegExpExecArray>
  exited: Promise<number | null>
}

function start(command: string, args: string[]): Started {
  // Its own process group, so that stopping it stops npm's children too.
  const child = spawn(command, args, { cwd: root, env: terminalEnv(), detached: true })
  let text = ''
  const listeners = new Set<() => void>()
  const take = (chunk: Buffer): void => {
    text += chunk.toString('utf8')
    for (const listener of listeners) listener()
  }
  child.stdout!.on('data', take)
  child.stderr!.on('data', take)
  const exited = new Promise<number | null>(resolve => child.on('close', code => resolve(code)))
  return {
    child,
    output: () => text,
    exited,
    waitFor: (pattern, timeoutMs) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const match = pattern.exec(text)
          if (!match) return
          listeners.delete(check)
          clearTimeout(timer)
          resolve(match)
        }
        const timer = setTimeout(() => {
          listeners.delete(check)
          reject(new Error(`timed out waiting for ${pattern} in:\n${text.slice(-2000)}`))
        }, timeoutMs)
        listeners.add(check)
        void exited.then(() => {
          check()
          if (listeners.has(check)) {
            listeners.delete(check)
            clearTimeout(timer)
            reject(new Error(`exited before ${pattern} appeared:\n${text.slice(-2000)}`))
          }
        })
        check()
      })
  }
}

function stop(started: Started | undefined): Promise<unknown> {
  if (!started || started.child.exitCode !== null || started.child.pid === undefined)
    return Promise.resolve()
  try {
    process.kill(-started.child.pid, 'SIGTERM')
  } catch {
    // already gone
  }
  return started.exited
}

describe('@github/local-action against npm run sandbox', () => {
  let dir: string
  let sandbox: Started | undefined
  let action: Started | undefined

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'r2-rotation-local-action-'))
  })

  afterAll(async () => {
    await Promise.all([stop(action), stop(sandbox)])
    rmSync(dir, { recursive: true, force: true })
  })

  it('rotates the token in service', async () => {
    const envFile = path.join(dir, '.env')
    const summaryFile = path.join(dir, 'summary.md')
    sandbox = start('npm', ['run', 'sandbox', '--', '--env', envFile, '--summary', summaryFile])
    await sandbox.waitFor(/^Wrote .*\. Run the action:$/m, 30_000)
    const before = parseEnv(readFileSync(envFile, 'utf8'))
    const oldId = before['INPUT_CURRENT-ACCESS-KEY-ID']!
    const oldValue = before['INPUT_CURRENT-TOKEN']!
    const management = before['INPUT_CLOUDFLARE-API-TOKEN']!
    const githubToken = before['INPUT_GITHUB-TOKEN']!
    const cloudflare = before['INPUT_CLOUDFLARE-API-URL']!
    const appUrl = new URL(before['INPUT_SMOKE-URLS']!.split(' ')[0]!).origin

    action = start('npx', ['@github/local-action', 'run', '.', 'src/main.ts', envFile])
    const code = await action.exited
    const out = action.output()
    expect({ code, tail: out.slice(-1500) }).toMatchObject({ code: 0 })
    expect(out).toMatch(/^::set-output name=result::rotated$/m)
    const newId = /^::set-output name=token-id::([0-9a-f]{32})$/m.exec(out)?.[1]
    expect(newId).toBeDefined()
    expect(newId).not.toBe(oldId)
    expect(out).toMatch(/^::set-output name=previous-token-id::([0-9a-f]{32})$/m)
    expect(/^::set-output name=previous-token-id::([0-9a-f]{32})$/m.exec(out)?.[1]).toBe(oldId)

    // The sandbox follows the secrets and rewrites .env with what they hold now.
    await sandbox.waitFor(new RegExp(`^The secrets now hold token ${newId}; `, 'm'), 10_000)
    const after = parseEnv(readFileSync(envFile, 'utf8'))
    const newValue = after['INPUT_CURRENT-TOKEN']!
    expect(after['INPUT_CURRENT-ACCESS-KEY-ID']).toBe(newId)
    expect(after['INPUT_CURRENT-SECRET-ACCESS-KEY']).toBe(sha256(newValue))
    expect(Number(after.GITHUB_RUN_ID)).toBeGreaterThan(Number(before.GITHUB_RUN_ID))

    // Cloudflare: the value in the secrets verifies as the new token; the old token is deleted.
    const verify = await fetch(`${cloudflare}/user/tokens/verify`, {
      headers: { authorization: `Bearer ${newValue}` }
    })
    expect(verify.status).toBe(200)
    expect(((await verify.json()) as { result: { id: string; status: string } }).result).toEqual(
      expect.objectContaining({ id: newId, status: 'active' })
    )
    const old = await fetch(`${cloudflare}/user/tokens/${oldId}`, {
      headers: { authorization: `Bearer ${management}` }
    })
    expect(old.status).toBe(404)

    // The app was redeployed with the new credentials and names them.
    const health = await fetch(`${appUrl}/healthz`)
    expect(health.status).toBe(200)
    expect(await health.text()).toContain(`access-key-id=${newId}`)

    // The job summary went where .env said, and no value reached any output.
    expect(existsSync(summaryFile)).toBe(true)
    expect(readFileSync(summaryFile, 'utf8')).toContain('Token rotated')
    const everything = `${out}\n${sandbox.output()}\n${readFileSync(summaryFile, 'utf8')}`
    const values = [oldValue, newValue, sha256(oldValue), sha256(newValue), management, githubToken]
    values.forEach((value, i) =>
      expect({ i, leaked: everything.includes(value) }).toEqual({ i, leaked: false })
    )
  }, 90_000)
})
