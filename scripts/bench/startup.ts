/**
 * Start-up: how long the action takes from its process start to its first request, next to a
 * bare Node process measured in the same run (the machine's own floor).
 *
 * - bare `node -e ''`: spawn → exit;
 * - bare first request: spawn → arrival of the one request a `node -e "fetch(…)"` sends;
 * - the action: spawn of `node <bundle>` with a full set of inputs against the sandbox → arrival
 *   of its first request at any simulator. It is killed there (the rest is the rotation's).
 *
 * Runs alternate between the three, so that a noisy neighbour weighs on each alike.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { startSandbox } from '../../sandbox/index.js'
import { runAction, sandboxInputs } from '../../sandbox/runner.js'
import type { RequestEntry } from '../../sandbox/log.js'

export interface StartupSample {
  bareExitMs: number
  bareFetchMs: number
  actionMs: number
}

function exitOf(child: ChildProcess): Promise<void> {
  return new Promise(resolve => child.once('exit', () => resolve()))
}

async function bareExit(): Promise<number> {
  const started = performance.now()
  await exitOf(spawn(process.execPath, ['-e', ''], { stdio: 'ignore' }))
  return performance.now() - started
}

async function bareFetch(): Promise<number> {
  let arrived = NaN
  const server = http.createServer((req, res) => {
    arrived = performance.now()
    res.end()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const started = performance.now()
  const child = spawn(
    process.execPath,
    ['-e', `fetch('http://127.0.0.1:${port}/').then(r => r.text()).catch(() => {})`],
    { stdio: 'ignore' }
  )
  await exitOf(child)
  await new Promise<void>(resolve => server.close(() => resolve()))
  return arrived - started
}

async function actionFirstRequest(entry: string): Promise<number> {
  const sb = await startSandbox()
  try {
    let child: ChildProcess | undefined
    let started = NaN
    let arrived = NaN
    const first = (_entry: RequestEntry): Promise<void> | undefined => {
      if (!Number.isNaN(arrived) || !child) return undefined
      arrived = performance.now()
      child.kill('SIGKILL')
      return undefined
    }
    for (const service of [sb.cloudflare.service, sb.github.service, sb.r2.service]) {
      service.hold = first
    }
    await runAction(sb, sandboxInputs(sb), {
      entry,
      codeCache: false,
      onSpawn: c => {
        child = c
        started = performance.now()
      }
    })
    return arrived - started
  } finally {
    await sb.stop()
  }
}

export async function measureStartup(entry: string, runs: number): Promise<StartupSample[]> {
  // One of each first, discarded: it fills the file cache.
  await bareExit()
  await bareFetch()
  await actionFirstRequest(entry)
  const samples: StartupSample[] = []
  for (let i = 0; i < runs; i++) {
    samples.push({
      bareExitMs: await bareExit(),
      bareFetchMs: await bareFetch(),
      actionMs: await actionFirstRequest(entry)
    })
  }
  return samples
}
