/**
 * One plain HTTP GET, for the sandbox's own pollers: the health watchers and the sample consumers'
 * checks. They run many times a second for the length of every end-to-end scenario, and Node's
 * `http` costs a fraction of what `fetch` costs per request. Connections are kept alive by Node's
 * global agent, which drops an idle one after 5 s, well before the simulators' 30 s
 * (`Service.keepAliveTimeout`), so a poll never reuses a connection the server is closing.
 */
import http from 'node:http'

export interface GetAnswer {
  status: number
  body: string
}

/** GETs `url` (http only); rejects on a network error. */
export function httpGet(url: string, headers: Record<string, string> = {}): Promise<GetAnswer> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { headers }, response => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () =>
        resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') })
      )
      response.on('error', reject)
    })
    request.on('error', reject)
  })
}
