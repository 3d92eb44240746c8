/**
 * Self-hosted runners behind a proxy. Node's fetch ignores HTTPS_PROXY, HTTP_PROXY and NO_PROXY,
 * so on such a runner the action reaches nothing unless fetch is routed through the proxy.
 *
 * Every request of the action goes through the global `fetch`, looked up when it is sent:
 * Octokit (@octokit/request's fetch wrapper: `request.fetch || globalThis.fetch`), the Cloudflare
 * SDK (cloudflare/sdk.ts passes it a `fetch` that calls the global one), aws4fetch (its `fetch`
 * signs, then calls the global `fetch`) and the smoke checks (smoke.ts). So one global dispatcher
 * routes them all: undici's EnvHttpProxyAgent, installed with undici's `setGlobalDispatcher`. It
 * reads the lower-case variable before the upper-case one, and NO_PROXY entries as exact host
 * names, `.suffix` or `*.suffix` (subdomains only), `host:port`, or `*` (unlike curl, `example.com`
 * does not cover its subdomains, and loopback is not exempt unless listed).
 *
 * Why a dispatcher of the undici package reaches the fetch built into Node:
 * - `setGlobalDispatcher` stores it on globalThis under `Symbol.for('undici.globalDispatcher.1')`,
 *   the slot the built-in fetch reads on every call (undici lib/global.js). Node 20 bundles
 *   undici 6 (6.24.1 on this project's machines), the major of the package, so both speak the same
 *   dispatcher interface.
 * - node24 bundles undici 7. Its fetch reads the same slot and drives the dispatcher with the
 *   handler callbacks of undici 6 (onConnect, onHeaders, onData, onComplete, onError: v7
 *   lib/web/fetch/index.js). Not so undici 7.27.0 and 7.27.1: their fetch reads
 *   `…globalDispatcher.2`, and on loading they put an Agent of their own into both slots, so the
 *   proxy would be skipped (7.27.2 reads `.1` again, nodejs/undici#5368).
 * - The action relies on this already without a proxy: @actions/core loads @actions/http-client,
 *   which loads undici 6 at start-up, and its lib/global.js puts an undici 6 Agent in that slot
 *   before the built-in fetch first runs; every fetch of a node24 run goes through it.
 * - A fetch of undici 8 (Node 26) reads `…globalDispatcher.2`, with another handler interface.
 * On a runtime whose fetch would skip the proxy, the action says so in a warning
 * (`fetchUsesGlobalDispatcher`); moving it to Node 26 means moving this dependency to undici 8.
 */
import type { Agent, EnvHttpProxyAgent } from 'undici'
import { log, mask } from './log.js'

/** Where requests of one scheme go: the proxy URL and the variable it came from. */
export interface ProxyRoute {
  variable: string
  /** The value as set (it may carry user:password; never printed). */
  value: string
  url: URL
}

export interface ProxyConfig {
  /** For https:// URLs; HTTP_PROXY when HTTPS_PROXY is unset (as undici does). */
  https?: ProxyRoute
  /** For http:// URLs. */
  http?: ProxyRoute
  /** NO_PROXY as set ('' when unset). */
  noProxy: string
  /** NO_PROXY's entries as undici reads them: split at commas and spaces, lower case. */
  noProxyEntries: string[]
}

/** The variable undici reads for one setting: the lower-case one when it is set at all. */
function pick(env: NodeJS.ProcessEnv, name: string): { variable: string; value: string } {
  const lower = name.toLowerCase()
  if (env[lower] !== undefined) return { variable: lower, value: env[lower] }
  return { variable: name, value: env[name] ?? '' }
}

const PROXY_URL_HINT =
  'expected http://host:port or https://host:port, with user:password@ before the host if the proxy asks for credentials'

/**
 * Parses one proxy variable. Its password is masked before anything else happens, and the value
 * is never part of an error: it may carry credentials.
 */
function route(variable: string, value: string): ProxyRoute {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    // It may still hold a password that cannot be told apart: mask the whole of it.
    if (value.includes('@')) mask(value)
    throw new Error(`${variable} is not a URL: ${PROXY_URL_HINT}.`)
  }
  if (url.password) {
    mask(url.password)
    const username = decoded(url.username)
    const password = decoded(url.password)
    mask(password)
    // The Proxy-Authorization header undici sends (ProxyAgent: Basic base64(user:password)).
    mask(Buffer.from(`${username}:${password}`).toString('base64'))
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || !url.hostname) {
    throw new Error(`${variable} is not a proxy URL: ${PROXY_URL_HINT}.`)
  }
  return { variable, value, url }
}

