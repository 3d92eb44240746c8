/**
 * `npm run release -- X.Y.Z`, run against throwaway repositories shaped like this one (a
 * `package` script that builds dist/ from src/, a CHANGELOG.md in Keep a Changelog form): what it
 * refuses, and what it changes when it may — the changelog, the version, one commit, the tag and
 * the major tag — all local, nothing pushed.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ReleaseError, releaseChangelog } from '../scripts/release/changelog.js'
import { release as run } from '../scripts/release/run.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const TSX = path.join(root, 'node_modules', '.bin', 'tsx')
const RELEASE = path.join(root, 'scripts', 'release.ts')

const CHANGELOG = `# Changelog

All notable changes to this project are documented here.

## [Unreleased]

### Added

- Zero-downtime rotation.
`

const dirs: string[] = []
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8' }).trim()
}

/** A repository with a fresh dist/, one commit on main, and entries under Unreleased. */
function repository(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'r2-rotation-release-'))
  dirs.push(dir)
  git(dir, 'init', '-q', '-b', 'main')
  git(dir, 'config', 'user.name', 'Release Test')
  git(dir, 'config', 'user.email', 'release-test@example.com')
  git(dir, 'config', 'commit.gpgsign', 'false')
  git(dir, 'config', 'tag.gpgsign', 'false')
  const pkg = {
    name: 'release-fixture',
    version: '0.1.0',
    private: true,
    scripts: { package: 'node build.mjs' }
  }
  writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`)
  writeFileSync(
    path.join(dir, 'build.mjs'),
    "import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'\n" +
      "mkdirSync('dist', { recursive: true })\n" +
      "writeFileSync('dist/index.js', `// built\\n${readFileSync('src/index.js', 'utf8')}`)\n"
  )
  mkdirSync(path.join(dir, 'src'))
  writeFileSync(path.join(dir, 'src', 'index.js'), 'export const run = () => 1\n')
  writeFileSync(path.join(dir, 'CHANGELOG.md'), CHANGELOG)
  execFileSync('node', ['build.mjs'], { cwd: dir })
  git(dir, 'add', '-A')
  git(dir, 'commit', '-q', '-m', 'First')
  return dir
}

/** One release, run in-process as the CLI runs it; the outcome and the repository after it. */
function release(
  dir: string,
  ...args: string[]
): { code: number; out: string; head: string; tags: string[] } {
  const lines: string[] = []
  let code = 0
  try {
    run([...args, '--date', '2026-12-04'], { cwd: dir, print: line => lines.push(line) })
  } catch (error) {
    if (!(error instanceof ReleaseError)) throw error
    lines.push(error.message)
    code = 1
  }
  return {
    code,
    out: lines.join('\n'),
    head: git(dir, 'rev-parse', 'HEAD'),
    tags: git(dir, 'tag', '--list').split('\n').filter(Boolean)
  }
}

const tagCommit = (dir: string, tag: string): string => git(dir, 'rev-parse', `${tag}^{commit}`)

/** A change committed with its entry under Unreleased, as the next release expects. */
function commitEntry(dir: string, section: string, entry: string): void {
  const file = path.join(dir, 'CHANGELOG.md')
  const changelog = readFileSync(file, 'utf8')
  writeFileSync(
    file,
    changelog.replace('## [Unreleased]\n', `## [Unreleased]\n\n### ${section}\n\n- ${entry}\n`)
  )
  git(dir, 'commit', '-q', '-am', entry)
}

