/**
 * decaf-tasks demo: a few thousand mixed tasks on one in-memory TaskService.
 *
 *   npm run demo [-- --tasks 3000 --concurrency 64 --timeout 60 --seed 42
 *                    --store memory | sqlite:PATH | postgres:URL[#schema]]
 *
 * Mix: inline JS handlers (sync and async, logging and reporting progress), native CPU-bound
 * handlers, retried tasks (JS and native) that eventually succeed, tasks that fail for good,
 * tasks scheduled a second or two ahead, tasks canceled while pending and while running
 * (JS and native). A live progress bar (plain lines when stdout is not a TTY), then a summary.
 *
 * Exit code: 0 when every task reached the status it was meant to; 1 when a task was lost
 * (not terminal at the end) or ended differently than expected.
 */

const { parseArgs } = require('node:util');
const { setTimeout: sleep } = require('node:timers/promises');
const cliProgress = require('cli-progress');
const { TaskService, isTerminalStatus } = require('..');
const { percentiles, fmt, fmtMs, positiveInt, table } = require('./lib/stats');

const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: '3000' },
    concurrency: { type: 'string', default: '64' },
    timeout: { type: 'string', default: '60' },
    seed: { type: 'string', default: '42' },
    store: { type: 'string', default: 'memory' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(
    'usage: node scripts/demo.js [--tasks N] [--concurrency N] [--timeout s] [--seed N] ' +
      '[--store memory | sqlite:PATH | postgres:URL[#schema]]',
  );
  process.exit(0);
}
const TOTAL = positiveInt(args.tasks, '--tasks');
const CONCURRENCY = positiveInt(args.concurrency, '--concurrency');
const TIMEOUT_MS = positiveInt(args.timeout, '--timeout') * 1000;
const ADAPTER = adapterOf(args.store);
if (TOTAL < 100) {
  console.error('--tasks must be at least 100');
  process.exit(2);
}

/** `--store`: `memory`, `sqlite:PATH` or `postgres:URL[#schema]`. */
function adapterOf(store) {
  if (store === 'memory') return { kind: 'memory' };
  if (store.startsWith('sqlite:')) return { kind: 'sqlite', path: store.slice('sqlite:'.length) };
  if (store.startsWith('postgres:')) {
    const [url, schema] = store.slice('postgres:'.length).split('#');
    return schema ? { kind: 'postgres', url, schema } : { kind: 'postgres', url };
  }
  console.error(`--store must be memory, sqlite:PATH or postgres:URL[#schema] (got ${store})`);
  process.exit(2);
}

/** mulberry32: a seeded PRNG so that every run pushes the same mix. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(Number(args.seed));

/** Small fixed backoff of the retried tasks. */
const RETRY = { maxAttempts: 3, backoff: { strategy: 'fixed', baseMs: 100, jitter: 'none' } };

/**
 * The kinds of task of the mix. `weight`: share of the bulk; `expect`: final status;
 * `retries(input)`: expected waiting_retry events; `make(i)`: the spec.
 */
const BULK_KINDS = {
  'js sync': {
    weight: 28,
    expect: 'succeeded',
    make: (i) => ({ classification: 'demo:sync', input: { i } }),
  },
  'js async': {
    weight: 20,
    expect: 'succeeded',
    make: (i) => ({ classification: 'demo:async', input: { i, steps: 1 + (i % 3) } }),
  },
  'js flaky (retried)': {
    weight: 10,
    expect: 'succeeded',
    retries: (spec) => (spec.input.failFirst ? 1 : 0),
    make: (i) => ({ classification: 'demo:flaky', input: { i, failFirst: i % 2 === 0 }, ...RETRY }),
  },
  'js doomed': {
    weight: 2,
    expect: 'failed',
    retries: () => 2,
    make: (i) => ({ classification: 'demo:doomed', input: { i }, ...RETRY }),
  },
  'native cpu': {
    weight: 15,
    expect: 'succeeded',
    make: (i) => ({
      classification: 'native:cpu',
      input: { iterations: 100_000 * (1 + Math.floor(random() * 8)) },
      name: `cpu-${i}`,
    }),
  },
  'native echo': {
    weight: 8,
    expect: 'succeeded',
    make: (i) => ({ classification: 'native:echo', input: { i, hello: 'world' } }),
  },
  'native flaky (retried)': {
    weight: 7,
    expect: 'succeeded',
    retries: (spec) => spec.input.succeedOnAttempt - 1,
    make: (i) => ({
      classification: 'native:fail',
      input: { succeedOnAttempt: 2 + (i % 2), message: 'transient native failure' },
      ...RETRY,
    }),
  },
  'native doomed': {
    weight: 2,
    expect: 'failed',
    retries: () => 1,
    make: () => ({
      classification: 'native:fail',
      input: { message: 'permanent native failure', code: 'E_DEMO' },
      maxAttempts: 2,
      backoff: RETRY.backoff,
    }),
  },
  scheduled: {
    weight: 6,
    expect: 'succeeded',
    scheduled: true,
    make: (i) =>
      i % 2 === 0
        ? { classification: 'demo:sync', input: { i, scheduled: true } }
        : { classification: 'native:echo', input: { i, scheduled: true } },
  },
};

