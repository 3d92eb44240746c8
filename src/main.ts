/**
 * run(): settings → rotation → outputs and summary. The one place that fails the step.
 */
import * as core from '@actions/core'
import { getSettings, InputError, type Settings } from './settings.js'
import { TokenApi } from './cloudflare/tokens.js'
import { createGitHubClient } from './github/client.js'
import { SecretWriter } from './github/secrets.js'
import { rotate } from './rotation.js'
import { Journal } from './journal.js'
import { writeOutputs, writeSummary } from './report.js'
import { mask, maskToken } from './mask.js'
import { errorMessage } from './errors.js'

/** Registers every secret input before anything else can print it. */
function maskInputs(settings: Settings): void {
  mask(settings.cloudflareApiToken)
  mask(settings.githubToken)
  maskToken(settings.currentToken)
  mask(settings.currentSecretAccessKey)
  for (const value of Object.values(settings.smoke.headers)) mask(value)
}

export async function run(): Promise<void> {
  // Mask the raw secret inputs first, even before validation can fail and print anything.
  for (const name of ['cloudflare-api-token', 'github-token', 'current-secret-access-key']) {
    mask(core.getInput(name))
  }
  maskToken(core.getInput('current-token'))

  let settings: Settings
  try {
    settings = getSettings(name => core.getInput(name), process.env)
  } catch (error) {
    core.setOutput('result', 'failed')
    core.setFailed(error instanceof InputError ? error.message : errorMessage(error))
    return
  }
  maskInputs(settings)

  try {
    const github = createGitHubClient({
      token: settings.githubToken,
      baseUrl: settings.githubApiUrl,
      log: core
    })
    const report = await rotate({
      settings,
      tokens: new TokenApi({
        apiToken: settings.cloudflareApiToken,
        baseURL: settings.cloudflareApiUrl
      }),
      github,
      secrets: new SecretWriter(github),
      journal: new Journal(github, settings.repository, settings.stateVariable, settings.runId)
    })
    writeOutputs(report)
    await writeSummary(report)
    if (report.result === 'failed' || report.result === 'rolled-back') {
      core.setFailed(report.error ?? `Rotation ${report.result}`)
    }
  } catch (error) {
    core.setOutput('result', 'failed')
    core.setFailed(errorMessage(error))
  }
}
