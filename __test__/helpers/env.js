'use strict'
// The adapter reads its settings from the environment too; a test file that
// starts its own servers must not be steered by the developer's shell.

const CACHE_ENVIRONMENT = [
  'REDIS_URL', 'REDIS_HOST', 'REDIS_PORT', 'REDIS_PASSWORD', 'REDIS_DB', 'REDIS_TLS', 'REDIS_ENABLED', 'USE_REDIS',
  'CACHE_DEFAULT_TTL', 'CACHE_NAMESPACE', 'REDIS_POOL_SIZE', 'CACHE_CIRCUIT_BREAKER_FAILURES', 'CACHE_CIRCUIT_BREAKER_TIMEOUT',
  'CACHE_REPLAY_MAX_BYTES',
  'CACHE_MAX_VALUE_BYTES', 'CACHE_NEAR_CACHE',
  'REDIS_MONITORING_ENABLED', 'REDIS_ALERT_WEBHOOK_URL', 'REDIS_ALERT_EVALUATE_EVERY_MS', 'REDIS_ALERT_FOR_MS',
  'REDIS_ALERT_WINDOW_MS', 'REDIS_ALERT_MIN_SAMPLES', 'REDIS_ALERT_HIT_RATE_WARN_PCT', 'REDIS_ALERT_HIT_RATE_CRITICAL_PCT',
  'REDIS_ALERT_RESPONSE_TIME_WARN_MS', 'REDIS_ALERT_RESPONSE_TIME_CRITICAL_MS', 'REDIS_ALERT_ERROR_RATE_PCT',
  'REDIS_ALERT_DISCONNECTED_MS', 'REDIS_ALERT_MEMORY_PCT', 'REDIS_ALERT_JOURNAL_PCT',
]

/** Removes every environment name the adapter reads from this process. */
function isolateFromEnvironment() {
  for (const name of CACHE_ENVIRONMENT) delete process.env[name]
}

module.exports = { isolateFromEnvironment, CACHE_ENVIRONMENT }
