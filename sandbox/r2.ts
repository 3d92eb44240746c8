/**
 * R2's S3 API, path-style (`/<bucket>/<key…>`), with real SigV4 verification and Cloudflare's
 * token model: the Access Key ID is a Cloudflare API token id and the Secret Access Key is the
 * lowercase hex SHA-256 of the token value. The signature is recomputed independently with the
 * AWS SDK's own signer (`@smithy/signature-v4`), so a client that signs wrongly fails here as it
 * would against R2, and what a token may do follows its policies (permission groups and
 * resources, deny policies subtracting), so a replacement token that lost a scope is caught.
 *
 * Time is the Cloudflare simulator's clock (`cloudflare.now()`, which follows `cloudflare.skewMs`):
 * the 15-minute SigV4 skew check, token expiry and not_before, `Last-Modified` and `Date`.
 *
 * A token's IP condition is enforced when `cloudflare.enforceConditions` is on (opt-in; see there
 * why): a request signed with a token whose condition excludes the client's address gets 403
 * AccessDenied. UNCONFIRMED: that R2's S3 endpoint enforces the API token's client IP filter, and
 * with which S3 error; AccessDenied is what S3 answers for any other policy refusal. The client's
 * address is, in order: the request header `x-sandbox-client-address` (a sandbox-only device: the
 * sample app sends it because it runs "elsewhere" than the runner; no real client sends it and R2
 * knows no such header), `clientAddress`, and the socket's address.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { SignatureV4 } from '@smithy/signature-v4'
import { normalizeAddress } from './ip-condition.js'
import { NodeSha256 } from './s3-client.js'
import type { RequestLog } from './log.js'
import { Service, type IncomingRequest, type OutgoingResponse } from './service.js'
import type { CfPolicy, CfTokenRecord, CloudflareSim } from './cloudflare.js'

export type Jurisdiction = 'default' | 'eu' | 'fedramp'

interface StoredObject {
  body: Buffer
  etag: string
  lastModified: Date
  contentType: string
}

interface Bucket {
  name: string
  jurisdiction: Jurisdiction
  createdAt: Date
  objects: Map<string, StoredObject>
}

type Access = 'read' | 'write'

/** The R2 permission groups by name (ids have been reported to change; names are what R2 means). */
const R2_GROUPS: Record<string, { access: Access[]; accountLevel: boolean }> = {
  'Workers R2 Storage Bucket Item Read': { access: ['read'], accountLevel: false },
  'Workers R2 Storage Bucket Item Write': { access: ['read', 'write'], accountLevel: false },
  'Workers R2 Storage Read': { access: ['read'], accountLevel: true },
  'Workers R2 Storage Write': { access: ['read', 'write'], accountLevel: true }
}

const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD'
/** S3 rejects header-signed requests whose x-amz-date is more than 15 minutes off the server clock. */
const MAX_SKEW_MS = 15 * 60 * 1000
/**
 * R2's region is `auto`; "an empty value and us-east-1 will alias to the auto region"
 * (developers.cloudflare.com/r2/api/s3/api/, "Bucket region").
 */
const ACCEPTED_REGIONS = new Set(['auto', 'us-east-1', ''])
const S3_XMLNS = 'http://s3.amazonaws.com/doc/2006-03-01/'
/** The sandbox-only header that names the client's address (see the file comment). */
export const CLIENT_ADDRESS_HEADER = 'x-sandbox-client-address'

class S3Error extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: Record<string, string> = {}
  ) {
    super(message)
  }
}

const errors = {
  accessDenied: (message = 'Access Denied') => new S3Error(403, 'AccessDenied', message),
  invalidAccessKeyId: (akid: string) =>
    new S3Error(
      403,
      'InvalidAccessKeyId',
      'The Access Key Id you provided does not exist in our records.',
      {
        AWSAccessKeyId: akid
      }
    ),
  signatureDoesNotMatch: () =>
    new S3Error(
      403,
      'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your secret access key and signing method.'
    ),
  malformed: (message: string) => new S3Error(400, 'AuthorizationHeaderMalformed', message),
  noSuchBucket: (bucket: string) =>
    new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist.', {
      BucketName: bucket
    }),
  noSuchKey: (key: string) =>
    new S3Error(404, 'NoSuchKey', 'The specified key does not exist.', { Key: key }),
  notImplemented: (what: string) =>
    new S3Error(501, 'NotImplemented', `${what} is not implemented by the R2 simulator.`)
}

