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
 *
 * Durable stores (not run by default: `npm run bench:stores`, or `--only sqlite,postgres,graphile`;
 * sizes `--store-n`, `--store-latency-n`, every service at `--store-concurrency`):
 * 8. sqlite: inline JS and native no-op throughput as in 1 and 2, on a fresh SQLite file in a
 *    temp dir (removed afterwards); latency one task at a time.
 * 9. postgres (server: env DECAF_PG_URL, default postgres://postgres@127.0.0.1:5432/test; each
 *    run on its own schema `decaf_bench_<pid>_<random>`, dropped afterwards):
 *    - one process: the inline JS no-op as in 1;
 *    - two processes: two children (scripts/bench/pg-worker.js) open a service on the same
 *      schema with the handlers; this process is a pure producer (no handler): it pushes and
 *      counts the terminal status events it receives from the children;
 *    - latency, one task at a time (`bench:stamp`, whose handler returns the wall-clock time
 *      its run started, `performance.timeOrigin + performance.now()`: processes of one machine
 *      agree to ~20 µs): push → start (in the process that ran it) and push → terminal status
 *      event received by the pusher.
 * 10. graphile: graphile-worker on the same server, its own schema, in this process (`run()`,
 *    `concurrency` = --store-concurrency, `maxPoolSize` max(10, concurrency + 2)), jobs queued
 *    with its bulk `addJobs` (WorkerUtils) in chunks, no-op task; done once the N-th
 *    `job:complete` event fired and its jobs table is empty (its completions are committed
 *    after that event). Two configurations: its defaults, and the batching of its performance
 *    page (`localQueue: { size: 500 }`, `completeJobBatchDelay: 0`, `failJobBatchDelay: 0`).
 *    Latency: `addJob` one at a time, push → start of the task function, push → `job:complete`.
 *    Ratios decaf postgres / graphile-worker (each configuration) in the same run.
 */

const { fork } = require('node:child_process');
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
const stores = require('./bench/stores');

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
    'store-n': { type: 'string', default: '10000' },
    'store-latency-n': { type: 'string', default: '300' },
    'store-concurrency': { type: 'string', default: '24' },
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
      '[--store-n N] [--store-latency-n N] [--store-concurrency N] ' +
      '[--only inline,native,pool,piscina,offload,sqlite,postgres,graphile] [--json] [--out file.json]',
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
const STORE_N = positiveInt(args['store-n'], '--store-n');
const STORE_LATENCY_N = positiveInt(args['store-latency-n'], '--store-latency-n');
/** `concurrency` of every service of the store cases, and graphile-worker's. */
const STORE_CONCURRENCY = positiveInt(args['store-concurrency'], '--store-concurrency');
const STORE_WARMUP_N = Math.min(STORE_N, Math.max(100, Math.round(STORE_N / 10)));
const STORE_LATENCY_WARMUP_N = Math.min(50, STORE_LATENCY_N);
/** Worker processes of the two-process postgres case. */
const PG_PROCESSES = 2;
const PG_WORKER = path.join(__dirname, 'bench', 'pg-worker.js');
const ALL_CASES = [
  'inline',
  'native',
  'pool',
  'piscina',
  'offload',
  'sqlite',
  'postgres',
  'graphile',
];
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

// ---------------------------------------------------------------------------------------
// Durable stores: SQLite, PostgreSQL (one and two processes), graphile-worker.

const { wallNow } = stores;

/** Schemas and child processes of the store cases not yet cleaned up (for SIGINT too). */
const pending = { schemas: new Set(), children: new Set() };

/** Runs a clean-up step; logs (does not throw) a failure; bounded to 30 s. */
async function cleanUp(what, fn) {
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('timed out after 30 s')), 30_000);
      }),
    ]);
  } catch (err) {
    log(`clean-up: ${what} failed: ${err?.message ?? err}`);
  } finally {
    clearTimeout(timer);
  }
}

async function dropSchema(schema) {
  await cleanUp(`DROP SCHEMA ${schema}`, () => stores.dropSchema(schema));
  pending.schemas.delete(schema);
}

/** A schema of this run, dropped by the case (or on SIGINT / SIGTERM). */
function newSchema(prefix) {
  const schema = stores.uniqueSchema(prefix);
  pending.schemas.add(schema);
  return schema;
}

/** Ctrl-C during a store case: kill the children, drop the schemas, then exit. */
function cleanUpOnSignals() {
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      log(`${signal}: cleaning up…`);
      for (const child of pending.children) child.kill('SIGKILL');
      Promise.all([...pending.schemas].map(dropSchema)).finally(() => process.exit(130));
    });
  }
}

