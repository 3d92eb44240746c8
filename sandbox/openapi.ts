/**
 * Validates the simulators' traffic against the official OpenAPI excerpts in sandbox/openapi/.
 * Each simulator routes a request through `match`, validates the request before handling it and
 * the response before sending it; every violation is recorded in the RequestLog (and tests
 * assert there are none), so a simulator that drifts from the real API, or an action that sends
 * what the real API would reject, fails the test.
 */
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import { readFileSync } from 'node:fs'
import type { OpenAPIBackend, Operation } from 'openapi-backend'
import { sharedCache } from './shared-cache.js'

const here = path.dirname(fileURLToPath(import.meta.url))

export type SpecName = 'cloudflare-tokens' | 'cloudflare-access-workers' | 'github-actions'

export interface MatchedOperation {
  operation: Operation
  operationId: string
  params: Record<string, string>
}

/**
 * The parsed validators, one per spec: per process, or per Jest worker when the test environment
 * offers a cache shared by its test files (__tests__/helpers/environment.js), since Jest loads
 * this module afresh for every test file. A validator holds no state of any request or sandbox.
 */
const cache = sharedCache(
  'openapi-validators',
  () => new Map<SpecName, Promise<OpenApiValidator>>()
)
/** How many routed paths `match` remembers before it starts over. */
const MATCH_CACHE_SIZE = 2000

export class OpenApiValidator {
  /**
   * `responses` validates answers: the same description, except that a property marked
   * `writeOnly` is not required in a response (see `withoutWriteOnlyRequired`). It is `api` itself
   * when the description has no such property.
   */
  /**
   * `match` answers by method and path, which name one operation of a fixed description: the
   * simulators ask it on every request, mostly for the same few paths, and openapi-backend's
   * router walks every operation each time. Bounded, so that paths with fresh ids cannot grow it.
   */
  private readonly matches = new Map<string, MatchedOperation | undefined>()

  private constructor(
    private readonly api: OpenAPIBackend,
    private readonly responses: OpenAPIBackend
  ) {}

  /** One parsed validator per spec and process (parsing the GitHub excerpt takes a second or two). */
  static load(spec: SpecName): Promise<OpenApiValidator> {
    let loaded = cache.get(spec)
    if (!loaded) {
      loaded = (async () => {
        const text = readFileSync(path.join(here, 'openapi', `${spec}-openapi.json`), 'utf8')
        const definition = JSON.parse(text) as Record<string, unknown>
        const api = await backend(definition)
        const forResponses = JSON.parse(text) as Record<string, unknown>
        const responses = withoutWriteOnlyRequired(forResponses) ? await backend(forResponses) : api
        return new OpenApiValidator(api, responses)
      })()
      cache.set(spec, loaded)
    }
    return loaded
  }

  match(method: string, pathname: string): MatchedOperation | undefined {
    const key = `${method.toUpperCase()} ${pathname}`
    if (this.matches.has(key)) {
      const known = this.matches.get(key)
      return known && { ...known, params: { ...known.params } }
    }
    const matched = this.route(method, pathname)
    if (this.matches.size >= MATCH_CACHE_SIZE) this.matches.clear()
    this.matches.set(key, matched && { ...matched, params: { ...matched.params } })
    return matched
  }

  private route(method: string, pathname: string): MatchedOperation | undefined {
    const operation = this.api.router.matchOperation({
      method: method.toLowerCase(),
      path: pathname,
      headers: {}
    })
    if (!operation?.operationId) return undefined
    const parsed = this.api.router.parseRequest(
      { method: method.toLowerCase(), path: pathname, headers: {} },
      operation
    )
    const params = parsed.params as Record<string, string>
    return { operation, operationId: operation.operationId, params }
  }

  /** Errors of a request against its operation (empty when valid). */
  validateRequest(
    matched: MatchedOperation,
    req: {
      method: string
      path: string
      query: URLSearchParams
      headers: Record<string, unknown>
      body?: unknown
    }
  ): string[] {
    const query: Record<string, string | string[]> = {}
    for (const key of new Set(req.query.keys())) {
      const all = req.query.getAll(key)
      query[key] = all.length === 1 ? all[0]! : all
    }
    const result = this.api.validator.validateRequest(
      {
        method: req.method.toLowerCase(),
        path: req.path,
        query,
        headers: req.headers as Record<string, string>,
        body: req.body
      },
      matched.operation
    )
    return result.valid
      ? []
      : (result.errors ?? []).map(e => `${e.instancePath || '/'} ${e.message ?? ''}`.trim())
  }

