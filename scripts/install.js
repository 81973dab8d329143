'use strict'
// npm install hook: keeps the shipped native binary when it loads on this
// machine, and otherwise builds it from source with the Rust toolchain.
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const { binaryName } = require(path.join(root, 'package.json')).napi

function platformSuffix() {
  const { platform, arch } = process
  if (platform !== 'linux') return `${platform}-${arch}`
  const glibc = process.report?.getReport?.().header?.glibcVersionRuntime
  return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
}

const target = path.join(root, `${binaryName}.${platformSuffix()}.node`)

function loads() {
  if (!fs.existsSync(target)) return false
  try {
    require(target)
    return true
  } catch (e) {
    console.warn(`[native-cache-adapter] the shipped binary does not load here (${e.message}); building from source`)
    return false
  }
}

if (loads()) process.exit(0)

try {
  execFileSync('cargo', ['--version'], { stdio: 'ignore' })
} catch {
  console.error(
    `[native-cache-adapter] no prebuilt binary for ${platformSuffix()} and no Rust toolchain (cargo) to build one.\n` +
      'Install Rust from https://rustup.rs and run npm install again.',
  )
  process.exit(1)
}

console.log(`[native-cache-adapter] building the native addon for ${platformSuffix()} with cargo (a few minutes the first time)`)
execFileSync('cargo', ['build', '--release', '--lib'], { cwd: root, stdio: 'inherit' })
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target')
const crate = 'redis_cache_adapter'
const built = { darwin: `lib${crate}.dylib`, win32: `${crate}.dll` }[process.platform] ?? `lib${crate}.so`
fs.copyFileSync(path.join(targetDir, 'release', built), target)
console.log(`[native-cache-adapter] built ${path.basename(target)}`)
