// Worker pool: JS handlers in worker_threads, every event from the one engine.

const path = require('node:path');
const { TaskService, HandlerModuleError, TaskValidationError } = require('..');
const { useServices, waitFor } = require('./helpers');

const HANDLERS = path.join(__dirname, 'fixtures/pool/handlers.js');
const THROWS = path.join(__dirname, 'fixtures/pool/throws-on-load.js');
const ESM = path.join(__dirname, 'fixtures/pool/esm-handlers.mjs');

const makeService = useServices({ shutdownTimeoutMs: 200 });

// Worker replacements and fallbacks are reported on 'warning'; keep the test output quiet.
const quiet = (service) => service.on('warning', () => {});

function pool(extra = {}, options = {}) {
  const service = makeService({
    ...options,
    workerPool: { size: 2, modules: [HANDLERS], ...extra },
  });
  quiet(service);
  return service;
}

async function run(service, spec) {
  const { tracker } = await service.push(spec, true);
  return tracker.wait();
}

/** The event sequence of a task without ids, timestamps, stacks and thread ids. */
function shape(events) {
  return events.map((e) => {
    if (e.classification === 'log') return ['log', e.payload.map((l) => `${l.level}:${l.msg}`)];
    if (e.classification === 'progress') return ['progress', e.payload];
    const p = e.payload;
    return ['status', p.status, p.error?.message ?? null, p.output ?? null];
  });
}

