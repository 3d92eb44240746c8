/**
 * The sandbox's one ordered record of what happened: every HTTP request any simulator received
 * (with its answer) and the simulators' own events (a run concluded, the app was redeployed).
 * End-to-end tests read it to prove the order of operations, above all the invariant: the old
 * token is deleted only after the deploy run concluded `success` and the smoke checks passed.
 */

export type ServiceName = 'cloudflare' | 'github' | 'r2' | 'app'

/**
 * Every service that writes to the log: the four of every sandbox (`ServiceName`), and the ones
 * only credential scenarios start (sandbox/credentials-world.ts): an application behind Cloudflare
 * Access (`access-app`) and a deployed Worker (`worker`). Kept apart from `ServiceName` so that
 * code that handles exactly the four (a map from name to simulator) stays exhaustive.
 */
export type LogServiceName = ServiceName | 'access-app' | 'access-client' | 'worker'

export interface RequestEntry {
  kind: 'request'
  seq: number
  /** Milliseconds since the epoch when the request arrived. */
  at: number
  service: LogServiceName
  method: string
  /** Path and query string, as received. */
  path: string
  /** The parsed JSON body (or undefined); kept in memory only, never printed. */
  body?: unknown
  /** Request headers (lower-case names). */
  headers: Record<string, string | string[] | undefined>
  /**
   * The client's port as the socket reports it: a request that came through the sandbox's proxy
   * (sandbox/proxy.ts) has the local port of a connection the proxy opened.
   */
  remotePort?: number
  /** Filled in when the answer is sent. */
  status?: number
  /** For GitHub: whether the answer counts against the rate limit (a 304 does not). */
  counted?: boolean
  /** True when the answer came from an injected fault. */
  faulted?: boolean
  /** When the answer was sent (epoch ms), for a request the simulator answered normally. */
  answeredAt?: number
}

export interface EventEntry {
  kind: 'event'
  seq: number
  at: number
  service: LogServiceName
  /** e.g. `run.completed`, `app.deployed`, `token.deleted`. */
  name: string
  detail: Record<string, unknown>
}

export type LogEntry = RequestEntry | EventEntry

/**
 * The events that record a change of state a consumer can see: a credential changed (updated,
 * deleted, rolled, its secret rotated or its life extended) or a deploy. Not a refusal, which a
 * watcher's own check may cause and which must not set off another check; nor a credential
 * created, which no consumer holds yet (it reaches one through a deploy, or a secret write for a
 * consumer that reads the secrets, and those are changes).
 */
const STATE_EVENT =
  /^(token\.(updated|deleted|rolled)|service_token\.(updated|deleted|refreshed|rotated))$|\.deployed$/

/**
 * What changed, as `RequestLog.onChange` tells it: the name of a `STATE_EVENT` (`token.deleted`,
 * `app.deployed`…), or a change no event records (`RequestLog.changed`).
 */
export type Change = string

/** A change no event records: a GitHub secret written, or the simulators' clock moved. */
export type UnloggedChange = 'secret' | 'clock'

export class RequestLog {
  readonly entries: LogEntry[] = []
  /** Contract violations found by the OpenAPI validators; an end-to-end test asserts it is empty. */
  readonly violations: string[] = []
  private seq = 0
  private readonly changeListeners = new Set<(change: Change) => void>()
  private readonly timedChangeSources = new Set<() => number | undefined>()

  /**
   * Calls `listener` with what changed after anything that may change what a consumer of the
   * credentials sees: a token updated, rolled or deleted, a service token rotated, a deploy
   * (events, see `STATE_EVENT`), a GitHub secret written or the simulators' clock moved
   * (`changed()`). Health watchers check at once then, so that a failing window shows however
   * short it is. Returns the unsubscribe function.
   */
  onChange(listener: (change: Change) => void): () => void {
    this.changeListeners.add(listener)
    return () => this.changeListeners.delete(listener)
  }

  /** Tells the `onChange` listeners that state may have changed, and what. */
  changed(change: UnloggedChange): void {
    this.notify(change)
  }

  private notify(change: Change): void {
    for (const listener of this.changeListeners) listener(change)
  }

  /**
   * Registers a simulator that knows when time alone will next change what a consumer sees: a
   * token's `expires_on` or `not_before` passing, an Access grace window ending. `source` returns
   * that instant on the real clock (epoch ms, after now), or undefined when nothing is due.
   */
  addTimedChanges(source: () => number | undefined): void {
    this.timedChangeSources.add(source)
  }

  /**
   * The next instant (real clock, epoch ms) at which time alone changes what a consumer sees, over
   * every registered simulator; undefined when none is due. Health watchers check right then.
   */
  nextTimedChange(): number | undefined {
    let next: number | undefined
    for (const source of this.timedChangeSources) {
      const at = source()
      if (at !== undefined && (next === undefined || at < next)) next = at
    }
    return next
  }

  addRequest(entry: Omit<RequestEntry, 'kind' | 'seq'>): RequestEntry {
    const full: RequestEntry = { kind: 'request', seq: ++this.seq, ...entry }
    this.entries.push(full)
    return full
  }

  event(service: LogServiceName, name: string, detail: Record<string, unknown> = {}): EventEntry {
    const full: EventEntry = {
      kind: 'event',
      seq: ++this.seq,
      at: Date.now(),
      service,
      name,
      detail
    }
    this.entries.push(full)
    if (STATE_EVENT.test(name)) this.notify(name)
    return full
  }

  violation(message: string): void {
    this.violations.push(message)
  }

  requests(filter?: Partial<Pick<RequestEntry, 'service' | 'method'>>): RequestEntry[] {
    return this.entries.filter(
      (e): e is RequestEntry =>
        e.kind === 'request' &&
        (filter?.service === undefined || e.service === filter.service) &&
        (filter?.method === undefined || e.method === filter.method)
    )
  }

  events(name?: string): EventEntry[] {
    return this.entries.filter(
      (e): e is EventEntry => e.kind === 'event' && (name === undefined || e.name === name)
    )
  }

  /** Requests that change state: POST, PUT, PATCH, DELETE (any service). */
  mutations(): RequestEntry[] {
    return this.requests().filter(e => ['POST', 'PUT', 'PATCH', 'DELETE'].includes(e.method))
  }
}
