/**
 * Longest name Cloudflare accepts for an API token: `iam_name.maxLength` in Cloudflare's
 * api-schemas (sandbox/openapi/cloudflare-tokens-openapi.json). JSON Schema counts code points.
 */
export const TOKEN_NAME_MAX_LENGTH = 120

/** The placeholders `token-name` may use, without braces. */
export const TOKEN_NAME_PLACEHOLDERS = ['name', 'date', 'run_id', 'repository'] as const

export type TokenNamePlaceholder = (typeof TOKEN_NAME_PLACEHOLDERS)[number]

// One " (rotated …)" suffix at the end of a name; "rotated" alone in parentheses counts too.
const ROTATED_SUFFIX = /\s*\(rotated(?:\s[^()]*)?\)\s*$/i

/** Strips any earlier " (rotated …)" suffix(es) from a token name. */
export function baseTokenName(name: string): string {
  let base = name.trim()
  for (;;) {
    const next = base.replace(ROTATED_SUFFIX, '').trimEnd()
    if (next === base) return base
    base = next
  }
}

/** What each placeholder can have expanded to, to recognise an earlier expansion in a name. */
const PLACEHOLDER_SHAPES: Record<Exclude<TokenNamePlaceholder, 'name'>, string> = {
  date: '\\d{4}-\\d{2}-\\d{2}',
  run_id: '\\d+',
  // GitHub owner and repository names hold letters, digits, '-', '_' and '.'.
  repository: '[\\w.-]+/[\\w.-]+'
}

/**
 * Patterns for the text a template puts before and after its one `{name}`, so that a custom
 * template such as `{name} #{run_id}` does not pile up `#…` suffixes over repeated rotations
 * either. None when the template has no `{name}` or several, and none for an affix of blanks and
 * `{run_id}` only: digits alone would also strip a name's own trailing digits (`app2`).
 */
function templateAffixes(template: string): RegExp[] {
  const parts = template.trim().split('{name}')
  if (parts.length !== 2) return []
  const shape = (text: string): string =>
    text
      .split(/(\{(?:date|run_id|repository)\})/)
      .map(piece => {
        const placeholder = /^\{(date|run_id|repository)\}$/.exec(piece)?.[1]
        if (placeholder) return PLACEHOLDER_SHAPES[placeholder as keyof typeof PLACEHOLDER_SHAPES]
        return piece
          .split(/\s+/)
          .map(word => word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
          .join('\\s+')
      })
      .join('')
  const distinctive = (affix: string): boolean => affix.replace(/\{run_id\}|\s/g, '') !== ''
  const [before, after] = parts as [string, string]
  const patterns: RegExp[] = []
  if (distinctive(before)) patterns.push(new RegExp(`^${shape(before)}`))
  if (distinctive(after)) patterns.push(new RegExp(`${shape(after)}$`))
  return patterns
}

/**
 * The tag a rotation adds when its name was taken already (` #<run id>`, ` #<run id>-<attempt>`,
 * see decide.uniqueTokenName); stripped only after an earlier expansion, so that a name's own
 * `#2` stays.
 */
const UNIQUE_TAG = /^(.*\S)\s+#\d+(?:-\d+)?$/

/** The old name without any earlier " (rotated …)" suffix or what `template` added around it. */
function stripEarlierRotations(oldName: string, template: string): string {
  const tagged = UNIQUE_TAG.exec(oldName.trim())?.[1]
  if (tagged !== undefined && stripOnce(tagged, template) !== tagged) {
    return stripOnce(tagged, template)
  }
  return stripOnce(oldName, template)
}

function stripOnce(oldName: string, template: string): string {
  const affixes = templateAffixes(template)
  let base = baseTokenName(oldName)
  for (;;) {
    let next = base
    for (const affix of affixes) next = next.replace(affix, '').trim()
    next = baseTokenName(next)
    if (next === base) return base
    base = next
  }
}

/**
 * Expands {name} {date} {run_id} {repository}; {date} = UTC YYYY-MM-DD of `now`; result trimmed
 * and cut to Cloudflare's max length. {name} is the old name without what earlier rotations
 * added: any " (rotated …)" suffix, and the text this template puts around {name}.
 *
 * When the result would be too long, the old name is shortened first so that the rest of the
 * template (the date, above all) survives: a cut suffix would give the new token the old name,
 * and the journal finds a minted token by its name.
 */
export function expandTokenName(
  template: string,
  vars: { oldName: string; now: Date; runId: string; repository: string }
): string {
  const values: Record<TokenNamePlaceholder, string> = {
    name: stripEarlierRotations(vars.oldName, template),
    date: vars.now.toISOString().slice(0, 10),
    run_id: vars.runId,
    repository: vars.repository
  }
  const fill = (name: string): string =>
    template.replace(/\{(name|date|run_id|repository)\}/g, (_, key: TokenNamePlaceholder) =>
      key === 'name' ? name : values[key]
    )

  let result = fill(values.name).trim()
  const nameCount = template.split('{name}').length - 1
  if (codePoints(result) > TOKEN_NAME_MAX_LENGTH && nameCount > 0) {
    const budget = Math.floor((TOKEN_NAME_MAX_LENGTH - codePoints(fill(''))) / nameCount)
    result = fill(cut(values.name, Math.max(0, budget)).trimEnd()).trim()
  }
  result = cut(result, TOKEN_NAME_MAX_LENGTH).trim()
  if (!result) {
    // Not an InputError: the template was valid, only this old name (or an unset run id) empties it.
    throw new Error(
      `The new token name is empty: token-name '${template}' expanded to nothing for this token; add text or {date} to token-name.`
    )
  }
  return result
}

function codePoints(text: string): number {
  return Array.from(text).length
}

/** Cuts by code points, so that a surrogate pair is never split. */
function cut(text: string, max: number): string {
  return codePoints(text) <= max ? text : Array.from(text).slice(0, max).join('')
}
