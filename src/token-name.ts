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

/**
 * Expands {name} {date} {run_id} {repository}; {date} = UTC YYYY-MM-DD of `now`; result trimmed
 * and cut to Cloudflare's max length.
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
    name: baseTokenName(vars.oldName),
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
