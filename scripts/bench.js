/**
 * decaf-tasks benchmark: no-op throughput and one-at-a-time latency, and CPU offload to a
 * worker pool, against Piscina.
 *
 *   npm run bench [-- --n 100000 --chunk 1000 --concurrency 1024 --window 8192
 *                    --latency-n 1000 --per-worker 256 --offload-n 200 --offload-ms 10
 *                    --only inline,native,pool,piscina,offload --json [--out file.json]]
 *
 * 1. inline JS no-op: `pushMany` in chunks, handler `(input) => null`, a listener on
 *    `'event'` counting every event; done when the N terminal status events arrived.
 * 2. native no-op: the same with `native:noop` (no JS handler), every event to a JS listener.
 * 3. worker pool no-op: the same with `bench:noop` run by a 2-worker pool
 *    (`workerPool: { size: 2, modules: ['scripts/bench/pool-handlers.js'],
 *    concurrencyPerWorker: --per-worker }`), every event to a JS listener on the main thread.
 * 4. Piscina (2 threads, worker returning null): N `pool.run()`, chunks awaited with
 *    `Promise.all`, the same bound of tasks in flight.
 * 5. ratios inline / Piscina, native / Piscina and pool / Piscina (targets: inline ≥ 3×,
 *    pool ≥ 5× Piscina).
 * 6. latency: tasks run one at a time (push, await the terminal status event, next),
 *    push → finish percentiles for inline JS, native and pool (target p50 < 1 ms for inline
 *    and native); Piscina for reference.
 * 7. CPU offload: --offload-n tasks of --offload-ms ms of CPU each (a busy loop on
 *    `performance.now()`, scripts/bench/cpu-work.js) on 2 threads: a 2-worker pool with
 *    `concurrencyPerWorker: 1` (all pushed at once, done at the last terminal status event)
 *    and Piscina (2 threads, all `pool.run()` at once). Makespan efficiency = ideal / actual,
 *    ideal = n × ms / 2 (target ≥ 90% for the pool), and the main thread's event-loop delay
 *    during the run (`monitorEventLoopDelay({ resolution: 1 })`, p99 and max; an idle loop
 *    reads ≈ 1.1 ms: the 1 ms timer period is included).
 * Each case is warmed up on its own service / pool first. `--only` picks cases among
 * inline, native, pool, piscina, offload (the ratios need piscina too).
 */

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { monitorEventLoopDelay } = require('node:perf_hooks');
const { parseArgs } = require('node:util');
const v8 = require('node:v8');
const vm = require('node:vm');
const { Piscina } = require('piscina');
const { TaskService } = require('..');
const { percentiles, fmt, fmtMs, positiveInt, table } = require('./lib/stats');

const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '100000' },
    chunk: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '1024' },
    window: { type: 'string', default: '8192' },
    'latency-n': { type: 'string', default: '1000' },
    'per-worker': { type: 'string', default: '256' },
    'offload-n': { type: 'string', default: '200' },
    'offload-ms': { type: 'string', default: '10' },
    'case-timeout': { type: 'string', default: '300' },
    only: { type: 'string', default: 'inline,native,pool,piscina,offload' },
    json: { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(
    'usage: node scripts/bench.js [--n N] [--chunk N] [--concurrency N] [--window N] ' +
      '[--latency-n N] [--per-worker N] [--offload-n N] [--offload-ms ms] [--case-timeout s] ' +
      '[--only inline,native,pool,piscina,offload] [--json] [--out file.json]',
  );
  process.exit(0);
}

