/** Jest in ESM mode with ts-jest; run through `npm test` (NODE_OPTIONS=--experimental-vm-modules). */
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
