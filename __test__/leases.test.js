const {
  lib,
  useServices,
  waitForStatus,
  waitForEnd,
  recordEvents,
  statusHistory,
  blockFor,
  delay,
  withDeadline,
  fixedBackoff,
} = require('./helpers');

const { TaskAbortedError, TaskFailError } = lib;
const createService = useServices();

const LEASE_MS = 200;
const BLOCK_MS = 3 * LEASE_MS;
// Well above what recovery needs (a few lease lengths): turns a hang into a fast, clear failure.
const DEADLINE_MS = 6000;
// Production shape: the service sits idle for a moment between start-up and the first push.
const IDLE_MS = 100;

describe('leases', () => {
  test('an expired lease is recovered as a failed attempt; the task re-runs and the stale result is rejected', async () => {
    const service = createService({ leaseMs: LEASE_MS });
    const runs = [];
    service.register('lease:block', async (_input, ctx) => {
      const token = (await service.read(ctx.taskId)).leaseToken;
      runs.push({ attempt: ctx.attempt, token, signal: ctx.signal });
      if (runs.length === 1) {
        // Freeze this thread: no lease renewal can happen meanwhile.
        blockFor(BLOCK_MS);
        if (!ctx.signal.aborted) {
          await new Promise((resolve) =>
            ctx.signal.addEventListener('abort', resolve, { once: true }),
          );
        }
        ctx.logger.info('log from the stale run');
        await ctx.progress({ stale: true });
        return 'first (stale)';
      }
      return 'second';
    });
    const rec = recordEvents(service);
    await delay(IDLE_MS);
    const { task, tracker } = await service.push(
      {
        classification: 'lease:block',
        maxAttempts: 2,
        // The retry must come after the first run unblocked (BLOCK_MS).
        backoff: fixedBackoff(1500),
      },
      true,
    );
    await expect(
      withDeadline(tracker.wait(), DEADLINE_MS, 'the expired lease was never recovered'),
    ).resolves.toBe('second');
    expect(runs).toHaveLength(2);
    expect(runs.map((r) => r.attempt)).toEqual([1, 2]);
    expect(runs[1].token).toBeGreaterThan(runs[0].token);
    // The first run was told its lease was lost.
    expect(runs[0].signal.aborted).toBe(true);
    expect(runs[0].signal.reason).toBeInstanceOf(TaskAbortedError);
    expect(runs[0].signal.reason.reason).toBe('lease_lost');
    expect(runs[1].signal.aborted).toBe(false);
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({ status: 'succeeded', output: 'second', attempt: 1 });
    expect(rec.statuses(task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'succeeded',
    ]);
    const retry = rec.of(task.id).find((e) => e.payload.status === 'waiting_retry');
    expect(retry.payload.error.code).toBe('E_LEASE_EXPIRED');
    expect(retry.payload.error.message).toContain(service.options.workerId);
    // Nothing of the stale run was recorded.
    expect(rec.of(task.id).filter((e) => e.classification !== 'status')).toEqual([]);
    expect(await service.events(task.id)).toEqual(rec.of(task.id));
  });

  test('with no attempt left, an expired lease fails the task and the late result is dropped', async () => {
    const service = createService({ leaseMs: LEASE_MS });
    let returned = false;
    service.register('lease:last', () => {
      blockFor(BLOCK_MS);
      returned = true;
      return 'too late';
    });
    await delay(IDLE_MS);
    const { task, tracker } = await service.push({ classification: 'lease:last' }, true);
    const err = await withDeadline(tracker.wait(), DEADLINE_MS, 'the lease never expired').then(
      (output) => new Error(`the stale run's result was accepted: ${JSON.stringify(output)}`),
      (e) => e,
    );
    expect({ name: err.name, message: err.message }).toMatchObject({
      name: 'TaskFailError',
      message: expect.stringContaining('lease'),
    });
    expect(err).toBeInstanceOf(TaskFailError);
    expect(err.details.code).toBe('E_LEASE_EXPIRED');
    expect(returned).toBe(true);
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({ status: 'failed', attempt: 1 });
    expect(stored.output).toBeUndefined();
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'failed']);
  });

  test('a responsive JS handler running longer than its lease keeps it (renewed automatically)', async () => {
    const service = createService({ leaseMs: 400 });
    const seen = {};
    service.register('lease:long', async (_input, ctx) => {
      seen.firstExpiry = (await service.read(ctx.taskId)).leaseExpiry.getTime();
      // Work for several lease lengths without blocking the event loop.
      await delay(1300);
      const now = await service.read(ctx.taskId);
      seen.lastExpiry = now.leaseExpiry.getTime();
      seen.status = now.status;
      seen.aborted = ctx.signal.aborted;
      return 'kept the lease';
    });
    const { task, tracker } = await service.push({ classification: 'lease:long' }, true);
    await expect(tracker.wait()).resolves.toBe('kept the lease');
    expect(seen.status).toBe('running');
    expect(seen.aborted).toBe(false);
    expect(seen.lastExpiry).toBeGreaterThan(seen.firstExpiry);
    expect(await service.read(task.id)).toMatchObject({ status: 'succeeded', attempt: 0 });
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test('native handlers running longer than their lease are renewed by the engine', async () => {
    const service = createService({ leaseMs: 100, nativeThreads: 2 });
    await delay(IDLE_MS);
    const tasks = await service.pushMany([
      { classification: 'native:sleep', input: { ms: 900 } },
      { classification: 'native:cpu', input: { ms: 700 } },
    ]);
    // The tasks run for several lease lengths; then other (scheduled) work arrives.
    await delay(400);
    const other = await service.schedule({ classification: 'native:noop' }).for(Date.now() + 20);
    await waitForStatus(service, other.id, 'succeeded');
    for (const t of tasks)
      await withDeadline(waitForEnd(service, t.id), DEADLINE_MS, 'native task end');
    for (const t of tasks) {
      expect(await statusHistory(service, t.id)).toEqual(['pending', 'running', 'succeeded']);
      expect(await service.read(t.id)).toMatchObject({ status: 'succeeded', attempt: 0 });
    }
  });

  test('a running task is leased to options.workerId with a fencing token that grows per claim', async () => {
    const service = createService({ workerId: 'lease-test-worker' });
    const tokens = [];
    service.register('lease:owner', async (_input, ctx) => {
      const t = await service.read(ctx.taskId);
      tokens.push({ owner: t.leaseOwner, token: t.leaseToken, expiry: t.leaseExpiry });
      if (ctx.attempt < 3) throw new Error('again');
      return 'ok';
    });
    const { task, tracker } = await service.push(
      { classification: 'lease:owner', maxAttempts: 3, backoff: fixedBackoff(1) },
      true,
    );
    await tracker.wait();
    expect(tokens.map((t) => t.owner)).toEqual([
      'lease-test-worker',
      'lease-test-worker',
      'lease-test-worker',
    ]);
    for (const t of tokens) expect(t.expiry).toBeInstanceOf(Date);
    expect(tokens[1].token).toBeGreaterThan(tokens[0].token);
    expect(tokens[2].token).toBeGreaterThan(tokens[1].token);
    const done = await service.read(task.id);
    expect(done.leaseOwner == null).toBe(true);
    expect(done.leaseExpiry).toBeUndefined();
  });
});
