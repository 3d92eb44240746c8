/** The token IP condition as the Cloudflare and R2 simulators read it. */
import { conditionAllows, hasIpRule, normalizeAddress } from '../sandbox/ip-condition.js'

describe('conditionAllows', () => {
  const condition = {
    request_ip: {
      in: ['192.0.2.0/24', '2001:db8::/32', '198.51.100.7'],
      not_in: ['192.0.2.7', '192.0.2.128/25', '2001:db8:dead::/48']
    }
  }

  it.each([
    ['192.0.2.1', true],
    ['192.0.2.127', true],
    ['192.0.2.7', false],
    ['192.0.2.200', false],
    ['198.51.100.7', true],
    ['198.51.100.8', false],
    ['203.0.113.1', false],
    ['2001:db8::1', true],
    ['2001:db8:dead::1', false],
    ['2001:db9::1', false],
    ['::ffff:192.0.2.1', true],
    ['not an address', false]
  ])('%s → %s', (address, allowed) => {
    expect(conditionAllows(condition, address)).toBe(allowed)
  })

  it('allows everything without an in list, except not_in', () => {
    expect(conditionAllows(undefined, '203.0.113.1')).toBe(true)
    expect(conditionAllows({}, '203.0.113.1')).toBe(true)
    expect(conditionAllows({ request_ip: { not_in: [] } }, '203.0.113.1')).toBe(true)
    const exceptOne = { request_ip: { not_in: ['203.0.113.0/24'] } }
    expect(conditionAllows(exceptOne, '203.0.113.1')).toBe(false)
    expect(conditionAllows(exceptOne, '198.51.100.1')).toBe(true)
  })

  it('lets nothing through an empty in list (an empty condition block)', () => {
    expect(conditionAllows({ request_ip: { in: [], not_in: [] } }, '203.0.113.1')).toBe(false)
    expect(conditionAllows({ 'request.ip': { in: null, not_in: null } }, '127.0.0.1')).toBe(false)
  })

  it('reads the legacy key request.ip, and a CIDR with host bits as its network', () => {
    const legacy = { 'request.ip': { in: ['123.123.123.100/24'] } }
    expect(conditionAllows(legacy, '123.123.123.5')).toBe(true)
    expect(conditionAllows(legacy, '123.123.124.5')).toBe(false)
    // Both keys present: both must pass.
    const both = { ...legacy, request_ip: { not_in: ['123.123.123.5'] } }
    expect(conditionAllows(both, '123.123.123.5')).toBe(false)
    expect(conditionAllows(both, '123.123.123.6')).toBe(true)
  })

  it('ignores entries that are not addresses or CIDRs', () => {
    const odd = { request_ip: { in: ['nonsense', '192.0.2.0/99', 42, '192.0.2.0/24'] } }
    expect(conditionAllows(odd, '192.0.2.9')).toBe(true)
    expect(conditionAllows(odd, '198.51.100.1')).toBe(false)
  })
})

describe('helpers', () => {
  it('normalizes IPv4-mapped IPv6 peers and tells whether a condition has an IP rule', () => {
    expect(normalizeAddress('::ffff:127.0.0.1')).toBe('127.0.0.1')
    expect(normalizeAddress('2001:db8::1')).toBe('2001:db8::1')
    expect(hasIpRule({ request_ip: { in: ['192.0.2.0/24'], not_in: [] } })).toBe(true)
    expect(hasIpRule({ 'request.ip': { not_in: ['192.0.2.1'] } })).toBe(true)
    expect(hasIpRule({ request_ip: { in: [], not_in: [] } })).toBe(true)
    expect(hasIpRule({ request_ip: { not_in: [] } })).toBe(false)
    expect(hasIpRule({})).toBe(false)
    expect(hasIpRule(undefined)).toBe(false)
  })
})
