/**
 * Runs the action's bundle with a V8 code cache kept between runs, for the sandbox's test runs
 * only (sandbox/runner.ts; `nodeFlags: []`, the benchmark and the runner never use it):
 *
 *   node [SANDBOX_NODE_FLAGS] sandbox/code-cache.mjs <cache dir> <bundle>
 *
 * Why: `npm test` starts the action about 370 times, and each process compiled the same 2.6 MB of
 * JavaScript from source (the bundle and the chunks it loads). Node 22 keeps a cache of its own
 * (NODE_COMPILE_CACHE); Node 20 has none for ES modules, and its V8 gives a script read from a
 * code cache the host options of the process that wrote it, so that any `import()` in it fails
 * ("A dynamic import callback was not specified"). That rules out vm.SourceTextModule, and
 * vm.Script with `import()` left in it.
 *
 * So each file runs as the body of a strict function that vm.Script compiles with the cache, its
 * module syntax replaced by what it stands for, and nothing else changed:
 * - the bundle's one static import, `import { createRequire as X } from "module"`, by a
 *   parameter X given Node's createRequire;
 * - `import.meta.url` by a parameter given the file's URL;
 * - ncc's chunk loader, `import("./" + __nccwpck_require__.u(chunkId))`, by a function that loads
 *   the chunk the same way and resolves with what its module would export;
 * - in a chunk, `export const id`, `ids` and `modules` by constants that the function returns
 *   (what ncc's installChunk reads).
 * Module syntax left anywhere is a SyntaxError at the compile, and an `import()` left fails when
 * it runs, with or without a cache: a bundle of another shape fails loudly, never differently.
 *
 * The cache holds one file per script, named by the SHA-256 of the compiled text, Node's version
 * and its flags (V8 checks only the source's length and its own flags, and runs a cache written
 * for another text of the same length as if it were this one), and by how many scripts its writer
 * had loaded. A file keeps the functions that had run when it was written, so a cache written by a
 * run that stopped early gives little (one written by a run stopped at its inputs gave a third of
 * the gain). A process that exits 0 therefore writes each script it loaded whose cache is missing,
 * rejected, or written by a process that loaded fewer scripts than it did (a token not yet due
 * loads the Cloudflare SDK but not libsodium; a rotation loads both). Paired rotations:
 * 0.53 → 0.47 s of CPU (12 pairs, all cheaper); a run stopped at its inputs costs the same with or
 * without it.
 */
import { createHash } from 'node:crypto'
import {
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync
} from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import vm from 'node:vm'

const [cacheDir, bundle] = process.argv.slice(2)
if (!cacheDir || !bundle) {
  throw new Error('usage: node sandbox/code-cache.mjs <cache dir> <bundle>')
}

/** At most this many files stay in the cache directory (private builds add five each). */
const KEEP = 40
const IMPORT_META_URL = '__codeCacheImportMetaUrl'
const IMPORT_CHUNK = '__codeCacheImportChunk'
const CHUNK_IMPORT = 'import("./" + __nccwpck_require__.u(chunkId))'
const STATIC_IMPORT = /^import \{ createRequire as ([\w$]+) \} from "module";\n/
const CHUNK_EXPORTS =
  /^export const id = (\d+);\nexport const ids = (\[[\d, ]+\]);\nexport const modules = /

/**
 * The scripts this process loaded, each with the number of scripts that the writer of its cache
 * had loaded (0: compiled without a cache) and that cache's file.
 */
const loaded = []

/** The best cache file of each script: the one whose writer had loaded the most scripts. */
const best = new Map()
try {
  for (const name of readdirSync(cacheDir)) {
    const match = /^([0-9a-f]{64})-(\d+)\.v8$/.exec(name)
    if (!match) continue
    const loads = Number(match[2])
    if (loads > (best.get(match[1])?.loads ?? 0)) best.set(match[1], { loads, name })
  }
} catch {
  // no cache yet
}

function fail(file, what) {
  throw new Error(
    `sandbox/code-cache.mjs: ${file} is not an ncc output of the expected shape (${what})`
  )
}

function replaceOnce(text, search, replacement, file) {
  const at = text.indexOf(search)
  if (at < 0 || text.indexOf(search, at + 1) >= 0) fail(file, `${search} should occur once`)
  return text.slice(0, at) + replacement + text.slice(at + search.length)
}

/** Compiles `body` as a strict function of `params` with the cache, and returns the function. */
function compile(file, params, body) {
  const text = `(function (${params.join(', ')}) {"use strict";${body}\n})`
  const key = createHash('sha256')
    .update(`${process.version} ${process.arch} ${process.execArgv.join(' ')}\n`)
    .update(text)
    .digest('hex')
  const cached = best.get(key)
  let cachedData
  try {
    if (cached) cachedData = readFileSync(path.join(cacheDir, cached.name))
  } catch {
    // pruned meanwhile
  }
  const script = new vm.Script(text, { filename: file, cachedData })
  const loads = cachedData && !script.cachedDataRejected ? cached.loads : 0
  loaded.push({ key, script, loads, stale: cached?.name })
  return script.runInThisContext()
}

/** What `import(url)` of an ncc chunk resolves with: its `id`, `ids` and `modules`. */
async function importChunk(url) {
  const file = fileURLToPath(url)
  const source = readFileSync(file, 'utf8')
  const head = CHUNK_EXPORTS.exec(source)
  if (!head) fail(file, 'a chunk starts with its id, ids and modules')
  const body =
    `const id = ${head[1]};\nconst ids = ${head[2]};\nconst modules = ` +
    source.slice(head[0].length).replaceAll('import.meta.url', IMPORT_META_URL) +
    '\nreturn { id, ids, modules };'
  return compile(file, [IMPORT_META_URL], body)(url)
}

function writeCaches(code) {
  const better = loaded.filter(({ loads }) => loads < loaded.length)
  if (code !== 0 || better.length === 0) return
  try {
    mkdirSync(cacheDir, { recursive: true })
    for (const { key, script, stale } of better) {
      const cacheFile = path.join(cacheDir, `${key}-${loaded.length}.v8`)
      const temporary = `${cacheFile}.${process.pid}.tmp`
      writeFileSync(temporary, script.createCachedData())
      renameSync(temporary, cacheFile)
      if (stale && stale !== path.basename(cacheFile))
        rmSync(path.join(cacheDir, stale), { force: true })
    }
    const files = readdirSync(cacheDir)
      .filter(name => name.endsWith('.v8'))
      .map(name => path.join(cacheDir, name))
    if (files.length > KEEP) {
      const byAge = files.map(f => [statSync(f).mtimeMs, f]).sort((a, b) => b[0] - a[0])
      for (const [, f] of byAge.slice(KEEP)) rmSync(f, { force: true })
    }
  } catch {
    // A cache only: a run never fails, nor prints, for it.
  }
}
process.on('exit', writeCaches)

const bundleUrl = pathToFileURL(path.resolve(bundle)).href
const source = readFileSync(bundle, 'utf8')
const head = STATIC_IMPORT.exec(source)
if (!head) fail(bundle, 'the bundle starts with its one import, of createRequire')
const body = replaceOnce(
  source.slice(head[0].length).replaceAll('import.meta.url', IMPORT_META_URL),
  CHUNK_IMPORT,
  `${IMPORT_CHUNK}("./" + __nccwpck_require__.u(chunkId))`,
  bundle
)
compile(path.resolve(bundle), [head[1], IMPORT_META_URL, IMPORT_CHUNK], body)(
  createRequire,
  bundleUrl,
  specifier => importChunk(new URL(specifier, bundleUrl).href)
)
