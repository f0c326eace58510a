const {
  lib,
  useServices,
  recordEvents,
  statusHistory,
  fixedBackoff,
  waitForStatus,
} = require('./helpers');

const { TaskTracker } = lib;

const createService = useServices();

function retryEvents(events) {
  return events.filter(
    (e) => e.classification === 'status' && e.payload.status === 'waiting_retry',
  );
}

describe('retries', () => {
  test('without maxAttempts a failure is final (default maxAttempts is 1)', async () => {
    const service = createService();
    let runs = 0;
    service.register('retries:once', () => {
      runs += 1;
      throw new Error('fails');
    });
    const { task, tracker } = await service.push({ classification: 'retries:once' }, true);
    expect(task.maxAttempts).toBe(1);
    await expect(tracker.wait()).rejects.toThrow('fails');
    expect(runs).toBe(1);
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'failed']);
    expect((await service.read(task.id)).attempt).toBe(1);
  });

  test('a task is retried until it succeeds; attempt counts the failures, success leaves it', async () => {
    const service = createService();
    const attempts = [];
    service.register('retries:flaky', (_input, ctx) => {
      attempts.push(ctx.attempt);
      if (ctx.attempt < 3) throw new Error(`failure ${ctx.attempt}`);
      return { ok: ctx.attempt };
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push(
      { classification: 'retries:flaky', maxAttempts: 5, backoff: fixedBackoff(5) },
      true,
    );
    await expect(tracker.wait()).resolves.toEqual({ ok: 3 });
    expect(attempts).toEqual([1, 2, 3]);
    expect(rec.statuses(task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'waiting_retry',
      'running',
      'succeeded',
    ]);
    const retries = retryEvents(rec.of(task.id));
    expect(retries.map((e) => e.payload.error.message)).toEqual(['failure 1', 'failure 2']);
    for (const e of retries) expect(e.payload.nextRunAt).toBeInstanceOf(Date);
    const stored = await service.read(task.id);
    expect(stored.status).toBe('succeeded');
    expect(stored.attempt).toBe(2);
    expect(stored.output).toEqual({ ok: 3 });
    expect(stored.error == null).toBe(true);
    expect(stored.nextRunAt).toBeUndefined();
  });

  test('after maxAttempts failures the task fails with the last error', async () => {
    const service = createService();
    const thrown = [];
    service.register('retries:always', (_input, ctx) => {
      const err = new Error(`attempt ${ctx.attempt} failed`);
      thrown.push(err);
      throw err;
    });
    const { task, tracker } = await service.push(
      { classification: 'retries:always', maxAttempts: 3, backoff: fixedBackoff(5) },
      true,
    );
    let failures = 0;
    tracker.onFailure(() => {
      failures += 1;
    });
    const rejection = await tracker.wait().catch((err) => err);
    expect(thrown).toHaveLength(3);
    // Same process: the tracker rejects with the handler's own (last) error.
    expect(rejection).toBe(thrown[2]);
    expect(rejection.nextAction).toBe('failed');
    expect(failures).toBe(1);
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({
      status: 'failed',
      attempt: 3,
      error: { message: 'attempt 3 failed' },
    });
    expect(await statusHistory(service, task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'waiting_retry',
      'running',
      'failed',
    ]);
  });

  test('exponential backoff waits min(baseMs·2^(attempt−1), maxMs) and never retries early', async () => {
    const service = createService();
    const runAt = [];
    service.register('retries:exp', () => {
      runAt.push(Date.now());
      throw new Error('again');
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push(
      {
        classification: 'retries:exp',
        maxAttempts: 5,
        backoff: { strategy: 'exponential', baseMs: 20, maxMs: 70, jitter: 'none' },
      },
      true,
    );
    await expect(tracker.wait()).rejects.toThrow('again');
    const retries = retryEvents(rec.of(task.id));
    expect(retries).toHaveLength(4);
    const delays = retries.map((e) => e.payload.nextRunAt.getTime() - e.ts.getTime());
    expect(delays).toEqual([20, 40, 70, 70]);
    expect(runAt).toHaveLength(5);
    for (let i = 0; i < retries.length; i++) {
      expect(runAt[i + 1]).toBeGreaterThanOrEqual(retries[i].payload.nextRunAt.getTime());
    }
  });

  test('fixed backoff waits baseMs every time', async () => {
    const service = createService();
    service.register('retries:fixed', () => {
      throw new Error('again');
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push(
      {
        classification: 'retries:fixed',
        maxAttempts: 3,
        backoff: { strategy: 'fixed', baseMs: 15, maxMs: 1000, jitter: 'none' },
      },
      true,
    );
    await expect(tracker.wait()).rejects.toThrow('again');
    const delays = retryEvents(rec.of(task.id)).map(
      (e) => e.payload.nextRunAt.getTime() - e.ts.getTime(),
    );
    expect(delays).toEqual([15, 15]);
  });

  test('full jitter picks a delay in [0, exponential delay)', async () => {
    const service = createService();
    service.register('retries:jitter', () => {
      throw new Error('again');
    });
    const rec = recordEvents(service);
    const tasks = await service.pushMany(
      Array.from({ length: 5 }, () => ({
        classification: 'retries:jitter',
        maxAttempts: 3,
        backoff: { baseMs: 30 },
      })),
    );
    for (const t of tasks) {
      expect(t.backoff).toEqual({
        strategy: 'exponential',
        baseMs: 30,
        maxMs: 60000,
        jitter: 'full',
      });
    }
    await Promise.all(
      tasks.map((t) =>
        new TaskTracker(service, t).wait().then(
          () => {
            throw new Error('should have failed');
          },
          (err) => expect(err.message).toBe('again'),
        ),
      ),
    );
    for (const t of tasks) {
      const delays = retryEvents(rec.of(t.id)).map(
        (e) => e.payload.nextRunAt.getTime() - e.ts.getTime(),
      );
      expect(delays).toHaveLength(2);
      expect(delays[0]).toBeGreaterThanOrEqual(0);
      expect(delays[0]).toBeLessThan(30);
      expect(delays[1]).toBeGreaterThanOrEqual(0);
      expect(delays[1]).toBeLessThan(60);
    }
  });

  test('the retried run gets the same input and a new context', async () => {
    const service = createService();
    const seen = [];
    service.register('retries:ctx', (input, ctx) => {
      seen.push({ input, attempt: ctx.attempt, taskId: ctx.taskId, aborted: ctx.signal.aborted });
      if (ctx.attempt === 1) throw new Error('first');
      return 'second';
    });
    const { task, tracker } = await service.push(
      { classification: 'retries:ctx', input: { n: 1 }, maxAttempts: 2, backoff: fixedBackoff(1) },
      true,
    );
    await expect(tracker.wait()).resolves.toBe('second');
    expect(seen).toEqual([
      { input: { n: 1 }, attempt: 1, taskId: task.id, aborted: false },
      { input: { n: 1 }, attempt: 2, taskId: task.id, aborted: false },
    ]);
  });

  test('a retried task waits in waiting_retry with nextRunAt on the record', async () => {
    const service = createService();
    service.register('retries:slow', (_input, ctx) => {
      if (ctx.attempt === 1) throw new Error('later');
      return 'ok';
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push(
      { classification: 'retries:slow', maxAttempts: 2, backoff: fixedBackoff(500) },
      true,
    );
    const retryEvt = await waitForStatus(service, task.id, 'waiting_retry');
    const waiting = await service.read(task.id);
    expect(waiting.status).toBe('waiting_retry');
    expect(waiting.nextRunAt).toBeInstanceOf(Date);
    expect(waiting.nextRunAt.getTime()).toBe(retryEvt.payload.nextRunAt.getTime());
    expect(waiting.attempt).toBe(1);
    expect(waiting.error.message).toBe('later');
    await expect(tracker.wait()).resolves.toBe('ok');
    expect(rec.statuses(task.id).slice(-2)).toEqual(['running', 'succeeded']);
  });
});