// ---------------------------------------------------------------------------------------
// Bookkeeping: everything is derived from the events the service emits.

/** id → { kind, pushedAt, status, ran, statusAtCancel?, finishedAt?, retries, expectRetries } */
const tasks = new Map();
/** Events of tasks not known yet (cannot happen: pushes are synchronous; kept for safety). */
const early = new Map();
const liveCounts = {
  pending: 0,
  scheduled: 0,
  running: 0,
  waiting_retry: 0,
  succeeded: 0,
  failed: 0,
  canceled: 0,
};
const eventCounts = { status: 0, log: 0, progress: 0, update: 0 };
let terminal = 0;
let retries = 0;
let errors = 0;
/** How many demo:slow handlers saw their ctx.signal abort (cancel while running). */
let jsAborts = 0;
let firstPushAt = Number.NaN;
let lastFinishAt = Number.NaN;
let onAllDone = () => {};
const allDone = new Promise((resolve) => {
  onAllDone = resolve;
});
/** Called when a task of a `cancel while running` kind starts running. */
const onRunning = new Map();

function track(task, kind, pushedAt, expectRetries) {
  const rec = {
    id: task.id,
    kind,
    pushedAt,
    status: undefined,
    finishedAt: undefined,
    retries: 0,
    expectRetries,
    ran: false,
  };
  tasks.set(task.id, rec);
  if (Number.isNaN(firstPushAt)) firstPushAt = pushedAt;
  const waiting = early.get(task.id);
  if (waiting !== undefined) {
    early.delete(task.id);
    for (const evt of waiting) applyStatus(rec, evt);
  }
  return rec;
}

function applyStatus(rec, evt) {
  const status = evt.payload.status;
  if (rec.status !== undefined) liveCounts[rec.status]--;
  if (isTerminalStatus(rec.status ?? 'pending')) {
    console.error(`\nBUG: task ${rec.id} changed after its terminal status: ${status}`);
  }
  liveCounts[status]++;
  rec.status = status;
  if (status === 'waiting_retry') {
    rec.retries++;
    retries++;
  } else if (status === 'running') {
    rec.ran = true;
    onRunning.get(rec.kind)?.(rec);
  }
  if (isTerminalStatus(status)) {
    rec.finishedAt = performance.now();
    lastFinishAt = rec.finishedAt;
    terminal++;
    // The bar advances on each terminal status event (cli-progress throttles the redraws).
    mainBar?.increment();
    if (terminal === TOTAL) onAllDone();
  }
}

// ---------------------------------------------------------------------------------------
// The service and its handlers.

const service = new TaskService({ concurrency: CONCURRENCY, adapter: ADAPTER });

service.on('event', (evt) => {
  eventCounts[evt.classification]++;
});
service.on('status', (evt) => {
  const rec = tasks.get(evt.taskId);
  if (rec !== undefined) {
    applyStatus(rec, evt);
    return;
  }
  const list = early.get(evt.taskId) ?? [];
  list.push(evt);
  early.set(evt.taskId, list);
});
service.on('error', (err) => {
  errors++;
  console.error(`\nservice error: ${err.message}`);
});

