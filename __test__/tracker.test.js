const { lib, deferred, useServices, waitFor, waitForStatus, fixedBackoff } = require('./helpers');

const {
  TaskTracker,
  TaskFailError,
  TaskCancelError,
  TaskRescheduleError,
  TaskRetryError,
  TaskControlError,
  isTaskError,
} = lib;
const createService = useServices();

async function barrier(service) {
  const probe = await service.push({ classification: 'native:noop' });
  await waitForStatus(service, probe.id, 'succeeded');
}

class MyError extends Error {
  constructor(message) {
    super(message);
    this.name = 'MyError';
    this.code = 'E_MINE';
  }
}

describe('resolve() and wait()', () => {
  test('resolve() and wait() settle with the output on success; tracker.task follows', async () => {
    const service = createService();
    service.register('tracker:ok', (input) => ({ doubled: input * 2 }));
    const { task, tracker } = await service.push({ classification: 'tracker:ok', input: 21 }, true);
    expect(tracker.taskId).toBe(task.id);
    expect(tracker.task).toBe(task);
    const [resolved, waited] = await Promise.all([tracker.resolve(), tracker.wait()]);
    expect(resolved).toEqual({ doubled: 42 });
    expect(waited).toEqual({ doubled: 42 });
    expect(tracker.status).toBe('succeeded');
    expect(tracker.done).toBe(true);
    expect(tracker.task.output).toEqual({ doubled: 42 });
    // Calls after the end settle at once with the same result.
    await expect(tracker.resolve()).resolves.toEqual({ doubled: 42 });
  });

  test('resolve() rejects at once on a scheduled task; wait() waits for the run', async () => {
    const service = createService();
    service.register('tracker:later', () => 'ran');
    const when = new Date(Date.now() + 120);
    const { task, tracker } = await service
      .schedule({ classification: 'tracker:later' }, true)
      .for(when);
    const err = await tracker.resolve().catch((e) => e);
    expect(err).toBeInstanceOf(TaskRescheduleError);
    expect(err).toBeInstanceOf(TaskControlError);
    expect(err).toMatchObject({
      taskId: task.id,
      nextAction: 'scheduled',
      code: 'E_TASK_RESCHEDULED',
    });
    expect(err.meta.scheduledTo).toBeInstanceOf(Date);
    expect(err.meta.scheduledTo.getTime()).toBe(when.getTime());
    expect(isTaskError(err, TaskRescheduleError)).toBe(true);
    await expect(tracker.wait()).resolves.toBe('ran');
  });

  test('resolve() and wait() wait through retries (no settlement on waiting_retry)', async () => {
    const service = createService();
    service.register('tracker:flaky', (_input, ctx) => {
      if (ctx.attempt < 3) throw new Error(`try ${ctx.attempt}`);
      return 'third time';
    });
    const { tracker } = await service.push(
      { classification: 'tracker:flaky', maxAttempts: 3, backoff: fixedBackoff(5) },
      true,
    );
    const statuses = [];
    tracker.pipe((evt) => statuses.push(evt.payload.status), 'status');
    await expect(tracker.resolve()).resolves.toBe('third time');
    await expect(tracker.wait()).resolves.toBe('third time');
    expect(statuses).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'waiting_retry',
      'running',
      'succeeded',
    ]);
  });

  test('in the same process the rejection is the handler’s own error with nextAction', async () => {
    const service = createService();
    const thrown = new MyError('custom failure');
    service.register('tracker:own', () => {
      throw thrown;
    });
    const { task, tracker } = await service.push({ classification: 'tracker:own' }, true);
    const err = await tracker.wait().catch((e) => e);
    expect(err).toBe(thrown);
    expect(err).toBeInstanceOf(MyError);
    expect(err.nextAction).toBe('failed');
    expect(isTaskError(err)).toBe(true);
    await expect(tracker.resolve()).rejects.toBe(thrown);
    // A tracker made later (from the persisted events) rejects with a TaskFailError.
    const { tracker: late } = await service.track(task.id);
    const lateErr = await late.wait().catch((e) => e);
    expect(lateErr).toBeInstanceOf(TaskFailError);
    expect(lateErr).toMatchObject({
      taskId: task.id,
      nextAction: 'failed',
      code: 'E_TASK_FAILED',
      message: 'custom failure',
      details: { message: 'custom failure', code: 'E_MINE' },
    });
  });

  test('native failures reject with TaskFailError carrying the recorded error', async () => {
    const service = createService();
    const { task, tracker } = await service.push(
      { classification: 'native:fail', input: { message: 'native says no', code: 'E_NATIVE' } },
      true,
    );
    const err = await tracker.wait().catch((e) => e);
    expect(err).toBeInstanceOf(TaskFailError);
    expect(err).toMatchObject({
      taskId: task.id,
      nextAction: 'failed',
      message: 'native says no',
      details: { message: 'native says no', code: 'E_NATIVE' },
    });
  });

  test('cancel rejects with TaskCancelError (code 400 details)', async () => {
    const service = createService();
    const started = deferred();
    service.register('tracker:hang', (_input, ctx) => {
      started.resolve();
      return new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
    });
    const { task, tracker } = await service.push({ classification: 'tracker:hang' }, true);
    await started.promise;
    const waited = tracker.wait().catch((e) => e);
    await service.cancel(task.id);
    const err = await waited;
    expect(err).toBeInstanceOf(TaskCancelError);
    expect(err).toMatchObject({
      taskId: task.id,
      nextAction: 'canceled',
      code: 'E_TASK_CANCELED',
      details: { message: `Task ${task.id} canceled`, code: 400 },
    });
  });

  test('TaskRetryError and friends carry taskId, details, meta and nextAction', () => {
    const at = new Date(Date.now() + 1000);
    const retry = new TaskRetryError('t1', { message: 'later' }, { nextRunAt: at });
    expect(retry).toBeInstanceOf(TaskControlError);
    expect(retry).toMatchObject({
      taskId: 't1',
      nextAction: 'waiting_retry',
      code: 'E_TASK_RETRY',
      details: { message: 'later' },
      meta: { nextRunAt: at },
      message: 'later',
    });
    expect(new TaskRetryError('t2', undefined, { nextRunAt: at }).message).toContain(
      at.toISOString(),
    );
    expect(new TaskFailError('t3').message).toBe('Task t3 failed');
    expect(new TaskCancelError('t4').message).toBe('Task t4 canceled');
    expect(new TaskRescheduleError('t5').nextAction).toBe('scheduled');
  });
});