/**
 * Latency on a store, one task at a time. push → end: from just before `push()` until this
 * service received the task's terminal status event. push → start (`bench:stamp` tasks only):
 * the wall-clock time its run started (its output `t`, taken by whichever process ran it)
 * minus the wall-clock time just before `push()`.
 */
async function storeLatency(service, spec, n) {
  const start = [];
  const end = new Array(n);
  let waitingFor;
  let resolveOne;
  /** A terminal event that arrived before `push()` resolved. */
  let early;
  const onStatus = (evt) => {
    if (!TERMINAL.has(evt.payload.status)) return;
    const seen = { evt, at: wallNow() };
    if (evt.taskId === waitingFor) resolveOne(seen);
    else early = seen;
  };
  service.on('status', onStatus);
  try {
    for (let i = 0; i < n; i++) {
      const startAt = wallNow();
      const task = await service.push(spec);
      const seen =
        early?.evt.taskId === task.id
          ? early
          : await new Promise((resolve) => {
              waitingFor = task.id;
              resolveOne = resolve;
            });
      waitingFor = undefined;
      early = undefined;
      const { status, output, error } = seen.evt.payload;
      if (status !== 'succeeded') throw new Error(`task ${task.id} ${status}: ${error?.message}`);
      end[i] = seen.at - startAt;
      if (typeof output?.t === 'number') start.push(output.t - startAt);
    }
  } finally {
    service.off('status', onStatus);
  }
  return {
    start: start.length > 0 ? percentiles(start, [50, 90, 99]) : null,
    end: percentiles(end, [50, 90, 99]),
  };
}

/** Registers the store cases' handlers: `bench:noop` and `bench:stamp` (see storeLatency). */
function registerStoreHandlers(service) {
  service.register('bench:noop', () => null);
  service.register('bench:stamp', () => ({ t: wallNow() }));
}

/**
 * Throughput and latency of one service on a durable store: warm-up, `engineThroughput` of
 * STORE_N tasks of `spec`, then `storeLatency` of `latencySpec`.
 */
async function storeEngineCase(label, adapter, spec, latencySpec) {
  gc();
  const service = newService({ concurrency: STORE_CONCURRENCY, adapter });
  registerStoreHandlers(service);
  try {
    await startService(label, service);
    return await measureStore(label, service, spec, latencySpec);
  } finally {
    await cleanUp(`${label} shutdown`, () => service.shutdown());
  }
}

async function measureStore(label, service, spec, latencySpec) {
  log(`${label}: warm-up (${fmt(STORE_WARMUP_N)} tasks, ${STORE_LATENCY_WARMUP_N} sequential)…`);
  await withTimeout(engineThroughput(service, spec, STORE_WARMUP_N), `${label} warm-up`);
  await withTimeout(storeLatency(service, latencySpec, STORE_LATENCY_WARMUP_N), `${label} warm-up`);
  gc();
  log(`${label}: ${fmt(STORE_N)} tasks…`);
  const throughput = await withTimeout(engineThroughput(service, spec, STORE_N), label);
  log(`${label}: latency, ${fmt(STORE_LATENCY_N)} tasks one at a time…`);
  const latency = await withTimeout(
    storeLatency(service, latencySpec, STORE_LATENCY_N),
    `${label} latency`,
  );
  return { throughput, latency };
}

