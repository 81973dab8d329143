#!/usr/bin/env node
'use strict'
/**
 * `npx native-cache-adapter doctor`: checks the Redis the adapter would use,
 * with the same options and environment (resolved by the adapter's own Rust
 * code), and prints one line per check. Exit status: 0 when nothing failed
 * (warnings allowed), 1 when a check failed, 2 for a usage error.
 */

const USAGE = `Usage: native-cache-adapter doctor [options]

Checks the Redis that CacheAdapter would use, reading the same environment
(REDIS_URL, REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, REDIS_DB, REDIS_TLS,
REDIS_ENABLED/USE_REDIS, CACHE_NAMESPACE, NODE_ENV, ...), and prints one line
per check: PASS, WARN or FAIL.

Options:
  --json                   print the report as JSON
  --url <url>              redis://[user:pass@]host:port/db or rediss://...
  --key-prefix <prefix>    the adapter's keyPrefix (default from CACHE_NAMESPACE/NODE_ENV)
  --cluster-nodes <urls>   comma-separated redis:// seeds of a Redis Cluster
  --options <json>         any CacheAdapter options as a JSON object (the flags above win)
  -h, --help               this text

There is no --password: give it in REDIS_PASSWORD or the URL, so that it stays
out of the process list and the shell's history. It is never printed.

Exit status: 0 no check failed (warnings allowed), 1 a check failed, 2 usage error.`

class UsageError extends Error {}

/** argv (after `node bin/doctor.js`) → {help, json, options}. */
function parseArgs(argv) {
  const args = [...argv]
  const out = { help: false, json: false, options: {} }
  const flags = {}
  let command = null
  while (args.length > 0) {
    let arg = args.shift()
    let inline = null
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1
    if (eq > 0) {
      inline = arg.slice(eq + 1)
      arg = arg.slice(0, eq)
    }
    const value = () => {
      if (inline !== null) return inline
      if (args.length === 0 || args[0].startsWith('--')) throw new UsageError(`${arg} needs a value`)
      return args.shift()
    }
    switch (arg) {
      case '-h':
      case '--help':
        out.help = true
        break
      case '--json':
        out.json = true
        break
      case '--url':
        flags.url = value()
        break
      case '--key-prefix':
        flags.keyPrefix = value()
        break
      case '--cluster-nodes':
        flags.clusterNodes = value().split(',').map((s) => s.trim()).filter(Boolean)
        break
      case '--options': {
        let parsed
        try {
          parsed = JSON.parse(value())
        } catch (err) {
          throw new UsageError(`--options must be a JSON object: ${err.message}`)
        }
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
          throw new UsageError('--options must be a JSON object')
        }
        Object.assign(out.options, parsed)
        break
      }
      default:
        if (arg.startsWith('-')) throw new UsageError(`unknown option ${arg}`)
        if (command !== null) throw new UsageError(`unexpected argument ${arg}`)
        command = arg
    }
  }
  Object.assign(out.options, flags)
  if (!out.help && command !== 'doctor') {
    throw new UsageError(command === null ? 'no command given' : `unknown command ${command}`)
  }
  return out
}

const LABEL = { pass: 'PASS', warn: 'WARN', fail: 'FAIL' }

/** One aligned line per check, and a summary. */
function formatReport(report) {
  const width = Math.max(...report.checks.map((c) => c.name.length))
  const lines = [`native-cache-adapter doctor: ${report.target || '(no target)'}`]
  for (const c of report.checks) lines.push(`${LABEL[c.status] || c.status.toUpperCase()}  ${c.name.padEnd(width)}  ${c.detail}`)
  const count = (s) => report.checks.filter((c) => c.status === s).length
  lines.push('')
  lines.push(`${report.checks.length} checks: ${count('pass')} pass, ${count('warn')} warn, ${count('fail')} fail`)
  return lines.join('\n')
}

/** The report with its fields in reading order (the native side sorts them). */
function ordered({ ok, target, checks }) {
  return { ok, target, checks: checks.map(({ name, status, detail }) => ({ name, status, detail })) }
}

async function main(argv) {
  let parsed
  try {
    parsed = parseArgs(argv)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`native-cache-adapter: ${err.message}\n\n${USAGE}\n`)
    return 2
  }
  if (parsed.help) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  const { doctor } = require('../binding.js')
  const report = await doctor(JSON.stringify(parsed.options))
  process.stdout.write(parsed.json ? `${JSON.stringify(ordered(report), null, 2)}\n` : `${formatReport(report)}\n`)
  return report.ok ? 0 : 1
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (err) => {
      // Only the message: the options (and so any password) are never echoed.
      process.stderr.write(`native-cache-adapter doctor: ${err && err.message ? err.message : err}\n`)
      process.exitCode = 1
    },
  )
}

module.exports = { parseArgs, formatReport }
