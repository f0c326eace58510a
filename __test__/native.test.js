const {
  lib,
  useServices,
  waitForStatus,
  recordEvents,
  statusHistory,
  fixedBackoff,
} = require('./helpers');

const { TaskFailError, TaskCancelError } = lib;
const createService = useServices();

describe('native handlers', () => {
  test('native:noop returns null and native:echo returns its input', async () => {
    const service = createService();
    const noop = await service.push(
      { classification: 'native:noop', input: { ignored: true } },
      true,
    );
    await expect(noop.tracker.wait()).resolves.toBeNull();
    const input = { text: 'héllo ✓', n: -1.5, list: [1, null, { deep: [true, false] }], empty: {} };
    const echo = await service.push({ classification: 'native:echo', input }, true);
    await expect(echo.tracker.wait()).resolves.toEqual(input);
    expect((await service.read(echo.task.id)).output).toEqual(input);
    expect(await statusHistory(service, echo.task.id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test('native:cpu with {iterations} burns CPU, reports progress and returns a checksum', async () => {
    const service = createService();
    const rec = recordEvents(service);
    const { task, tracker } = await service.push(
      { classification: 'native:cpu', input: { iterations: 400000 } },
      true,
    );
    const output = await tracker.wait();
    expect(output.iterations).toBeGreaterThanOrEqual(400000);
    expect(typeof output.checksum).toBe('string');
    const progress = rec.of(task.id).filter((e) => e.classification === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(1);
    for (const evt of progress) {
      expect(evt.payload.of).toBe(400000);
      expect(evt.payload.done).toBeLessThan(400000);
    }
    // Progress sits between running and the terminal status.
    const kinds = rec
      .of(task.id)
      .map((e) => (e.classification === 'status' ? e.payload.status : e.classification));
    expect(kinds[0]).toBe('pending');
    expect(kinds[1]).toBe('running');
    expect(kinds[kinds.length - 1]).toBe('succeeded');
    // Deterministic for the same input.
    const again = await service.push(
      { classification: 'native:cpu', input: { iterations: 400000 } },
      true,
    );
    expect((await again.tracker.wait()).checksum).toBe(output.checksum);
  });

  test('native:cpu with {ms} spins for about that long and succeeds', async () => {
    const service = createService();
    const { task, tracker } = await service.push(
      { classification: 'native:cpu', input: { ms: 30 } },
      true,
    );
    const output = await tracker.wait();
    expect(output.iterations).toBeGreaterThan(0);
    const events = await service.events(task.id);
    const running = events.find((e) => e.payload.status === 'running');
    const done = events.find((e) => e.payload.status === 'succeeded');
    expect(done.ts.getTime() - running.ts.getTime()).toBeGreaterThanOrEqual(29);
  });

  test('native:sleep runs for its duration and returns sleptMs', async () => {
    const service = createService();
    const { tracker } = await service.push(
      { classification: 'native:sleep', input: { ms: 20 } },
      true,
    );
    await expect(tracker.wait()).resolves.toEqual({ sleptMs: 20 });
  });

  test('cancelling native:sleep aborts it and frees its thread', async () => {
    const service = createService({ nativeThreads: 1 });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push(
      { classification: 'native:sleep', input: { ms: 600000 } },
      true,
    );
    await waitForStatus(service, task.id, 'running');
    await service.cancel(task.id);
    await expect(tracker.wait()).rejects.toBeInstanceOf(TaskCancelError);
    // With one native thread, this only runs once the sleeper stopped.
    const next = await service.push({ classification: 'native:echo', input: 'after' }, true);
    await expect(next.tracker.wait()).resolves.toBe('after');
    expect(rec.statuses(task.id)).toEqual(['pending', 'running', 'canceled']);
    expect((await service.read(task.id)).output).toBeUndefined();
  });

  test('native:fail fails with the given message and code', async () => {
    const service = createService();
    const { task, tracker } = await service.push(
      { classification: 'native:fail', input: { message: 'asked to fail', code: 'E_ASKED' } },
      true,
    );
    const err = await tracker.wait().catch((e) => e);
    expect(err).toBeInstanceOf(TaskFailError);
    expect(err.details).toMatchObject({ message: 'asked to fail', code: 'E_ASKED' });
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({ status: 'failed', attempt: 1 });
    expect(stored.logTail.map((l) => l.msg)).toEqual(['attempt 1']);
  });

  test('native:fail with succeedOnAttempt is retried under maxAttempts and then succeeds', async () => {
    const service = createService();
    const rec = recordEvents(service);
    const { task, tracker } = await service.push(
      {
        classification: 'native:fail',
        input: { succeedOnAttempt: 3, code: 7 },
        maxAttempts: 3,
        backoff: fixedBackoff(5),
      },
      true,
    );
    await expect(tracker.wait()).resolves.toEqual({ attempt: 3 });
    const seq = rec
      .of(task.id)
      .map((e) => (e.classification === 'status' ? e.payload.status : `log:${e.payload[0].msg}`));
    expect(seq).toEqual([
      'pending',
      'running',
      'log:attempt 1',
      'waiting_retry',
      'running',
      'log:attempt 2',
      'waiting_retry',
      'running',
      'log:attempt 3',
      'succeeded',
    ]);
    const retry = rec.of(task.id).find((e) => e.payload.status === 'waiting_retry');
    expect(retry.payload.error).toEqual({ message: 'native:fail failed as asked', code: 7 });
    expect(await service.read(task.id)).toMatchObject({ status: 'succeeded', attempt: 2 });
  });

  test('native:fail exhausts maxAttempts and fails', async () => {
    const service = createService();
    const { task, tracker } = await service.push(
      {
        classification: 'native:fail',
        input: { succeedOnAttempt: 5 },
        maxAttempts: 2,
        backoff: fixedBackoff(1),
      },
      true,
    );
    await expect(tracker.wait()).rejects.toBeInstanceOf(TaskFailError);
    expect(await statusHistory(service, task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'failed',
    ]);
  });

  test('native:panic only fails its task: no panic crosses into JS, the service keeps working', async () => {
    const service = createService({ nativeThreads: 1 });
    const errors = [];
    service.on('error', (err) => errors.push(err));
    const { task, tracker } = await service.push(
      { classification: 'native:panic', maxAttempts: 2, backoff: fixedBackoff(1) },
      true,
    );
    const err = await tracker.wait().catch((e) => e);
    expect(err).toBeInstanceOf(TaskFailError);
    expect(err.details.code).toBe('E_PANIC');
    expect(err.details.message).toMatch(/panicked/);
    expect(await statusHistory(service, task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'failed',
    ]);
    // The (only) native thread survived the panics.
    const after = await service.push({ classification: 'native:echo', input: 'alive' }, true);
    await expect(after.tracker.wait()).resolves.toBe('alive');
    expect(errors).toEqual([]);
  });

  test('native and inline tasks run side by side on one service', async () => {
    const service = createService({ concurrency: 4, nativeThreads: 2 });
    service.register('js:inline-neighbour', (x) => x * 10);
    const tasks = await service.pushMany([
      { classification: 'native:echo', input: 1 },
      { classification: 'js:inline-neighbour', input: 2 },
      { classification: 'native:sleep', input: { ms: 5 } },
      { classification: 'js:inline-neighbour', input: 3 },
    ]);
    const outputs = [];
    for (const t of tasks) {
      await waitForStatus(service, t.id, 'succeeded');
      outputs.push((await service.read(t.id)).output);
    }
    expect(outputs).toEqual([1, 20, { sleptMs: 5 }, 30]);
  });
});