async function sqliteCases() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'decaf-bench-sqlite-'));
  const adapter = (name) => ({ kind: 'sqlite', path: path.join(dir, `${name}.db`) });
  try {
    const inline = await storeEngineCase(
      'sqlite, inline JS no-op',
      adapter('inline'),
      { classification: 'bench:noop' },
      { classification: 'bench:stamp' },
    );
    const native = await storeEngineCase(
      'sqlite, native no-op',
      adapter('native'),
      { classification: 'native:noop' },
      { classification: 'native:noop' },
    );
    return { inline, native };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Why the postgres cases cannot run here (a string), or undefined: the server must answer
 * and the addon must accept a postgres adapter.
 */
async function postgresUnavailable() {
  try {
    await stores.serverVersion();
  } catch (err) {
    return `PostgreSQL at ${stores.PG_URL} unreachable: ${err?.message ?? err}`;
  }
  const schema = newSchema('decaf_bench_probe');
  try {
    const service = new TaskService({ adapter: { kind: 'postgres', url: stores.PG_URL, schema } });
    await service.shutdown();
    return undefined;
  } catch (err) {
    return `the addon refuses a postgres adapter: ${err?.message ?? err}`;
  } finally {
    await dropSchema(schema);
  }
}

/** Forks a pg-worker child on `schema`; resolves once its service runs. */
function forkPgWorker(schema) {
  const child = fork(PG_WORKER, [stores.PG_URL, schema, String(STORE_CONCURRENCY)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  pending.children.add(child);
  child.once('exit', () => pending.children.delete(child));
  const ready = new Promise((resolve, reject) => {
    const onMessage = (message) => {
      if (message?.type === 'ready') {
        child.off('message', onMessage);
        resolve();
      } else if (message?.type === 'error') {
        reject(new Error(`pg-worker ${child.pid}: ${message.message}`));
      }
    };
    child.on('message', onMessage);
    child.once('exit', (code, signal) =>
      reject(new Error(`pg-worker ${child.pid} exited (${signal ?? code}) before it was ready`)),
    );
  });
  // Errors reported later (a failing handler, a lost connection): logged.
  child.on('message', (message) => {
    if (message?.type === 'error') log(`pg-worker ${child.pid}: ${message.message}`);
  });
  return { child, ready };
}

/** Asks a child to shut down: resolves with its run count (null if it had to be killed). */
function stopPgWorker(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(null);
  return new Promise((resolve) => {
    let runs = null;
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('message', (message) => {
      if (message?.type === 'stopped') runs = message.runs;
    });
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(runs);
    });
    if (child.connected) child.send({ type: 'stop' });
    else child.kill('SIGKILL');
  });
}

async function postgresCases() {
  const url = stores.PG_URL;
  const noop = { classification: 'bench:noop' };
  const stamp = { classification: 'bench:stamp' };
  const out = {};

  // One process: handlers and pushes in this process.
  const schema1 = newSchema('decaf_bench');
  try {
    out.oneProcess = await storeEngineCase(
      'postgres, 1 process',
      { kind: 'postgres', url, schema: schema1 },
      noop,
      stamp,
    );
  } finally {
    await dropSchema(schema1);
  }

  // Two worker processes; this one is a pure producer (no handler).
  const label = `postgres, ${PG_PROCESSES} worker processes`;
  const schema2 = newSchema('decaf_bench');
  const children = [];
  gc();
  // Created first: it creates and migrates the schema before the children open it.
  const producer = newService({
    concurrency: STORE_CONCURRENCY,
    adapter: { kind: 'postgres', url, schema: schema2 },
  });
  try {
    await startService(`${label} producer`, producer);
    for (let i = 0; i < PG_PROCESSES; i++) children.push(forkPgWorker(schema2));
    await withTimeout(
      Promise.all(children.map((c) => c.ready)),
      `${label}: worker processes start`,
    );
    log(`${label}: workers ${children.map((c) => c.child.pid).join(', ')} ready`);
    out.twoProcesses = await measureStore(label, producer, noop, stamp);
  } finally {
    const runs = await Promise.all(children.map(({ child }) => stopPgWorker(child)));
    if (out.twoProcesses !== undefined) out.twoProcesses.runsPerProcess = runs;
    await cleanUp(`${label} producer shutdown`, () => producer.shutdown());
    await dropSchema(schema2);
  }
  return out;
}

/** The installed graphile-worker's version. */
function graphileVersion() {
  const file = path.join(path.dirname(require.resolve('graphile-worker')), '..', 'package.json');
  return JSON.parse(fs.readFileSync(file, 'utf8')).version;
}

/** graphile-worker's configurations: its defaults, and the batching of its performance page. */
const GRAPHILE_CONFIGS = {
  graphile: { label: 'defaults', preset: undefined },
  graphileBatched: {
    label: 'localQueue 500, batched completion',
    preset: {
      worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 },
    },
  },
};

/**
 * A graphile-worker runner in this process on `schema` (migrated by `run()`), and WorkerUtils
 * to queue jobs. Task `noop` does nothing; task `stamp` records the wall-clock time its run
 * started, by job id. Its logger drops info and debug (it logs every completed job).
 */
