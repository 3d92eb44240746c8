/**
 * The GitHub simulator driven through a real Octokit, as the action drives GitHub: sealed-box
 * secrets in every scope (and an environment's that shadow the repository's), variables (and a
 * lock made of one), workflows and their files, dispatch and runs (and what a run's deploy
 * ships), API versions, GitHub Enterprise Server, tokens that expire, conditional requests and
 * the rate limit, permissions, and the OpenAPI contract (no violations for valid traffic).
 */
import { Octokit } from '@octokit/rest'
import sodium from 'libsodium-wrappers'
import { RequestLog } from '../sandbox/log.js'
import {
  GitHubSim,
  ManualClock,
  type GitHubSimOptions,
  type RunBehavior,
  type RunCompletion,
  type SimRun
} from '../sandbox/github.js'

const TOKEN = 'github_pat_sandbox_full_access'
const NO_SECRETS = 'github_pat_sandbox_no_secrets'
const APP_NO_VARIABLES = 'ghs_sandbox_app_no_variables'
const owner = 'acme'
const repo = 'storefront'
const full = `${owner}/${repo}`

const DEPLOY_YAML = `name: Deploy
run-name: Deploy (\${{ inputs.reason }})
on:
  workflow_dispatch:
    inputs:
      reason:
        description: why
        default: scheduled
      target:
        type: choice
        options: [staging, production]
        required: true
        default: staging
      ticket:
        description: required, no default
        required: false
jobs:
  deploy:
    runs-on: ubuntu-latest
    environment: production
    steps:
      - uses: actions/checkout@v4
      - name: Deploy the app
        run: ./deploy.sh
`

const CI_YAML = `name: CI
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - run: npm test
`

interface HttpError {
  status: number
  message: string
  response?: { headers: Record<string, string | undefined>; data: unknown }
}

async function failure(promise: Promise<unknown>): Promise<HttpError> {
  try {
    await promise
  } catch (error) {
    return error as HttpError
  }
  throw new Error('expected the request to fail')
}

async function seal(publicKey: string, value: string): Promise<string> {
  await sodium.ready
  const key = sodium.from_base64(publicKey, sodium.base64_variants.ORIGINAL)
  return sodium.to_base64(
    sodium.crypto_box_seal(sodium.from_string(value), key),
    sodium.base64_variants.ORIGINAL
  )
}

async function waitFor(predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > until) throw new Error('timed out waiting')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

let log: RequestLog
let sim: GitHubSim
let octokit: Octokit
let deployId: number

beforeEach(async () => {
  log = new RequestLog()
  sim = new GitHubSim(log)
  sim.addToken(TOKEN)
  sim.addToken(NO_SECRETS, { secrets: false })
  sim.addToken(APP_NO_VARIABLES, { variables: false })
  sim.addOrg(owner)
  sim.addRepo(full, {
    branches: ['release'],
    tags: ['v1.0.0'],
    environments: ['production'],
    id: 4242
  })
  sim.addRepo(`${owner}/other`, { id: 4343 })
  deployId = sim.addWorkflow(full, {
    path: '.github/workflows/deploy.yml',
    name: 'Deploy',
    content: DEPLOY_YAML
  })
  sim.addWorkflow(full, { path: '.github/workflows/ci.yml', name: 'CI', content: CI_YAML })
  sim.runBehavior = { queuedMs: 20, runningMs: 40, conclusion: 'success' }
  await sim.start()
  octokit = new Octokit({ auth: TOKEN, baseUrl: sim.url })
})

afterEach(async () => {
  await sim.stop()
})

