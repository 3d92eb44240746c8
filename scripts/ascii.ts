/**
 * Rewrites every `<dist>/*.js` as pure ASCII: each other character becomes its `\uXXXX` escape (a
 * character beyond the BMP, its surrogate pair), in strings, templates, regular expressions,
 * comments and names alike.
 *
 *   tsx scripts/ascii.ts dist
 *
 * Why: Node reads an ES module's source as UTF-8, and one non-ASCII character (an arrow in a
 * message) makes the whole file a two-byte string: the 1 MB bundle is decoded, then scanned, at
 * twice the bytes. An ASCII file stays one byte per character. In a CPU profile of a rotation in
 * the sandbox, the loader's decoding fell from 14 to 8 ms and the bundle's compile from 38 to
 * 34.5 ms: about 2% of a start. Paired whole rotations gave 0.023 s less in two series and no
 * difference beyond the noise in two more.
 *
 * Such an escape means the character itself wherever it stands (ECMA-262: string literals, the
 * cooked value of a template, regular expressions with or without the `u` flag, identifiers;
 * comments are not read at all), with two exceptions, both refused here rather than rewritten:
 * - right after a backslash: `"\→"` is `"→"`, while `"\\u2192"` is not;
 * - in the raw text of a tagged template (`String.raw`), which keeps an escape as written.
 * Each file is parsed again afterwards, and every string, template value and name must read as
 * it did.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parse, type Node } from 'acorn'

const NON_ASCII = /[\u0080-\u{10ffff}]/gu

/** `\uXXXX` for each UTF-16 unit of `char` (two, a surrogate pair, beyond the BMP). */
function escape(char: string): string {
  return char
    .split('')
    .map(unit => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`)
    .join('')
}

function program(source: string, file: string): Node {
  try {
    return parse(source, { ecmaVersion: 'latest', sourceType: 'module' })
  } catch (error) {
    throw new Error(`${file}: ${(error as Error).message}`, { cause: error })
  }
}

/** Every node of the tree, parents first. */
function* nodes(node: unknown): Generator<Node & Record<string, unknown>> {
  if (Array.isArray(node)) {
    for (const item of node) yield* nodes(item)
  } else if (node && typeof node === 'object' && typeof (node as Node).type === 'string') {
    yield node as Node & Record<string, unknown>
    // A literal's and a template part's values are data, not nodes.
    if ((node as Node).type === 'Literal' || (node as Node).type === 'TemplateElement') return
    for (const value of Object.values(node)) yield* nodes(value)
  }
}

/** What the code means by its text: string values, cooked template parts, names, in order. */
function meanings(tree: Node): string[] {
  const out: string[] = []
  for (const node of nodes(tree)) {
    if (node.type === 'Literal' && typeof node.value === 'string') out.push(`s:${node.value}`)
    if (node.type === 'TemplateElement') {
      out.push(`t:${(node.value as { cooked: string | null }).cooked}`)
    }
    if (node.type === 'Identifier') out.push(`i:${node.name as string}`)
  }
  return out
}

function toAscii(source: string, file: string): string {
  const tree = program(source, file)
  for (const node of nodes(tree)) {
    if (node.type !== 'TaggedTemplateExpression') continue
    const text = source.slice(node.start, node.end)
    if (text.search(NON_ASCII) !== -1)
      throw new Error(`${file}:${node.start}: a tagged template (raw text)`)
  }
  const output = source.replace(NON_ASCII, (char, offset: number) => {
    // An odd run of backslashes right before it escapes the character itself.
    let backslashes = 0
    while (source[offset - 1 - backslashes] === '\\') backslashes++
    if (backslashes % 2 === 1) throw new Error(`${file}:${offset}: a backslash before "${char}"`)
    return escape(char)
  })
  const before = meanings(tree)
  const after = meanings(program(output, file))
  const differs = before.findIndex((meaning, i) => meaning !== after[i])
  if (differs !== -1 || before.length !== after.length) {
    throw new Error(`${file}: reads differently once escaped (${before[differs] ?? 'length'})`)
  }
  return output
}

const dist = resolve(process.argv[2] ?? 'dist')
let escaped = 0
for (const name of readdirSync(dist).filter(n => n.endsWith('.js'))) {
  const file = join(dist, name)
  const source = readFileSync(file, 'utf8')
  const count = source.match(NON_ASCII)?.length ?? 0
  if (count === 0) continue
  writeFileSync(file, toAscii(source, name))
  escaped += count
}
console.log(`ascii: ${escaped} non-ASCII characters escaped`)