async function openGraphile(schema, preset) {
  const { Logger, makeWorkerUtils, run } = require('graphile-worker');
  const logger = new Logger((scope) => (level, message) => {
    if (level === 'error' || level === 'warning') {
      log(`graphile-worker ${level}${scope.label ? ` (${scope.label})` : ''}: ${message}`);
    }
  });
  const stamps = new Map();
  const connection = {
    connectionString: stores.PG_URL,
    schema,
    logger,
  };
  const runner = await run({
    ...connection,
    concurrency: STORE_CONCURRENCY,
    maxPoolSize: Math.max(10, STORE_CONCURRENCY + 2),
    noHandleSignals: true,
    preset,
    taskList: {
      noop: async () => {},
      stamp: async (_payload, helpers) => {
        stamps.set(helpers.job.id, wallNow());
      },
    },
  });
  const utils = await makeWorkerUtils(connection);
  return { runner, utils, stamps, schema };
}

/** True once graphile-worker's jobs table is empty (every completion committed). */
async function graphileDrained(g) {
  const { rows } = await g.utils.withPgClient((client) =>
    client.query(`SELECT EXISTS (SELECT 1 FROM "${g.schema}"._private_jobs) AS busy`),
  );
  return !rows[0].busy;
}

/**
 * graphile-worker throughput: `addJobs` in chunks of CHUNK, at most WINDOW jobs in flight
 * (flow control on `job:complete`); done once the n-th `job:complete` fired and the jobs
 * table is empty.
 */
async function graphileThroughput(g, n) {
  const chunk = Array.from({ length: CHUNK }, () => ({ identifier: 'noop', payload: {} }));
  let completed = 0;
  let pushed = 0;
  let wake;
  let done;
  let fail;
  const finished = new Promise((resolve, reject) => {
    done = resolve;
    fail = reject;
  });
  // A failure while addJobs is awaited is raised by the next await of `finished`.
  finished.catch(() => {});
  const onComplete = ({ job, error }) => {
    if (job.task_identifier !== 'noop') return;
    if (error !== undefined && error !== null) {
      fail(new Error(`graphile-worker job ${job.id} failed: ${error?.message ?? error}`));
      return;
    }
    completed++;
    if (completed === n) done();
    else if (wake !== undefined && pushed - completed <= WINDOW - CHUNK) {
      const w = wake;
      wake = undefined;
      w();
    }
  };
  g.runner.events.on('job:complete', onComplete);
  const startAt = performance.now();
  try {
    while (pushed < n) {
      const size = Math.min(CHUNK, n - pushed);
      await g.utils.addJobs(size === CHUNK ? chunk : chunk.slice(0, size));
      pushed += size;
      if (pushed < n && pushed - completed > WINDOW - CHUNK) {
        await Promise.race([
          finished,
          new Promise((resolve) => {
            wake = resolve;
          }),
        ]);
      }
    }
    await finished;
    // Its completions are committed after the event: wait until the last one is.
    let drained = false;
    while (!drained) drained = await graphileDrained(g);
  } finally {
    g.runner.events.off('job:complete', onComplete);
  }
  const seconds = (performance.now() - startAt) / 1000;
  return { tasks: n, events: null, seconds, tasksPerSec: n / seconds, eventsPerSec: null };
}

/**
 * graphile-worker latency, one job at a time: push → start of the task function, and
 * push → its `job:complete` event (in this process, before the completion is committed).
 */
async function graphileLatency(g, n) {
  const start = new Array(n);
  const end = new Array(n);
  const completions = new Map();
  let waiting;
  const onComplete = ({ job, error }) => {
    const seen = { at: wallNow(), error };
    completions.set(job.id, seen);
    if (waiting?.id === job.id) waiting.resolve(seen);
  };
  g.runner.events.on('job:complete', onComplete);
  try {
    for (let i = 0; i < n; i++) {
      const startAt = wallNow();
      const job = await g.utils.addJob('stamp', {});
      const seen =
        completions.get(job.id) ??
        (await new Promise((resolve) => {
          waiting = { id: job.id, resolve };
        }));
      waiting = undefined;
      completions.clear();
      if (seen.error !== undefined && seen.error !== null) {
        throw new Error(
          `graphile-worker job ${job.id} failed: ${seen.error?.message ?? seen.error}`,
        );
      }
      end[i] = seen.at - startAt;
      start[i] = g.stamps.get(job.id) - startAt;
      g.stamps.delete(job.id);
    }
  } finally {
    g.runner.events.off('job:complete', onComplete);
  }
  return { start: percentiles(start, [50, 90, 99]), end: percentiles(end, [50, 90, 99]) };
}