const N = positiveInt(args.n, '--n');
const CHUNK = Math.min(positiveInt(args.chunk, '--chunk'), N);
const CONCURRENCY = positiveInt(args.concurrency, '--concurrency');
/** Most tasks in flight (pushed or submitted, not finished) at any time, in every case. */
const WINDOW = Math.max(positiveInt(args.window, '--window'), CHUNK);
const LATENCY_N = positiveInt(args['latency-n'], '--latency-n');
const CASE_TIMEOUT_MS = positiveInt(args['case-timeout'], '--case-timeout') * 1000;
const WARMUP_N = Math.min(N, Math.max(CHUNK, Math.round(N / 10)));
const LATENCY_WARMUP_N = Math.min(200, LATENCY_N);
const PISCINA_THREADS = 2;
/** Worker threads of the pool cases: as many as Piscina's. */
const POOL_SIZE = PISCINA_THREADS;
const PER_WORKER = positiveInt(args['per-worker'], '--per-worker');
const OFFLOAD_N = positiveInt(args['offload-n'], '--offload-n');
const OFFLOAD_MS = positiveInt(args['offload-ms'], '--offload-ms');
const OFFLOAD_WARMUP_N = Math.min(OFFLOAD_N, 4 * POOL_SIZE);
const POOL_HANDLERS = path.join(__dirname, 'bench', 'pool-handlers.js');
const ALL_CASES = ['inline', 'native', 'pool', 'piscina', 'offload'];
const CASES = new Set(args.only.split(',').map((c) => c.trim()));
for (const c of CASES) {
  if (!ALL_CASES.includes(c)) {
    console.error(`--only: unknown case '${c}' (${ALL_CASES.join(', ')})`);
    process.exit(2);
  }
}
const TERMINAL = new Set(['succeeded', 'failed', 'canceled']);

// A full GC between cases, so that one case does not pay for the garbage of another.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');

