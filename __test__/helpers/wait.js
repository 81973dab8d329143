'use strict'
// Bounded waiting for the test files: every wait ends by itself.

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Rejects if `promise` does not settle within `ms` (guards a test against hanging). */
function guard(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`guard: ${what} did not settle within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Polls `fn` until it returns a truthy value (bounded in time and count); returns that value. */
async function until(fn, ms, what, stepMs = 25) {
  const deadline = Date.now() + ms
  let last
  for (let i = 0; i < 100000 && Date.now() < deadline; i++) {
    last = await fn()
    if (last) return last
    await sleep(stepMs)
  }
  throw new Error(`until: ${what} not reached within ${ms} ms (last: ${JSON.stringify(last)})`)
}

module.exports = { sleep, guard, until }
