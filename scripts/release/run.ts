/**
 * The release itself (see scripts/release.ts for what it does): checks, then the changelog, the
 * version, one commit, the tag and the major tag, all in the local repository.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { ReleaseError, releaseChangelog, unreleasedEntries } from './changelog.js'

const VERSION = /^(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?$/

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe']
  }).trim()
}

function tagExists(cwd: string, tag: string): boolean {
  return spawnSync('git', ['rev-parse', '-q', '--verify', `refs/tags/${tag}`], { cwd }).status === 0
}

export interface ReleaseOptions {
  /** Where to run (any directory of the repository). */
  cwd: string
  /** Where the progress and the next steps go. */
  print: (line: string) => void
}

/** Runs the release; throws ReleaseError with the reason when it may not. */
export function release(args: string[], { cwd, print }: ReleaseOptions): void {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      'dry-run': { type: 'boolean', default: false },
      'allow-branch': { type: 'boolean', default: false },
      date: { type: 'string', default: new Date().toISOString().slice(0, 10) }
    }
  })
  const version = positionals[0]?.replace(/^v/, '') ?? ''
  const parts = VERSION.exec(version)
  if (positionals.length !== 1 || !parts) {
    throw new ReleaseError('Usage: npm run release -- <major.minor.patch> (e.g. 1.0.0)')
  }
  if (!/^\d{4}-\d{2}-\d{2}$/.test(values.date)) throw new ReleaseError('--date: YYYY-MM-DD')
  const prerelease = parts[4] !== undefined
  const tag = `v${version}`
  const major = `v${parts[1]}`
  const dry = values['dry-run']

  const root = git(cwd, 'rev-parse', '--show-toplevel')
  const status = git(root, 'status', '--porcelain')
  if (status)
    throw new ReleaseError(`The work tree is not clean; commit or stash first:\n${status}`)
  const branch = spawnSync('git', ['symbolic-ref', '--short', '-q', 'HEAD'], { cwd: root })
    .stdout.toString()
    .trim()
  if (branch !== 'main' && !values['allow-branch']) {
    throw new ReleaseError(
      `Releases are made from main, and HEAD is ${branch || 'detached'} (--allow-branch to release anyway).`
    )
  }
  if (tagExists(root, tag)) throw new ReleaseError(`The tag ${tag} exists already.`)

  const changelogPath = path.join(root, 'CHANGELOG.md')
  const changelog = releaseChangelog(readFileSync(changelogPath, 'utf8'), version, values.date)

  // dist/ must be what src/ builds to: a tag whose dist/ is stale runs other code than its src/.
  print('Rebuilding dist/ (npm run package) to check that the committed one is in step…')
  const built = spawnSync('npm', ['run', '--silent', 'package'], { cwd: root, encoding: 'utf8' })
  if (built.status !== 0) {
    throw new ReleaseError(`npm run package failed:\n${built.stdout}${built.stderr}`)
  }
  const stale = git(root, 'status', '--porcelain', '--', 'dist')
  if (stale) {
    throw new ReleaseError(
      `dist/ is stale: npm run package changed it:\n${stale}\nCommit the rebuilt dist/, then run the release again.`
    )
  }

  const notes = unreleasedEntries(readFileSync(changelogPath, 'utf8')).text
  if (dry) {
    print(
      `\nWould release ${tag} from ${branch || 'HEAD'} (${git(root, 'rev-parse', '--short', 'HEAD')}):`
    )
    print(`- CHANGELOG.md: the Unreleased entries under "## [${version}] - ${values.date}"`)
    print(`- package.json: version ${version}; commit "Release ${version}"`)
    print(`- tag ${tag}${prerelease ? '' : `, and move ${major} to it`}\n\n${notes}`)
    return
  }

  writeFileSync(changelogPath, changelog)
  const files = ['CHANGELOG.md']
  // The version in package.json and its lock file, as `npm version` writes it (two-space JSON).
  for (const file of ['package.json', 'package-lock.json']) {
    const at = path.join(root, file)
    if (!existsSync(at)) continue
    const json = JSON.parse(readFileSync(at, 'utf8')) as {
      version?: string
      packages?: Record<string, { version?: string }>
    }
    json.version = version
    if (json.packages?.['']) json.packages[''].version = version
    writeFileSync(at, `${JSON.stringify(json, null, 2)}\n`)
    files.push(file)
  }
  git(root, 'add', '--', ...files)
  git(root, 'commit', '-q', '-m', `Release ${version}`)
  git(root, 'tag', '-a', tag, '-m', `${tag}\n\n${notes}`)
  if (!prerelease) git(root, 'tag', '-f', '-a', major, '-m', `${major}: ${tag}`, `${tag}^{commit}`)

  const commit = git(root, 'rev-parse', 'HEAD')
  print(`\nReleased ${tag} locally: commit ${commit}${prerelease ? '' : `, ${major} moved to it`}.`)
  print('Nothing was pushed. To publish:')
  print(`  git push origin ${branch || 'HEAD'} ${tag}`)
  if (!prerelease) print(`  git push --force origin ${major}`)
  print(
    `  gh release create ${tag} --verify-tag --title ${tag} --notes-from-tag${prerelease ? ' --prerelease' : ''}`
  )
  print(
    `Publishing the release runs .github/workflows/release.yml, which checks dist/ again and moves ${major}.`
  )
  print(`Users can then pin: uses: <owner>/r2-token-rotation@${commit} # ${tag}`)
}
