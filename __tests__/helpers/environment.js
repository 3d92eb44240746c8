/**
 * Jest's Node environment, plus one object that outlives a test file: `globalThis.__r2SandboxShared`
 * is the same Map in every test file a Jest worker runs. Each test file otherwise loads every module
 * afresh, so each one parsed the OpenAPI excerpts and compiled their validators again (a third of
 * the simulators' CPU in a full `npm test`); sandbox/openapi.ts keeps its parsed validators there.
 * Only immutable, request-independent things may go in it: a test file must not see another's
 * state.
 */
import { TestEnvironment } from 'jest-environment-node'

const shared = new Map()

export default class SharedCacheEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context)
    this.global.__r2SandboxShared = shared
  }
}
