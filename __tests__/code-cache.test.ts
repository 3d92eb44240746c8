/**
 * sandbox/code-cache.mjs, on a bundle of ncc's shape (an entry that imports createRequire, reads
 * import.meta.url and loads a chunk with import(), and a chunk that exports id, ids and modules):
 * it prints what `node <bundle>` prints, writes its cache only after a clean exit, uses that cache
 * on the next run without writing it again, replaces one written by a run that loaded fewer
 * scripts or one that V8 rejects, never runs a cache for other text of the same length, and
 * refuses a bundle of another shape.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const loader = path.join(root, 'sandbox', 'code-cache.mjs')

const ENTRY = `import { createRequire as __WEBPACK_EXTERNAL_createRequire } from "module";
const node_path = __WEBPACK_EXTERNAL_createRequire(import.meta.url)("node:path");
var __nccwpck_require__ = { u: chunkId => "" + chunkId + ".index.js" };
var chunkId = 7;
const load = process.env.FIXTURE_CHUNK === '0'
  ? Promise.resolve({ id: 0, ids: [], modules: { 1: () => import.meta.url } })
  : import("./" + __nccwpck_require__.u(chunkId));
load.then(chunk => {
  const strict = (function () { return this === undefined })();
  console.log(JSON.stringify({
    entry: node_path.basename(new URL(import.meta.url).pathname),
    ids: chunk.ids,
    id: chunk.id,
    chunk: node_path.basename(new URL(chunk.modules[1]()).pathname),
    strict,
    tag: 'A'
  }));
  process.exitCode = Number(process.env.FIXTURE_EXIT ?? 0);
});
`
const CHUNK = `export const id = 7;
export const ids = [7];
export const modules = {
1: () => import.meta.url
};
`

describe('sandbox/code-cache.mjs', () => {
  let dir: string
  let cache: string

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'r2-rotation-code-cache-'))
    cache = path.join(dir, 'cache')
    writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}')
    writeFileSync(path.join(dir, 'index.js'), ENTRY)
    writeFileSync(path.join(dir, '7.index.js'), CHUNK)
  })
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, args, {
      cwd: dir,
      env: { PATH: process.env.PATH ?? '', ...env },
      encoding: 'utf8'
    })
  const cached = (env: Record<string, string> = {}) =>
    run([loader, cache, path.join(dir, 'index.js')], env)
  const files = (): Array<[string, number]> =>
    readdirSync(cache)
      .sort()
      .map(name => [name, statSync(path.join(cache, name)).ino])

  it('prints what node prints for the bundle as it is', () => {
    const plain = run([path.join(dir, 'index.js')])
    expect(plain.stderr).toBe('')
    expect(JSON.parse(plain.stdout)).toEqual({
      entry: 'index.js',
      ids: [7],
      id: 7,
      chunk: '7.index.js',
      strict: true,
      tag: 'A'
    })
    const first = cached()
    expect(first.stderr).toBe('')
    expect(first.status).toBe(0)
    expect(first.stdout).toBe(plain.stdout)
  })

  it('writes one cache file per script after a clean exit, and reads them on the next run', () => {
    expect(cached().status).toBe(0)
    const written = files()
    // Named by the script's hash and by how many scripts the writer loaded (the entry and the chunk).
    expect(written.map(([name]) => name)).toEqual([
      expect.stringMatching(/^[0-9a-f]{64}-2\.v8$/),
      expect.stringMatching(/^[0-9a-f]{64}-2\.v8$/)
    ])
    const again = cached()
    expect(again.status).toBe(0)
    expect(again.stderr).toBe('')
    // Accepted, so not written again: the same files, not new ones renamed into place.
    expect(files()).toEqual(written)
  })

  it('runs an edited bundle as edited, even at the same length (V8 checks only the length)', () => {
    expect(JSON.parse(cached().stdout)).toMatchObject({ tag: 'A' })
    const entry = path.join(dir, 'index.js')
    writeFileSync(entry, ENTRY.replace("tag: 'A'", "tag: 'B'"))
    const edited = cached()
    expect(edited.stderr).toBe('')
    expect(JSON.parse(edited.stdout)).toMatchObject({ tag: 'B' })
  })

  it('compiles afresh over a damaged cache file, and writes it anew', () => {
    expect(cached().status).toBe(0)
    const written = files()
    for (const [name] of written) {
      const file = path.join(cache, name)
      writeFileSync(file, Buffer.alloc(statSync(file).size, 0x5a))
    }
    const damaged = files()
    const again = cached()
    expect({ status: again.status, stderr: again.stderr }).toEqual({ status: 0, stderr: '' })
    expect(JSON.parse(again.stdout)).toMatchObject({ tag: 'A', chunk: '7.index.js' })
    const rewritten = files()
    expect(rewritten.map(([name]) => name)).toEqual(written.map(([name]) => name))
    for (const [i, [, inode]] of rewritten.entries()) expect(inode).not.toBe(damaged[i]![1])
    // And the new files are good: the next run leaves them alone.
    expect(cached().status).toBe(0)
    expect(files()).toEqual(rewritten)
  })

  it('replaces a cache written by a run that loaded fewer scripts, and only that', () => {
    expect(cached({ FIXTURE_CHUNK: '0' }).status).toBe(0)
    const early = files().map(([name]) => name)
    expect(early).toEqual([expect.stringMatching(/^[0-9a-f]{64}-1\.v8$/)])
    expect(cached().status).toBe(0)
    const upgraded = files()
    // The entry's cache written anew by the run that loaded both scripts, the old file gone.
    const names = upgraded.map(([name]) => name)
    expect(names).toHaveLength(2)
    expect(names).toContain(early[0]!.replace(/-1\.v8$/, '-2.v8'))
    expect(names.filter(name => /^[0-9a-f]{64}-2\.v8$/.test(name))).toEqual(names)
    // Neither a run that loads as many scripts nor one that loads fewer writes it again.
    expect(cached().status).toBe(0)
    expect(cached({ FIXTURE_CHUNK: '0' }).status).toBe(0)
    expect(files()).toEqual(upgraded)
  })

  it('writes nothing after a run that exits with an error', () => {
    expect(cached({ FIXTURE_EXIT: '1' }).status).toBe(1)
    expect(() => readdirSync(cache)).toThrow(/ENOENT/)
  })

  it('refuses a bundle of another shape, naming it', () => {
    writeFileSync(path.join(dir, 'index.js'), `import { readFileSync } from "node:fs";\n`)
    const result = cached()
    expect(result.status).not.toBe(0)
    expect(result.stderr).toContain(
      `sandbox/code-cache.mjs: ${path.join(dir, 'index.js')} is not an ncc output of the expected shape`
    )
  })

  it('fails the run when a chunk is not of the expected shape', () => {
    writeFileSync(path.join(dir, '7.index.js'), `export default {};\n`)
    const result = cached()
    expect(result.status).not.toBe(0)
    expect(result.stderr).toContain(
      `${path.join(dir, '7.index.js')} is not an ncc output of the expected shape`
    )
  })
})
