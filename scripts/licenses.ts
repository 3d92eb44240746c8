/**
 * Writes `<dist>/licenses.txt`: the license of every package bundled into `<dist>`, from the
 * module list ncc wrote with `--stats-out <dist>/stats.json` (which it then removes).
 *
 *   tsx scripts/licenses.ts dist
 *
 * ncc's own `--license` writes one file per chunk under the same name, so with the lazily loaded
 * chunks (the Cloudflare SDK, libsodium) the last chunk's list overwrote the others. The format is
 * the one ncc's license plugin writes: name, license type, text, a blank line; sorted by name.
 */
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

const dist = resolve(process.argv[2] ?? 'dist')
const statsFile = join(dist, 'stats.json')
const stats = JSON.parse(readFileSync(statsFile, 'utf8')) as {
  modules?: Array<{ name?: string; identifier?: string }>
}

// Each bundled module's package directory: the path up to its last `node_modules/<name>`.
const packages = new Map<string, string>()
for (const module of stats.modules ?? []) {
  const id = module.identifier ?? module.name ?? ''
  const last = /^(.*node_modules\/((?:@[^/]+\/)?[^/]+))\//.exec(id.replace(/^.*!/, ''))
  if (!last) continue
  const directory = resolve(last[1]!)
  if (existsSync(join(directory, 'package.json'))) packages.set(directory, last[2]!)
}

const LICENSE_FILE = /^(licen[cs]e|copying)(\.(md|txt|markdown))?$/i

const entries = [...packages.keys()].map(directory => {
  const manifest = JSON.parse(readFileSync(join(directory, 'package.json'), 'utf8')) as {
    name: string
    license?: string | { type?: string }
  }
  const type =
    typeof manifest.license === 'string' ? manifest.license : (manifest.license?.type ?? 'UNKNOWN')
  const file = readdirSync(directory).find(name => LICENSE_FILE.test(name))
  const text = file ? readFileSync(join(directory, file), 'utf8').trim() : ''
  return { name: manifest.name, type, text }
})

// One entry per package name (a package bundled from two places has the same license).
const byName = new Map(entries.map(e => [e.name, e]))
const sorted = [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : 1))
writeFileSync(
  join(dist, 'licenses.txt'),
  sorted.map(e => `${e.name}\n${e.type}\n${e.text}\n`).join('\n')
)
rmSync(statsFile)
console.log(`licenses.txt: ${sorted.length} packages`)