async function graphileCase(key) {
  const { label, preset } = GRAPHILE_CONFIGS[key];
  const what = `graphile-worker (${label})`;
  gc();
  const schema = newSchema('graphile_bench');
  let g;
  try {
    g = await withTimeout(openGraphile(schema, preset), `${what} start`);
    log(`${what}: warm-up (${fmt(STORE_WARMUP_N)} jobs, ${STORE_LATENCY_WARMUP_N} sequential)…`);
    await withTimeout(graphileThroughput(g, STORE_WARMUP_N), `${what} warm-up`);
    await withTimeout(graphileLatency(g, STORE_LATENCY_WARMUP_N), `${what} warm-up`);
    gc();
    log(`${what}: ${fmt(STORE_N)} jobs…`);
    const throughput = await withTimeout(graphileThroughput(g, STORE_N), what);
    log(`${what}: latency, ${fmt(STORE_LATENCY_N)} jobs one at a time…`);
    const latency = await withTimeout(graphileLatency(g, STORE_LATENCY_N), `${what} latency`);
    return { throughput, latency, schema, config: preset?.worker ?? {} };
  } finally {
    if (g !== undefined) {
      await cleanUp(`${what} stop`, () => g.runner.stop());
      await cleanUp(`${what} utils release`, () => g.utils.release());
    }
    await dropSchema(schema);
  }
}

/** A connection URL without its password. */
function redactUrl(url) {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return '(invalid URL)';
  }
}

