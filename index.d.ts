// Types of the public CacheAdapter (index.js). The native binding's own
// generated types are in binding.d.ts; this file describes the class users import.
import { EventEmitter } from 'node:events'

/** Any value JSON can represent. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

/** Overrides of the default TTLs, in seconds. */
export interface TtlOptions {
  /** Message array per org+phone. Default 7200. */
  conversationContext?: number
  /** Summary object per org+phone. Default 7200. */
  conversationSummary?: number
  /** Recent history per org+phone. Default 120. */
  conversationHistory?: number
  /** `{name, timestamp}` per org. Default 120. */
  organizationData?: number
  /** `{configured, timestamp}` per agent+phone. Default 3600. */
  agentConfig?: number
  /** SSE responses per lead+phone. Default 10. */
  sseResponse?: number
  /** Lead objects and phone↔lead mappings. Default 300. */
  leadData?: number
  /** Pre-computed context. Default 120. */
  preComputedContext?: number
}

/** PEM files for TLS (a `rediss://` URL or `tls: true` uses the system roots). */
export interface TlsOptions {
  /** CA certificate(s) to trust instead of the system roots. */
  caFile?: string
  /** Client certificate, for mutual TLS (with `keyFile`). */
  certFile?: string
  /** Client private key, for mutual TLS (with `certFile`). */
  keyFile?: string
}

/** Every option can also come from the environment; options win. */
export interface CacheAdapterOptions {
  /** `redis://[user:pass@]host:port/db` or `rediss://…` (TLS). Env: `REDIS_URL`. */
  url?: string
  /** Redis host. Env: `REDIS_HOST`. Default `127.0.0.1`. */
  host?: string
  /** Redis port. Env: `REDIS_PORT`. Default 6379. */
  port?: number
  /** Redis password. Env: `REDIS_PASSWORD`. */
  password?: string
  /** Redis ACL user name. */
  username?: string
  /** Redis database number. Env: `REDIS_DB`. Default 0. */
  db?: number
  /** TLS: `true`, or PEM file paths. Env: `REDIS_TLS=true`. */
  tls?: boolean | TlsOptions
  /** `false`: memory tier only, Redis never contacted. Env: `REDIS_ENABLED` / `USE_REDIS` = `false`. */
  enabled?: boolean
  /**
   * `redis://host:port` seeds: talk to a Redis Cluster (an org's keys share one hash slot). A master that fails sends
   * only its own slots to memory; redirections are followed. Env: `REDIS_CLUSTER_NODES` (comma-separated URLs).
   */
  clusterNodes?: string[]
  /**
   * `host:port` of each Redis Sentinel: the adapter asks them for the master named `sentinelMasterName` and asks again
   * after a failover. Credentials, `db` and `tls` apply to the master. Env: `REDIS_SENTINELS` (comma-separated).
   */
  sentinels?: string[]
  /** The name the sentinels monitor the master under (required with `sentinels`). Env: `REDIS_SENTINEL_MASTER`. */
  sentinelMasterName?: string
  /** Namespace of every key. Default `${CACHE_NAMESPACE || 'jack'}:${NODE_ENV === 'production' ? 'prod' : 'dev'}`. */
  keyPrefix?: string
  /**
   * Multiplexed connections kept open to Redis (to each master on a
   * cluster). Env: `REDIS_POOL_SIZE`. Default 1: each key always uses the
   * same connection, so every further one splits a batch into one pipeline
   * per connection, which costs throughput (see the README's "Options and environment").
   */
  poolSize?: number
  /** Overrides of the default TTLs, in seconds. */
  ttl?: TtlOptions
  /** Bytes of encoded JSON above which a value is zstd-compressed. Default 1024. */
  compressionThreshold?: number
  /** Longest wait for one Redis round trip before the memory tier answers. Default 250. */
  commandTimeoutMs?: number
  /** Longest wait for one connect. Default 1000. */
  connectTimeoutMs?: number
  /** Consecutive Redis failures that open the circuit breaker. Env: `CACHE_CIRCUIT_BREAKER_FAILURES`. Default 5. */
  breakerFailures?: number
  /** How long the breaker stays open before one probe. Env: `CACHE_CIRCUIT_BREAKER_TIMEOUT`. Default 5000. */
  breakerCooldownMs?: number
  /** Most entries the memory tier holds. Default 100000. */
  memoryMaxEntries?: number
  /** Most bytes the memory tier holds. Default 256 MiB. */
  memoryMaxBytes?: number
  /** How long `getOrLoad` waits for a loader before its callers get an error. Default 10000. */
  loaderTimeoutMs?: number
  /** Most writes kept for replay after an outage (beyond it the oldest become tombstones, counted as dropped). Default 100000. */
  replayMaxEntries?: number
  /**
   * Most key and JSON bytes kept for replay after an outage (beyond it the oldest become tombstones, counted as
   * dropped). Env: `CACHE_REPLAY_MAX_BYTES`. Default half of `memoryMaxBytes`.
   */
  replayMaxBytes?: number
  /**
   * Largest value a call may store, in bytes of its JSON text (UTF-8); a larger one is a `RangeError` and nothing
   * is written. 1 to 512 MiB (Redis's own limit). Env: `CACHE_MAX_VALUE_BYTES`. Default 8 MiB.
   */
  maxValueBytes?: number
  /** Called on every change of mode (as is the `modeChange` event). */
  onModeChange?: (event: ModeChangeEvent) => void
  /** Alert rules and their webhook; `false` turns them off. Env: `REDIS_MONITORING_ENABLED=false`. */
  alerts?: false | true | AlertOptions
  /**
   * After a fail-safe activation (a loader failed or timed out and a fallback was served), how long callers of
   * that key get the fallback without the loader being called again, so a down database is not hammered.
   * 0 to 86400000. Env: `CACHE_FAILSAFE_THROTTLE_MS`. Default 5000.
   */
  failSafeThrottleMs?: number
  /**
   * Read-through loads take a per-key Redis lock (`SET NX PX`), so N instances call a key's loader once; a
   * call's `distributedLock` option overrides it. Env: `CACHE_DISTRIBUTED_LOCK=true`. Default false.
   */
  distributedLock?: boolean
  /** How long a distributed lock lives if its holder never releases it (it died). 10 to 86400000. Env: `CACHE_LOCK_TTL_MS`. Default 10000. */
  lockTtlMs?: number
  /**
   * How long an instance that did not get the lock polls for the holder's value before loading itself.
   * 0 to 86400000. Env: `CACHE_LOCK_WAIT_MS`. Default 2000.
   */
  lockWaitMs?: number
  /**
   * Keep hot values in this process while Redis is healthy, so that a repeated
   * read makes no round trip; coherent through Redis client tracking (see README,
   * Near cache). A value this adapter writes (up to 16 KB of JSON) is also read
   * back from it for 50 ms after the write. `true` for the defaults. On a cluster it keeps one invalidation link per master; behind
   * Sentinel its link follows the master. Env: `CACHE_NEAR_CACHE=true`.
   */
  nearCache?: boolean | NearCacheOptions
}

