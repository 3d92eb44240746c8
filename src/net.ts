/**
 * Facts about addresses that several modules need: which hosts are this machine (loopback), where
 * plain http is acceptable and where the sandbox's test devices may be honoured.
 */

/** Loopback only: 127.0.0.0/8, ::1, localhost. WHATWG URL parsing has already normalised the host. */
export function isLoopbackHost(hostname: string): boolean {
  return (
    hostname === 'localhost' ||
    hostname === '[::1]' ||
    hostname === '::1' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname)
  )
}

/** True for a URL on a loopback host (a local simulator); false for anything unparsable. */
export function isLoopbackUrl(url: string): boolean {
  try {
    return isLoopbackHost(new URL(url).hostname)
  } catch {
    return false
  }
}