/** Prints the store tables; adds the decaf postgres / graphile-worker ratios to `ratios`. */
function reportStores(storeResults, storeInfo, ratios) {
  const v = storeInfo.graphileVersion ?? '';
  const names = {
    sqliteInline: 'SQLite, inline JS no-op',
    sqliteNative: 'SQLite, native no-op',
    postgres: 'PostgreSQL, inline JS no-op, 1 process',
    postgres2p: `PostgreSQL, ${PG_PROCESSES} worker processes + producer`,
    graphile: `graphile-worker ${v} (${GRAPHILE_CONFIGS.graphile.label})`,
    graphileBatched: `graphile-worker ${v} (${GRAPHILE_CONFIGS.graphileBatched.label})`,
  };
  const entries = Object.entries(storeResults);
  console.log(
    `\nDurable stores (${fmt(STORE_N)} no-op tasks after warm-up, concurrency ` +
      `${STORE_CONCURRENCY} per service and for graphile-worker; events counted by the pusher):`,
  );
  console.log(
    table(
      ['case', 'tasks/s', 'events/s', 'events', 'seconds'],
      entries.map(([key, { throughput: r }]) => [
        names[key],
        fmt(r.tasksPerSec),
        r.eventsPerSec === null ? '-' : fmt(r.eventsPerSec),
        r.events === null ? '-' : fmt(r.events),
        r.seconds.toFixed(3),
      ]),
    ),
  );
  if (storeInfo.runsPerProcess !== undefined) {
    console.log(
      `${PG_PROCESSES} worker processes: runs per process ${storeInfo.runsPerProcess
        .map((r) => (r === null ? '?' : fmt(r)))
        .join(' / ')} (warm-up and latency tasks included)`,
    );
  }
  if (storeInfo.postgresSkipped !== undefined) {
    console.log(`postgres: skipped (${storeInfo.postgresSkipped})`);
  }

  const parts = [];
  for (const ours of ['postgres', 'postgres2p']) {
    for (const peer of ['graphile', 'graphileBatched']) {
      if (storeResults[ours] === undefined || storeResults[peer] === undefined) continue;
      const key = `${ours}Over${peer[0].toUpperCase()}${peer.slice(1)}`;
      ratios[key] =
        storeResults[ours].throughput.tasksPerSec / storeResults[peer].throughput.tasksPerSec;
      parts.push(
        `${ours === 'postgres' ? '1 process' : `${PG_PROCESSES} processes`} / ` +
          `${GRAPHILE_CONFIGS[peer].label} = ${ratios[key].toFixed(2)}x`,
      );
    }
  }
  if (parts.length > 0) {
    console.log(`Ratios decaf PostgreSQL / graphile-worker (tasks/s): ${parts.join(', ')}`);
  } else if (CASES.has('postgres') !== CASES.has('graphile')) {
    console.log('Ratios: need the postgres and graphile cases in the same run');
  }

  console.log(
    `\nStore latency (${fmt(STORE_LATENCY_N)} tasks one at a time, ms): start = push → the ` +
      'run began (in the process that ran it); end = push → the pusher received the terminal ' +
      'status event (graphile-worker: job:complete, before its completion is committed)',
  );
  const ms = (p, key) => (p === null ? '-' : fmtMs(p[key]));
  console.log(
    table(
      ['case', 'start p50', 'start p90', 'start p99', 'end p50', 'end p90', 'end p99'],
      entries.map(([key, { latency: l }]) => [
        names[key],
        ms(l.start, 'p50'),
        ms(l.start, 'p90'),
        ms(l.start, 'p99'),
        ms(l.end, 'p50'),
        ms(l.end, 'p90'),
        ms(l.end, 'p99'),
      ]),
    ),
  );
  const side = [];
  for (const key of ['postgres', 'postgres2p', 'graphile', 'graphileBatched']) {
    const start = storeResults[key]?.latency.start;
    if (start !== undefined && start !== null) side.push(`${names[key]} ${fmtMs(start.p50)}`);
  }
  if (side.length > 1) console.log(`push → start p50 (ms): ${side.join('; ')}`);
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
  // Durable stores: each group is caught, so that one failing does not lose the others.
  const storeResults = {};
  const storeInfo = { errors: {} };
  const storeCase = async (key, run) => {
    checkBuilds(key);
    try {
      await run();
    } catch (err) {
      log(`${key}: ${err?.stack ?? err}`);
      storeInfo.errors[key] = String(err?.message ?? err);
      process.exitCode = 1;
    }
  };
  if (CASES.has('sqlite') || CASES.has('postgres') || CASES.has('graphile')) cleanUpOnSignals();
  if (CASES.has('sqlite')) {
    await storeCase('sqlite', async () => {
      const r = await sqliteCases();
      storeResults.sqliteInline = r.inline;
      storeResults.sqliteNative = r.native;
    });
  }
  if (CASES.has('postgres') || CASES.has('graphile')) {
    storeInfo.pgUrl = redactUrl(stores.PG_URL);
    try {
      storeInfo.pgServerVersion = await stores.serverVersion();
      console.log(`PostgreSQL ${storeInfo.pgServerVersion} at ${storeInfo.pgUrl}`);
    } catch (err) {
      storeInfo.pgUnavailable = `PostgreSQL at ${storeInfo.pgUrl} unreachable: ${err?.message ?? err}`;
      console.log(`WARNING: ${storeInfo.pgUnavailable}: postgres and graphile cases skipped`);
    }
  }
  if (CASES.has('postgres') && storeInfo.pgUnavailable === undefined) {
    await storeCase('postgres', async () => {
      const why = await postgresUnavailable();
      if (why !== undefined) {
        storeInfo.postgresSkipped = why;
        console.log(`WARNING: postgres cases skipped: ${why}`);
        return;
      }
      const r = await postgresCases();
      storeResults.postgres = r.oneProcess;
      storeResults.postgres2p = r.twoProcesses;
      storeInfo.runsPerProcess = r.twoProcesses.runsPerProcess;
    });
  }
  if (CASES.has('graphile') && storeInfo.pgUnavailable === undefined) {
    storeInfo.graphileVersion = graphileVersion();
    storeInfo.graphileConfigs = {};
    for (const key of Object.keys(GRAPHILE_CONFIGS)) {
      await storeCase(key, async () => {
        const r = await graphileCase(key);
        storeResults[key] = r;
        storeInfo.graphileConfigs[key] = {
          concurrency: STORE_CONCURRENCY,
          maxPoolSize: Math.max(10, STORE_CONCURRENCY + 2),
          ...r.config,
        };
      });
    }
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

  if (Object.keys(storeResults).length > 0) {
    reportStores(storeResults, storeInfo, ratios);
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
      storeN: STORE_N,
      storeLatencyN: STORE_LATENCY_N,
      storeWarmupN: STORE_WARMUP_N,
      storeConcurrency: STORE_CONCURRENCY,
      pgProcesses: PG_PROCESSES,
    },
    throughput: Object.fromEntries(
      [...Object.entries(results), ...Object.entries(storeResults)].map(([k, r]) => [
        k,
        r.throughput,
      ]),
    ),
    ratios,
    latencyMs: Object.fromEntries([
      ...Object.entries(results).map(([k, r]) => [k, r.latency]),
      // Store cases: push → terminal status event received by the pusher (graphile-worker:
      // push → job:complete).
      ...Object.entries(storeResults).map(([k, r]) => [k, r.latency.end]),
    ]),
    // Store cases: push → start of the run (null where not measured: native handlers).
    startLatencyMs: Object.fromEntries(
      Object.entries(storeResults).map(([k, r]) => [k, r.latency.start]),
    ),
    stores: storeInfo,
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