describe('worker pool', () => {
  test('exactly size workers register and serve the modules', async () => {
    const service = pool({ size: 3 });
    await service.start();
    expect(service.workerCount).toBe(3);
    expect(await run(service, { classification: 'pool:chatty', input: { n: 21 } })).toEqual({
      doubled: 42,
    });
  });

  test('never more than size × concurrencyPerWorker runs at once (shared counter)', async () => {
    for (const concurrencyPerWorker of [1, 2]) {
      const counters = new SharedArrayBuffer(8);
      const service = pool({ concurrencyPerWorker, workerData: { counters } }, { concurrency: 64 });
      await service.start();
      const tasks = Array.from({ length: 16 }, () => ({
        classification: 'pool:wait',
        input: { ms: 20 },
      }));
      await Promise.all(tasks.map((t) => run(service, t)));
      const view = new Int32Array(counters);
      expect(Atomics.load(view, 0)).toBe(0);
      expect(Atomics.load(view, 1)).toBe(2 * concurrencyPerWorker);
      await service.shutdown();
    }
  });

  test('a main-thread timer keeps ticking while a CPU-bound task runs in a worker, not inline', async () => {
    const ticksDuring = async (service) => {
      let ticks = 0;
      const timer = setInterval(() => {
        ticks += 1;
      }, 5);
      await run(service, { classification: 'pool:cpu', input: { ms: 300 } });
      clearInterval(timer);
      return ticks;
    };
    const inWorker = pool();
    await inWorker.start();
    const workerTicks = await ticksDuring(inWorker);
    const inline = pool({ mode: 'browser' });
    await inline.start();
    const inlineTicks = await ticksDuring(inline);
    expect(workerTicks).toBeGreaterThanOrEqual(10);
    expect(inlineTicks).toBeLessThanOrEqual(2);
  });

  test('the same handler gives the same events inline, in a worker and natively', async () => {
    const spec = (classification) => ({
      classification,
      input: { succeedOnAttempt: 2 },
      maxAttempts: 2,
      backoff: { strategy: 'fixed', baseMs: 5, jitter: 'none' },
    });
    const sequences = [];
    for (const [service, classification] of [
      [pool(), 'pool:fail'],
      [pool({ mode: 'browser' }), 'pool:fail'],
      [makeService(), 'native:fail'],
    ]) {
      await service.start();
      const { task, tracker } = await service.push(spec(classification), true);
      expect(await tracker.wait()).toEqual({ attempt: 2 });
      sequences.push(shape(await service.events(task.id)));
    }
    expect(sequences[0]).toEqual(sequences[2]);
    expect(sequences[1]).toEqual(sequences[2]);
    expect(sequences[2].map((s) => s[1])).toEqual([
      'pending',
      'running',
      ['info:attempt 1'],
      'waiting_retry',
      'running',
      ['info:attempt 2'],
      'succeeded',
    ]);
  });

  test('logs and progress from a worker reach the service emitter in order', async () => {
    const service = pool();
    const seen = [];
    service.on('event', (e) => seen.push(e));
    const { task, tracker } = await service.push(
      { classification: 'pool:chatty', input: { n: 2 } },
      true,
    );
    await tracker.wait();
    const mine = shape(seen.filter((e) => e.taskId === task.id));
    expect(mine).toEqual([
      ['status', 'pending', null, null],
      ['status', 'running', null, null],
      ['log', ['info:one']],
      ['progress', { pct: 50 }],
      ['log', ['warn:two']],
      ['status', 'succeeded', null, { doubled: 4 }],
    ]);
    expect(shape(await service.events(task.id))).toEqual(mine);
  });

  test.each([
    ['process.exit()', 'pool:exit'],
    ['an uncaught exception in a timer', 'pool:uncaught'],
  ])(
    'a worker killed by %s: the attempt counts, the task is retried, the pool is refilled',
    async (_what, classification) => {
      const service = pool();
      await service.start();
      const { task, tracker } = await service.push(
        {
          classification,
          maxAttempts: 2,
          backoff: { strategy: 'fixed', baseMs: 5, jitter: 'none' },
        },
        true,
      );
      expect(await tracker.wait()).toEqual({ attempt: 2 });
      const events = await service.events(task.id);
      const retry = events.find((e) => e.payload.status === 'waiting_retry');
      expect(retry.payload.error.code).toBe('E_EXECUTOR_LOST');
      await waitFor(() => service.workerCount === 2, { what: 'the pool back to 2 workers' });
    },
  );

  test('a worker that hits its resourceLimits is replaced; without attempts left the task fails', async () => {
    const service = pool({ resourceLimits: { maxOldGenerationSizeMb: 16 } });
    await service.start();
    const { task, tracker } = await service.push({ classification: 'pool:oom' }, true);
    await expect(tracker.wait()).rejects.toMatchObject({ taskId: task.id });
    const stored = await service.read(task.id);
    expect(stored.status).toBe('failed');
    expect(stored.error.code).toBe('E_EXECUTOR_LOST');
    await waitFor(() => service.workerCount === 2, { what: 'the pool back to 2 workers' });
  });

  test('replacements of dead workers are rate limited (restart.maxPerMinute)', async () => {
    const service = pool({ size: 1, restart: { maxPerMinute: 1 } });
    const warnings = [];
    service.on('warning', (message) => warnings.push(message));
    await service.start();
    const spec = {
      classification: 'pool:exit',
      maxAttempts: 2,
      backoff: { strategy: 'fixed', baseMs: 5, jitter: 'none' },
    };
    await service.pushMany([spec, spec]);
    await waitFor(() => warnings.some((w) => w.includes('restart limit reached')), {
      what: 'the restart limit',
    });
    expect(warnings.filter((w) => w.includes('starting a replacement'))).toHaveLength(1);
    expect(service.workerCount).toBe(0);
  });

  test('a module that throws on load: start() rejects naming it, no respawn loop', async () => {
    const service = makeService({ workerPool: { size: 2, modules: [THROWS] } });
    const err = await service.start().catch((e) => e);
    expect(err).toBeInstanceOf(HandlerModuleError);
    expect(err.code).toBe('E_HANDLER_MODULE');
    expect(err.message).toContain('throws-on-load.js');
    expect(err.message).toContain('this module cannot load');
    await expect(service.push({ classification: 'pool:cpu', input: { ms: 1 } })).rejects.toBe(err);
    expect(service.workerCount).toBe(0);
  });

  test('ES module handler modules load too', async () => {
    const service = makeService({ workerPool: { size: 1, modules: [ESM] } });
    expect(await run(service, { classification: 'pool:esm', input: 5 })).toEqual({
      esm: true,
      input: 5,
    });
  });

  test('cancel aborts the signal inside the worker and drops the late result', async () => {
    const service = pool();
    const { task, tracker } = await service.push({ classification: 'pool:until-aborted' }, true);
    await waitFor(async () => (await service.read(task.id)).status === 'running', {
      what: 'the task running',
    });
    await service.cancel(task.id);
    await expect(tracker.wait()).rejects.toMatchObject({ taskId: task.id });
    const stored = await service.read(task.id);
    expect(stored.status).toBe('canceled');
    expect(stored.output).toBeUndefined();
    // The worker is free again: another task runs on it.
    expect(await run(service, { classification: 'pool:chatty', input: { n: 1 } })).toEqual({
      doubled: 2,
    });
  });

  test('shutdown releases a worker task that ignores its signal and lets the process exit', async () => {
    const service = pool();
    const { task } = await service.push({ classification: 'pool:stuck' }, true);
    await waitFor(async () => (await service.read(task.id)).status === 'running', {
      what: 'the task running',
    });
    await service.shutdown({ timeoutMs: 50 });
    expect((await service.read(task.id)).status).toBe('pending');
    expect(service.workerCount).toBe(0);
  });

  test("mode 'browser' runs the modules inline and says so", async () => {
    const service = pool({ mode: 'browser' });
    const warnings = [];
    service.on('warning', (message) => warnings.push(message));
    await service.start();
    expect(service.workerCount).toBe(0);
    const out = await run(service, { classification: 'pool:cpu', input: { ms: 1 } });
    expect(out.threadId).toBe(0);
    expect(warnings).toEqual([expect.stringContaining("workerPool.mode is 'browser'")]);
  });

  test('a worker that does not return a timed-out run is terminated and replaced', async () => {
    const service = pool({}, { timeoutGraceMs: 100 });
    const warnings = [];
    service.on('warning', (message) => warnings.push(message));
    await service.start();
    const { task, tracker } = await service.push(
      { classification: 'pool:cpu', input: { ms: 5000 }, timeoutMs: 100 },
      true,
    );
    await expect(tracker.wait()).rejects.toMatchObject({ taskId: task.id });
    const stored = await service.read(task.id);
    expect(stored.status).toBe('failed');
    expect(stored.error.code).toBe('E_TIMEOUT');
    await waitFor(() => warnings.some((w) => w.includes('terminated')), {
      what: 'the stuck worker terminated',
    });
    await waitFor(() => service.workerCount === 2, { what: 'the pool back to 2 workers' });
  });

  test('a timed-out run that returns late is dropped and its worker kept', async () => {
    const service = pool({}, { timeoutGraceMs: 5000 });
    const warnings = [];
    service.on('warning', (message) => warnings.push(message));
    await service.start();
    const { task, tracker } = await service.push(
      {
        classification: 'pool:wait',
        input: { ms: 200 },
        timeoutMs: 20,
        maxAttempts: 2,
        backoff: { strategy: 'fixed', baseMs: 1, jitter: 'none' },
      },
      true,
    );
    // Both attempts time out; each late result is dropped.
    await expect(tracker.wait()).rejects.toMatchObject({ taskId: task.id });
    const events = await service.events(task.id);
    expect(events.filter((e) => e.payload.status === 'running')).toHaveLength(2);
    expect(events.some((e) => e.payload.status === 'succeeded')).toBe(false);
    // The workers returned the runs: none was terminated.
    expect(await run(service, { classification: 'pool:chatty', input: { n: 1 } })).toEqual({
      doubled: 2,
    });
    expect(warnings.filter((w) => w.includes('terminated'))).toEqual([]);
  });

  test('bad pool options get precise errors', () => {
    expect(() => new TaskService({ workerPool: { size: -1, modules: [HANDLERS] } })).toThrow(
      RangeError,
    );
    expect(() => new TaskService({ workerPool: { size: 2 } })).toThrow(/modules/);
    expect(() => new TaskService({ workerPool: { size: 1, modules: ['./nope.js'] } })).toThrow(
      TaskValidationError,
    );
    expect(
      () => new TaskService({ workerPool: { size: 1, modules: [HANDLERS], mode: 'x' } }),
    ).toThrow(/mode/);
    expect(
      () => new TaskService({ workerPool: { size: 1, modules: [HANDLERS], colour: 1 } }),
    ).toThrow(/colour/);
  });
});
