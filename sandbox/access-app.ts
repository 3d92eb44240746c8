/**
 * An application behind Cloudflare Access that admits machines by service token: it answers only
 * requests whose `CF-Access-Client-Id` and `CF-Access-Client-Secret` headers are a valid pair right
 * now (the token's current secret, or its previous one inside the grace window; see
 * `AccessSim.verifyClientCredentials`). Smoke checks of a service-token rotation hit it, and a
 * watcher polling it shows whether the deployed client ever lost access.
 *
 * Access checks every request to the protected hostname before the origin sees it, so the check
 * comes first whatever the path. `GET /` and `GET /healthz` answer 200 `ok client-id=<id>` (the
 * client id Access accepted); other paths answer 404 once admitted.
 *
 * Assumed (sandbox/README.md): a refused request gets 403. An Access application whose policy is
 * a Service Auth (`non_identity`) rule answers machines without a valid token with 403; an
 * application that also offers a login page redirects instead (302, a public report: "an Allow
 * policy 302s the token to login"), which this sample does not model. The one-header form
 * (`read_service_tokens_from_header`) is not simulated either.
 */
import type { AccessSim } from './access.js'
import type { RequestLog } from './log.js'
import { Service, type IncomingRequest, type OutgoingResponse } from './service.js'

export interface AccessCheck {
  /** Milliseconds since the epoch (real time, like the request log). */
  at: number
  path: string
  status: number
  /** The presented client id, when there was one. */
  clientId?: string
  /** Which secret was accepted. */
  secret?: 'current' | 'previous'
  /** Why the request was refused. */
  reason?: string
}

export interface AccessPolicy {
  /** Only tokens of this account (default: any account the Access simulator knows). */
  accountId?: string
  /**
   * Only these service tokens (ids), as a policy that names tokens; default: any valid service
   * token ("Any Access Service Token").
   */
  serviceTokenIds?: string[]
}

export class AccessProtectedApp {
  readonly service: Service
  /** Every request's outcome, in order (a health history). */
  readonly checks: AccessCheck[] = []

  constructor(
    private readonly log: RequestLog,
    private readonly access: AccessSim,
    /** May be changed while the app runs. */
    public policy: AccessPolicy = {}
  ) {
    this.service = new Service('access-app', log, req => this.handle(req))
  }

  get url(): string {
    return this.service.url
  }

  start(): Promise<string> {
    return this.service.start()
  }

  stop(): Promise<void> {
    return this.service.stop()
  }

  /** The checks that were not answered 200. */
  failures(): AccessCheck[] {
    return this.checks.filter(c => c.status !== 200)
  }

  private handle(req: IncomingRequest): OutgoingResponse {
    const at = Date.now()
    const verdict = this.access.verifyClientCredentials(
      header(req, 'cf-access-client-id'),
      header(req, 'cf-access-client-secret'),
      {
        ...(this.policy.accountId !== undefined ? { accountId: this.policy.accountId } : {}),
        ...(this.policy.serviceTokenIds !== undefined
          ? { tokenIds: this.policy.serviceTokenIds }
          : {})
      }
    )
    if (!verdict.ok) {
      this.checks.push({
        at,
        path: req.path,
        status: 403,
        ...(verdict.clientId !== undefined ? { clientId: verdict.clientId } : {}),
        reason: verdict.reason
      })
      this.log.event('access-app', 'access.denied', {
        path: req.path,
        client_id: verdict.clientId ?? null,
        reason: verdict.reason
      })
      return text(403, 'Forbidden: a valid Access service token is required')
    }
    const admitted = { at, path: req.path, clientId: verdict.clientId, secret: verdict.secret }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      this.checks.push({ ...admitted, status: 405 })
      return text(405, 'method not allowed')
    }
    if (req.path !== '/' && req.path !== '/healthz') {
      this.checks.push({ ...admitted, status: 404 })
      return text(404, 'not found')
    }
    this.checks.push({ ...admitted, status: 200 })
    return text(200, `ok client-id=${verdict.clientId}`)
  }
}

function header(req: IncomingRequest, name: string): string | undefined {
  const value = req.headers[name]
  return Array.isArray(value) ? value[0] : value
}

function text(status: number, body: string): OutgoingResponse {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8' }, body }
}
