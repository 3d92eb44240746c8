/**
 * A value kept per process, or per Jest worker when the test environment offers a cache its test
 * files share (`globalThis.__r2SandboxShared`, __tests__/helpers/environment.js): Jest loads every
 * module afresh for each test file, so a module-level cache would start empty in each. Only
 * immutable, request-independent values may go in it: a test file must not see another's state.
 */
export function sharedCache<T>(key: string, create: () => T): T {
  const shared = (globalThis as { __r2SandboxShared?: Map<string, unknown> }).__r2SandboxShared
  if (!shared) return create()
  if (!shared.has(key)) shared.set(key, create())
  return shared.get(key) as T
}
