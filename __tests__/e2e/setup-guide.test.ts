/**
 * docs/setup.md, followed in the sandbox. Its two workflows (the sample deploy.yml and the
 * rotation workflow) are taken from the page as written: linted (actionlint), checked against
 * action.yml and each other (inputs, timeout formula, dispatch inputs, the secrets the deploy
 * reads), then run. The sandbox's repository gets the guide's deploy.yml and the secrets and
 * variables of step 2 under the guide's names; the rotation step's `with:` is evaluated as the
 * runner would for a manual run (dry run, as step 7 says to start) and for a scheduled run; only
 * the addresses change, to point at the sandbox.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { DEPLOY_WORKFLOW_PATH, startSandbox, type Sandbox } from '../../sandbox/index.js'
import { runAction } from '../../sandbox/runner.js'
import {
  ACTION,
  REUSABLE_PATH,
  checkCaller,
  checkDeploy,
  checkPins,
  object,
  type Doc
} from '../../scripts/workflows/checks.js'
import { actionlint, markdownWorkflows } from '../../scripts/workflows/sources.js'
import { expectNoLeaks, secretsNow, sha256, HEALTH_POLL_MS } from './scenario.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const read = (file: string): string => readFileSync(path.join(root, file), 'utf8')

const blocks = markdownWorkflows(read('docs/setup.md'), 'docs/setup.md')
const block = (name: string): { source: string; doc: Doc } => {
  const found = blocks.find(b => b.name === name)
  if (!found) throw new Error(`docs/setup.md has no workflow block named ${name}`)
  return { source: found.source, doc: parse(found.source) as Doc }
}
const deploy = block('.github/workflows/deploy.yml')
const rotation = block('.github/workflows/rotate-r2.yml')

/** The one step of the guide's rotation workflow that runs the action. */
function rotationStep(): Doc {
  const steps = Object.values(object(rotation.doc.jobs)).flatMap(job => {
    const list = object(job).steps
    return Array.isArray(list) ? list.map(object) : []
  })
  const step = steps.find(s => typeof s.uses === 'string' && s.uses.startsWith(`${ACTION}@`))
  if (!step) throw new Error('the rotation workflow runs no step of the action')
  return object(step.with)
}

describe('docs/setup.md, as written', () => {
  it('has both workflows, and actionlint finds nothing in them', async () => {
    expect(blocks.map(b => b.name).sort()).toEqual([
      '.github/workflows/deploy.yml',
      '.github/workflows/rotate-r2.yml'
    ])
    for (const { name, source } of blocks) {
      expect({ name, findings: await actionlint(source, name) }).toEqual({ name, findings: [] })
      expect({ name, pins: checkPins(source) }).toEqual({ name, pins: [] })
    }
  })

  it("passes the rotation's inputs, timeout and dispatch inputs against action.yml", () => {
    const contracts = {
      action: parse(read('action.yml')) as Doc,
      reusable: parse(read(REUSABLE_PATH)) as Doc
    }
    expect(checkCaller(rotation.doc, contracts)).toEqual([])
  })

  it('gives a deploy workflow the rotation can dispatch, which reads the secrets it writes', () => {
    expect(checkDeploy(deploy.doc, rotation.doc)).toEqual([])
  })
})

/**
 * `${{ … }}` as the runner evaluates the expressions the guide uses: a secret or a variable by
 * name, a dispatch input, or `inputs.X == true`. Anything else fails the test: the guide should
 * stay that simple.
 */
function evaluate(
  value: unknown,
  context: {
    secrets: Record<string, string>
    vars: Record<string, string>
    inputs: Record<string, boolean> | undefined
  }
): string {
  return String(value).replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_, expression: string) => {
    const named = /^(secrets|vars|inputs)\.([\w-]+)(\s*==\s*true)?$/.exec(expression)
    if (!named)
      throw new Error(
        `the guide's workflow uses an expression the test does not know: ${expression}`
      )
    const [, scope, name, isTrue] = named
    if (scope === 'inputs') {
      // On a schedule the dispatch inputs are null.
      const input = context.inputs?.[name!]
      return isTrue ? String(input === true) : input === undefined ? '' : String(input)
    }
    const table = scope === 'secrets' ? context.secrets : context.vars
    if (!(name! in table)) throw new Error(`step 2 of the guide does not create ${scope}.${name}`)
    return table[name!]!
  })
}

