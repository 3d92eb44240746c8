/**
 * The OpenAPI excerpts the simulators validate against, checked in full once: each is a valid
 * OpenAPI document and every operation's validators compile. (The simulators load them in quick
 * mode, compiling each operation's validators on first use.)
 */
import { checkExcerpt } from '../sandbox/openapi.js'

it.each(['cloudflare-tokens', 'github-actions', 'cloudflare-access-workers'] as const)(
  '%s is a valid OpenAPI document whose validators all compile',
  async spec => {
    await expect(checkExcerpt(spec)).resolves.toBeUndefined()
  },
  60_000
)