describe('hooks and pipes', () => {
  test('onSucceed / onFailure / onCancel fire once, also when registered after the fact', async () => {
    const service = createService();
    service.register('tracker:hooks', (input) => {
      if (input === 'fail') throw new Error('hook failure');
      return input;
    });
    const ok = await service.push({ classification: 'tracker:hooks', input: 'fine' }, true);
    const bad = await service.push({ classification: 'tracker:hooks', input: 'fail' }, true);
    const calls = [];
    ok.tracker.onSucceed((evt) => calls.push(['ok:succeed', evt.payload.output]));
    ok.tracker.onFailure(() => calls.push(['ok:failure']));
    bad.tracker.onFailure((evt) => calls.push(['bad:failure', evt.payload.error.message]));
    bad.tracker.onSucceed(() => calls.push(['bad:succeed']));
    await ok.tracker.wait();
    await bad.tracker.wait().catch(() => undefined);
    await barrier(service);
    // Each hook once; the two tasks may end in either order.
    expect(calls).toHaveLength(2);
    expect(calls).toEqual(
      expect.arrayContaining([
        ['ok:succeed', 'fine'],
        ['bad:failure', 'hook failure'],
      ]),
    );
    // Registered after the end: called at once with the current status.
    const late = [];
    ok.tracker.onSucceed((evt) => late.push(['succeed', evt.payload.status, evt.payload.output]));
    bad.tracker.onFailure((evt) => late.push(['failure', evt.payload.status]));
    ok.tracker.onCancel(() => late.push(['cancel']));
    expect(late).toEqual([
      ['succeed', 'succeeded', 'fine'],
      ['failure', 'failed'],
    ]);
  });

  test('logs(pipe) receives [level, "<iso ts> - <msg>", meta] tuples', async () => {
    const service = createService();
    service.register('tracker:logs', (_input, ctx) => {
      ctx.logger.info('first', { k: 1 });
      ctx.logger.error('second');
      return null;
    });
    const { tracker } = await service.push({ classification: 'tracker:logs' }, true);
    const batches = [];
    tracker.logs((tuples) => batches.push(tuples));
    await tracker.wait();
    const tuples = batches.flat();
    expect(tuples).toHaveLength(2);
    expect(tuples[0][0]).toBe('info');
    expect(tuples[0][1]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z - first$/);
    expect(tuples[0][2]).toEqual({ k: 1 });
    expect(tuples[1][0]).toBe('error');
    expect(tuples[1][1]).toMatch(/ - second$/);
    expect(tuples[1][2]).toBeUndefined();
  });

  test('pipe(fn, type) filters by classification; the returned function removes the pipe', async () => {
    const service = createService();
    const release = deferred();
    const started = deferred();
    service.register('tracker:pipe', async (_input, ctx) => {
      ctx.logger.info('one');
      await ctx.progress(1);
      started.resolve();
      await release.promise;
      ctx.logger.info('two');
      await ctx.progress(2);
      return 'end';
    });
    const { tracker } = await service.push({ classification: 'tracker:pipe' }, true);
    const all = [];
    const statuses = [];
    const progress = [];
    tracker.pipe((evt) => all.push(evt.classification));
    tracker.pipe((evt) => statuses.push(evt.payload.status), 'status');
    const removeProgress = tracker.pipe((evt) => progress.push(evt.payload), 'progress');
    await started.promise;
    await waitFor(() => progress.length === 1, { what: 'first progress event' });
    removeProgress();
    release.resolve();
    await tracker.wait();
    expect(all).toEqual(['status', 'status', 'log', 'progress', 'log', 'progress', 'status']);
    expect(statuses).toEqual(['pending', 'running', 'succeeded']);
    expect(progress).toEqual([1]);
    expect(() => tracker.pipe('not a function')).toThrow(TypeError);
  });

  test('a throwing pipe is reported and does not stop the other pipes or settlement', async () => {
    const service = createService();
    const errors = [];
    service.on('error', (err) => errors.push(err));
    const { tracker } = await service.push({ classification: 'native:echo', input: 'v' }, true);
    const seen = [];
    tracker.pipe(() => {
      throw new Error('pipe broke');
    });
    tracker.pipe((evt) => seen.push(evt.payload.status), 'status');
    await expect(tracker.wait()).resolves.toBe('v');
    expect(seen).toEqual(['pending', 'running', 'succeeded']);
    expect(errors.length).toBeGreaterThanOrEqual(1);
    expect(errors[0].message).toBe('pipe broke');
  });

  test('refresh(evt, ctx) is the observer entry point; events already seen (by seq) are ignored', async () => {
    const fakeBus = {
      observers: [],
      observe(observer, filter) {
        this.observers.push({ observer, filter });
        return () => {
          this.observers = this.observers.filter((o) => o.observer !== observer);
        };
      },
      unObserve(observer) {
        this.observers = this.observers.filter((o) => o.observer !== observer);
      },
    };
    const task = { id: 'fake-1', status: 'pending', classification: 'x' };
    const tracker = new TaskTracker(fakeBus, task);
    expect(fakeBus.observers).toHaveLength(1);
    const { filter } = fakeBus.observers[0];
    expect(filter('task_event', 'status', 'fake-1:status:u1')).toBe(true);
    expect(filter('task_event', 'status', 'fake-2:status:u1')).toBe(false);
    expect(filter('other_table', 'status', 'fake-1:status:u1')).toBe(false);
    const seen = [];
    tracker.pipe((evt, ctx) => seen.push([evt.seq, ctx?.tag]));
    const ctx = { tag: 'ctx', logger: console };
    const evt = (seq, payload, classification = 'status') => ({
      id: `fake-1:${classification}:u${seq}`,
      uuid: `u${seq}`,
      seq,
      taskId: 'fake-1',
      ts: new Date(),
      classification,
      payload,
    });
    const updates = [];
    tracker.onUpdate((e) => updates.push(e.payload));
    await tracker.refresh(evt(1, { status: 'running' }), ctx);
    await tracker.refresh(evt(1, { status: 'running' }), ctx);
    await tracker.refresh(evt(2, { at: 1 }, 'progress'), ctx);
    const update = {
      status: 'update',
      currentStep: 1,
      totalSteps: 2,
      output: { added: 1, insertionIndex: 1 },
    };
    await tracker.refresh(evt(3, update, 'update'), ctx);
    const waited = tracker.wait();
    await tracker.refresh(evt(4, { status: 'succeeded', output: 0 }), ctx);
    await expect(waited).resolves.toBe(0);
    expect(seen).toEqual([
      [1, 'ctx'],
      [2, 'ctx'],
      [3, 'ctx'],
      [4, 'ctx'],
    ]);
    // onUpdate only sees update events; an update is not a status change.
    expect(updates).toEqual([update]);
    expect(task.status).toBe('succeeded');
    expect(tracker.done).toBe(true);
    // Unsubscribed once ended.
    expect(fakeBus.observers).toHaveLength(0);
  });
});

