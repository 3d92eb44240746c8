/**
 * The CHANGELOG.md side of a release (Keep a Changelog): the entries under `## [Unreleased]`
 * move under `## [version] - date`, and the compare links follow when the file has them.
 */

/** A reason not to release, for the person who asked: printed without a stack trace. */
export class ReleaseError extends Error {}

const UNRELEASED = /^## \[Unreleased\][^\n]*\n/m

/** The text under `## [Unreleased]`, up to the next `## ` heading or link definitions. */
export function unreleasedEntries(changelog: string): { start: number; end: number; text: string } {
  const heading = UNRELEASED.exec(changelog)
  if (!heading) throw new ReleaseError('CHANGELOG.md has no "## [Unreleased]" section.')
  const start = heading.index + heading[0].length
  const rest = changelog.slice(start)
  const next = /^(## |\[[^\]]+\]: )/m.exec(rest)
  const end = start + (next ? next.index : rest.length)
  return { start, end, text: changelog.slice(start, end).trim() }
}

/**
 * CHANGELOG.md with the Unreleased entries moved under `## [version] - date`, an empty Unreleased
 * section left above it, and Keep a Changelog's compare links updated when the file has them.
 */
export function releaseChangelog(changelog: string, version: string, date: string): string {
  const { start, end, text } = unreleasedEntries(changelog)
  if (!/^\s*[-*] /m.test(text)) {
    throw new ReleaseError(
      'CHANGELOG.md has no entries under "## [Unreleased]": say what this release changes first.'
    )
  }
  let updated = `${changelog.slice(0, start)}\n## [${version}] - ${date}\n\n${text}\n\n${changelog.slice(end).replace(/^\n+/, '')}`
  const link = /^\[Unreleased\]: (\S+)\/compare\/(\S+)\.\.\.HEAD$/m.exec(updated)
  if (link) {
    const [line, base, previous] = link
    updated = updated.replace(
      line,
      `[Unreleased]: ${base}/compare/v${version}...HEAD\n[${version}]: ${base}/compare/${previous}...v${version}`
    )
  }
  return updated.replace(/\n*$/, '\n')
}