describe('secrets', () => {
  it('decrypts a sealed repository secret: 201 when created, 204 when updated', async () => {
    const { data: key } = await octokit.rest.actions.getRepoPublicKey({ owner, repo })
    expect(typeof key.key_id).toBe('string')
    expect(sodium.from_base64(key.key, sodium.base64_variants.ORIGINAL)).toHaveLength(32)

    const first = await octokit.rest.actions.createOrUpdateRepoSecret({
      owner,
      repo,
      secret_name: 'r2_token',
      encrypted_value: await seal(key.key, 'first-value'),
      key_id: key.key_id
    })
    expect(first.status).toBe(201)
    const second = await octokit.rest.actions.createOrUpdateRepoSecret({
      owner,
      repo,
      secret_name: 'R2_TOKEN',
      encrypted_value: await seal(key.key, 'second-value'),
      key_id: key.key_id
    })
    expect(second.status).toBe(204)

    expect(sim.getSecret({ kind: 'repo', repo: full }, 'R2_TOKEN')).toBe('second-value')
    expect(sim.secretWrites.map(w => [w.name, w.plaintext, w.status])).toEqual([
      ['R2_TOKEN', 'first-value', 201],
      ['R2_TOKEN', 'second-value', 204]
    ])
    const { data: meta } = await octokit.rest.actions.getRepoSecret({
      owner,
      repo,
      secret_name: 'r2_token'
    })
    expect(meta.name).toBe('R2_TOKEN')
    expect(log.violations).toEqual([])
  })

  it('answers 422 to a ciphertext that does not open, a stale key id and a bad name', async () => {
    const { data: key } = await octokit.rest.actions.getRepoPublicKey({ owner, repo })
    const garbage = Buffer.alloc(64, 7).toString('base64')
    const bad = await failure(
      octokit.rest.actions.createOrUpdateRepoSecret({
        owner,
        repo,
        secret_name: 'X',
        encrypted_value: garbage,
        key_id: key.key_id
      })
    )
    expect(bad.status).toBe(422)

    const sealed = await seal(key.key, 'value')
    sim.rotatePublicKey({ kind: 'repo', repo: full })
    const stale = await failure(
      octokit.rest.actions.createOrUpdateRepoSecret({
        owner,
        repo,
        secret_name: 'X',
        encrypted_value: sealed,
        key_id: key.key_id
      })
    )
    expect(stale.status).toBe(422)

    const { data: fresh } = await octokit.rest.actions.getRepoPublicKey({ owner, repo })
    expect(fresh.key_id).not.toBe(key.key_id)
    for (const name of ['GITHUB_TOKEN', '1PASSWORD', 'MY-SECRET']) {
      const err = await failure(
        octokit.rest.actions.createOrUpdateRepoSecret({
          owner,
          repo,
          secret_name: name,
          encrypted_value: await seal(fresh.key, 'v'),
          key_id: fresh.key_id
        })
      )
      expect(err.status).toBe(422)
    }
    const tooLarge = await failure(
      octokit.rest.actions.createOrUpdateRepoSecret({
        owner,
        repo,
        secret_name: 'BIG',
        encrypted_value: await seal(fresh.key, 'x'.repeat(48 * 1024 + 1)),
        key_id: fresh.key_id
      })
    )
    expect(tooLarge.status).toBe(422)
    expect(sim.secretWrites).toEqual([])
    expect(log.violations).toEqual([])
  })

  it('writes environment, organization and Dependabot secrets, and layers them for a run', async () => {
    const env = await octokit.rest.actions.getEnvironmentPublicKey({
      owner,
      repo,
      environment_name: 'production'
    })
    const envPut = await octokit.rest.actions.createOrUpdateEnvironmentSecret({
      owner,
      repo,
      environment_name: 'production',
      secret_name: 'R2_TOKEN',
      encrypted_value: await seal(env.data.key, 'env-value'),
      key_id: env.data.key_id
    })
    expect(envPut.status).toBe(201)

    const org = await octokit.rest.actions.getOrgPublicKey({ org: owner })
    const orgPut = await octokit.rest.actions.createOrUpdateOrgSecret({
      org: owner,
      secret_name: 'R2_TOKEN',
      encrypted_value: await seal(org.data.key, 'org-value'),
      key_id: org.data.key_id,
      visibility: 'selected',
      selected_repository_ids: [4242]
    })
    expect(orgPut.status).toBe(201)
    await octokit.rest.actions.createOrUpdateOrgSecret({
      org: owner,
      secret_name: 'SHARED',
      encrypted_value: await seal(org.data.key, 'shared'),
      key_id: org.data.key_id,
      visibility: 'all'
    })
    const { data: orgMeta } = await octokit.rest.actions.getOrgSecret({
      org: owner,
      secret_name: 'R2_TOKEN'
    })
    expect(orgMeta.visibility).toBe('selected')
    const { data: selected } = await octokit.rest.actions.listSelectedReposForOrgSecret({
      org: owner,
      secret_name: 'R2_TOKEN'
    })
    expect(selected.repositories.map(r => r.id)).toEqual([4242])
    await octokit.rest.actions.setSelectedReposForOrgSecret({
      org: owner,
      secret_name: 'R2_TOKEN',
      selected_repository_ids: [4242, 4343]
    })

    const dependabot = await octokit.rest.dependabot.getRepoPublicKey({ owner, repo })
    const dependabotPut = await octokit.rest.dependabot.createOrUpdateRepoSecret({
      owner,
      repo,
      secret_name: 'R2_TOKEN',
      encrypted_value: await seal(dependabot.data.key, 'dependabot-value'),
      key_id: dependabot.data.key_id
    })
    expect(dependabotPut.status).toBe(201)
    expect(sim.getSecret({ kind: 'dependabot', repo: full }, 'R2_TOKEN')).toBe('dependabot-value')

    // org < repo < environment; Dependabot secrets are not given to Actions runs.
    expect(sim.secretsForRun(`${owner}/other`)).toEqual({ R2_TOKEN: 'org-value', SHARED: 'shared' })
    sim.setSecret({ kind: 'repo', repo: full }, 'r2_token', 'repo-value')
    expect(sim.secretsForRun(full)).toEqual({ R2_TOKEN: 'repo-value', SHARED: 'shared' })
    expect(sim.secretsForRun(full, 'production')).toEqual({
      R2_TOKEN: 'env-value',
      SHARED: 'shared'
    })

    expect(sim.secretWrites.map(w => [w.scope.kind, w.name, w.status])).toEqual([
      ['env', 'R2_TOKEN', 201],
      ['org', 'R2_TOKEN', 201],
      ['org', 'SHARED', 201],
      ['dependabot', 'R2_TOKEN', 201]
    ])
    await octokit.rest.actions.deleteOrgSecret({ org: owner, secret_name: 'SHARED' })
    expect(sim.getSecret({ kind: 'org', org: owner }, 'SHARED')).toBeUndefined()
    expect(log.violations).toEqual([])
  })

  it('refuses a token without the permission (403) and an unknown token (401)', async () => {
    const limited = new Octokit({ auth: NO_SECRETS, baseUrl: sim.url })
    const forbidden = await failure(limited.rest.actions.getRepoPublicKey({ owner, repo }))
    expect(forbidden.status).toBe(403)
    expect(forbidden.message).toContain('Resource not accessible by personal access token')
    expect(forbidden.response?.headers['x-accepted-github-permissions']).toBe('secrets=read')

    const app = new Octokit({ auth: APP_NO_VARIABLES, baseUrl: sim.url })
    const appForbidden = await failure(app.rest.actions.getRepoVariable({ owner, repo, name: 'X' }))
    expect(appForbidden.status).toBe(403)
    expect(appForbidden.message).toContain('Resource not accessible by integration')

    const stranger = new Octokit({ auth: 'ghp_unknown', baseUrl: sim.url })
    expect((await failure(stranger.rest.repos.get({ owner, repo }))).status).toBe(401)
    expect(
      (await failure(new Octokit({ baseUrl: sim.url }).rest.repos.get({ owner, repo }))).status
    ).toBe(401)
    expect(log.violations).toEqual([])
  })
})

describe('secrets that shadow others', () => {
  it('reads environment and repository secret metadata, each under its own permission', async () => {
    sim.setSecret({ kind: 'repo', repo: full }, 'R2_ACCESS_KEY_ID', 'repo-id')
    sim.setSecret({ kind: 'repo', repo: full }, 'R2_SECRET_ACCESS_KEY', 'repo-secret')
    sim.setSecret(
      { kind: 'env', repo: full, environment: 'production' },
      'R2_ACCESS_KEY_ID',
      'env-id'
    )
    const env = (secret_name: string, environment_name = 'production', client = octokit) =>
      client.rest.actions.getEnvironmentSecret({ owner, repo, environment_name, secret_name })
    const repoSecret = (secret_name: string, client = octokit) =>
      client.rest.actions.getRepoSecret({ owner, repo, secret_name })

    // Both scopes hold R2_ACCESS_KEY_ID: the environment's copy shadows the repository's.
    const shadowing = await env('r2_access_key_id')
    expect(Object.keys(shadowing.data).sort()).toEqual(['created_at', 'name', 'updated_at'])
    expect(shadowing.data.name).toBe('R2_ACCESS_KEY_ID')
    expect((await repoSecret('R2_ACCESS_KEY_ID')).data.name).toBe('R2_ACCESS_KEY_ID')
    expect(sim.secretsForRun(full, 'production')).toMatchObject({
      R2_ACCESS_KEY_ID: 'env-id',
      R2_SECRET_ACCESS_KEY: 'repo-secret'
    })

    // Only the repository holds R2_SECRET_ACCESS_KEY: the environment answers 404 (no fallback).
    expect((await failure(env('R2_SECRET_ACCESS_KEY'))).status).toBe(404)
    expect((await failure(repoSecret('MISSING'))).status).toBe(404)
    expect((await failure(env('R2_ACCESS_KEY_ID', 'staging'))).status).toBe(404)

    // Environment secrets need Environments (read), repository secrets Secrets (read): see
    // docs.github.com/rest/authentication/permissions-required-for-fine-grained-personal-access-tokens
    const NO_ENVIRONMENTS = 'github_pat_sandbox_no_environments'
    sim.addToken(NO_ENVIRONMENTS, { environments: false })
    const noEnvironments = new Octokit({ auth: NO_ENVIRONMENTS, baseUrl: sim.url })
    const noSecrets = new Octokit({ auth: NO_SECRETS, baseUrl: sim.url })
    const envForbidden = await failure(env('R2_ACCESS_KEY_ID', 'production', noEnvironments))
    expect(envForbidden.status).toBe(403)
    expect(envForbidden.response?.headers['x-accepted-github-permissions']).toBe(
      'environments=read'
    )
    expect((await repoSecret('R2_ACCESS_KEY_ID', noEnvironments)).status).toBe(200)
    const repoForbidden = await failure(repoSecret('R2_ACCESS_KEY_ID', noSecrets))
    expect(repoForbidden.status).toBe(403)
    expect(repoForbidden.response?.headers['x-accepted-github-permissions']).toBe('secrets=read')
    expect((await env('R2_ACCESS_KEY_ID', 'production', noSecrets)).status).toBe(200)
    expect(log.violations).toEqual([])
  })
})