describe('tracking existing tasks', () => {
  test('a tracker for an already ended task settles at once and does not subscribe', async () => {
    const service = createService();
    service.register('tracker:ended', (input) => {
      if (input === 'bad') throw new Error('ended badly');
      return input;
    });
    const ok = await service.push({ classification: 'tracker:ended', input: 'good' }, true);
    const bad = await service.push({ classification: 'tracker:ended', input: 'bad' }, true);
    await ok.tracker.wait();
    await bad.tracker.wait().catch(() => undefined);
    expect(service.bus.count()).toBe(0);
    const { task, tracker } = await service.track(ok.task.id);
    expect(task.status).toBe('succeeded');
    expect(tracker.done).toBe(true);
    await expect(tracker.wait()).resolves.toBe('good');
    await expect(tracker.resolve()).resolves.toBe('good');
    const { tracker: badTracker } = await service.track(bad.task.id);
    await expect(badTracker.wait()).rejects.toBeInstanceOf(TaskFailError);
    expect(service.bus.count()).toBe(0);
  });

  test('track() of a running task follows it to the end', async () => {
    const service = createService();
    const started = deferred();
    const release = deferred();
    service.register('tracker:running', async () => {
      started.resolve();
      return release.promise;
    });
    const pushed = await service.push({ classification: 'tracker:running' });
    await started.promise;
    const { task, tracker } = await service.track(pushed.id);
    expect(task.status).toBe('running');
    expect(tracker.done).toBe(false);
    const statuses = [];
    tracker.pipe((evt) => statuses.push(evt.payload.status), 'status');
    release.resolve('released');
    await expect(tracker.wait()).resolves.toBe('released');
    expect(statuses).toEqual(['succeeded']);
    expect(tracker.task.status).toBe('succeeded');
  });

  test('no transition between read and subscribe is lost or applied twice', async () => {
    const service = createService({ concurrency: 8 });
    const ids = [];
    const trackers = [];
    // Trackers made at every stage: right after push, a tick later, a macrotask later.
    for (let i = 0; i < 40; i++) {
      const task = await service.push({ classification: 'native:echo', input: i });
      ids.push(task.id);
      trackers.push((await service.track(task.id)).tracker);
      if (i % 3 === 0) await new Promise((resolve) => setImmediate(resolve));
      trackers.push((await service.track(ids[Math.floor(i / 2)])).tracker);
    }
    const counts = trackers.map(() => ({ succeed: 0, seqs: [] }));
    trackers.forEach((tracker, n) => {
      tracker.onSucceed(() => {
        counts[n].succeed += 1;
      });
      tracker.pipe((evt) => counts[n].seqs.push(evt.seq));
    });
    const outputs = await Promise.all(trackers.map((t) => t.wait()));
    await barrier(service);
    trackers.forEach((tracker, n) => {
      expect(outputs[n]).toBe(tracker.task.input);
      expect(counts[n].succeed).toBe(1);
      expect(new Set(counts[n].seqs).size).toBe(counts[n].seqs.length);
      expect(tracker.done).toBe(true);
    });
    expect(service.bus.count()).toBe(0);
  });
});
