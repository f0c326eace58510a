// Handler module of the worker-pool cases of scripts/bench.js (loaded by each pool worker):
// - 'bench:noop': the no-op task (same work as the inline, native and Piscina no-op cases);
// - 'bench:cpu': `input.ms` ms of CPU (the offload case), the same code as piscina-cpu.js.
const { spin } = require('./cpu-work');

module.exports = {
  'bench:noop': () => null,
  'bench:cpu': (input) => {
    spin(input.ms);
    return null;
  },
};