describe('variables', () => {
  it('creates (201), refuses a duplicate (409), updates (204), reads and deletes', async () => {
    const created = await octokit.rest.actions.createRepoVariable({
      owner,
      repo,
      name: 'r2_rotation_state',
      value: '{"phase":"minting"}'
    })
    expect(created.status).toBe(201)
    const duplicate = await failure(
      octokit.rest.actions.createRepoVariable({
        owner,
        repo,
        name: 'R2_ROTATION_STATE',
        value: '{}'
      })
    )
    expect(duplicate.status).toBe(409)
    const updated = await octokit.rest.actions.updateRepoVariable({
      owner,
      repo,
      name: 'R2_ROTATION_STATE',
      value: '{"phase":"done"}'
    })
    expect(updated.status).toBe(204)
    const { data } = await octokit.rest.actions.getRepoVariable({
      owner,
      repo,
      name: 'R2_ROTATION_STATE'
    })
    expect(data.value).toBe('{"phase":"done"}')
    expect(sim.getVariable(full, 'R2_ROTATION_STATE')).toBe('{"phase":"done"}')
    const { data: list } = await octokit.rest.actions.listRepoVariables({ owner, repo })
    expect(list.total_count).toBe(1)
    await octokit.rest.actions.deleteRepoVariable({ owner, repo, name: 'R2_ROTATION_STATE' })
    expect(
      (
        await failure(
          octokit.rest.actions.getRepoVariable({ owner, repo, name: 'R2_ROTATION_STATE' })
        )
      ).status
    ).toBe(404)
    expect(log.violations).toEqual([])
  })
})

describe('variables as a lock', () => {
  it('lets exactly one of several simultaneous creates win (201; the others 409)', async () => {
    // Names are case-insensitive: differently spelt claims still contend for one variable.
    const names = ['R2_ROTATION_LOCK', 'r2_rotation_lock', 'R2_Rotation_Lock', 'R2_ROTATION_LOCK']
    const statuses = await Promise.all(
      names.map((name, i) =>
        octokit.rest.actions.createRepoVariable({ owner, repo, name, value: `holder-${i}` }).then(
          r => r.status,
          (error: HttpError) => error.status
        )
      )
    )
    expect([...statuses].sort()).toEqual([201, 409, 409, 409])
    const winner = statuses.indexOf(201)
    expect(sim.getVariable(full, 'R2_ROTATION_LOCK')).toBe(`holder-${winner}`)
    const creates = log.requests({ service: 'github', method: 'POST' })
    expect(creates.map(e => e.status).sort()).toEqual([201, 409, 409, 409])

    // Released with DELETE (204); a second release finds nothing (404); then it can be claimed
    // again.
    const released = await octokit.rest.actions.deleteRepoVariable({
      owner,
      repo,
      name: 'R2_ROTATION_LOCK'
    })
    expect(released.status).toBe(204)
    expect(sim.getVariable(full, 'R2_ROTATION_LOCK')).toBeUndefined()
    expect(
      (
        await failure(
          octokit.rest.actions.deleteRepoVariable({ owner, repo, name: 'R2_ROTATION_LOCK' })
        )
      ).status
    ).toBe(404)
    const again = await octokit.rest.actions.createRepoVariable({
      owner,
      repo,
      name: 'R2_ROTATION_LOCK',
      value: 'next'
    })
    expect(again.status).toBe(201)
    expect(log.violations).toEqual([])
  })

  it('refuses a claim without Variables (write), and a claim that breaks the schema', async () => {
    const app = new Octokit({ auth: APP_NO_VARIABLES, baseUrl: sim.url })
    const forbidden = await failure(
      app.rest.actions.createRepoVariable({ owner, repo, name: 'R2_ROTATION_LOCK', value: 'x' })
    )
    expect(forbidden.status).toBe(403)
    expect(forbidden.response?.headers['x-accepted-github-permissions']).toBe(
      'actions_variables=write'
    )
    const noValue = await failure(
      octokit.request('POST /repos/{owner}/{repo}/actions/variables', {
        owner,
        repo,
        name: 'R2_ROTATION_LOCK'
      } as never)
    )
    expect(noValue.status).toBe(422)
    expect(log.violations).toHaveLength(1)
    expect(sim.getVariable(full, 'R2_ROTATION_LOCK')).toBeUndefined()
  })
})