function log(msg) {
  process.stderr.write(`${msg}\n`);
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} did not finish within ${CASE_TIMEOUT_MS / 1000} s`)),
      CASE_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------
// Engine throughput: push `n` tasks of `spec` in chunks with at most WINDOW in flight;
// a listener on 'event' counts every event; done at the n-th terminal status event.

async function engineThroughput(service, spec, n) {
  const chunk = Array.from({ length: CHUNK }, () => spec);
  let events = 0;
  let terminal = 0;
  let pushed = 0;
  let wake;
  let done;
  let endAt = 0;
  const finished = new Promise((resolve) => {
    done = resolve;
  });
  const onEvent = (evt) => {
    events++;
    if (evt.classification === 'status' && TERMINAL.has(evt.payload.status)) {
      terminal++;
      if (terminal === n) {
        endAt = performance.now();
        done();
      } else if (wake !== undefined && pushed - terminal <= WINDOW - CHUNK) {
        const w = wake;
        wake = undefined;
        w();
      }
    }
  };
  service.on('event', onEvent);
  const startAt = performance.now();
  try {
    while (pushed < n) {
      const size = Math.min(CHUNK, n - pushed);
      await service.pushMany(size === CHUNK ? chunk : chunk.slice(0, size));
      pushed += size;
      if (pushed < n && pushed - terminal > WINDOW - CHUNK) {
        await new Promise((resolve) => {
          wake = resolve;
        });
      }
    }
    await finished;
  } finally {
    service.off('event', onEvent);
  }
  const seconds = (endAt - startAt) / 1000;
  return { tasks: n, events, seconds, tasksPerSec: n / seconds, eventsPerSec: events / seconds };
}

// Piscina throughput: chunks of `pool.run(task)` awaited with Promise.all, at most WINDOW in
// flight.
async function piscinaThroughput(pool, n, task = null) {
  const inFlight = [];
  let inFlightTasks = 0;
  let submitted = 0;
  const startAt = performance.now();
  while (submitted < n) {
    const size = Math.min(CHUNK, n - submitted);
    const runs = new Array(size);
    for (let i = 0; i < size; i++) runs[i] = pool.run(task);
    inFlight.push({ size, all: Promise.all(runs) });
    inFlightTasks += size;
    submitted += size;
    while (inFlightTasks > WINDOW - CHUNK && inFlight.length > 0) {
      const oldest = inFlight.shift();
      await oldest.all;
      inFlightTasks -= oldest.size;
    }
  }
  await Promise.all(inFlight.map((c) => c.all));
  const seconds = (performance.now() - startAt) / 1000;
  return { tasks: n, events: null, seconds, tasksPerSec: n / seconds, eventsPerSec: null };
}

// ---------------------------------------------------------------------------------------
// Latency: one task at a time; push → its terminal status event.

async function engineLatency(service, spec, n) {
  const samples = new Array(n);
  let waitingFor;
  let resolveOne;
  let finishedAt = 0;
  const onStatus = (evt) => {
    if (evt.taskId === waitingFor && TERMINAL.has(evt.payload.status)) {
      finishedAt = performance.now();
      waitingFor = undefined;
      resolveOne();
    }
  };
  service.on('status', onStatus);
  try {
    for (let i = 0; i < n; i++) {
      const finished = new Promise((resolve) => {
        resolveOne = resolve;
      });
      const startAt = performance.now();
      const task = await service.push(spec);
      waitingFor = task.id;
      await finished;
      samples[i] = finishedAt - startAt;
    }
  } finally {
    service.off('status', onStatus);
  }
  return percentiles(samples, [50, 90, 99]);
}

async function piscinaLatency(pool, n) {
  const samples = new Array(n);
  for (let i = 0; i < n; i++) {
    const startAt = performance.now();
    await pool.run(null);
    samples[i] = performance.now() - startAt;
  }
  return percentiles(samples, [50, 90, 99]);
}

// ---------------------------------------------------------------------------------------
// CPU offload: `run()` measured with the main thread's event-loop delay.

/**
 * Runs `run()` under `monitorEventLoopDelay({ resolution: 1 })`. The histogram is enabled
 * ~20 ms before `run()` starts: it records nothing until its first tick, and `reset()` would
 * drop the interval in progress. The few idle samples of those 20 ms (≈ 1.1 ms each) do not
 * move p99 or max.
 */
async function withEventLoopDelay(run) {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  await new Promise((resolve) => setTimeout(resolve, 20));
  let result;
  try {
    result = await run();
  } finally {
    histogram.disable();
  }
  const ms = (ns) => ns / 1e6;
  return {
    ...result,
    eventLoopDelayMs: {
      p50: ms(histogram.percentile(50)),
      p99: ms(histogram.percentile(99)),
      max: ms(histogram.max),
      mean: ms(histogram.mean),
      count: histogram.count,
    },
  };
}

/** Makespan figures of an offload run (`seconds` from the first push to the last result). */
function offloadFigures({ seconds }) {
  const idealMs = (OFFLOAD_N * OFFLOAD_MS) / POOL_SIZE;
  const makespanMs = seconds * 1000;
  return {
    tasks: OFFLOAD_N,
    taskMs: OFFLOAD_MS,
    idealMs,
    makespanMs,
    efficiency: idealMs / makespanMs,
  };
}

// ---------------------------------------------------------------------------------------

function newService(options) {
  const service = new TaskService({ concurrency: CONCURRENCY, ...options });
  service.on('error', (err) => log(`service error: ${err.stack ?? err}`));
  service.on('warning', (message) => log(`service warning: ${message}`));
  return service;
}

/** Options of a service whose handlers run in a pool of POOL_SIZE workers. */
function poolOptions(concurrencyPerWorker) {
  return { workerPool: { size: POOL_SIZE, modules: [POOL_HANDLERS], concurrencyPerWorker } };
}

/** Starts the service (its pool, if any): the ms it took. */
async function startService(label, service) {
  const startAt = performance.now();
  await withTimeout(service.start(), `${label} start`);
  return performance.now() - startAt;
}

async function engineCase(label, spec, { register, options } = {}) {
  gc();
  const service = newService(options);
  register?.(service);
  try {
    const startMs = await startService(label, service);
    if (options?.workerPool !== undefined) {
      log(`${label}: ${service.workerCount} workers ready in ${fmtMs(startMs)} ms`);
    }
    log(`${label}: warm-up (${fmt(WARMUP_N)} tasks, ${LATENCY_WARMUP_N} sequential)…`);
    await withTimeout(engineThroughput(service, spec, WARMUP_N), `${label} warm-up`);
    await withTimeout(engineLatency(service, spec, LATENCY_WARMUP_N), `${label} warm-up`);
    gc();
    log(`${label}: ${fmt(N)} tasks…`);
    const throughput = await withTimeout(engineThroughput(service, spec, N), label);
    log(`${label}: latency, ${fmt(LATENCY_N)} tasks one at a time…`);
    const latency = await withTimeout(engineLatency(service, spec, LATENCY_N), `${label} latency`);
    return { throughput, latency };
  } finally {
    await service.shutdown();
  }
}

async function poolOffloadCase() {
  const label = 'offload, worker pool';
  gc();
  const service = newService(poolOptions(1));
  const spec = { classification: 'bench:cpu', input: { ms: OFFLOAD_MS } };
  try {
    const startMs = await startService(label, service);
    log(`${label}: ${service.workerCount} workers ready in ${fmtMs(startMs)} ms`);
    log(`${label}: warm-up (${OFFLOAD_WARMUP_N} tasks)…`);
    await withTimeout(engineThroughput(service, spec, OFFLOAD_WARMUP_N), `${label} warm-up`);
    gc();
    log(`${label}: ${OFFLOAD_N} tasks of ${OFFLOAD_MS} ms…`);
    const r = await withTimeout(
      withEventLoopDelay(() => engineThroughput(service, spec, OFFLOAD_N)),
      label,
    );
    return { ...offloadFigures(r), events: r.events, eventLoopDelayMs: r.eventLoopDelayMs };
  } finally {
    await service.shutdown();
  }
}

async function piscinaOffloadCase() {
  const label = 'offload, Piscina';
  gc();
  const pool = new Piscina({
    filename: path.join(__dirname, 'bench', 'piscina-cpu.js'),
    minThreads: PISCINA_THREADS,
    maxThreads: PISCINA_THREADS,
  });
  const task = { ms: OFFLOAD_MS };
  try {
    log(`${label}: warm-up (${OFFLOAD_WARMUP_N} tasks)…`);
    await withTimeout(piscinaThroughput(pool, OFFLOAD_WARMUP_N, task), `${label} warm-up`);
    gc();
    log(`${label}: ${OFFLOAD_N} tasks of ${OFFLOAD_MS} ms…`);
    const r = await withTimeout(
      withEventLoopDelay(() => piscinaThroughput(pool, OFFLOAD_N, task)),
      label,
    );
    return { ...offloadFigures(r), events: null, eventLoopDelayMs: r.eventLoopDelayMs };
  } finally {
    await pool.destroy();
  }
}

async function piscinaCase() {
  gc();
  const pool = new Piscina({
    filename: path.join(__dirname, 'bench', 'piscina-noop.js'),
    minThreads: PISCINA_THREADS,
    maxThreads: PISCINA_THREADS,
  });
  try {
    log(`piscina: warm-up (${fmt(WARMUP_N)} tasks, ${LATENCY_WARMUP_N} sequential)…`);
    await withTimeout(piscinaThroughput(pool, WARMUP_N), 'piscina warm-up');
    await withTimeout(piscinaLatency(pool, LATENCY_WARMUP_N), 'piscina warm-up');
    gc();
    log(`piscina: ${fmt(N)} tasks…`);
    const throughput = await withTimeout(piscinaThroughput(pool, N), 'piscina');
    log(`piscina: latency, ${fmt(LATENCY_N)} tasks one at a time…`);
    const latency = await withTimeout(piscinaLatency(pool, LATENCY_N), 'piscina latency');
    return { throughput, latency };
  } finally {
    await pool.destroy();
  }
}

function addonBuild() {
  const file = fs
    .readdirSync(path.join(__dirname, '..'))
    .find((f) => f.startsWith('decaf-tasks.') && f.endsWith('.node'));
  if (file === undefined) return { file: null, bytes: null, kind: 'unknown' };
  const stat = fs.statSync(path.join(__dirname, '..', file));
  const bytes = stat.size;
  // A release build is a few MB; a debug build (with debug info) is tens of MB.
  return {
    file,
    bytes,
    mtime: stat.mtime.toISOString(),
    kind: bytes > 20 * 1024 * 1024 ? 'debug' : 'release',
  };
}

/** Compilers running on this machine now (`napi build`, cargo, rustc, tsc): they skew numbers. */
function runningBuilds() {
  const found = new Set();
  let pids = [];
  try {
    pids = fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return [];
  }
  for (const pid of pids) {
    let argv;
    try {
      argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const exe = path.basename(argv[0] ?? '');
    const args = argv.slice(1);
    if (
      exe === 'rustc' ||
      exe === 'cargo' ||
      (exe === 'node' && args.some((a) => a.endsWith('/tsc')))
    ) {
      found.add(exe === 'node' ? 'tsc' : exe);
    } else if (args.some((a) => a.endsWith('/napi') || a === 'napi') && args.includes('build')) {
      found.add('napi build');
    }
  }
  return [...found];
}

async function main() {
  const addon = addonBuild();
  const env = {
    node: process.version,
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    addon,
  };
  console.log(
    `decaf-tasks bench: N=${fmt(N)}, chunk ${fmt(CHUNK)}, concurrency ${fmt(CONCURRENCY)}, ` +
      `at most ${fmt(WINDOW)} in flight; Node ${env.node}, ${env.cpus} CPUs (${env.cpuModel})`,
  );
  console.log(
    `addon: ${addon.file} (${fmt((addon.bytes ?? 0) / 1024 / 1024, 1)} MB, ${addon.kind} build)`,
  );
  if (addon.kind === 'debug') console.log('WARNING: debug build of the addon: numbers are low');
  // Compilers seen running, sampled before each case and at the end: where → what.
  const builds = {};
  const checkBuilds = (where) => {
    const found = runningBuilds();
    if (found.length > 0) builds[where] = found;
    return found;
  };
  const atStart = checkBuilds('start');
  if (atStart.length > 0) {
    console.log(`WARNING: ${atStart.join(', ')} running on this machine: numbers are skewed`);
  }

  const results = {};
  if (CASES.has('inline')) {
    checkBuilds('inline');
    results.inline = await engineCase(
      'inline JS no-op',
      { classification: 'bench:noop' },
      { register: (s) => s.register('bench:noop', () => null) },
    );
  }
  if (CASES.has('native')) {
    checkBuilds('native');
    results.native = await engineCase('native no-op', { classification: 'native:noop' });
  }
  if (CASES.has('pool')) {
    checkBuilds('pool');
    results.pool = await engineCase(
      'worker pool no-op',
      { classification: 'bench:noop' },
      { options: poolOptions(PER_WORKER) },
    );
  }
  if (CASES.has('piscina')) {
    checkBuilds('piscina');
    results.piscina = await piscinaCase();
  }
  const offload = {};
  if (CASES.has('offload')) {
    checkBuilds('offload');
    offload.pool = await poolOffloadCase();
    offload.piscina = await piscinaOffloadCase();
  }
  checkBuilds('end');
  env.buildsSeen = builds;
  const { inline, native, pool, piscina } = results;
  const names = {
    inline: 'inline JS no-op',
    native: 'native no-op',
    pool: `worker pool no-op (${POOL_SIZE} workers)`,
    piscina: `Piscina (${PISCINA_THREADS} threads)`,
  };
  const mark = (ok) => (ok ? 'PASS' : 'MISS');
  const ratios = {};
  const targets = {};

  if (Object.keys(results).length > 0) {
    console.log(`\nThroughput (${fmt(N)} no-op tasks, after warm-up):`);
    console.log(
      table(
        ['case', 'tasks/s', 'events/s', 'events', 'seconds'],
        Object.entries(results).map(([key, { throughput: r }]) => [
          names[key],
          fmt(r.tasksPerSec),
          r.eventsPerSec === null ? '-' : fmt(r.eventsPerSec),
          r.events === null ? '-' : fmt(r.events),
          r.seconds.toFixed(3),
        ]),
      ),
    );
    if (pool !== undefined) {
      console.log(
        `worker pool: ${POOL_SIZE} workers, concurrencyPerWorker ${fmt(PER_WORKER)}, ` +
          `service concurrency ${fmt(CONCURRENCY)}; every event delivered on the main thread`,
      );
    }
  }
  if (piscina !== undefined) {
    const parts = [];
    if (inline !== undefined) {
      ratios.inlineOverPiscina = inline.throughput.tasksPerSec / piscina.throughput.tasksPerSec;
      parts.push(
        `inline / Piscina = ${ratios.inlineOverPiscina.toFixed(2)}x ` +
          `(target >= 3x: ${mark(ratios.inlineOverPiscina >= 3)})`,
      );
    }
    if (native !== undefined) {
      ratios.nativeOverPiscina = native.throughput.tasksPerSec / piscina.throughput.tasksPerSec;
      parts.push(`native / Piscina = ${ratios.nativeOverPiscina.toFixed(2)}x`);
    }
    if (pool !== undefined) {
      ratios.poolOverPiscina = pool.throughput.tasksPerSec / piscina.throughput.tasksPerSec;
      parts.push(
        `pool / Piscina = ${ratios.poolOverPiscina.toFixed(2)}x ` +
          `(target >= 5x: ${mark(ratios.poolOverPiscina >= 5)})`,
      );
    }
    if (parts.length > 0) console.log(`\nRatios: ${parts.join(', ')}`);
  } else if (pool !== undefined || inline !== undefined) {
    console.log('\nRatios: need the piscina case in the same run (--only …,piscina)');
  }

  if (Object.keys(results).length > 0) {
    console.log(`\nLatency (${fmt(LATENCY_N)} tasks one at a time, push → terminal status, ms):`);
    console.log(
      table(
        ['case', 'p50', 'p90', 'p99', 'max'],
        Object.entries(results).map(([key, { latency: p }]) => [
          key === 'piscina' ? 'Piscina pool.run() (reference)' : names[key],
          fmtMs(p.p50),
          fmtMs(p.p90),
          fmtMs(p.p99),
          fmtMs(p.max),
        ]),
      ),
    );
  }
  if (ratios.inlineOverPiscina !== undefined) {
    targets.inlineAtLeast3xPiscina = ratios.inlineOverPiscina >= 3;
  }
  if (ratios.poolOverPiscina !== undefined) {
    targets.poolAtLeast5xPiscina = ratios.poolOverPiscina >= 5;
  }
  if (inline !== undefined) targets.inlineP50Below1ms = inline.latency.p50 < 1;
  if (native !== undefined) targets.nativeP50Below1ms = native.latency.p50 < 1;
  const latencyTargets = [];
  if (inline !== undefined) latencyTargets.push(`inline ${mark(targets.inlineP50Below1ms)}`);
  if (native !== undefined) latencyTargets.push(`native ${mark(targets.nativeP50Below1ms)}`);
  if (latencyTargets.length > 0) console.log(`Target p50 < 1 ms: ${latencyTargets.join(', ')}`);

  if (offload.pool !== undefined) {
    const idealMs = offload.pool.idealMs;
    console.log(
      `\nCPU offload (${fmt(OFFLOAD_N)} tasks × ${OFFLOAD_MS} ms busy loop on ${POOL_SIZE} threads, ` +
        `ideal makespan ${fmt(idealMs)} ms; main-thread event-loop delay, resolution 1 ms):`,
    );
    console.log(
      table(
        ['case', 'makespan ms', 'efficiency', 'loop delay p99 ms', 'loop delay max ms'],
        [
          [`worker pool (${POOL_SIZE} workers × 1)`, offload.pool],
          [`Piscina (${PISCINA_THREADS} threads)`, offload.piscina],
        ].map(([name, r]) => [
          name,
          fmt(r.makespanMs),
          `${(r.efficiency * 100).toFixed(1)}%`,
          fmtMs(r.eventLoopDelayMs.p99),
          fmtMs(r.eventLoopDelayMs.max),
        ]),
      ),
    );
    targets.poolOffloadEfficiencyAtLeast90 = offload.pool.efficiency >= 0.9;
    console.log(
      `Target efficiency >= 90%: pool ${mark(targets.poolOffloadEfficiencyAtLeast90)} ` +
        `(an idle event loop reads ≈ 1.1 ms: the 1 ms timer period is included)`,
    );
  }

  const seen = Object.entries(builds).filter(([where]) => where !== 'start');
  if (seen.length > 0) {
    console.log(
      `\nWARNING: compilers ran during the bench (${seen
        .map(([where, what]) => `${what.join('+')} at ${where}`)
        .join(', ')}): numbers are skewed`,
    );
  }

  const result = {
    env,
    params: {
      n: N,
      chunk: CHUNK,
      concurrency: CONCURRENCY,
      window: WINDOW,
      latencyN: LATENCY_N,
      warmupN: WARMUP_N,
      piscinaThreads: PISCINA_THREADS,
      poolSize: POOL_SIZE,
      concurrencyPerWorker: PER_WORKER,
      offloadN: OFFLOAD_N,
      offloadMs: OFFLOAD_MS,
      offloadWarmupN: OFFLOAD_WARMUP_N,
      cases: ALL_CASES.filter((c) => CASES.has(c)),
    },
    throughput: Object.fromEntries(Object.entries(results).map(([k, r]) => [k, r.throughput])),
    ratios,
    latencyMs: Object.fromEntries(Object.entries(results).map(([k, r]) => [k, r.latency])),
    offload,
    targets,
  };
  if (args.out !== undefined) {
    fs.writeFileSync(args.out, `${JSON.stringify(result, null, 2)}\n`);
    console.log(`\nJSON written to ${args.out}`);
  }
  if (args.json) console.log(`\n${JSON.stringify(result, null, 2)}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