describe('docs/setup.md, followed in the sandbox', () => {
  let sb: Sandbox
  let context: Parameters<typeof evaluate>[1]

  /** The action's inputs for one run of the guide's workflow: manual (with inputs) or scheduled. */
  function inputsFor(dispatch: Record<string, boolean> | undefined): Record<string, string> {
    const given = Object.fromEntries(
      Object.entries(rotationStep()).map(([name, value]) => [
        name,
        evaluate(value, { ...context, inputs: dispatch })
      ])
    )
    return {
      ...given,
      // Where the sandbox is, instead of api.cloudflare.com, <account>.r2.cloudflarestorage.com
      // and www.example.com: the rest is the guide's.
      'cloudflare-api-url': sb.cloudflareApiUrl,
      'r2-endpoint': sb.r2Endpoint,
      'smoke-urls': given['smoke-urls']!.replace(/https:\/\/[^/\s]+/g, sb.appUrl)
    }
  }

  beforeAll(async () => {
    // The secrets named as the guide's `secrets:` input names them.
    const fields = Object.fromEntries(
      String(rotationStep().secrets)
        .split('\n')
        .filter(line => line.includes('='))
        .map(line => line.split('=').map(part => part.trim()) as [string, string])
        .map(([name, field]) => [field, name])
    )
    sb = await startSandbox({
      secretNames: {
        token: fields.token!,
        accessKeyId: fields['access-key-id']!,
        secretAccessKey: fields['secret-access-key']!
      }
    })
    sb.github.addFile(sb.repository, DEPLOY_WORKFLOW_PATH, deploy.source)
    // Step 2 (and step 3: the GitHub credential), under the guide's names.
    context = {
      secrets: {
        [fields.token!]: sb.current.value,
        [fields['access-key-id']!]: sb.current.id,
        [fields['secret-access-key']!]: sb.current.secretAccessKey,
        CLOUDFLARE_TOKEN_ROTATOR: sb.managementToken,
        R2_ROTATION_GITHUB_TOKEN: sb.githubToken
      },
      vars: { CLOUDFLARE_ACCOUNT_ID: sb.accountId },
      inputs: undefined
    }
  })

  afterAll(async () => {
    await sb?.stop()
  })

  it('step 7: a manual run is a dry run by default, and changes nothing', async () => {
    const dispatchInputs = object(object(object(rotation.doc.on).workflow_dispatch).inputs)
    const defaults = Object.fromEntries(
      Object.entries(dispatchInputs).map(([name, spec]) => [name, object(spec).default === true])
    )
    expect(defaults).toEqual({ 'dry-run': true, force: false })

    const before = sb.log.mutations().length
    const result = await runAction(sb, inputsFor(defaults))
    expect({ code: result.exitCode, out: result.stdout.slice(-1500) }).toMatchObject({ code: 0 })
    expect(result.outputs.result).toBe('dry-run')
    expect(sb.log.mutations().slice(before)).toEqual([])
    expectNoLeaks(sb, [result])
  })

  it('the scheduled run rotates the token, deploys it with the guide’s deploy.yml and deletes the old one', async () => {
    const old = sb.current
    const watch = sb.watchHealth(HEALTH_POLL_MS)
    const result = await runAction(sb, inputsFor(undefined))
    const failures = await watch.stop()
    expect({ code: result.exitCode, out: result.stdout.slice(-1500) }).toMatchObject({ code: 0 })
    expect(result.outputs.result).toBe('rotated')

    const id = result.outputs['token-id']!
    const token = sb.cloudflare.findById(id)
    expect(token?.status).toBe('active')
    expect(secretsNow(sb)).toEqual({
      token: token!.value,
      accessKeyId: id,
      secretAccessKey: sha256(token!.value)
    })
    expect(sb.cloudflare.tokens.has(old.id)).toBe(false)
    // The deploy run the action dispatched read the secrets it had written, as deploy.yml says.
    expect(sb.liveAccessKeyId()).toBe(id)
    expect(failures).toEqual([])
    expect(sb.log.violations).toEqual([])
    expectNoLeaks(sb, [result])
  })
})