describe('workflows and contents', () => {
  it('finds a workflow by file name and id, and serves its file base64-encoded', async () => {
    const { data: repoData } = await octokit.rest.repos.get({ owner, repo })
    expect(repoData.default_branch).toBe('main')
    const { data: byName } = await octokit.rest.actions.getWorkflow({
      owner,
      repo,
      workflow_id: 'deploy.yml'
    })
    expect(byName).toMatchObject({
      id: deployId,
      name: 'Deploy',
      path: '.github/workflows/deploy.yml',
      state: 'active'
    })
    const { data: byId } = await octokit.rest.actions.getWorkflow({
      owner,
      repo,
      workflow_id: deployId
    })
    expect(byId.id).toBe(deployId)
    const { data: list } = await octokit.rest.actions.listRepoWorkflows({ owner, repo })
    expect(list.total_count).toBe(2)

    const { data: file } = await octokit.rest.repos.getContent({
      owner,
      repo,
      path: byName.path,
      ref: 'main'
    })
    if (Array.isArray(file) || file.type !== 'file') throw new Error('expected a file')
    expect(file.encoding).toBe('base64')
    expect(Buffer.from(file.content, 'base64').toString('utf8')).toBe(DEPLOY_YAML)
    expect(file.sha).toMatch(/^[0-9a-f]{40}$/)

    const { data: dir } = await octokit.rest.repos.getContent({
      owner,
      repo,
      path: '.github/workflows'
    })
    expect(Array.isArray(dir) && dir.map(e => e.name)).toEqual(['ci.yml', 'deploy.yml'])
    expect(
      (await failure(octokit.rest.repos.getContent({ owner, repo, path: 'nope.txt' }))).status
    ).toBe(404)
    expect(log.violations).toEqual([])
  })
})

describe('dispatch and runs', () => {
  it('dispatches with return_run_details (200 and the run id) and without (204)', async () => {
    const dispatched: SimRun[] = []
    sim.hooks.onDispatch = run => dispatched.push({ ...run })
    const withDetails = await octokit.request(
      'POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches',
      {
        owner,
        repo,
        workflow_id: 'deploy.yml',
        ref: 'main',
        inputs: { reason: 'rotation', target: 'production' },
        return_run_details: true
      }
    )
    expect(withDetails.status).toBe(200)
    const details = withDetails.data as unknown as {
      workflow_run_id: number
      run_url: string
      html_url: string
    }
    expect(details.run_url).toBe(`${sim.url}/repos/${full}/actions/runs/${details.workflow_run_id}`)
    expect(dispatched).toHaveLength(1)
    expect(dispatched[0]).toMatchObject({
      id: details.workflow_run_id,
      status: 'queued',
      environment: 'production',
      inputs: { reason: 'rotation', target: 'production' }
    })

    const plain = await octokit.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: deployId,
      ref: 'refs/tags/v1.0.0'
    })
    expect(plain.status).toBe(204)
    expect(sim.runs.size).toBe(2)

    const { data: run } = await octokit.rest.actions.getWorkflowRun({
      owner,
      repo,
      run_id: details.workflow_run_id
    })
    expect(run).toMatchObject({
      event: 'workflow_dispatch',
      head_branch: 'main',
      display_title: 'Deploy (rotation)',
      run_attempt: 1
    })
    expect(log.violations).toEqual([])
  })

  it('validates a dispatch as GitHub does', async () => {
    const dispatch = (
      body: { ref: string; inputs?: Record<string, string> },
      workflow_id: string | number = 'deploy.yml'
    ) => failure(octokit.rest.actions.createWorkflowDispatch({ owner, repo, workflow_id, ...body }))

    const noRef = await dispatch({ ref: 'nope' })
    expect(noRef.status).toBe(422)
    expect(noRef.message).toContain('No ref found for: nope')
    const unexpected = await dispatch({ ref: 'main', inputs: { bogus: 'x', other: 'y' } })
    expect(unexpected.status).toBe(422)
    expect(unexpected.message).toContain('Unexpected inputs provided: ["bogus","other"]')
    expect((await dispatch({ ref: 'main', inputs: { target: 'moon' } })).status).toBe(422)
    expect((await dispatch({ ref: 'main' }, 'ci.yml')).status).toBe(422)
    expect((await dispatch({ ref: 'main' }, 'missing.yml')).status).toBe(404)

    const required = sim.addWorkflow(full, {
      path: '.github/workflows/strict.yml',
      name: 'Strict',
      content:
        'on:\n  workflow_dispatch:\n    inputs:\n      token_id:\n        required: true\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n'
    })
    expect((await dispatch({ ref: 'main' }, required)).message).toContain(
      "Required input 'token_id' not provided"
    )
    const disabled = sim.addWorkflow(full, {
      path: '.github/workflows/off.yml',
      name: 'Off',
      content: 'on: workflow_dispatch\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n',
      state: 'disabled_manually'
    })
    expect((await dispatch({ ref: 'main' }, disabled)).status).toBe(422)
    expect(sim.runs.size).toBe(0)
    expect(log.violations).toEqual([])

    // More than 25 inputs break the request schema itself: 422, and a contract violation is recorded.
    const many = Object.fromEntries(Array.from({ length: 26 }, (_, i) => [`i${i}`, 'x']))
    expect((await dispatch({ ref: 'main', inputs: many })).status).toBe(422)
    expect(log.violations).toHaveLength(1)
  })

  it('rejects return_run_details like GitHub Enterprise Server 3.20 and older', async () => {
    const ghes = new GitHubSim(new RequestLog(), { rejectReturnRunDetails: true })
    ghes.addToken(TOKEN)
    ghes.addRepo(full)
    ghes.addWorkflow(full, {
      path: '.github/workflows/deploy.yml',
      name: 'Deploy',
      content: DEPLOY_YAML
    })
    await ghes.start()
    try {
      const client = new Octokit({ auth: TOKEN, baseUrl: ghes.url })
      const route = 'POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches' as const
      const err = await failure(
        client.request(route, {
          owner,
          repo,
          workflow_id: 'deploy.yml',
          ref: 'main',
          return_run_details: true
        })
      )
      expect(err.status).toBe(422)
      expect(err.message).toContain('"return_run_details" is not a permitted key')
      expect(
        (await client.request(route, { owner, repo, workflow_id: 'deploy.yml', ref: 'main' }))
          .status
      ).toBe(204)
    } finally {
      await ghes.stop()
    }
  })

  it('moves a run from queued through in_progress to completed success on timers, after beforeComplete', async () => {
    const order: string[] = []
    sim.hooks.beforeComplete = async run => {
      order.push(`deploy ${run.status}`)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    await octokit.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'deploy.yml',
      ref: 'release'
    })
    const [run] = [...sim.runs.values()]
    await waitFor(() => run!.status === 'completed')
    expect(run!.conclusion).toBe('success')
    expect(order).toEqual(['deploy in_progress'])
    expect(log.events().map(e => e.name)).toEqual([
      'run.created',
      'run.in_progress',
      'run.completed'
    ])
    expect(log.events('run.completed')[0]!.detail).toMatchObject({
      run_id: run!.id,
      conclusion: 'success'
    })

    const { data } = await octokit.rest.actions.getWorkflowRun({ owner, repo, run_id: run!.id })
    expect(data).toMatchObject({
      status: 'completed',
      conclusion: 'success',
      head_branch: 'release'
    })
    const { data: jobs } = await octokit.rest.actions.listJobsForWorkflowRun({
      owner,
      repo,
      run_id: run!.id
    })
    expect(jobs.jobs.map(j => [j.name, j.status, j.conclusion])).toEqual([
      ['deploy', 'completed', 'success']
    ])
    expect(log.violations).toEqual([])
  })

  it('fails a run as queued, with a failed step, and fails it when the deploy hook throws', async () => {
    sim.queueRun({ conclusion: 'failure' })
    await octokit.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'deploy.yml',
      ref: 'main'
    })
    const failed = [...sim.runs.values()][0]!
    await waitFor(() => failed.status === 'completed')
    expect(failed.conclusion).toBe('failure')
    const { data } = await octokit.rest.actions.listJobsForWorkflowRun({
      owner,
      repo,
      run_id: failed.id
    })
    const steps = data.jobs[0]!.steps!.map(s => [s.name, s.conclusion])
    expect(steps).toEqual([
      ['Set up job', 'success'],
      ['Run actions/checkout@v4', 'success'],
      ['Deploy the app', 'failure'],
      ['Complete job', 'success']
    ])

    sim.hooks.beforeComplete = () => {
      throw new Error('app did not come up')
    }
    await octokit.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'deploy.yml',
      ref: 'main'
    })
    const broken = [...sim.runs.values()][1]!
    await waitFor(() => broken.status === 'completed')
    expect(broken.conclusion).toBe('failure')
    expect(log.violations).toEqual([])
  })

  it('holds a waiting run until approved, cancels, re-runs and serves attempts', async () => {
    sim.queueRun({ waitingMs: Infinity })
    sim.queueRun({ neverStarts: true })
    await octokit.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'deploy.yml',
      ref: 'main'
    })
    await octokit.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'deploy.yml',
      ref: 'main'
    })
    const [waiting, stuck] = [...sim.runs.values()]
    await waitFor(() => waiting!.status === 'waiting')
    const { data: pending } = await octokit.rest.actions.getPendingDeploymentsForRun({
      owner,
      repo,
      run_id: waiting!.id
    })
    expect(pending.map(p => p.environment.name)).toEqual(['production'])
    const { data: waitingJobs } = await octokit.rest.actions.listJobsForWorkflowRun({
      owner,
      repo,
      run_id: waiting!.id
    })
    expect(waitingJobs.jobs[0]!.status).toBe('waiting')
    sim.approve(waiting!.id)
    await waitFor(() => waiting!.status === 'completed')

    expect(stuck!.status).toBe('queued')
    const cancelled = await octokit.rest.actions.cancelWorkflowRun({
      owner,
      repo,
      run_id: stuck!.id
    })
    expect(cancelled.status).toBe(202)
    expect(stuck).toMatchObject({ status: 'completed', conclusion: 'cancelled' })
    expect(
      (await failure(octokit.rest.actions.cancelWorkflowRun({ owner, repo, run_id: stuck!.id })))
        .status
    ).toBe(409)

    sim.rerun(stuck!.id, { conclusion: 'success' })
    expect(stuck).toMatchObject({ status: 'queued', attempt: 2 })
    await waitFor(() => stuck!.status === 'completed')
    const { data: first } = await octokit.rest.actions.getWorkflowRunAttempt({
      owner,
      repo,
      run_id: stuck!.id,
      attempt_number: 1
    })
    const { data: second } = await octokit.rest.actions.getWorkflowRunAttempt({
      owner,
      repo,
      run_id: stuck!.id,
      attempt_number: 2
    })
    expect([first.conclusion, second.conclusion]).toEqual(['cancelled', 'success'])
    expect(second.previous_attempt_url).toContain('/attempts/1')
    const { data: all } = await octokit.rest.actions.listJobsForWorkflowRun({
      owner,
      repo,
      run_id: stuck!.id,
      filter: 'all'
    })
    expect(all.total_count).toBe(2)
    expect(log.violations).toEqual([])
  })

  it('lists runs with the event, branch, status and created filters', async () => {
    const since = new Date(Date.now() - 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')
    sim.queueRun({ neverStarts: true })
    await octokit.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'deploy.yml',
      ref: 'main'
    })
    sim.queueRun({ neverStarts: true })
    await octokit.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'deploy.yml',
      ref: 'release'
    })

    const list = (params: Record<string, string | number>) =>
      octokit.rest.actions
        .listWorkflowRuns({ owner, repo, workflow_id: 'deploy.yml', ...params })
        .then(r => r.data)
    expect((await list({ event: 'workflow_dispatch', created: `>=${since}` })).total_count).toBe(2)
    expect((await list({ branch: 'release' })).workflow_runs.map(r => r.head_branch)).toEqual([
      'release'
    ])
    expect((await list({ status: 'queued', per_page: 1 })).workflow_runs).toHaveLength(1)
    expect((await list({ status: 'success' })).total_count).toBe(0)
    expect((await list({ created: '<2020-01-01' })).total_count).toBe(0)
    const { data: forRepo } = await octokit.rest.actions.listWorkflowRunsForRepo({
      owner,
      repo,
      created: `${since}..*`
    })
    expect(forRepo.workflow_runs.map(r => r.head_branch)).toEqual(['release', 'main'])
    expect(log.violations).toEqual([])
  })
})

