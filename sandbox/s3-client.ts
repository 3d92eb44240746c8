/**
 * The S3 client of the sandbox's own consumers (the sample app and the sample Worker): one signed
 * `GET` of an object, as their health checks make it. It signs with the AWS SDK's SigV4 signer over
 * Node's native SHA-256 (`@smithy/hash-node`, what the AWS SDK itself uses on Node), so the
 * watchers that poll these consumers many times a second cost little; the action's own probe keeps
 * aws4fetch (src/cloudflare/probe.ts), and the R2 simulator verifies every signature either way.
 */
import { Hash } from '@smithy/hash-node'
import { SignatureV4 } from '@smithy/signature-v4'
import { httpGet, type GetAnswer } from './http-get.js'

export interface S3Credentials {
  accessKeyId: string
  secretAccessKey: string
}

/** SHA-256 (and HMAC-SHA-256 with a secret) as the signer asks for it: `new Sha256(secret?)`. */
export const NodeSha256 = Hash.bind(null, 'sha256')

export interface S3Getter {
  /** GETs `objectUrl` (path-style, already encoded), signed for region `auto`; throws on a network error. */
  get(objectUrl: string, headers?: Record<string, string>): Promise<GetAnswer>
}

/** A client bound to one credential pair (the signer keeps its derived signing key for the day). */
export function s3Getter(credentials: S3Credentials): S3Getter {
  const signer = new SignatureV4({
    credentials: { ...credentials },
    region: 'auto',
    service: 's3',
    sha256: NodeSha256,
    uriEscapePath: false
  })
  return {
    async get(objectUrl, headers = {}) {
      const url = new URL(objectUrl)
      const signed = await signer.sign({
        method: 'GET',
        protocol: url.protocol,
        hostname: url.hostname,
        port: url.port === '' ? undefined : Number(url.port),
        path: url.pathname,
        query: {},
        headers: {
          ...headers,
          host: url.host,
          // S3 wants the payload hash on every header-signed request; a GET has none to sign.
          'x-amz-content-sha256': 'UNSIGNED-PAYLOAD'
        }
      })
      return httpGet(objectUrl, signed.headers)
    }
  }
}

/** A path-style object URL: `<base>/<bucket>/<key>`, each key segment encoded. */
export function objectUrl(base: string, bucket: string, key: string): string {
  return `${base}/${encodeURIComponent(bucket)}/${key.split('/').map(encodeURIComponent).join('/')}`
}

/**
 * The S3 error code of an error answer (`<Code>…</Code>`), or `Unknown`: the one thing of an error
 * the consumers echo, as it can never carry a credential.
 */
export function s3ErrorCode(body: string): string {
  return /<Code>([A-Za-z0-9]+)<\/Code>/.exec(body)?.[1] ?? 'Unknown'
}
