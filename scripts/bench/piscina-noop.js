// Piscina worker of scripts/bench.js: the no-op task (same work as the engine's no-op cases).
module.exports = () => null;