describe('npm run release', () => {
  it('releases 1.0.0: changelog, version, one commit, v1.0.0 and v1 on it; nothing pushed', () => {
    const dir = repository()
    const before = git(dir, 'rev-parse', 'HEAD')
    const result = release(dir, '1.0.0')
    expect({ code: result.code, out: result.out }).toMatchObject({ code: 0 })
    expect(result.tags).toEqual(['v1', 'v1.0.0'])
    expect(tagCommit(dir, 'v1.0.0')).toBe(result.head)
    expect(tagCommit(dir, 'v1')).toBe(result.head)
    expect(git(dir, 'rev-parse', 'HEAD~1')).toBe(before)
    expect(git(dir, 'log', '-1', '--format=%s')).toBe('Release 1.0.0')
    expect(git(dir, 'status', '--porcelain')).toBe('')
    expect(JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')).version).toBe('1.0.0')
    expect(readFileSync(path.join(dir, 'CHANGELOG.md'), 'utf8')).toBe(`# Changelog

All notable changes to this project are documented here.

## [Unreleased]

## [1.0.0] - 2026-12-04

### Added

- Zero-downtime rotation.
`)
    // The tag carries the release's entries; the output says how to publish.
    expect(git(dir, 'tag', '-l', '--format=%(contents)', 'v1.0.0')).toContain(
      '- Zero-downtime rotation.'
    )
    expect(result.out).toContain('git push origin main v1.0.0')
    expect(result.out).toContain('git push --force origin v1')
    expect(git(dir, 'remote')).toBe('')
  })

  it('moves v1 to 1.1.0 and leaves v1.0.0 where it was; a pre-release moves no major tag', () => {
    const dir = repository()
    expect(release(dir, '1.0.0').code).toBe(0)
    const first = tagCommit(dir, 'v1.0.0')
    commitEntry(dir, 'Fixed', 'A typo.')
    const second = release(dir, '1.1.0')
    expect(second.code).toBe(0)
    expect(tagCommit(dir, 'v1.0.0')).toBe(first)
    expect(tagCommit(dir, 'v1')).toBe(second.head)

    commitEntry(dir, 'Changed', 'Breaking.')
    const rc = release(dir, '2.0.0-rc.1')
    expect(rc.code).toBe(0)
    expect(rc.tags).toEqual(['v1', 'v1.0.0', 'v1.1.0', 'v2.0.0-rc.1'])
    expect(tagCommit(dir, 'v1')).toBe(second.head)
  })

  it('refuses a stale dist/, and changes nothing', () => {
    const dir = repository()
    writeFileSync(path.join(dir, 'src', 'index.js'), 'export const run = () => 2\n')
    git(dir, 'commit', '-q', '-am', 'Change src without rebuilding dist')
    const head = git(dir, 'rev-parse', 'HEAD')
    const result = release(dir, '1.0.0')
    expect(result.code).toBe(1)
    expect(result.out).toMatch(/dist\/ is stale: npm run package changed it/)
    expect(result.tags).toEqual([])
    expect(result.head).toBe(head)
    expect(readFileSync(path.join(dir, 'CHANGELOG.md'), 'utf8')).toBe(CHANGELOG)
  })

  it('refuses a dirty tree, another branch, an existing tag, nothing to release, a bad version', () => {
    const dir = repository()
    const head = git(dir, 'rev-parse', 'HEAD')

    writeFileSync(path.join(dir, 'notes.txt'), 'draft\n')
    const dirty = release(dir, '1.0.0')
    expect(dirty).toMatchObject({ code: 1, tags: [], head })
    expect(dirty.out).toMatch(/The work tree is not clean/)
    rmSync(path.join(dir, 'notes.txt'))

    git(dir, 'checkout', '-q', '-b', 'feature')
    expect(release(dir, '1.0.0').out).toMatch(/Releases are made from main, and HEAD is feature/)
    git(dir, 'checkout', '-q', 'main')

    git(dir, 'tag', 'v1.0.0')
    expect(release(dir, '1.0.0').out).toMatch(/The tag v1\.0\.0 exists already/)
    git(dir, 'tag', '-d', 'v1.0.0')

    expect(release(dir, '1.0').out).toMatch(/Usage: npm run release -- <major\.minor\.patch>/)

    writeFileSync(path.join(dir, 'CHANGELOG.md'), '# Changelog\n\n## [Unreleased]\n')
    git(dir, 'commit', '-q', '-am', 'Empty changelog')
    const empty = release(dir, '1.0.0')
    expect(empty).toMatchObject({ code: 1, tags: [] })
    expect(empty.out).toMatch(/no entries under "## \[Unreleased\]"/)
  })

  it('--dry-run checks and shows, and changes nothing', () => {
    const dir = repository()
    const head = git(dir, 'rev-parse', 'HEAD')
    const result = release(dir, '1.0.0', '--dry-run')
    expect(result).toMatchObject({ code: 0, tags: [], head })
    expect(result.out).toContain('Would release v1.0.0')
    expect(git(dir, 'status', '--porcelain')).toBe('')
  })
})

describe('the command line', () => {
  it('npm run release -- 1.0.0 runs the same release and exits 1 with the reason when it may not', () => {
    const dir = repository()
    const cli = (...args: string[]) =>
      spawnSync(TSX, [RELEASE, ...args], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, NODE_OPTIONS: '' }
      })
    const refused = cli('1.0')
    expect(refused.status).toBe(1)
    expect(refused.stderr).toMatch(/^Usage: npm run release -- <major\.minor\.patch>/)
    const done = cli('1.0.0')
    expect({ status: done.status, err: done.stderr }).toMatchObject({ status: 0 })
    expect(done.stdout).toContain('Released v1.0.0 locally')
    expect(tagCommit(dir, 'v1')).toBe(git(dir, 'rev-parse', 'HEAD'))
  })
})

describe('releaseChangelog', () => {
  it('follows the compare links when the file has them', () => {
    const changelog = [
      '# Changelog',
      '',
      '## [Unreleased]',
      '',
      '- New.',
      '',
      '## [1.0.0] - 2026-12-04',
      '',
      '- First.',
      '',
      '[Unreleased]: https://github.com/acme/r2-token-rotation/compare/v1.0.0...HEAD',
      '[1.0.0]: https://github.com/acme/r2-token-rotation/releases/tag/v1.0.0',
      ''
    ].join('\n')
    expect(releaseChangelog(changelog, '1.1.0', '2026-12-24')).toBe(
      [
        '# Changelog',
        '',
        '## [Unreleased]',
        '',
        '## [1.1.0] - 2026-12-24',
        '',
        '- New.',
        '',
        '## [1.0.0] - 2026-12-04',
        '',
        '- First.',
        '',
        '[Unreleased]: https://github.com/acme/r2-token-rotation/compare/v1.1.0...HEAD',
        '[1.1.0]: https://github.com/acme/r2-token-rotation/compare/v1.0.0...v1.1.0',
        '[1.0.0]: https://github.com/acme/r2-token-rotation/releases/tag/v1.0.0',
        ''
      ].join('\n')
    )
  })
})