export class R2Sim {
  readonly service: Service
  readonly accountId: string
  /**
   * The client address R2 "sees" when a request does not carry `x-sandbox-client-address`.
   * Undefined (the default): the socket's address.
   */
  clientAddress?: string
  private readonly buckets = new Map<string, Bucket>()

  constructor(
    private readonly log: RequestLog,
    private readonly cloudflare: CloudflareSim,
    options: { accountId: string }
  ) {
    this.accountId = options.accountId
    this.service = new Service('r2', log, req => this.handle(req), {
      answerHeaders: () => ({ date: new Date(this.cloudflare.now()).toUTCString() })
    })
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

  addBucket(name: string, jurisdiction: Jurisdiction = 'default'): void {
    if (!this.buckets.has(name)) {
      this.buckets.set(name, {
        name,
        jurisdiction,
        createdAt: new Date(this.cloudflare.now()),
        objects: new Map()
      })
    }
  }

  putObject(
    bucket: string,
    key: string,
    body: string | Buffer,
    contentType = 'application/octet-stream'
  ): void {
    const target = this.buckets.get(bucket)
    if (!target) throw new Error(`R2Sim: no bucket ${bucket}; call addBucket first`)
    const bytes = Buffer.isBuffer(body) ? Buffer.from(body) : Buffer.from(body, 'utf8')
    target.objects.set(key, {
      body: bytes,
      // R2's ETag of a single-part object is the MD5 of its payload, as on S3.
      etag: `"${createHash('md5').update(bytes).digest('hex')}"`,
      lastModified: new Date(this.cloudflare.now()),
      contentType
    })
  }

  getObject(bucket: string, key: string): Buffer | undefined {
    const object = this.buckets.get(bucket)?.objects.get(key)
    return object ? Buffer.from(object.body) : undefined
  }

  listKeys(bucket: string): string[] {
    return [...(this.buckets.get(bucket)?.objects.keys() ?? [])].sort()
  }

  /** The Cloudflare resource name of a bucket, as token policies spell it. */
  bucketResource(bucket: string): string {
    const jurisdiction = this.buckets.get(bucket)?.jurisdiction ?? 'default'
    return `com.cloudflare.edge.r2.bucket.${this.accountId}_${jurisdiction}_${bucket}`
  }

  private async handle(req: IncomingRequest): Promise<OutgoingResponse> {
    const head = req.method === 'HEAD'
    try {
      const { bucket, key } = parsePath(req.path)
      const token = await this.authenticate(req)
      if (bucket === undefined) return this.listBuckets(req, token)
      if (key === undefined) return this.bucketOperation(req, token, bucket)
      return this.objectOperation(req, token, bucket, key)
    } catch (error) {
      if (!(error instanceof S3Error)) throw error
      // A HEAD answer carries no body, so S3 clients read the status alone.
      return head ? { status: error.status } : errorResponse(error)
    }
  }

  /** Verifies the SigV4 Authorization header and returns the token it was signed with. */
  private async authenticate(req: IncomingRequest): Promise<CfTokenRecord> {
    const header = firstHeader(req.headers.authorization)
    if (header === undefined) {
      if (req.query.has('X-Amz-Signature'))
        throw errors.notImplemented('Presigned URL authentication')
      this.denied('missing authorization')
      throw errors.accessDenied()
    }
    if (!header.startsWith('AWS4-HMAC-SHA256 ')) {
      this.denied('not sigv4')
      // R2 answers SigV2 with 401 "SigV2 authorization is not supported. Please use SigV4 instead."
      throw new S3Error(
        401,
        'Unauthorized',
        'SigV2 authorization is not supported. Please use SigV4 instead.'
      )
    }
    const auth = parseAuthorization(header)
    const [akid, shortDate, region, service, terminator] = auth.credential.split('/')
    if (
      akid === undefined ||
      shortDate === undefined ||
      region === undefined ||
      service === undefined ||
      terminator !== 'aws4_request' ||
      auth.credential.split('/').length !== 5
    ) {
      throw errors.malformed(`The authorization header is malformed; the Credential is mal-formed.`)
    }
    if (!ACCEPTED_REGIONS.has(region)) {
      throw errors.malformed(
        `The authorization header is malformed; the region '${region}' is wrong; expecting 'auto'`
      )
    }
    if (service !== 's3') {
      throw errors.malformed(
        `The authorization header is malformed; incorrect service '${service}'. This endpoint belongs to 's3'.`
      )
    }

    const amzDate = firstHeader(req.headers['x-amz-date'])
    const signingDate = amzDate === undefined ? undefined : parseAmzDate(amzDate)
    if (!signingDate) {
      throw errors.accessDenied('AWS authentication requires a valid Date or x-amz-date header')
    }
    if (amzDate!.slice(0, 8) !== shortDate) {
      throw errors.malformed(
        'The authorization header is malformed; Invalid credential date. Date is not the same as X-Amz-Date.'
      )
    }
    if (Math.abs(this.cloudflare.now() - signingDate.getTime()) > MAX_SKEW_MS) {
      this.denied('clock skew', akid)
      throw new S3Error(
        403,
        'RequestTimeTooSkewed',
        'The difference between the request time and the current time is too large.'
      )
    }

    // S3 requires the payload hash header on every header-signed request (sigv4 "x-amz-content-sha256").
    const payloadHash = firstHeader(req.headers['x-amz-content-sha256'])
    if (payloadHash === undefined) {
      throw new S3Error(
        400,
        'InvalidRequest',
        'Missing required header for this request: x-amz-content-sha256'
      )
    }
    if (payloadHash.startsWith('STREAMING-'))
      throw errors.notImplemented('Chunked (streaming) payload signing')
    if (payloadHash !== UNSIGNED_PAYLOAD && !/^[0-9a-f]{64}$/.test(payloadHash)) {
      throw new S3Error(
        400,
        'InvalidArgument',
        'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, or a valid sha256 value.'
      )
    }

    const signed = auth.signedHeaders
    if (!signed.includes('host')) {
      throw errors.accessDenied('The host header must be signed.')
    }
    const unsigned = Object.keys(req.headers).filter(
      name => name.startsWith('x-amz-') && !signed.includes(name)
    )
    if (unsigned.length > 0) {
      this.denied('unsigned x-amz headers', akid)
      throw errors.accessDenied(
        `There were headers present in the request which were not signed: ${unsigned.join(', ')}`
      )
    }
    if (signed.some(name => req.headers[name] === undefined)) {
      this.denied('signed header missing', akid)
      throw errors.signatureDoesNotMatch()
    }

    const token = this.cloudflare.findById(akid)
    if (!token) {
      this.denied('unknown access key id', akid)
      throw errors.invalidAccessKeyId(akid)
    }
    const secretAccessKey = sha256Hex(token.value)
    const expected = await recomputeSignature(req, {
      accessKeyId: akid,
      secretAccessKey,
      region,
      signingDate,
      signedHeaders: signed
    })
    if (!constantTimeEqualHex(expected, auth.signature)) {
      this.denied('signature mismatch', akid)
      throw errors.signatureDoesNotMatch()
    }
    if (payloadHash !== UNSIGNED_PAYLOAD) {
      const actual = createHash('sha256').update(req.raw).digest('hex')
      if (!constantTimeEqualHex(actual, payloadHash)) {
        this.denied('payload hash mismatch', akid)
        throw new S3Error(
          400,
          'XAmzContentSHA256Mismatch',
          "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
      }
    }

    const unusable = unusableReason(token, this.cloudflare.now())
    if (unusable) {
      this.denied(unusable, akid)
      throw errors.accessDenied()
    }
    if (this.cloudflare.enforceConditions) {
      const address = this.clientAddressOf(req)
      if (!this.cloudflare.conditionAllows(token, address)) {
        this.denied('client address outside the token condition', akid, { client_address: address })
        throw errors.accessDenied()
      }
    }
    // Records the use (last_used_on), as the dashboard shows for R2 keys too.
    this.cloudflare.authenticate(token.value)
    return token
  }

  private listBuckets(req: IncomingRequest, token: CfTokenRecord): OutgoingResponse {
    if (req.method !== 'GET') throw errors.notImplemented(`${req.method} /`)
    // ListBuckets needs account-level R2 rights (api-facts: "ListBuckets needs account-level rights").
    if (!this.accountAccess(token).has('read')) {
      this.denied('no account-level R2 permission', token.id)
      throw errors.accessDenied()
    }
    const buckets = [...this.buckets.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map(
        b =>
          `<Bucket><Name>${xml(b.name)}</Name><CreationDate>${b.createdAt.toISOString()}</CreationDate></Bucket>`
      )
      .join('')
    return xmlResponse(
      200,
      `<ListAllMyBucketsResult xmlns="${S3_XMLNS}"><Buckets>${buckets}</Buckets><Owner><ID>${this.accountId}</ID><DisplayName>${this.accountId}</DisplayName></Owner></ListAllMyBucketsResult>`
    )
  }

  private bucketOperation(
    req: IncomingRequest,
    token: CfTokenRecord,
    name: string
  ): OutgoingResponse {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      throw errors.notImplemented(`${req.method} on a bucket`)
    }
    const bucket = this.authorize(token, name, 'read')
    if (req.method === 'HEAD') return { status: 200, headers: { 'x-amz-bucket-region': 'auto' } }
    if (req.query.get('list-type') !== '2')
      throw errors.notImplemented('ListObjects (v1) and other bucket GETs')
    return listObjectsV2(bucket, req.query)
  }

  private objectOperation(
    req: IncomingRequest,
    token: CfTokenRecord,
    name: string,
    key: string
  ): OutgoingResponse {
    switch (req.method) {
      case 'GET':
      case 'HEAD': {
        const bucket = this.authorize(token, name, 'read')
        const object = bucket.objects.get(key)
        if (!object) throw errors.noSuchKey(key)
        const headers = {
          'content-type': object.contentType,
          'content-length': String(object.body.length),
          etag: object.etag,
          'last-modified': object.lastModified.toUTCString()
        }
        return req.method === 'HEAD'
          ? { status: 200, headers }
          : { status: 200, headers, body: object.body }
      }
      case 'PUT': {
        if (req.headers['x-amz-copy-source'] !== undefined)
          throw errors.notImplemented('CopyObject')
        if (req.query.has('uploadId')) throw errors.notImplemented('UploadPart')
        this.authorize(token, name, 'write')
        const contentType = firstHeader(req.headers['content-type']) ?? 'application/octet-stream'
        this.putObject(name, key, req.raw, contentType)
        return { status: 200, headers: { etag: this.buckets.get(name)!.objects.get(key)!.etag } }
      }
      case 'DELETE': {
        const bucket = this.authorize(token, name, 'write')
        // S3 answers 204 whether or not the key existed.
        bucket.objects.delete(key)
        return { status: 204 }
      }
      default:
        throw errors.notImplemented(`${req.method} on an object`)
    }
  }

  /** The bucket, when the token may `need` on it; otherwise AccessDenied (or NoSuchBucket once allowed). */
  private authorize(token: CfTokenRecord, name: string, need: Access): Bucket {
    const resource = this.bucketResource(name)
    if (!this.bucketAccess(token, resource).has(need)) {
      this.denied(`no ${need} permission on bucket`, token.id)
      throw errors.accessDenied()
    }
    const bucket = this.buckets.get(name)
    if (!bucket) throw errors.noSuchBucket(name)
    return bucket
  }

  /** What the token's policies allow on one bucket: the union of allows minus the union of denies. */
  private bucketAccess(token: CfTokenRecord, bucketResource: string): Set<Access> {
    return this.effectiveAccess(token, policy =>
      coversBucket(policy.resources, this.accountId, bucketResource, false)
    )
  }

  private accountAccess(token: CfTokenRecord): Set<Access> {
    return this.effectiveAccess(
      token,
      (policy, accountLevel) => accountLevel && coversAccount(policy.resources, this.accountId)
    )
  }

  private effectiveAccess(
    token: CfTokenRecord,
    applies: (policy: CfPolicy, accountLevel: boolean) => boolean
  ): Set<Access> {
    const allowed = new Set<Access>()
    const denied = new Set<Access>()
    for (const policy of token.policies) {
      for (const group of policy.permission_groups) {
        const name = this.cloudflare.permissionGroupName(group.id)
        const r2 = name === undefined ? undefined : R2_GROUPS[name]
        if (!r2 || !applies(policy, r2.accountLevel)) continue
        for (const access of r2.access) (policy.effect === 'deny' ? denied : allowed).add(access)
      }
    }
    for (const access of denied) allowed.delete(access)
    return allowed
  }

  /** The header's address, else `clientAddress`, else the socket's (see the file comment). */
  private clientAddressOf(req: IncomingRequest): string {
    return normalizeAddress(
      firstHeader(req.headers[CLIENT_ADDRESS_HEADER]) ?? this.clientAddress ?? req.remoteAddress
    )
  }

  private denied(reason: string, accessKeyId?: string, extra: Record<string, unknown> = {}): void {
    this.log.event(
      'r2',
      'auth.denied',
      accessKeyId === undefined
        ? { reason, ...extra }
        : { reason, access_key_id: accessKeyId, ...extra }
    )
  }
}

/** The R2 Secret Access Key of a token: the lowercase hex SHA-256 of its value (UTF-8). */
export function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex')
}

/** Why a token cannot be used at `now` (disabled, expired, not yet valid), or undefined. */
function unusableReason(token: CfTokenRecord, now: number): string | undefined {
  if (token.status !== 'active') return `token ${token.status}`
  if (token.expires_on !== undefined && Date.parse(token.expires_on) <= now) return 'token expired'
  if (token.not_before !== undefined && Date.parse(token.not_before) > now)
    return 'token not yet valid'
  return undefined
}

/**
 * Whether a policy's resources name this bucket: the bucket itself, or the whole account
 * (`com.cloudflare.api.account.<id>: "*"`, or the nested
 * `{"com.cloudflare.api.account.<id>": {"com.cloudflare.edge.r2.bucket.*": "*"}}`).
 */
function coversBucket(
  resources: Record<string, unknown>,
  accountId: string,
  bucketResource: string,
  insideAccount: boolean
): boolean {
  for (const [key, value] of Object.entries(resources)) {
    if (key === bucketResource && value === '*') return true
    if (insideAccount && key === 'com.cloudflare.edge.r2.bucket.*' && value === '*') return true
    if (
      key === `com.cloudflare.api.account.${accountId}` ||
      key === 'com.cloudflare.api.account.*'
    ) {
      if (value === '*') return true
      if (isRecord(value) && coversBucket(value, accountId, bucketResource, true)) return true
    }
  }
  return false
}

function coversAccount(resources: Record<string, unknown>, accountId: string): boolean {
  return Object.entries(resources).some(
    ([key, value]) =>
      (key === `com.cloudflare.api.account.${accountId}` ||
        key === 'com.cloudflare.api.account.*') &&
      value === '*'
  )
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function parsePath(pathname: string): { bucket?: string; key?: string } {
  const rest = pathname.replace(/^\/+/, '')
  if (rest === '') return {}
  const slash = rest.indexOf('/')
  const rawBucket = slash < 0 ? rest : rest.slice(0, slash)
  const rawKey = slash < 0 ? '' : rest.slice(slash + 1)
  try {
    const bucket = decodeURIComponent(rawBucket)
    return rawKey === '' ? { bucket } : { bucket, key: decodeURIComponent(rawKey) }
  } catch {
    throw new S3Error(400, 'InvalidURI', "Couldn't parse the specified URI.")
  }
}

function parseAuthorization(header: string): {
  credential: string
  signedHeaders: string[]
  signature: string
} {
  const fields = new Map<string, string>()
  for (const part of header.slice('AWS4-HMAC-SHA256 '.length).split(',')) {
    const eq = part.indexOf('=')
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim())
  }
  const credential = fields.get('Credential')
  const signedHeaders = fields.get('SignedHeaders')
  const signature = fields.get('Signature')
  if (!credential || !signedHeaders || !signature) {
    throw errors.malformed(
      'The authorization header is malformed; it must carry Credential, SignedHeaders and Signature.'
    )
  }
  if (!/^[0-9a-f]{64}$/.test(signature)) throw errors.signatureDoesNotMatch()
  return { credential, signedHeaders: signedHeaders.split(';'), signature }
}

/** `20240101T120000Z` → Date (second precision, as SigV4 signs it). */
function parseAmzDate(value: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value)
  if (!m) return undefined
  const date = new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!))
  return Number.isNaN(date.getTime()) ? undefined : date
}