// Sync: logs, reports progress, returns at once.
service.register('demo:sync', (input, ctx) => {
  ctx.logger.info(`sync task #${input.i}`, { attempt: ctx.attempt });
  ctx.progress({ done: 1, of: 1 });
  return { i: input.i, square: input.i * input.i };
});

// Async: a few small awaits, a progress event after each.
service.register('demo:async', async (input, ctx) => {
  ctx.logger.debug(`async task #${input.i}: ${input.steps} step(s)`);
  for (let step = 1; step <= input.steps; step++) {
    await sleep(1 + (input.i % 4));
    await ctx.progress({ step, of: input.steps });
  }
  ctx.logger.info(`async task #${input.i} done`);
  return { i: input.i, steps: input.steps };
});

// Flaky: fails its first attempt for some inputs (then retried with a fixed 100 ms backoff).
service.register('demo:flaky', {
  run(input, ctx) {
    if (input.failFirst && ctx.attempt === 1) {
      const err = new Error(`transient failure of #${input.i}`);
      err.code = 'E_TRANSIENT';
      throw err;
    }
    ctx.logger.info(`flaky task #${input.i} succeeded on attempt ${ctx.attempt}`);
    return { attempt: ctx.attempt };
  },
  catch(input, error, ctx) {
    ctx.logger.warn(`attempt ${ctx.attempt} of #${input.i} failed: ${error.message}`);
  },
});

// Doomed: always throws, after a small await.
service.register('demo:doomed', async (input, ctx) => {
  await sleep(2);
  ctx.logger.error(`doomed task #${input.i}, attempt ${ctx.attempt}`);
  throw new Error(`permanent failure of #${input.i}`);
});

// Slow: waits `input.ms`, stops early when its signal aborts (cancel, shutdown).
service.register('demo:slow', (input, ctx) => {
  ctx.logger.info(`slow task: up to ${input.ms} ms`);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ctx.signal.removeEventListener('abort', onAbort);
      resolve({ sleptMs: input.ms });
    }, input.ms);
    function onAbort() {
      jsAborts++;
      clearTimeout(timer);
      reject(ctx.signal.reason);
    }
    ctx.signal.addEventListener('abort', onAbort, { once: true });
  });
});

// ---------------------------------------------------------------------------------------
// Progress display.

const isTTY = process.stdout.isTTY === true;
const startedAt = performance.now();
let bars;
let mainBar;
let statusLine;
let ticker;

function statusText() {
  const c = liveCounts;
  return (
    `pending ${c.pending}  scheduled ${c.scheduled}  running ${c.running}  ` +
    `waiting_retry ${c.waiting_retry}  |  succeeded ${c.succeeded}  failed ${c.failed}  ` +
    `canceled ${c.canceled}  |  retries ${retries}  logs ${eventCounts.log}  ` +
    `progress ${eventCounts.progress}`
  );
}

function startDisplay() {
  if (isTTY) {
    bars = new cliProgress.MultiBar(
      {
        stream: process.stdout,
        hideCursor: true,
        clearOnComplete: false,
        autopadding: true,
        format: ' tasks {bar} {percentage}% | {value}/{total} terminal | {duration_formatted}',
      },
      cliProgress.Presets.shades_classic,
    );
    mainBar = bars.create(TOTAL, 0);
    statusLine = bars.create(1, 0, { line: statusText() }, { format: ' {line}' });
    ticker = setInterval(() => statusLine.update(0, { line: statusText() }), 100);
  } else {
    ticker = setInterval(() => {
      const t = ((performance.now() - startedAt) / 1000).toFixed(1).padStart(5);
      console.log(`[${t}s] ${terminal}/${TOTAL} terminal | ${statusText()}`);
    }, 1000);
  }
}

function stopDisplay() {
  clearInterval(ticker);
  if (bars !== undefined) {
    mainBar.update(terminal);
    statusLine.update(0, { line: statusText() });
    bars.stop();
  } else {
    const t = ((performance.now() - startedAt) / 1000).toFixed(1).padStart(5);
    console.log(`[${t}s] ${terminal}/${TOTAL} terminal | ${statusText()}`);
  }
}

