/**
 * run(): settings → clients → rotation → outputs and summary. The one place that fails the step.
 */
import * as core from '@actions/core'
import type { Settings } from './model.js'
import type { RotationContext } from './context.js'
import { getSettings } from './settings.js'
import { InputError, errorMessage } from './errors.js'
import { type Clock, scaledClock, systemClock } from './backoff.js'
import { fail, log, mask, maskToken, setOutput } from './log.js'
import { isLoopbackUrl } from './net.js'
import { useProxyFromEnv } from './proxy.js'
import { TokenApi } from './cloudflare/tokens.js'
import { WorkerSecrets } from './cloudflare/workers.js'
import { createGitHubClient } from './github/client.js'
import { SecretWriter } from './github/secrets.js'
import { Journal } from './journal.js'
import { rotate } from './rotation.js'
import { rotateManagementToken } from './self-rotation.js'
import { rotateServiceToken } from './service-token.js'
import { writeOutputs, writeReport } from './report.js'

/** Registers every secret input before anything else can print it. */
function maskInputs(settings: Settings): void {
  mask(settings.cloudflareApiToken)
  mask(settings.githubToken)
  maskToken(settings.currentToken)
  mask(settings.currentSecretAccessKey)
  mask(settings.currentClientSecret)
  // A header that holds a service token placeholder is a template: the values it is filled with
  // (current-client-secret, a new secret) are masked on their own, and any literal text around
  // the placeholders is masked as a value of its own.
  for (const value of Object.values(settings.smoke.headers)) {
    const parts = value.split(/\{client-(?:id|secret)\}/)
    if (parts.length === 1) mask(value)
    else for (const part of parts) if (part.trim().length >= 6) mask(part.trim())
  }
}

/**
 * The sandbox's tests run the action on a faster clock (`R2_ROTATION_TIME_SCALE`, e.g. 0.01: a
 * two-minute watch takes 1.2 s). It is honoured only when every API the action talks to is on
 * loopback (the local simulators), so that no setting can shorten a real rotation's waits.
 */
export function clockFor(settings: Settings, env: NodeJS.ProcessEnv): Clock {
  const text = env.R2_ROTATION_TIME_SCALE?.trim()
  if (!text) return systemClock
  const scale = Number(text)
  const local = [settings.cloudflareApiUrl, settings.githubApiUrl].every(isLoopbackUrl)
  if (!local || !(scale > 0 && scale <= 1)) {
    log.warning('R2_ROTATION_TIME_SCALE is ignored: it applies to the local sandbox only.')
    return systemClock
  }
  return scaledClock(scale)
}

export function createContext(settings: Settings, env: NodeJS.ProcessEnv): RotationContext {
  const clock = clockFor(settings, env)
  const github = createGitHubClient({
    token: settings.githubToken,
    baseUrl: settings.githubApiUrl,
    timeScale: clock.scale
  })
  const tokens = new TokenApi({
    apiToken: settings.cloudflareApiToken,
    baseURL: settings.cloudflareApiUrl,
    clock
  })
  return {
    settings,
    tokens,
    github,
    // Worker targets are written with the management token's client (and its rate budget).
    secrets: new SecretWriter(github, new WorkerSecrets(tokens)),
    journal: new Journal(github, settings.repository, settings.stateVariable, {
      id: settings.runId,
      attempt: settings.runAttempt
    }),
    clock
  }
}

export async function run(): Promise<void> {
  // Mask the raw secret inputs first, even before validation can fail and print anything.
  for (const name of [
    'cloudflare-api-token',
    'github-token',
    'current-secret-access-key',
    'current-client-secret'
  ]) {
    mask(core.getInput(name))
  }
  maskToken(core.getInput('current-token'))

  let settings: Settings
  try {
    // Before any request: behind a proxy, fetch reaches nothing until it is routed through it.
    await useProxyFromEnv(process.env)
    settings = getSettings(name => core.getInput(name), process.env)
  } catch (error) {
    setOutput('result', 'failed')
    fail(error instanceof InputError ? error.message : errorMessage(error))
    return
  }
  maskInputs(settings)

  try {
    const ctx = createContext(settings, process.env)
    const report =
      settings.credential === 'access-service-token'
        ? await rotateServiceToken(ctx)
        : settings.rotateManagementToken
          ? await rotateManagementToken(ctx)
          : await rotate(ctx)
    writeOutputs(report)
    await writeReport(report)
    if (report.result === 'failed' || report.result === 'rolled-back') {
      fail(report.error ?? `Rotation ${report.result}`)
    }
  } catch (error) {
    setOutput('result', 'failed')
    fail(errorMessage(error))
  }
}