/** Options of a read-through call (`getOrLoad`, `getOrLoadMany`, `wrap`); see README, Read-through. */
export interface ReadThroughOptions {
  /** Seconds the loaded value is fresh. Default: the generic default TTL (`CACHE_DEFAULT_TTL`, else 7200). */
  ttl?: number
  /**
   * Seconds the value is kept after `ttl` as a fallback: when the loader throws, rejects or times out, callers
   * get it instead of an error (fail-safe). Default 0 (no fallback).
   */
  grace?: number
  /**
   * With a fallback at hand, callers wait at most this long for the loader, then get the fallback; the loader
   * goes on in the background and its result, when it comes (within `hardTimeoutMs`), updates the cache.
   * Default: none.
   */
  softTimeoutMs?: number
  /**
   * Bound on a load: past it the load is abandoned (a late result is dropped); callers get the fallback if one
   * exists, else an `Error` with code `ERR_CACHE_LOADER`. Default `loaderTimeoutMs`.
   */
  hardTimeoutMs?: number
  /**
   * A fraction of `ttl` (0 to 1, e.g. 0.8): a hit after that point returns the cached value and starts one
   * background refresh of the key (one per key, across concurrent callers). Default: off.
   */
  eagerRefresh?: number
  /** Tags of the stored value, for `invalidateTags`. */
  tags?: string[]
  /** Take the per-key Redis lock for the load (N instances, one loader call). Default: the adapter's `distributedLock`. With `getOrLoadMany`: one lock per key; the free keys load in one call, the contested ones wait for their holders' values (a second call loads what is still missing). */
  distributedLock?: boolean
}