// ---------------------------------------------------------------------------------------
// The run.

async function pushKind(kind, specs, expectRetries) {
  const pushedAt = performance.now();
  const pushed = await service.pushMany(specs);
  return pushed.map((task, k) => track(task, kind, pushedAt, expectRetries(specs[k])));
}

async function main() {
  const cancelEach = Math.max(2, Math.round(TOTAL / 500));
  const specialCount = 3 * cancelEach; // 3 kinds of cancel
  const bulkCount = TOTAL - specialCount;

  console.log(
    `decaf-tasks demo: ${TOTAL} tasks, concurrency ${CONCURRENCY}, ` +
      `${service.options.nativeThreads} native threads, in-memory store`,
  );
  startDisplay();

  // 1. Long tasks canceled shortly after they start running (JS: the handler sees
  //    ctx.signal abort; native: the Rust handler sees is_aborted()).
  for (const kind of ['cancel while running (js)', 'cancel while running (native)']) {
    onRunning.set(kind, (rec) => {
      setTimeout(
        () => {
          rec.statusAtCancel = rec.status;
          service.cancel(rec.id, 'canceled by the demo while running').catch(report);
        },
        100 + Math.floor(random() * 200),
      );
    });
  }
  await pushKind(
    'cancel while running (js)',
    Array.from({ length: cancelEach }, () => ({
      classification: 'demo:slow',
      input: { ms: 30_000 },
      priority: 50,
    })),
    () => 0,
  );
  await pushKind(
    'cancel while running (native)',
    Array.from({ length: cancelEach }, () => ({
      classification: 'native:sleep',
      input: { ms: 30_000 },
      priority: 50,
    })),
    () => 0,
  );

  // 2. The bulk, in waves over ~3 s: mixed kinds in a seeded random order.
  const names = Object.keys(BULK_KINDS);
  const weightSum = names.reduce((s, n) => s + BULK_KINDS[n].weight, 0);
  const pick = () => {
    let r = random() * weightSum;
    for (const n of names) {
      r -= BULK_KINDS[n].weight;
      if (r < 0) return n;
    }
    return names[0];
  };
  const waves = 15;
  // The first wave outnumbers the slots, so that the queue holds tasks behind it.
  const firstWave = Math.max(Math.ceil(bulkCount / waves), 2 * CONCURRENCY);
  const perWave = Math.ceil((bulkCount - Math.min(firstWave, bulkCount)) / (waves - 1));
  let made = 0;
  for (let w = 0; w < waves && made < bulkCount; w++) {
    const byKind = new Map();
    const scheduled = [];
    const size = w === 0 ? firstWave : perWave;
    for (let k = 0; k < size && made < bulkCount; k++, made++) {
      const name = pick();
      const kind = BULK_KINDS[name];
      const spec = kind.make(made);
      if (kind.scheduled) scheduled.push(spec);
      else {
        const list = byKind.get(name) ?? [];
        list.push(spec);
        byKind.set(name, list);
      }
    }
    for (const [name, specs] of byKind) {
      const kind = BULK_KINDS[name];
      await pushKind(name, specs, kind.retries ?? (() => 0));
    }
    if (w === 0) {
      // Behind the first wave (more tasks than free slots), tasks of the lowest priority
      // wait in the queue: cancel them while they are pending. Whether they really never
      // ran is checked from their events at the end.
      const victims = await pushKind(
        'cancel while pending',
        Array.from({ length: cancelEach }, (_, i) => ({
          classification: 'demo:sync',
          input: { i },
          priority: -1000,
        })),
        () => 0,
      );
      for (const rec of victims) {
        service.cancel(rec.id, 'canceled by the demo while pending').catch(report);
      }
    }
    for (const spec of scheduled) {
      const when = new Date(Date.now() + 1000 + Math.floor(random() * 1000));
      const pushedAt = performance.now();
      const task = await service.schedule(spec).for(when);
      track(task, 'scheduled', pushedAt, 0);
    }
    await sleep(200);
  }

  // 3. Wait for every task to end (or give up after --timeout).
  let timedOut = false;
  const watchdog = new Promise((resolve) => {
    const t = setTimeout(() => {
      timedOut = true;
      resolve();
    }, TIMEOUT_MS);
    allDone.then(() => {
      clearTimeout(t);
      resolve();
    });
  });
  await watchdog;
  stopDisplay();

  // 4. Cross-check with the store before shutting down.
  // A durable store may hold tasks of earlier runs: only this run's count.
  const stored = (await service.list()).filter((t) => tasks.has(t.id));
  const notTerminal = stored.filter((t) => !isTerminalStatus(t.status));
  const flakySample = [...tasks.values()].find(
    (r) => r.kind === 'js flaky (retried)' && r.retries === 1,
  );
  const sampleEvents = flakySample ? await service.events(flakySample.id) : [];

  const shutdownStart = performance.now();
  await service.shutdown();
  const shutdownMs = performance.now() - shutdownStart;

  summarize({ stored, notTerminal, timedOut, sampleEvents, flakySample, shutdownMs });
}

