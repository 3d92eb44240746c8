/**
 * A Cloudflare API token's client IP condition, as the Cloudflare and R2 simulators enforce it.
 *
 * Semantics (developers.cloudflare.com/fundamentals/api/how-to/restrict-tokens/, "Client IP
 * address range filtering"): "By default, if no filtering is applied, all IP addresses can use the
 * token. Once an Is in rule is applied, the token can only be used from the defined IP addresses
 * ... define Is not in to exempt specific IPs or smaller ranges." So an address passes iff (there
 * is no `in` list, or it is in it) and it is not in `not_in`.
 *
 * An `in` key that is present but empty (`[]` or `null`) is an Is in rule that lets nothing
 * through: a token created with an empty condition block "puts the end user in a state where no
 * traffic is allowed" (a Cloudflare maintainer, cloudflare/terraform-provider-cloudflare#902,
 * fixing #897, where such a token got 9109 "Cannot use the access token from location").
 * UNCONFIRMED: which wire form that was (`[]` or `null`); both are read alike here.
 *
 * The condition is stored as opaque JSON: its IP key has been spelled `request.ip` (the older
 * schema) and `request_ip` (the schema since 2025-01); both are honoured, and when both are
 * present the address must pass both.
 *
 * UNCONFIRMED: entries that are not an address or CIDR are ignored (the real API probably rejects
 * them when the token is written).
 */
import { BlockList, isIP } from 'node:net'

/** The two spellings of the IP key (see the file comment). */
const IP_KEYS = ['request_ip', 'request.ip'] as const

/** `::ffff:192.0.2.1` (an IPv4 peer on a dual-stack socket) → `192.0.2.1`; anything else unchanged. */
export function normalizeAddress(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address.trim())
  return mapped ? mapped[1]! : address.trim()
}

/** Whether a token with this condition may be used from `address`. */
export function conditionAllows(condition: unknown, address: string): boolean {
  if (!isRecord(condition)) return true
  const client = normalizeAddress(address)
  for (const key of IP_KEYS) {
    const rule = condition[key]
    if (!isRecord(rule)) continue
    if ('in' in rule && !blockList(addresses(rule['in'])).check(client, family(client)))
      return false
    if (blockList(addresses(rule['not_in'])).check(client, family(client))) return false
  }
  return true
}

/**
 * Whether a condition restricts any address at all (an `in` rule, even an empty one, or a
 * non-empty `not_in`); for the simulators' log events.
 */
export function hasIpRule(condition: unknown): boolean {
  if (!isRecord(condition)) return false
  return IP_KEYS.some(key => {
    const rule = condition[key]
    return isRecord(rule) && ('in' in rule || addresses(rule['not_in']).length > 0)
  })
}

function addresses(list: unknown): string[] {
  return Array.isArray(list) ? list.filter((e): e is string => typeof e === 'string') : []
}

function family(address: string): 'ipv4' | 'ipv6' {
  return isIP(address) === 6 ? 'ipv6' : 'ipv4'
}

/** A BlockList of addresses (`198.51.100.7`) and CIDRs (`192.0.2.0/24`, `2001:db8::/32`). */
function blockList(entries: string[]): BlockList {
  const list = new BlockList()
  for (const entry of entries) {
    const [base = '', prefix] = entry.trim().split('/')
    const address = normalizeAddress(base)
    const version = isIP(address)
    if (version === 0) continue
    const type = version === 6 ? 'ipv6' : 'ipv4'
    if (prefix === undefined) {
      list.addAddress(address, type)
      continue
    }
    const bits = Number(prefix)
    if (!/^\d+$/.test(prefix) || bits > (version === 6 ? 128 : 32)) continue
    // A CIDR with host bits set (the spec's own example has `123.123.123.100/24`) covers its network.
    list.addSubnet(address, bits, type)
  }
  return list
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