describe('conditional requests and the rate limit', () => {
  it('answers 304 to a matching If-None-Match without spending the rate limit', async () => {
    sim.queueRun({ neverStarts: true })
    await octokit.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'deploy.yml',
      ref: 'main'
    })
    const [run] = [...sim.runs.values()]
    const first = await octokit.rest.actions.getWorkflowRun({ owner, repo, run_id: run!.id })
    expect(first.headers.etag).toMatch(/^W\/"[0-9a-f]{64}"$/)
    expect(first.headers['x-ratelimit-limit']).toBe('5000')
    const remaining = first.headers['x-ratelimit-remaining']

    const notModified = await failure(
      octokit.rest.actions.getWorkflowRun({
        owner,
        repo,
        run_id: run!.id,
        headers: { 'if-none-match': first.headers.etag }
      })
    )
    expect(notModified.status).toBe(304)
    expect(notModified.response?.headers['x-ratelimit-remaining']).toBe(remaining)
    const entries = log.requests({ service: 'github', method: 'GET' })
    expect(entries.map(e => [e.status, e.counted])).toEqual([
      [200, true],
      [304, false]
    ])

    const jobs = await octokit.rest.actions.listJobsForWorkflowRun({ owner, repo, run_id: run!.id })
    const jobs304 = await failure(
      octokit.rest.actions.listJobsForWorkflowRun({
        owner,
        repo,
        run_id: run!.id,
        headers: { 'if-none-match': jobs.headers.etag }
      })
    )
    expect(jobs304.status).toBe(304)

    // A change of state changes the ETag.
    await octokit.rest.actions.cancelWorkflowRun({ owner, repo, run_id: run!.id })
    const changed = await octokit.rest.actions.getWorkflowRun({
      owner,
      repo,
      run_id: run!.id,
      headers: { 'if-none-match': first.headers.etag }
    })
    expect(changed.status).toBe(200)

    const { data: limits } = await octokit.rest.rateLimit.get()
    expect(limits.resources.core.limit).toBe(5000)
    expect(limits.resources.core.used).toBe(log.requests().filter(e => e.counted).length)
    expect(log.violations).toEqual([])
  })

  it('answers 403 once the rate limit is spent', async () => {
    sim.setRateLimitRemaining(TOKEN, 1)
    const last = await octokit.rest.repos.get({ owner, repo })
    expect(last.headers['x-ratelimit-remaining']).toBe('0')
    const limited = await failure(octokit.rest.repos.get({ owner, repo }))
    expect(limited.status).toBe(403)
    expect(limited.response?.headers['x-ratelimit-remaining']).toBe('0')
    expect(log.violations).toEqual([])
  })
})