/** What a loader may change about the value it returns. */
export interface LoaderContext {
  readonly key: string
  /** Seconds the value will be fresh; set it to change that for this value. */
  ttl: number
  /** Tags of the value; push to or replace them. */
  tags: string[]
  /** Whether a fallback value exists (the loader may, say, use a shorter timeout of its own). */
  readonly hasFallback: boolean
}

/** `getOrLoadMany`'s loader context: like `LoaderContext`, for every key of the batch. */
export interface BatchLoaderContext {
  readonly keys: string[]
  ttl: number
  tags: string[]
}

export interface WrapOptions<A extends unknown[]> extends ReadThroughOptions {
  /** The cache key of a call: a function of its arguments, or a prefix (then `prefix:<JSON of the arguments>`). Default `<fn.name>:<JSON of the arguments>`. */
  key?: string | ((...args: A) => string)
}

/** `getStats().cache.readThrough`: counted in JavaScript, also in `metrics()`. */
export interface ReadThroughStats {
  /** Loads that failed or hit the hard timeout while a fallback existed (`cache_failsafe_activations_total`). */
  failsafeActivations: number
  /** Fallback values served instead of an error or a wait (`cache_fallback_served_total`). */
  fallbackServed: number
  /** Calls answered with the fallback at the soft timeout (`cache_soft_timeouts_total`). */
  softTimeouts: number
  /** Loads abandoned at the hard timeout (`cache_hard_timeouts_total`). */
  hardTimeouts: number
  /** Loads that went on in the background: eager refreshes, and loads past a soft timeout (`cache_background_refreshes_total`). */
  backgroundRefreshes: number
  /** Loader calls skipped within `failSafeThrottleMs` of a failure (`cache_throttled_loads_total`). */
  throttledLoads: number
  /** Loads that waited for another instance's distributed lock (`cache_lock_waits_total`). */
  lockWaits: number
  /** Tags invalidated (`cache_tag_invalidations_total`). */
  tagInvalidations: number
  /** Entries those invalidations removed or marked stale. */
  tagInvalidatedEntries: number
  /** Loader (and `loadMany`) calls made by the read-through options path. */
  loaderCalls: number
  loaderFailures: number
  locksAcquired: number
  /** `cache_loader_duration_seconds` is the histogram. */
  loaderDuration: { count: number; meanMs: number }
}

/** Bounds of the near cache. */
export interface NearCacheOptions {
  /** Most entries kept (default 10000). */
  maxEntries?: number
  /** Most bytes of keys and values kept, about (default 33554432, 32 MiB; at least 1024). */
  maxBytes?: number
  /** Longest an entry is kept, in ms, and never beyond its key's TTL in Redis (default 60000). */
  ttlMs?: number
}

/** `getStats().cache.near`. */
export interface NearCacheStats {
  /** A near cache was asked for and can run (Redis enabled). */
  enabled: boolean
  /** Every invalidation link has tracking on. */
  linkUp: boolean
  /** Invalidation links it keeps: 1, or one per master on a cluster. */
  links: number
  /** Hits are being served now: link up, mode 'redis', lease current. */
  active: boolean
  entries: number
  bytes: number
  maxEntries?: number
  maxBytes?: number
  ttlMs?: number
  /** Reads answered in process (counted in `hits` too). */
  hits: number
  /** Reads the near cache could not answer (off, bypassed or not held). */
  misses: number
  /** Keys invalidated by Redis's tracking pushes (this adapter's own writes included). */
  invalidations: number
  /** Times it was emptied: link lost, breaker open, FLUSHALL/FLUSHDB. */
  flushes: number
  /** Why a link last failed to come up (`host:port` or lane, then the reason), while not every link is up; else null. */
  lastError: string | null
}

