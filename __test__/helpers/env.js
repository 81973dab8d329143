'use strict'
// The adapter reads its settings from the environment too; a test file that
// starts its own servers must not be steered by the developer's shell.

const CACHE_ENVIRONMENT = [
  'REDIS_URL', 'REDIS_HOST', 'REDIS_PORT', 'REDIS_PASSWORD', 'REDIS_DB', 'REDIS_TLS', 'REDIS_ENABLED', 'USE_REDIS',
  'CACHE_DEFAULT_TTL', 'CACHE_NAMESPACE', 'REDIS_POOL_SIZE', 'CACHE_CIRCUIT_BREAKER_FAILURES', 'CACHE_CIRCUIT_BREAKER_TIMEOUT',
  'CACHE_REPLAY_MAX_BYTES',
  'CACHE_MAX_VALUE_BYTES',
]

/** Removes every environment name the adapter reads from this process. */
function isolateFromEnvironment() {
  for (const name of CACHE_ENVIRONMENT) delete process.env[name]
}

module.exports = { isolateFromEnvironment, CACHE_ENVIRONMENT }