describe('the contract', () => {
  it('answers 404 to a route outside the OpenAPI excerpt and records a violation', async () => {
    const err = await failure(
      octokit.request('GET /repos/{owner}/{repo}/branches', { owner, repo })
    )
    expect(err.status).toBe(404)
    expect(err.response?.data).toMatchObject({ message: 'Not Found' })
    expect(log.violations).toHaveLength(1)
    expect(log.violations[0]).toContain('no such operation')
  })
})

describe('simulated time and how runs unfold', () => {
  const THREE_JOBS = `name: Release
on: workflow_dispatch
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: make
  deploy:
    needs: build
    runs-on: ubuntu-latest
    environment: production
    steps:
      - name: Ship it
        run: ./ship.sh
  verify:
    needs: deploy
    runs-on: ubuntu-latest
    steps:
      - run: ./verify.sh
`

  it('a manual clock fires due timers in order, each at its own time', () => {
    const clock = new ManualClock(1_000_000)
    const fired: Array<[string, number]> = []
    clock.setTimeout(() => fired.push(['b', clock.now()]), 300)
    const cancelled = clock.setTimeout(() => fired.push(['x', clock.now()]), 100)
    clock.setTimeout(() => {
      fired.push(['a', clock.now()])
      clock.setTimeout(() => fired.push(['a2', clock.now()]), 50)
    }, 200)
    clock.clearTimeout(cancelled)
    clock.advance(260)
    expect(fired).toEqual([
      ['a', 1_000_200],
      ['a2', 1_000_250]
    ])
    expect(clock.now()).toBe(1_000_260)
    clock.advance(1000)
    expect(fired.at(-1)).toEqual(['b', 1_000_300])
  })

  async function simulated(): Promise<{ clock: ManualClock; sim: GitHubSim; client: Octokit }> {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000)
    const own = new GitHubSim(log, { clock })
    own.addToken(TOKEN)
    own.addRepo(full, { environments: ['production'] })
    own.addWorkflow(full, {
      path: '.github/workflows/release.yml',
      name: 'Release',
      content: THREE_JOBS
    })
    await own.start()
    running.push(own)
    return { clock, sim: own, client: new Octokit({ auth: TOKEN, baseUrl: own.url }) }
  }
  const running: GitHubSim[] = []
  afterEach(async () => {
    while (running.length) await running.pop()!.stop()
  })

  it('changes a run (and its ETag) only when its state changes or a job starts or finishes', async () => {
    const { clock, sim: own, client } = await simulated()
    const start = clock.now()
    own.queueRun({ queuedMs: 10_000, runningMs: 90_000 })
    const dispatched = await client.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'release.yml',
      ref: 'main'
    })
    expect(new Date(dispatched.headers.date!).getTime()).toBe(start)
    const [run] = [...own.runs.values()]
    const seen: Array<[number, number, string, string]> = []
    let etag: string | undefined
    // A look every 5 s for two minutes: note each time the run resource changed.
    for (let t = 0; t <= 120_000; t += 5000) {
      try {
        const r = await client.rest.actions.getWorkflowRun({
          owner,
          repo,
          run_id: run!.id,
          headers: etag ? { 'if-none-match': etag } : {}
        })
        etag = r.headers.etag
        seen.push([t, r.status, r.data.status!, r.data.updated_at])
      } catch (error) {
        expect((error as HttpError).status).toBe(304)
      }
      clock.advance(5000)
    }
    const at = (ms: number) => new Date(start + ms).toISOString().replace('.000Z', 'Z')
    expect(seen).toEqual([
      [0, 200, 'queued', at(0)],
      [10_000, 200, 'in_progress', at(10_000)],
      [40_000, 200, 'in_progress', at(40_000)], // build finished, deploy started
      [70_000, 200, 'in_progress', at(70_000)], // deploy finished, verify started
      [100_000, 200, 'completed', at(100_000)]
    ])
    expect(own.runs.get(run!.id)!.attempts[0]!.completedAtMs).toBe(start + 100_000)
    expect(log.violations).toEqual([])
  })

  it('lists each job of an attempt with its own state; a failure fails the last job', async () => {
    const { clock, sim: own, client } = await simulated()
    own.queueRun({ queuedMs: 1000, runningMs: 3000, conclusion: 'failure' })
    await client.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'release.yml',
      ref: 'main'
    })
    const [run] = [...own.runs.values()]
    const jobs = async () =>
      (
        await client.rest.actions.listJobsForWorkflowRun({ owner, repo, run_id: run!.id })
      ).data.jobs.map(j => [j.name, j.status, j.conclusion])
    clock.advance(2500)
    expect(await jobs()).toEqual([
      ['build', 'completed', 'success'],
      ['deploy', 'in_progress', null],
      ['verify', 'queued', null]
    ])
    clock.advance(2000)
    expect(await jobs()).toEqual([
      ['build', 'completed', 'success'],
      ['deploy', 'completed', 'success'],
      ['verify', 'completed', 'failure']
    ])
    expect(run!.environment).toBe('production')
    expect(log.violations).toEqual([])
  })

  it('re-runs an attempt when asked to, at once or later', async () => {
    const { clock, sim: own, client } = await simulated()
    own.queueRun({
      queuedMs: 1000,
      runningMs: 3000,
      conclusion: 'failure',
      rerun: { queuedMs: 1000, runningMs: 3000, conclusion: 'success' }
    })
    own.queueRun({
      queuedMs: 1000,
      runningMs: 3000,
      conclusion: 'cancelled',
      rerunAfterMs: 60_000,
      rerun: { conclusion: 'success' }
    })
    for (let i = 0; i < 2; i++) {
      await client.rest.actions.createWorkflowDispatch({
        owner,
        repo,
        workflow_id: 'release.yml',
        ref: 'main'
      })
    }
    const [atOnce, later] = [...own.runs.values()]
    clock.advance(4000)
    expect(atOnce).toMatchObject({ attempt: 2, status: 'queued', conclusion: null })
    expect(later).toMatchObject({ attempt: 1, status: 'completed', conclusion: 'cancelled' })
    clock.advance(60_000)
    expect(atOnce).toMatchObject({ attempt: 2, status: 'completed', conclusion: 'success' })
    expect(later).toMatchObject({ attempt: 2 })
    expect(log.events('run.rerun').map(e => e.detail.run_id)).toEqual([atOnce!.id, later!.id])
  })

  it('concludes skipped, action_required and stale runs without running a job', async () => {
    const { clock, sim: own, client } = await simulated()
    for (const conclusion of ['skipped', 'action_required', 'stale']) {
      own.queueRun({ queuedMs: 1000, conclusion })
      await client.rest.actions.createWorkflowDispatch({
        owner,
        repo,
        workflow_id: 'release.yml',
        ref: 'main'
      })
    }
    clock.advance(1000)
    expect([...own.runs.values()].map(r => [r.status, r.conclusion])).toEqual([
      ['completed', 'skipped'],
      ['completed', 'action_required'],
      ['completed', 'stale']
    ])
    expect(log.events('run.in_progress')).toEqual([])
    const [skipped] = [...own.runs.values()]
    const { data } = await client.rest.actions.listJobsForWorkflowRun({
      owner,
      repo,
      run_id: skipped!.id
    })
    expect(data.jobs.map(j => j.conclusion)).toEqual(['skipped', 'skipped', 'skipped'])
  })

  it('creates another user’s dispatch, backdated, and lists runs newest first', async () => {
    const { clock, sim: own, client } = await simulated()
    await client.rest.actions.createWorkflowDispatch({
      owner,
      repo,
      workflow_id: 'release.yml',
      ref: 'main'
    })
    const theirs = own.dispatchAs('octocat', full, 'release.yml', {
      createdAtMs: clock.now() - 1000,
      behavior: { neverStarts: true }
    })
    const { data } = await client.rest.actions.listWorkflowRuns({
      owner,
      repo,
      workflow_id: 'release.yml'
    })
    expect(data.workflow_runs.map(r => [r.id === theirs.id, r.actor?.login])).toEqual([
      [false, 'sandbox-bot'],
      [true, 'octocat']
    ])
    expect(Date.parse(theirs.createdAt)).toBe(clock.now() - 1000)
    expect(() => own.dispatchAs('octocat', full, 'release.yml', { ref: 'nope' })).toThrow(
      /no ref nope/
    )
  })

  it('tells the deploy hook what each completing run shipped, by its rollout', async () => {
    const { clock, sim: own, client } = await simulated()
    const dispatchRelease = () =>
      client.rest.actions.createWorkflowDispatch({
        owner,
        repo,
        workflow_id: 'release.yml',
        ref: 'main'
      })
    const told: Array<[number, RunCompletion]> = []
    own.hooks.beforeComplete = (run, completion) => {
      told.push([run.id, completion])
    }
    const behaviors: RunBehavior[] = [
      {},
      { conclusion: 'failure' },
      { rollout: 'stale' },
      { rollout: 'stale', conclusion: 'failure' },
      { rollout: 'always', conclusion: 'failure' },
      { rollout: 'always', conclusion: 'startup_failure' }
    ]
    for (const behavior of behaviors) {
      own.queueRun({ queuedMs: 1000, runningMs: 3000, ...behavior })
      await dispatchRelease()
    }
    clock.advance(4000)
    await waitFor(() => [...own.runs.values()].every(r => r.status === 'completed'))
    const ids = [...own.runs.keys()]
    expect(told.map(([id, c]) => [ids.indexOf(id), c.conclusion, c.rollout, c.deploy])).toEqual([
      [5, 'startup_failure', 'always', 'none'],
      [0, 'success', 'on-success', 'fresh'],
      [1, 'failure', 'on-success', 'none'],
      [2, 'success', 'stale', 'stale'],
      [3, 'failure', 'stale', 'none'],
      [4, 'failure', 'always', 'fresh']
    ])
    expect([...own.runs.values()].map(r => r.conclusion)).toEqual([
      'success',
      'failure',
      'success',
      'failure',
      'failure',
      'startup_failure'
    ])
    const stale = log.events('run.completed').filter(e => e.detail.stale === true)
    expect(stale.map(e => e.detail.run_id)).toEqual([ids[2]])

    // A hook that throws fails a run about to succeed, and leaves a failure as it was; the
    // reason is kept either way.
    own.hooks.beforeComplete = () => {
      throw new Error('post-deploy check failed')
    }
    own.queueRun({ queuedMs: 1000, runningMs: 3000, rollout: 'always', conclusion: 'failure' })
    own.queueRun({ queuedMs: 1000, runningMs: 3000 })
    await dispatchRelease()
    await dispatchRelease()
    clock.advance(4000)
    const thrown = [...own.runs.values()].slice(-2)
    await waitFor(() => thrown.every(r => r.status === 'completed'))
    expect(thrown.map(r => [r.conclusion, r.attempts[0]!.failure])).toEqual([
      ['failure', 'post-deploy check failed'],
      ['failure', 'post-deploy check failed']
    ])
    expect(log.violations).toEqual([])
  })
})

