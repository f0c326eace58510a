// Piscina worker of the offload case of scripts/bench.js: `input.ms` ms of CPU, the same code
// as the worker pool's 'bench:cpu' handler (scripts/bench/pool-handlers.js).
const { spin } = require('./cpu-work');

module.exports = (input) => {
  spin(input.ms);
  return null;
};