/** Thresholds of the alerts (see README, Alerts). */
export interface AlertThresholds {
  /** `hit_rate_low` warning under this hit rate, in %. Env: `REDIS_ALERT_HIT_RATE_WARN_PCT`. Default 60. */
  hitRateWarnPct?: number
  /** `hit_rate_low` critical under this hit rate, in %. Env: `REDIS_ALERT_HIT_RATE_CRITICAL_PCT`. Default 30. */
  hitRateCriticalPct?: number
  /** `response_time_high` warning over this average, in ms. Env: `REDIS_ALERT_RESPONSE_TIME_WARN_MS`. Default 100. */
  responseTimeWarnMs?: number
  /** `response_time_high` critical over this average, in ms. Env: `REDIS_ALERT_RESPONSE_TIME_CRITICAL_MS`. Default 150. */
  responseTimeCriticalMs?: number
  /** `error_rate_high` (critical) over this share of calls failed on Redis, in %. Env: `REDIS_ALERT_ERROR_RATE_PCT`. Default 5. */
  errorRatePct?: number
  /** `redis_disconnected` (critical) once Redis has not answered for this long. Env: `REDIS_ALERT_DISCONNECTED_MS`. Default 30000. */
  disconnectedMs?: number
  /** `redis_memory_high` (warning) over this share of Redis's `maxmemory`, in %. Env: `REDIS_ALERT_MEMORY_PCT`. Default 80. */
  memoryPct?: number
  /** `journal_filling` (warning) over this share of `replayMaxEntries` or of `replayMaxBytes` (the nearer), in %. Env: `REDIS_ALERT_JOURNAL_PCT`. Default 80. */
  journalPct?: number
}

export interface AlertOptions {
  /** Slack/Teams incoming-webhook URL, POSTed on each raise and resolve. A secret: never shown (stats show its host). Env: `REDIS_ALERT_WEBHOOK_URL`. */
  webhookUrl?: string
  /** How often the rules run and Redis is checked in the background (`PING`, `INFO memory`). Env: `REDIS_ALERT_EVALUATE_EVERY_MS`. Default 5000. */
  evaluateEveryMs?: number
  /** How long a condition must hold before it is raised, and be gone before it is resolved. Env: `REDIS_ALERT_FOR_MS`. Default 30000. */
  forMs?: number
  /** Sliding window of the rates (hit rate, response time, error rate). Env: `REDIS_ALERT_WINDOW_MS`. Default 60000. */
  windowMs?: number
  /** Calls a window needs before a rate alert can fire. Env: `REDIS_ALERT_MIN_SAMPLES`. Default 100. */
  minSamples?: number
  thresholds?: AlertThresholds
}

export type AlertName = 'redis_disconnected' | 'hit_rate_low' | 'response_time_high' | 'error_rate_high' | 'redis_memory_high' | 'journal_filling'

export interface Alert {
  name: AlertName
  severity: 'warning' | 'critical'
  /** ISO time since when the condition has held. */
  since: string
  /** The measure now: % for rates and memory, ms for response time, seconds for `redis_disconnected`. */
  value: number
  /** The threshold crossed, in the unit of `value`. */
  threshold: number
  /** One readable line. */
  message: string
}

export interface AlertEvent {
  state: 'raised' | 'resolved'
  alert: Alert
}

/** `getStats().alerts`: the rules' and the webhook's counters. */
export interface AlertStats {
  enabled: boolean
  active: number
  evaluations: number
  evaluationFailures: number
  raised: number
  resolved: number
  /** The webhook's host, the only part of its URL ever shown. */
  webhookHost: string | null
  webhookSent: number
  /** Failed attempts (timeout, refused, non-2xx). */
  webhookFailures: number
  /** Notifications given up after every attempt, or pushed out of the full queue. */
  webhookDropped: number
  webhookPending: number
  /** An error code or `HTTP <status>`, never the URL. */
  webhookLastError: string | null
}

/** `getStats().cache.redisWatch`: the background checks of Redis (alerts on, Redis enabled). */
export interface RedisWatchStats {
  checks: number
  failures: number
  lastCheckAt: number | null
  lastOkAt: number | null
  /** 0 while Redis answers; else ms since it last did. */
  unreachableMs: number
  lastFailure: string | null
  pingMs: number
  usedMemory: number
  /** 0: no limit. */
  maxmemory: number
  /** Why the memory figures are unknown though Redis answers (`INFO` refused by an ACL, or renamed); else null. `redis_memory_high` cannot fire then. */
  memoryUnknown: string | null
}

export type Mode = 'redis' | 'memory'

export interface ModeChangeEvent {
  mode: Mode
  /** Why: the Redis error that opened the breaker, or the probe that closed it. */
  reason: string
  /** ISO time of the change. */
  at: string
}