describe('API versions', () => {
  const route = 'POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches' as const
  const deploy = { owner, repo, workflow_id: 'deploy.yml', ref: 'main' }
  const v2026 = { 'x-github-api-version': '2026-03-10' }

  it('answers a dispatch under 2026-03-10 with the run details, and refuses the removed flag', async () => {
    const plain = await octokit.request(route, { ...deploy, headers: v2026 })
    expect(plain.status).toBe(200)
    expect(plain.headers['x-github-api-version-selected']).toBe('2026-03-10')
    const details = plain.data as unknown as { workflow_run_id: number; run_url: string }
    expect(sim.runs.has(details.workflow_run_id)).toBe(true)
    expect(details.run_url).toBe(`${sim.url}/repos/${full}/actions/runs/${details.workflow_run_id}`)

    for (const flag of [true, false]) {
      const err = await failure(
        octokit.request(route, { ...deploy, return_run_details: flag, headers: v2026 })
      )
      expect(err.status).toBe(422)
      expect(err.message).toContain('"return_run_details" is not a permitted key.')
    }
    expect(sim.runs.size).toBe(1)

    // Without the header: 2022-11-28, where the flag chooses between 200 and 204.
    const flagged = await octokit.request(route, { ...deploy, return_run_details: true })
    expect(flagged.status).toBe(200)
    expect(flagged.headers['x-github-api-version-selected']).toBe('2022-11-28')
    expect((await octokit.request(route, deploy)).status).toBe(204)
    expect(log.violations).toEqual([])
  })

  it('answers 400 to a version it does not serve', async () => {
    const err = await failure(
      octokit.rest.repos.get({ owner, repo, headers: { 'x-github-api-version': '2023-01-01' } })
    )
    expect(err.status).toBe(400)
    expect(err.message).toContain('"2023-01-01", is not a supported version')
    expect(err.message).toContain('"2026-03-10" (most recent), "2022-11-28"')
    expect(err.response?.headers['x-github-api-version-selected']).toBeUndefined()
    const dispatch = await failure(
      octokit.request(route, { ...deploy, headers: { 'x-github-api-version': 'v3' } })
    )
    expect(dispatch.status).toBe(400)
    expect(sim.runs.size).toBe(0)
    const selected = await octokit.rest.repos.get({
      owner,
      repo,
      headers: { 'x-github-api-version': '2022-11-28' }
    })
    expect(selected.headers['x-github-api-version-selected']).toBe('2022-11-28')
    expect(log.violations).toEqual([])
  })
})

