/** Jest in ESM mode with ts-jest; run through `npm test` (NODE_OPTIONS=--experimental-vm-modules). */

// The allocator settings the action's test runs get (sandbox/runner.ts, SANDBOX_MALLOC_TUNABLES),
// for the Jest workers too: glibc reads them when a process starts, and Jest starts its workers
// after reading this file, with this environment. The workers' page faults fell by 30% and their
// CPU by about a tenth (faults, policy and deploy tests, two runs each way).
process.env.GLIBC_TUNABLES ??=
  'glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.top_pad=16777216'

export default {
  // Node's environment with a cache its test files share (the simulators' parsed OpenAPI validators).
  testEnvironment: '<rootDir>/__tests__/helpers/environment.js',
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: {
    '^(\\.{1,2}/.*)\\.js$': '$1'
  },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json' }]
  },
  testMatch: ['**/__tests__/**/*.test.ts'],
  testTimeout: 60000,
  // End-to-end scenarios start their own sandbox on ephemeral ports and spend part of their time
  // waiting for a child process or a simulated run: on 2 cores a third worker fills those waits
  // (a fresh-clone `npm test` took 256 s with two workers, 222 s with three, CPU then saturated).
  maxWorkers: 3
}