function report(err) {
  errors++;
  console.error(`\n${err?.stack ?? err}`);
}

function summarize({ stored, notTerminal, timedOut, sampleEvents, flakySample, shutdownMs }) {
  const wallS = (lastFinishAt - firstPushAt) / 1000;
  const recs = [...tasks.values()];
  const expectOf = (rec) => {
    if (rec.kind.startsWith('cancel')) return 'canceled';
    return BULK_KINDS[rec.kind].expect;
  };

  // Per kind.
  const kinds = new Map();
  for (const rec of recs) {
    let k = kinds.get(rec.kind);
    if (k === undefined) {
      k = {
        count: 0,
        succeeded: 0,
        failed: 0,
        canceled: 0,
        other: 0,
        retries: 0,
        expectRetries: 0,
        unexpected: 0,
        lat: [],
      };
      kinds.set(rec.kind, k);
    }
    k.count++;
    if (rec.status in k && isTerminalStatus(rec.status)) k[rec.status]++;
    else k.other++;
    k.retries += rec.retries;
    k.expectRetries += rec.expectRetries;
    if (rec.status !== expectOf(rec)) k.unexpected++;
    if (rec.kind === 'cancel while pending' && rec.ran) k.unexpected++;
    if (rec.kind.startsWith('cancel while running') && rec.statusAtCancel !== 'running') {
      k.unexpected++;
    }
    if (rec.finishedAt !== undefined) k.lat.push(rec.finishedAt - rec.pushedAt);
  }
  const kindRows = [];
  let unexpected = 0;
  let retryMismatch = 0;
  for (const [name, k] of kinds) {
    const p = percentiles(k.lat);
    unexpected += k.unexpected;
    if (k.retries !== k.expectRetries) retryMismatch++;
    kindRows.push([
      name,
      k.count,
      expectOf(recs.find((r) => r.kind === name)),
      k.succeeded,
      k.failed,
      k.canceled,
      k.other,
      k.retries === k.expectRetries ? k.retries : `${k.retries} (exp ${k.expectRetries})`,
      k.unexpected,
      fmtMs(p.p50),
      fmtMs(p.p99),
    ]);
  }
  console.log('\nPer kind (latency = push → terminal status event, ms):');
  console.log(
    table(
      [
        'kind',
        'tasks',
        'expected',
        'succeeded',
        'failed',
        'canceled',
        'not ended',
        'retries',
        'unexpected',
        'p50 ms',
        'p99 ms',
      ],
      kindRows,
    ),
  );

  const all = percentiles(
    recs.filter((r) => r.finishedAt !== undefined).map((r) => r.finishedAt - r.pushedAt),
  );
  const immediate = percentiles(
    recs
      .filter(
        (r) =>
          r.finishedAt !== undefined &&
          r.retries === 0 &&
          r.kind !== 'scheduled' &&
          !r.kind.startsWith('cancel'),
      )
      .map((r) => r.finishedAt - r.pushedAt),
  );
  const storedCounts = {};
  for (const t of stored) storedCounts[t.status] = (storedCounts[t.status] ?? 0) + 1;
  const lost = recs.filter((r) => !isTerminalStatus(r.status ?? 'pending')).length;

  console.log('\nSummary:');
  console.log(
    table(
      ['metric', 'value'],
      [
        ['tasks pushed', fmt(recs.length)],
        ['succeeded', fmt(liveCounts.succeeded)],
        ['failed (for good)', fmt(liveCounts.failed)],
        ['canceled', fmt(liveCounts.canceled)],
        ['not terminal (lost)', fmt(lost)],
        ['retries (waiting_retry events)', fmt(retries)],
        [
          'events (status / log / progress)',
          `${fmt(eventCounts.status)} / ${fmt(eventCounts.log)} / ${fmt(eventCounts.progress)}`,
        ],
        [
          'store check (list())',
          `${stored.length} tasks, ${notTerminal.length} not terminal: ${JSON.stringify(storedCounts)}`,
        ],
        ['first push → last finish', `${wallS.toFixed(2)} s`],
        ['throughput (paced, see below)', `${fmt(recs.length / wallS, 0)} tasks/s`],
        [
          'latency, all tasks (ms)',
          `p50 ${fmtMs(all.p50)}  p90 ${fmtMs(all.p90)}  p99 ${fmtMs(all.p99)}  max ${fmtMs(all.max)}`,
        ],
        [
          'latency, run-once tasks (ms)',
          `p50 ${fmtMs(immediate.p50)}  p90 ${fmtMs(immediate.p90)}  p99 ${fmtMs(immediate.p99)}  max ${fmtMs(immediate.max)}`,
        ],
        [
          'canceled running handlers',
          `js: ${jsAborts} saw ctx.signal abort; native: shutdown took ${fmt(shutdownMs)} ms`,
        ],
        ['service errors', fmt(errors)],
      ],
      { align: ['l', 'l'] },
    ),
  );
  console.log(
    '  (pushes are spread over ~3 s and scheduled tasks run 1-2 s after their push: the ' +
      "throughput is\n  that of the demo, not the engine's maximum (see npm run bench). " +
      'run-once = neither scheduled,\n  retried nor canceled; latency includes queueing ' +
      `behind the ${CONCURRENCY} slots)`,
  );

  if (flakySample !== undefined) {
    console.log(`\nEvents of one retried task (${flakySample.id}):`);
    const t0 = sampleEvents[0]?.ts.getTime() ?? 0;
    for (const evt of sampleEvents) {
      let what;
      if (evt.classification === 'status') {
        const p = evt.payload;
        what = p.status + (p.error ? ` (${p.error.code ?? ''} ${p.error.message})` : '');
        if (p.nextRunAt) what += ` next run +${p.nextRunAt.getTime() - evt.ts.getTime()} ms`;
      } else if (evt.classification === 'log') {
        what = evt.payload.map((l) => `${l.level}: ${l.msg}`).join('; ');
      } else {
        what = JSON.stringify(evt.payload);
      }
      console.log(
        `  #${String(evt.seq).padEnd(6)} +${String(evt.ts.getTime() - t0).padStart(4)} ms  ${evt.classification.padEnd(8)} ${what}`,
      );
    }
  }

  const problems = [];
  if (timedOut) problems.push(`timed out after ${TIMEOUT_MS / 1000} s`);
  if (lost > 0) problems.push(`${lost} task(s) lost (not terminal)`);
  if (notTerminal.length > 0) problems.push(`${notTerminal.length} stored task(s) not terminal`);
  if (unexpected > 0) problems.push(`${unexpected} task(s) ended differently than expected`);
  if (retryMismatch > 0) problems.push(`${retryMismatch} kind(s) with an unexpected retry count`);
  const jsRunningVictims = kinds.get('cancel while running (js)')?.count ?? 0;
  if (jsAborts !== jsRunningVictims) {
    problems.push(`${jsAborts} JS handler(s) saw their abort, ${jsRunningVictims} expected`);
  }
  if (problems.length > 0) {
    console.log(`\nFAILED: ${problems.join('; ')}`);
    process.exitCode = 1;
  } else {
    console.log('\nOK: every task reached its expected status.');
  }
}

main().catch((err) => {
  if (ticker !== undefined) clearInterval(ticker);
  bars?.stop();
  console.error(err);
  process.exitCode = 1;
  service.shutdown().catch(() => {});
});
