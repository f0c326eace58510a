/**
 * decaf-tasks benchmark: no-op throughput and one-at-a-time latency, against Piscina.
 *
 *   npm run bench [-- --n 100000 --chunk 1000 --concurrency 1024 --window 8192
 *                    --latency-n 1000 --json [--out file.json]]
 *
 * 1. inline JS no-op: `pushMany` in chunks, handler `(input) => null`, a listener on
 *    `'event'` counting every event; done when the N terminal status events arrived.
 * 2. native no-op: the same with `native:noop` (no JS handler), every event to a JS listener.
 * 3. Piscina (2 threads, worker returning null): N `pool.run()`, chunks awaited with
 *    `Promise.all`, the same bound of tasks in flight.
 * 4. ratios inline / Piscina and native / Piscina (target: inline ≥ 3× Piscina).
 * 5. latency: tasks run one at a time (push, await the terminal status event, next),
 *    push → finish percentiles for inline JS and native (target p50 < 1 ms); Piscina for
 *    reference.
 * Each case is warmed up on its own service / pool first.
 */

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const v8 = require('node:v8');
const vm = require('node:vm');
const { Piscina } = require('piscina');
const { TaskService } = require('..');
const { percentiles, fmt, fmtMs, table } = require('./lib/stats');

const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '100000' },
    chunk: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '1024' },
    window: { type: 'string', default: '8192' },
    'latency-n': { type: 'string', default: '1000' },
    'case-timeout': { type: 'string', default: '300' },
    only: { type: 'string', default: 'inline,native,piscina' },
    json: { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(
    'usage: node scripts/bench.js [--n N] [--chunk N] [--concurrency N] [--window N] ' +
      '[--latency-n N] [--case-timeout s] [--only inline,native,piscina] [--json] [--out file.json]',
  );
  process.exit(0);
}

function positiveInt(text, name) {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`${name} must be a positive integer (got ${text})`);
    process.exit(2);
  }
  return n;
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
const CASES = new Set(args.only.split(',').map((c) => c.trim()));
for (const c of CASES) {
  if (!['inline', 'native', 'piscina'].includes(c)) {
    console.error(`--only: unknown case '${c}' (inline, native, piscina)`);
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

// Piscina throughput: chunks of `pool.run()` awaited with Promise.all, at most WINDOW in flight.
async function piscinaThroughput(pool, n) {
  const inFlight = [];
  let inFlightTasks = 0;
  let submitted = 0;
  const startAt = performance.now();
  while (submitted < n) {
    const size = Math.min(CHUNK, n - submitted);
    const runs = new Array(size);
    for (let i = 0; i < size; i++) runs[i] = pool.run(null);
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

function newService() {
  const service = new TaskService({ concurrency: CONCURRENCY });
  service.on('error', (err) => log(`service error: ${err.stack ?? err}`));
  return service;
}

async function engineCase(label, spec, register) {
  gc();
  const service = newService();
  register?.(service);
  try {
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
  const bytes = fs.statSync(path.join(__dirname, '..', file)).size;
  // A release build is a few MB; a debug build (with debug info) is tens of MB.
  return { file, bytes, kind: bytes > 20 * 1024 * 1024 ? 'debug' : 'release' };
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

  const results = {};
  if (CASES.has('inline')) {
    results.inline = await engineCase('inline JS no-op', { classification: 'bench:noop' }, (s) =>
      s.register('bench:noop', () => null),
    );
  }
  if (CASES.has('native')) {
    results.native = await engineCase('native no-op', { classification: 'native:noop' });
  }
  if (CASES.has('piscina')) results.piscina = await piscinaCase();
  const { inline, native, piscina } = results;
  const names = {
    inline: 'inline JS no-op',
    native: 'native no-op',
    piscina: `Piscina (${PISCINA_THREADS} threads)`,
  };
  const mark = (ok) => (ok ? 'PASS' : 'MISS');

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
  const ratios = {};
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
    if (parts.length > 0) console.log(`\nRatios: ${parts.join(', ')}`);
  }

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
  const targets = {};
  if (ratios.inlineOverPiscina !== undefined) {
    targets.inlineAtLeast3xPiscina = ratios.inlineOverPiscina >= 3;
  }
  if (inline !== undefined) targets.inlineP50Below1ms = inline.latency.p50 < 1;
  if (native !== undefined) targets.nativeP50Below1ms = native.latency.p50 < 1;
  const latencyTargets = [];
  if (inline !== undefined) latencyTargets.push(`inline ${mark(targets.inlineP50Below1ms)}`);
  if (native !== undefined) latencyTargets.push(`native ${mark(targets.nativeP50Below1ms)}`);
  if (latencyTargets.length > 0) console.log(`Target p50 < 1 ms: ${latencyTargets.join(', ')}`);

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
    },
    throughput: Object.fromEntries(Object.entries(results).map(([k, r]) => [k, r.throughput])),
    ratios,
    latencyMs: Object.fromEntries(Object.entries(results).map(([k, r]) => [k, r.latency])),
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