/**
 * The signature the client should have sent, computed by the AWS SDK's signer from the request as
 * received: the same signed headers, the same date, the payload hash from `x-amz-content-sha256`.
 * S3 canonicalises the path by URI-encoding each decoded segment once, so the path is encoded here
 * and the signer is told not to encode it again (`uriEscapePath: false`, as the S3 client does).
 */
async function recomputeSignature(
  req: IncomingRequest,
  options: {
    accessKeyId: string
    secretAccessKey: string
    region: string
    signingDate: Date
    signedHeaders: string[]
  }
): Promise<string> {
  const signer = new SignatureV4({
    credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey },
    region: options.region,
    service: 's3',
    sha256: NodeSha256,
    uriEscapePath: false,
    applyChecksum: false
  })
  const headers: Record<string, string> = {}
  for (const name of options.signedHeaders) {
    const value = req.headers[name]
    headers[name] = Array.isArray(value) ? value.join(',') : String(value)
  }
  const query: Record<string, string | string[]> = {}
  for (const name of new Set(req.query.keys())) {
    const values = req.query.getAll(name)
    query[name] = values.length === 1 ? values[0]! : values
  }
  const host = headers.host ?? ''
  const signed = await signer.sign(
    {
      method: req.method,
      protocol: 'http:',
      hostname: host.replace(/:\d+$/, ''),
      path: canonicalPath(req.path),
      query,
      headers
    },
    { signingDate: options.signingDate, signableHeaders: new Set(options.signedHeaders) }
  )
  const match = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))
  return match?.[1] ?? ''
}

