/**
 * The `.env` that `npm run sandbox` writes for `npx @github/local-action run . src/main.ts .env`:
 * it reads back (Node's dotenv parser, as dotenv reads it) to exactly the values written, line
 * breaks and quotes included; and `.env.example` shows the same variables.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseEnv } from 'node:util'
import { parse } from 'yaml'
import { DOTENV_HEADER, dotenvLine, dotenvText, sandboxRunEnv } from '../sandbox/dotenv.js'
import { startSandbox, type Sandbox } from '../sandbox/index.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

let sb: Sandbox
beforeAll(async () => {
  sb = await startSandbox()
})
afterAll(async () => {
  await sb.stop()
})

describe('the sandbox .env', () => {
  it('reads back to the values written', () => {
    const env = sandboxRunEnv(sb, sb.current, { runId: 4_200_001, summaryFile: '/tmp/summary.md' })
    const text = dotenvText(env)
    expect(text.startsWith(`${DOTENV_HEADER}\n`)).toBe(true)
    expect(parseEnv(text)).toEqual(env)
    expect(env['INPUT_SECRETS']).toContain('\n')
    expect(env['INPUT_CURRENT-TOKEN']).toBe(sb.current.value)
    expect(env['INPUT_SMOKE-URLS']).toContain('contains=access-key-id={access-key-id}')
    expect(env.GITHUB_API_URL).toBe(sb.githubApiUrl)
  })

  it('names only inputs that action.yml declares', () => {
    const env = sandboxRunEnv(sb, sb.current, { runId: 1, summaryFile: '/tmp/summary.md' })
    const action = parse(readFileSync(path.join(root, 'action.yml'), 'utf8')) as {
      inputs: Record<string, unknown>
    }
    const declared = Object.keys(action.inputs).map(name => `INPUT_${name.toUpperCase()}`)
    for (const key of Object.keys(env).filter(k => k.startsWith('INPUT_')))
      expect(declared).toContain(key)
  })

  it('quotes a value with the first quote it does not hold', () => {
    for (const value of ["it's", "it's `x`", 'a\nb', '']) {
      expect(parseEnv(dotenvLine('K', value))).toEqual({ K: value })
    }
    expect(() => dotenvLine('K', `'\`"`)).toThrow(/all three quote characters/)
  })
})

describe('.env.example', () => {
  const example = readFileSync(path.join(root, '.env.example'), 'utf8')

  it('starts as the file npm run sandbox writes, so that the sandbox may overwrite a copy of it', () => {
    expect(example.startsWith(`${DOTENV_HEADER}\n`)).toBe(true)
  })

  it('shows every variable npm run sandbox writes, and no other', () => {
    const written = sandboxRunEnv(sb, sb.current, { runId: 1, summaryFile: '/tmp/summary.md' })
    expect(Object.keys(parseEnv(example)).sort()).toEqual(Object.keys(written).sort())
  })
})