describe('GitHub Enterprise Server', () => {
  const running: GitHubSim[] = []
  afterEach(async () => {
    while (running.length) await running.pop()!.stop()
  })

  async function enterprise(
    options: GitHubSimOptions['enterpriseServer']
  ): Promise<{ ghes: GitHubSim; client: Octokit; origin: string }> {
    const ghes = new GitHubSim(log, { enterpriseServer: options })
    ghes.addToken(TOKEN)
    ghes.addRepo(full, { environments: ['production'] })
    ghes.addWorkflow(full, {
      path: '.github/workflows/deploy.yml',
      name: 'Deploy',
      content: DEPLOY_YAML
    })
    ghes.addWorkflow(full, { path: '.github/workflows/ci.yml', name: 'CI', content: CI_YAML })
    ghes.runBehavior = { neverStarts: true }
    const url = await ghes.start()
    running.push(ghes)
    return { ghes, client: new Octokit({ auth: TOKEN, baseUrl: url }), origin: ghes.service.url }
  }

  it('serves the API under /api/v3, says its version, and has no rate limit by default', async () => {
    const { ghes, client, origin } = await enterprise({ version: '3.20' })
    expect(ghes.url).toBe(`${origin}/api/v3`)
    const { data, headers } = await client.rest.repos.get({ owner, repo })
    expect(headers['x-github-enterprise-version']).toBe('3.20.0')
    expect(headers['x-ratelimit-limit']).toBeUndefined()
    expect(data.url).toBe(`${origin}/api/v3/repos/${full}`)
    expect(data.html_url).toBe(`${origin}/${full}`)

    const limit = await failure(client.rest.rateLimit.get())
    expect(limit.status).toBe(404)
    expect(limit.message).toContain('Rate limiting is not enabled.')

    const page = await client.rest.actions.listRepoWorkflows({ owner, repo, per_page: 1 })
    expect(page.headers.link).toContain(`<${origin}/api/v3/repos/${full}/actions/workflows?`)

    // GHES 3.20 refuses return_run_details; it serves 2022-11-28 only.
    const route = 'POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches' as const
    const dispatch = { owner, repo, workflow_id: 'deploy.yml', ref: 'main' }
    expect(
      (await failure(client.request(route, { ...dispatch, return_run_details: true }))).status
    ).toBe(422)
    expect((await client.request(route, dispatch)).status).toBe(204)
    const v2026 = await failure(
      client.request(route, { ...dispatch, headers: { 'x-github-api-version': '2026-03-10' } })
    )
    expect(v2026.status).toBe(400)
    expect(log.violations).toEqual([])

    // The API is not at the server's root.
    const root = await fetch(`${origin}/repos/${full}`, {
      headers: { authorization: `Bearer ${TOKEN}` }
    })
    expect(root.status).toBe(404)
    expect(log.violations).toHaveLength(1)
    expect(log.violations[0]).toContain('/api/v3')
  })

  it('accepts return_run_details from 3.21 on, and limits the rate when told to', async () => {
    const { client } = await enterprise({ version: '3.21', rateLimiting: true })
    const answer = await client.request(
      'POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches',
      { owner, repo, workflow_id: 'deploy.yml', ref: 'main', return_run_details: true }
    )
    expect(answer.status).toBe(200)
    expect(answer.headers['x-github-enterprise-version']).toBe('3.21.0')
    expect(answer.headers['x-ratelimit-limit']).toBe('5000')
    expect((await client.rest.rateLimit.get()).status).toBe(200)
    expect(log.violations).toEqual([])
  })
})

describe('tokens that expire', () => {
  it('names the expiry on every answer, then answers 401 Bad credentials', async () => {
    const expiresAt = Date.UTC(2026, 11, 20, 10, 0, 0)
    const clock = new ManualClock(expiresAt - 60_000)
    const own = new GitHubSim(log, { clock })
    const EXPIRING = 'github_pat_sandbox_expiring'
    own.addToken(EXPIRING, { expiresAt: new Date(expiresAt) })
    own.addToken(TOKEN)
    own.addRepo(full)
    await own.start()
    try {
      const client = new Octokit({ auth: EXPIRING, baseUrl: own.url })
      const ok = await client.rest.repos.get({ owner, repo })
      expect(ok.headers['github-authentication-token-expiration']).toBe('2026-12-20 10:00:00 UTC')
      const missing = await failure(client.rest.actions.getRepoVariable({ owner, repo, name: 'X' }))
      expect(missing.status).toBe(404)
      expect(missing.response?.headers['github-authentication-token-expiration']).toBe(
        '2026-12-20 10:00:00 UTC'
      )
      const other = await new Octokit({ auth: TOKEN, baseUrl: own.url }).rest.repos.get({
        owner,
        repo
      })
      expect(other.headers['github-authentication-token-expiration']).toBeUndefined()

      clock.advance(59_999)
      expect((await client.rest.repos.get({ owner, repo })).status).toBe(200)
      clock.advance(1)
      const expired = await failure(client.rest.repos.get({ owner, repo }))
      expect(expired.status).toBe(401)
      expect(expired.message).toContain('Bad credentials')
      expect(expired.response?.headers['github-authentication-token-expiration']).toBeUndefined()
      expect(log.violations).toEqual([])
    } finally {
      await own.stop()
    }
  })
})