export interface CacheCounters {
  mode: Mode
  redisEnabled: boolean
  hits: number
  misses: number
  /** hits / (hits + misses), 0 to 1. */
  hitRate: number
  operations: number
  /** Calls that failed, i.e. rejected to their caller. */
  errors: number
  /** Redis round trips that failed or timed out; their calls were answered from memory. */
  redisErrors: number
  /** Calls answered by the memory tier while Redis was unavailable. */
  servedFromMemory: number
  deduplicatedReads: number
  loaderCalls: number
  /** Stored values under our keys that were neither this adapter's format nor the old adapter's JSON; each read as a miss. */
  corrupt: number
  latency: { count: number; meanMs: number; p50Ms: number; p99Ms: number }
  /** `'disabled'` when Redis is disabled by configuration. */
  breaker: { state: 'closed' | 'open' | 'half-open' | 'disabled'; consecutiveFailures: number; threshold: number; cooldownMs: number }
  /** Times the breaker opened. */
  outages: number
  /**
   * On a Redis Cluster: the masters (`host:port`) whose own breaker is open or half-open, whose slots are being
   * answered from memory (and journaled); `null` when not a cluster.
   */
  clusterNodesDown: string[] | null
  lastError: string | null
  replay: {
    /** Values, deltas, deletes and tenant clears waiting for replay. */
    pending: number
    /** Forgotten writes whose keys still get a write-time-checked delete on replay. */
    tombstones: number
    /** Key and JSON bytes of the pending writes. */
    bytes: number
    replayed: number
    /** Writes whose value or delta the journal forgot (bounds, or refused by Redis). */
    dropped: number
    maxEntries: number
    maxBytes: number
  }
  memory: { entries: number; bytes: number; maxEntries: number; maxBytes: number }
  pool: { size: number; connections: number }
  entriesByKind: Record<string, number>
  /** Sizes of the single-flight maps: reads of one key being shared, and `getOrLoad` loads under way. */
  inflight: { reads: number; loads: number }
  /** Times the adapter dialled Redis or probed it after an outage. */
  connectionAttempts: number
  /** The old adapter's `cache.config` (`keyPrefix` written as it wrote it, ending in `:`), plus the resolved settings below. */
  config: LegacyCacheConfig & {
    maxValueBytes: number
    loaderTimeoutMs: number
    readThrough: { failSafeThrottleMs: number; distributedLock: boolean; lockTtlMs: number; lockWaitMs: number }
  }
  /** The read-through's counters. */
  readThrough: ReadThroughStats
  /** Tags this instance's memory-tier index knows. */
  taggedSets: number
  /** `null` when alerts are off or Redis is disabled. */
  redisWatch: RedisWatchStats | null
  /** The near cache (option `nearCache`). */
  near: NearCacheStats
}

// The old adapter's stats and health fields -------------------------------
// The JavaScript adapter this package replaces returned these; the server's
// health consumers and deployment checks read them, so they stay, with the
// old names and types, next to the new fields.

/** The old adapter's seven in-process maps (`getStats().fallbackMaps`). */
export interface LegacyFallbackMaps {
  /** 0: this adapter keeps no such map (conversation contexts count under `conversationContexts`). */
  activeConversations: number
  /** Requests remembered with `setInflightRequest` and not settled yet. */
  inflightRequests: number
  /** Sessions set with `setHumanControlSession`. */
  humanControlSessions: number
  /** 0: this adapter keeps no such map. */
  humanControlQueue: number
  /** 0: this adapter keeps no such map. */
  pendingDatabaseWrites: number
  /** 0: this adapter keeps no such map. */
  conversationMetadata: number
  /** 0: this adapter keeps no such map. */
  activeCallSessions: number
}

/** The old adapter's `getStats().cache.redis`: its Redis connection metrics. */
export interface LegacyRedisMetrics {
  /** As `cache.hits`. */
  hits: number
  /** As `cache.misses`. */
  misses: number
  /** Failed Redis round trips (as `cache.redisErrors`). */
  errors: number
  /** `cache.hitRate` as a percentage string, `"NN.NN%"`. */
  hitRate: string
  /** `cache.latency.meanMs` as `"N.NNms"`. */
  avgResponseTime: string
  /** Redis enabled, the breaker closed (mode `'redis'`) and connections open. */
  isConnected: boolean
  /** As `cache.connectionAttempts`. */
  connectionAttempts: number
}

