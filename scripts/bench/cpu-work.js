// The CPU-bound task of the offload case of scripts/bench.js, shared by the worker-pool
// handler module and the Piscina worker so that both run exactly the same code: a busy loop
// on performance.now() for `ms` milliseconds (no allocation, no I/O).

/**
 * Spins for `ms` milliseconds of wall-clock time.
 * @param {number} ms
 * @returns {number} the iterations done (returned so that the loop is not optimized away)
 */
function spin(ms) {
  const until = performance.now() + ms;
  let iterations = 0;
  while (performance.now() < until) iterations++;
  return iterations;
}

module.exports = { spin };