function canonicalPath(pathname: string): string {
  return pathname
    .split('/')
    .map(segment => {
      try {
        return encodeRfc3986(decodeURIComponent(segment))
      } catch {
        throw new S3Error(400, 'InvalidURI', "Couldn't parse the specified URI.")
      }
    })
    .join('/')
}

function encodeRfc3986(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    c => `%${c.charCodeAt(0).toString(16).toUpperCase()}`
  )
}

function constantTimeEqualHex(a: string, b: string): boolean {
  const left = Buffer.from(a, 'utf8')
  const right = Buffer.from(b, 'utf8')
  return left.length === right.length && timingSafeEqual(left, right)
}

function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

function listObjectsV2(bucket: Bucket, query: URLSearchParams): OutgoingResponse {
  const prefix = query.get('prefix') ?? ''
  const delimiter = query.get('delimiter') ?? ''
  const startAfter = query.get('start-after') ?? ''
  const continuationToken = query.get('continuation-token') ?? undefined
  const maxKeysRaw = query.get('max-keys')
  const maxKeys = maxKeysRaw === null ? 1000 : Number(maxKeysRaw)
  if (!Number.isInteger(maxKeys) || maxKeys < 0) {
    throw new S3Error(
      400,
      'InvalidArgument',
      'Provided max-keys not an integer or within integer range',
      {
        ArgumentName: 'max-keys',
        ArgumentValue: maxKeysRaw ?? ''
      }
    )
  }
  const limit = Math.min(maxKeys, 1000)
  let after = startAfter
  if (continuationToken !== undefined) {
    after = Buffer.from(continuationToken, 'base64url').toString('utf8')
  }

  const contents: Array<[string, StoredObject]> = []
  const commonPrefixes: string[] = []
  let truncated = false
  let lastReturned = ''
  for (const key of [...bucket.objects.keys()].sort()) {
    if (!key.startsWith(prefix) || (after !== '' && key <= after)) continue
    let entry: { key: string; prefix?: string } = { key }
    if (delimiter !== '') {
      const at = key.indexOf(delimiter, prefix.length)
      if (at >= 0) entry = { key, prefix: key.slice(0, at + delimiter.length) }
    }
    if (entry.prefix !== undefined && commonPrefixes.includes(entry.prefix)) continue
    if (contents.length + commonPrefixes.length >= limit) {
      truncated = true
      break
    }
    if (entry.prefix !== undefined) {
      commonPrefixes.push(entry.prefix)
      // Skip the rest of this common prefix on the next page.
      lastReturned = `${entry.prefix}\u{10ffff}`
    } else {
      contents.push([key, bucket.objects.get(key)!])
      lastReturned = key
    }
  }

  const parts = [
    `<Name>${xml(bucket.name)}</Name>`,
    `<Prefix>${xml(prefix)}</Prefix>`,
    `<KeyCount>${contents.length + commonPrefixes.length}</KeyCount>`,
    `<MaxKeys>${maxKeys}</MaxKeys>`,
    delimiter !== '' ? `<Delimiter>${xml(delimiter)}</Delimiter>` : '',
    `<IsTruncated>${truncated}</IsTruncated>`,
    continuationToken !== undefined
      ? `<ContinuationToken>${xml(continuationToken)}</ContinuationToken>`
      : '',
    truncated
      ? `<NextContinuationToken>${Buffer.from(lastReturned, 'utf8').toString('base64url')}</NextContinuationToken>`
      : '',
    startAfter !== '' ? `<StartAfter>${xml(startAfter)}</StartAfter>` : '',
    ...contents.map(
      ([key, object]) =>
        `<Contents><Key>${xml(key)}</Key><LastModified>${object.lastModified.toISOString()}</LastModified>` +
        `<ETag>${xml(object.etag)}</ETag><Size>${object.body.length}</Size><StorageClass>STANDARD</StorageClass></Contents>`
    ),
    ...commonPrefixes.map(p => `<CommonPrefixes><Prefix>${xml(p)}</Prefix></CommonPrefixes>`)
  ]
  return xmlResponse(
    200,
    `<ListBucketResult xmlns="${S3_XMLNS}">${parts.join('')}</ListBucketResult>`
  )
}

function errorResponse(error: S3Error): OutgoingResponse {
  const extra = Object.entries(error.extra)
    .map(([name, value]) => `<${name}>${xml(value)}</${name}>`)
    .join('')
  return xmlResponse(
    error.status,
    `<Error><Code>${xml(error.code)}</Code><Message>${xml(error.message)}</Message>${extra}</Error>`
  )
}

function xmlResponse(status: number, body: string): OutgoingResponse {
  return {
    status,
    headers: { 'content-type': 'application/xml' },
    body: `<?xml version="1.0" encoding="UTF-8"?>\n${body}`
  }
}

function xml(value: string): string {
  return value.replace(/[<>&'"]/g, c => `&#${c.charCodeAt(0)};`)
}