/** The old adapter's `getStats().cache.config`. */
export interface LegacyCacheConfig {
  /** `keyPrefix` as the old adapter wrote it, ending in `:` (`'jack:dev:'`). */
  keyPrefix: string
  /** Seconds, for the generic methods (`CACHE_DEFAULT_TTL`, else 7200). */
  defaultTTL: number
  compressionThreshold: number
}

/** The old adapter's `cache.fallback`: the memory tier, always on. */
export interface LegacyFallbackInfo {
  /** Entries in the memory tier (as `cache.memory.entries`). */
  size: number
  enabled: true
}

/** The old adapter's `healthCheck().cache.redis`. */
export interface LegacyRedisHealth {
  /** `'unhealthy'` also while Redis is disabled by configuration (with `error` saying so). */
  status: 'healthy' | 'unhealthy'
  /** Round trip of a `PING`, whole milliseconds (`"0ms"`); present when healthy. */
  responseTime?: string
  /** Redis's `used_memory` (`INFO memory`) in whole MB (`"1MB"`); present when healthy. */
  memory?: string
  /** Why Redis is unhealthy. */
  error?: string
}

/** The old adapter's `healthCheck().cache.cache`: the cache layer itself. */
export interface LegacyCacheHealth {
  /** `'healthy'` while the adapter answers calls (from Redis or memory); `'unhealthy'` once closed. */
  status: 'healthy' | 'unhealthy'
  fallbackEnabled: true
  /** Entries in the memory tier. */
  fallbackSize: number
}

export interface CacheStats {
  redisEnabled: boolean
  ttlConfig: Required<TtlOptions>
  /** Entries per memory-tier kind, plus the old adapter's seven maps. */
  fallbackMaps: LegacyFallbackMaps & Record<string, number>
  /** The new counters, plus the old adapter's `redis`, `fallback` and `config`. */
  cache: CacheCounters & { redis: LegacyRedisMetrics; fallback: LegacyFallbackInfo }
  alerts: AlertStats
}

export interface RedisHealth {
  status: 'healthy' | 'unhealthy' | 'disabled'
  enabled: boolean
  connected?: boolean
  latencyMs?: number
  version?: string | null
  /** Redis's `used_memory` (`INFO memory`), when healthy and Redis says. */
  usedMemoryBytes?: number | null
  /** Why Redis is unhealthy. */
  error?: string
}

export interface HealthReport {
  /** `'healthy'`: Redis serving, or disabled by choice. `'degraded'`: serving from memory because Redis fails. */
  status: 'healthy' | 'degraded'
  timestamp: string
  /** `fallbackMaps`: the old adapter's field, the number of maps `getStats().fallbackMaps` lists. */
  adapter: { status: 'healthy' | 'degraded'; redisEnabled: boolean; mode: Mode; fallbackMaps: number }
  redis: RedisHealth
  /** The counters of `getStats().cache`, plus the old adapter's `fallback`, `redis` and `cache`. */
  cache: CacheCounters & { fallback: LegacyFallbackInfo; redis: LegacyRedisHealth; cache: LegacyCacheHealth }
  /** The active alerts, as `getAlerts()`. */
  alerts: Alert[]
}

export interface MigrationResult {
  conversationContexts: number
  conversationSummaries: number
  phoneToLeadMapping: number
  failed: number
}

export interface CloseResult {
  /** Writes acknowledged during an outage that never reached Redis (0 when all were replayed). */
  unreplayed: number
}

type MapLike<V> = Map<string, V> | Record<string, V> | Array<[string, V]>

/** The optional last argument of the domain setters. */
export interface TagOptions {
  /** Tags of the entry (both keys of a mapping), for `invalidateTags`. */
  tags?: string[]
}

export declare class CacheAdapter extends EventEmitter {
  /** Never throws because Redis is down: it connects in the background and serves from memory until Redis answers. */
  constructor(options?: CacheAdapterOptions)

  /** `'redis'`, or `'memory'` while Redis is disabled, unreachable or failing. */
  readonly mode: Mode

  on(event: 'modeChange', listener: (event: ModeChangeEvent) => void): this
  /** Each raise and resolve of an alert. */
  on(event: 'alert', listener: (event: AlertEvent) => void): this