function decoded(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

/**
 * The proxy settings of the environment, read as undici's EnvHttpProxyAgent reads them;
 * undefined when no proxy variable is set. Throws, naming the variable, on a value that is not
 * an http(s) URL.
 */
export function readProxyConfig(env: NodeJS.ProcessEnv): ProxyConfig | undefined {
  const https = pick(env, 'HTTPS_PROXY')
  const http = pick(env, 'HTTP_PROXY')
  if (!https.value && !http.value) return undefined
  const httpRoute = http.value ? route(http.variable, http.value) : undefined
  const httpsRoute = https.value ? route(https.variable, https.value) : httpRoute
  const noProxy = pick(env, 'NO_PROXY').value
  const noProxyEntries = noProxy
    .split(/[,\s]/)
    .filter(entry => entry !== '')
    .map(entry => entry.toLowerCase())
  return { https: httpsRoute, http: httpRoute, noProxy, noProxyEntries }
}

/** A `*` entry exempts every host (undici: a bare `*`, or an entry every host name ends with). */
export function exemptsAll(config: ProxyConfig): boolean {
  return config.noProxyEntries.includes('*')
}

/** host:port of a proxy, never its credentials. */
export function proxyAddress(url: URL): string {
  return `${url.hostname}:${url.port || (url.protocol === 'https:' ? '443' : '80')}`
}

/** The one log line about the proxy: where requests go, and which hosts NO_PROXY exempts. */
export function describeProxy(config: ProxyConfig): string {
  const exempt = config.noProxyEntries.length > 0 ? config.noProxyEntries.join(', ') : 'none'
  if (exemptsAll(config)) return `Proxy: not used, NO_PROXY=* exempts every host.`
  const via = (r: ProxyRoute): string => `${proxyAddress(r.url)} (${r.variable})`
  const { https, http } = config
  let where: string
  if (https && http && proxyAddress(https.url) === proxyAddress(http.url)) {
    const variables = [...new Set([https.variable, http.variable])].join(', ')
    where = `requests go through ${proxyAddress(https.url)} (${variables})`
  } else {
    where = [
      https ? `https:// requests go through ${via(https)}` : 'https:// requests go direct',
      http ? `http:// requests through ${via(http)}` : 'http:// requests direct'
    ].join(', ')
  }
  return `Proxy: ${where}; NO_PROXY exempts: ${exempt}.`
}

/**
 * undici 6 calls EnvHttpProxyAgent experimental in a process warning on first use. The version
 * is pinned here and its behaviour tested end to end, so the warning would only be noise on the
 * runner's stderr: it alone is dropped, while the agent is made.
 */
function withoutExperimentalWarning<T>(make: () => T): T {
  const emitWarning = process.emitWarning
  const filtered = (warning: string | Error, ...rest: unknown[]): void => {
    const options = rest[0]
    if (typeof options === 'object' && options !== null && 'code' in options) {
      if (options.code === 'UNDICI-EHPA') return
    }
    ;(emitWarning as (...args: unknown[]) => void).call(process, warning, ...rest)
  }
  process.emitWarning = filtered as typeof process.emitWarning
  try {
    return make()
  } finally {
    process.emitWarning = emitWarning
  }
}

/**
 * undici's EnvHttpProxyAgent for `config`: given the values just read and checked, it reads no
 * variable itself, so the log line tells what it does. `more`: further Agent options (the tests
 * resolve host names with `connect.lookup`).
 */
export async function createProxyAgent(
  config: ProxyConfig,
  more: Agent.Options = {}
): Promise<EnvHttpProxyAgent> {
  const { EnvHttpProxyAgent } = await import('undici')
  return withoutExperimentalWarning(
    () =>
      new EnvHttpProxyAgent({
        ...more,
        httpProxy: config.http?.value ?? '',
        httpsProxy: config.https?.value ?? '',
        noProxy: config.noProxy
      })
  )
}

/**
 * Whether the fetch of a Node whose bundled undici is `version` (`process.versions.undici`) sends
 * its requests through the dispatcher `setGlobalDispatcher` of undici 6 installs (see the top of
 * this file): undici 6, and 7 except 7.27.0 and 7.27.1.
 */
export function fetchUsesGlobalDispatcher(version: string | undefined): boolean {
  const [major, minor, patch] = (version ?? '').split('.').map(Number)
  if (major === 6) return true
  if (major === 7) return !(minor === 27 && patch !== undefined && patch <= 1)
  return false
}

/**
 * Routes every request of the action through the proxy the environment names, if any. Call it
 * before the first request. undici is imported here only when a proxy variable is set (today
 * @actions/http-client loads it at start-up in any case, so this costs no start-up time).
 */
export async function useProxyFromEnv(env: NodeJS.ProcessEnv): Promise<void> {
  const config = readProxyConfig(env)
  if (!config) return
  log.info(describeProxy(config))
  if (exemptsAll(config)) return
  const undiciVersion = process.versions.undici
  if (!fetchUsesGlobalDispatcher(undiciVersion)) {
    log.warning(
      `Node ${process.versions.node} fetches with undici ${undiciVersion ?? '(unknown)'}, which does not use the proxy this action sets up, so requests may go direct: the action supports the fetch of undici 6 and 7 (not 7.27.0 or 7.27.1).`
    )
  }
  const { setGlobalDispatcher } = await import('undici')
  setGlobalDispatcher(await createProxyAgent(config))
}
