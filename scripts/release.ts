/**
 * `npm run release -- 1.0.0` prepares a release in the local repository, and pushes nothing:
 *
 * 1. checks: a clean work tree on `main`, no tag `v1.0.0` yet, entries under `## [Unreleased]` in
 *    CHANGELOG.md, and a committed `dist/` in step with `src/` (`npm run package` changes nothing);
 * 2. moves the Unreleased entries under `## [1.0.0] - <date>` in CHANGELOG.md and sets the
 *    version in package.json (and package-lock.json), in one commit `Release 1.0.0`;
 * 3. tags it `v1.0.0` (annotated, with the release's changelog entries) and moves the major tag
 *    `v1` to it (not for a pre-release such as `1.0.0-rc.1`);
 * 4. prints the commands that publish it.
 *
 * Options: `--dry-run` (check and show, change nothing), `--allow-branch` (release from a branch
 * other than main), `--date YYYY-MM-DD` (default: today, UTC).
 */
import { ReleaseError } from './release/changelog.js'
import { release } from './release/run.js'

try {
  release(process.argv.slice(2), { cwd: process.cwd(), print: line => console.log(line) })
} catch (error) {
  if (!(error instanceof ReleaseError)) throw error
  console.error(error.message)
  process.exitCode = 1
}