  // Domain methods
  getConversationContext(orgId: string | null | undefined, phone: string): Promise<JsonValue[] | null>
  setConversationContext(orgId: string | null | undefined, phone: string, messages: JsonValue, options?: TagOptions): Promise<true>
  getConversationSummary(orgId: string | null | undefined, phone: string): Promise<JsonValue | null>
  setConversationSummary(orgId: string | null | undefined, phone: string, summary: JsonValue, options?: TagOptions): Promise<true>
  getConversationHistoryCache(orgId: string | null | undefined, phone: string): Promise<JsonValue[] | null>
  setConversationHistoryCache(orgId: string | null | undefined, phone: string, messages: JsonValue, options?: TagOptions): Promise<true>
  getPhoneToLeadMapping(phone: string): Promise<string | null>
  /** Writes both phone→lead and lead→phone, in one round trip. */
  setPhoneToLeadMapping(phone: string, leadId: string, options?: TagOptions): Promise<true>
  /** The phone exactly as it was given to `setPhoneToLeadMapping`. */
  getLeadToPhoneMapping(leadId: string): Promise<string | null>
  getDynamicLead(leadId: string): Promise<JsonValue | null>
  setDynamicLead(leadId: string, lead: JsonValue, options?: TagOptions): Promise<true>
  /** The organisation's name. */
  getOrganizationData(orgId: string | null | undefined): Promise<JsonValue | null>
  /** Stores `{name, timestamp}`. */
  setOrganizationData(orgId: string | null | undefined, name: JsonValue, options?: TagOptions): Promise<true>
  getAgentConfig(agentId: string, agentPhone: string): Promise<JsonValue | null>
  setAgentConfig(agentId: string, agentPhone: string, configured?: JsonValue, options?: TagOptions): Promise<true>
  getSSEResponseCache(leadId: string, phone: string): Promise<JsonValue | null>
  setSSEResponseCache(leadId: string, phone: string, data: JsonValue, options?: TagOptions): Promise<true>
  /** Removes every entry of that org in Redis (SCAN + UNLINK, never KEYS) and in memory; resolves to the number removed. */
  clearOrganizationCache(orgId: string): Promise<number>

  // Generic methods
  get<T = JsonValue>(key: string): Promise<T | null>
  /**
   * `ttlOrOptions`: the TTL in seconds (default `CACHE_DEFAULT_TTL`, else 7200; at most 2147483647, RangeError
   * above), or `{ ttl, tags }` to tag the entry for `invalidateTags`.
   */
  set(key: string, value: JsonValue, ttlOrOptions?: number | { ttl?: number; tags?: string[] }): Promise<true>
  /** Whether something was removed. */
  delete(key: string): Promise<boolean>
  exists(key: string): Promise<boolean>
  /** Whether the key existed. */
  expire(key: string, ttlSeconds?: number): Promise<boolean>
  /** The new value. */
  increment(key: string, by?: number): Promise<number>
  decrement(key: string, by?: number): Promise<number>
  /** In the order of `keys`, `null` for a miss. */
  getMany<T = JsonValue>(keys: string[]): Promise<Array<T | null>>
  setMany(entries: MapLike<JsonValue>, ttlSeconds?: number): Promise<true>
  hget<T = JsonValue>(hash: string, field: string): Promise<T | null>
  /** The TTL applies to the whole hash and is refreshed by each write. */
  hset(hash: string, field: string, value: JsonValue, ttlSeconds?: number): Promise<true>
  hdel(hash: string, field: string): Promise<boolean>
  /** `{}` for a missing hash. */
  hgetall<T = JsonValue>(hash: string): Promise<Record<string, T>>
  /**
   * Read-through. The loader (sync or async) is called once for any number of
   * concurrent callers of the key; its `null` is cached (and then read as a
   * hit), `undefined` is not. A loader that throws or rejects rejects every
   * waiting caller with an error of the same class, message and `code` (the
   * caller whose loader ran gets the very value thrown); one that outlasts
   * `loaderTimeoutMs` rejects them with code `ERR_CACHE_LOADER`; a result
   * above `maxValueBytes` with a `RangeError`. Nothing is cached then.
   *
   * The third argument is the TTL in seconds, or `ReadThroughOptions`: with `grace` the value outlives its TTL
   * as a fail-safe fallback (served when the loader fails or times out, and at `softTimeoutMs`), `eagerRefresh`
   * refreshes hot keys before they expire, `tags` tags the value, `distributedLock` makes N instances call the
   * loader once. The loader gets `(key, ctx)`: it may change `ctx.ttl` and `ctx.tags` of what it returns.
   * A hit is one batched read whatever the options.
   */
  getOrLoad<T = JsonValue>(
    key: string,
    loader: (key: string, ctx: LoaderContext) => T | Promise<T>,
    ttlOrOptions?: number | ReadThroughOptions,
  ): Promise<T>
  /**
   * Read-through for many keys: the hits in one batched read; every missing key not already being loaded by
   * another caller goes to ONE `loadMany(missingKeys, ctx)` call (resolving to a `Map` or an object keyed by
   * key), whose values are stored in one batch; concurrent callers of any of those keys share that call. Resolves
   * to the values in the order of `keys` (`undefined` for a key `loadMany` left out; it is not cached).
   * Fail-safe, soft/hard timeouts, eager refresh and tags apply per key, as in `getOrLoad`.
   */
  getOrLoadMany<T = JsonValue>(
    keys: string[],
    loadMany: (keys: string[], ctx: BatchLoaderContext) => Promise<Map<string, T> | Record<string, T>> | Map<string, T> | Record<string, T>,
    ttlOrOptions?: number | ReadThroughOptions,
  ): Promise<Array<T | undefined>>
  /**
   * A memoised async `fn`: each call is `getOrLoad(key(...args), () => fn(...args), options)`, the seeds'
   * `@cached` decorator. Bad options throw here, not at the first call.
   */
  wrap<A extends unknown[], T>(fn: (...args: A) => T | Promise<T>, options?: WrapOptions<A>): (...args: A) => Promise<T>
  /**
   * Removes every entry carrying any of the tags: in Redis (the tag's set read with `SSCAN`, each key deleted on
   * its own node, never `KEYS`; cluster-safe) and in this instance's memory tier; other instances read Redis.
   * With `{ soft: true }` the entries are marked stale instead: still read by `get`, and still fail-safe
   * fallbacks, but the next read-through reloads them. Resolves to how many entries it removed (or marked).
   * With Redis down it reaches this instance's entries, and is redone in Redis once the adapter is back on Redis.
   */
  invalidateTags(tags: string | string[], options?: { soft?: boolean }): Promise<number>