  /** Errors of a response body against the operation's schema for that status (empty when valid). */
  validateResponse(matched: MatchedOperation, status: number, body: unknown): string[] {
    const responses = matched.operation.responses ?? {}
    if (
      !(String(status) in responses) &&
      !('default' in responses) &&
      !(`${String(status)[0]}XX` in responses)
    ) {
      return [`status ${status} is not documented for ${matched.operationId}`]
    }
    if (body === undefined) return []
    // The operation, not its id: given an id, openapi-backend finds the operation by listing every
    // operation of the description again (lodash over all paths), on every response. Only its
    // `operationId` is read, to pick the validators this backend compiled.
    const result = this.responses.validator.validateResponse(body, matched.operation, status)
    return result.valid
      ? []
      : (result.errors ?? []).map(e => `${e.instancePath || '/'} ${e.message ?? ''}`.trim())
  }
}

/**
 * Checks an excerpt in full: the document is valid OpenAPI and every operation's validators
 * compile. The simulators load the excerpts in quick mode and rely on this check (a test).
 */
export async function checkExcerpt(spec: SpecName): Promise<void> {
  const text = readFileSync(path.join(here, 'openapi', `${spec}-openapi.json`), 'utf8')
  await backend(JSON.parse(text) as Record<string, unknown>, 'full check')
}

/**
 * A backend for one description. `quick`, for the simulators: the excerpts are fixed files,
 * checked in full once by __tests__/sandbox-openapi.test.ts (`full check`), so the document is not
 * validated again and each operation's validators are compiled on first use, which cuts a
 * simulator's start from seconds to milliseconds.
 *
 * openapi-backend and ajv-formats are imported here, on first use: a test file whose Jest worker
 * already holds the parsed validators (see `cache`) never loads them (a fifth of a second each).
 */
async function backend(
  definition: Record<string, unknown>,
  mode: 'quick' | 'full check' = 'quick'
): Promise<OpenAPIBackend> {
  const [{ OpenAPIBackend }, formats] = await Promise.all([
    import('openapi-backend'),
    import('ajv-formats')
  ])
  const quick = mode === 'quick'
  const api = new OpenAPIBackend({
    // openapi-backend's types want its own Document type; the excerpts are OpenAPI 3.0 documents.
    definition: definition as unknown as ConstructorParameters<
      typeof OpenAPIBackend
    >[0]['definition'],
    quick,
    validate: true,
    strict: !quick,
    // Quick: each compiled schema is not checked against the JSON Schema meta-schema again (the
    // excerpts' check does it). Neither mode optimises the generated validators: compiling is
    // most of a simulator's cost, a validator runs only a few times in a test file, and the full
    // check only has to show that every one compiles (the optimiser took half of its 8 s of CPU).
    ajvOpts: quick
      ? { strict: false, logger: false, validateSchema: false, code: { optimize: false } }
      : { strict: false, logger: false, code: { optimize: false } },
    customizeAjv: ajv => {
      formats.default.default(ajv)
      // Formats the excerpts use that are not JSON Schema formats.
      ajv.addFormat('timestamp', true)
      ajv.addFormat('repo.nwo', true)
      return ajv
    }
  })
  await api.init()
  return api
}

/**
 * OpenAPI 3.0.3, Schema Object, `writeOnly`: "If the property is marked as writeOnly being true
 * and is in the required list, the required will take effect on the request only." JSON Schema
 * validators do not know that rule, so a copy of the description for validating responses drops
 * such properties from every `required` list. (Workers secrets: `text` is required and writeOnly,
 * and the API never answers a secret's value.) Returns whether anything changed.
 */
function withoutWriteOnlyRequired(node: unknown): boolean {
  if (Array.isArray(node)) return node.map(withoutWriteOnlyRequired).some(Boolean)
  if (typeof node !== 'object' || node === null) return false
  const schema = node as Record<string, unknown>
  let changed = false
  const properties = schema.properties
  if (Array.isArray(schema.required) && typeof properties === 'object' && properties !== null) {
    const writeOnly = (name: string): boolean =>
      (properties as Record<string, { writeOnly?: unknown }>)[name]?.writeOnly === true
    const kept = (schema.required as string[]).filter(name => !writeOnly(name))
    if (kept.length !== schema.required.length) {
      schema.required = kept
      changed = true
    }
  }
  for (const value of Object.values(schema)) changed = withoutWriteOnlyRequired(value) || changed
  return changed
}