  // Synchronous, process-local (never in Redis)
  getInflightRequest<T = unknown>(key: string): Promise<T> | null
  /** Forgets the promise by itself once it settles. */
  setInflightRequest<T = unknown>(key: string, promise: Promise<T>): true
  deleteInflightRequest(key: string): boolean
  getHumanControlSession<T = unknown>(orgId: string | null | undefined, phone: string): T | null
  setHumanControlSession(orgId: string | null | undefined, phone: string, data: unknown): true
  deleteHumanControlSession(orgId: string | null | undefined, phone: string): boolean
  /** `orgId:digits`, or the digits alone with no org. */
  createOrgKey(orgId: string | null | undefined, phone: string): string
  /** Reads the memory tier (the old adapter's stub always returned null). */
  getFromFallbackMap<T = JsonValue>(name: string, key: string): T | null
  setInFallbackMap(name: string, key: string, value: JsonValue): true

  /** Moves a running server's legacy Maps (keyed `orgId:phone` or `phone`) into the cache. */
  migrateFromMaps(maps: {
    conversationContexts?: MapLike<JsonValue>
    conversationSummaries?: MapLike<JsonValue>
    phoneToLeadMapping?: MapLike<string>
  }): Promise<MigrationResult>

  getStats(): Promise<CacheStats>
  healthCheck(): Promise<HealthReport>
  /** The active alerts, critical first. */
  getAlerts(): Promise<Alert[]>
  /**
   * Prometheus text exposition (version 0.0.4), with `cache_alert_active{alert,severity}` while alerts are on,
   * and the read-through's counters and `cache_loader_duration_seconds` histogram.
   */
  metrics(): Promise<string>
  /**
   * Waits for calls in flight, then stops. With writes journaled during an outage, first makes one attempt to
   * replay them, bounded by about `connectTimeoutMs + 5 × commandTimeoutMs`; resolves to how many it could not
   * (and emits a `CACHE_UNREPLAYED_WRITES` warning when that is not 0). Idempotent.
   */
  close(): Promise<CloseResult>
}

export default CacheAdapter
