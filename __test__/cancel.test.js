const {
  lib,
  deferred,
  useServices,
  waitForStatus,
  recordEvents,
  statusHistory,
  fixedBackoff,
} = require('./helpers');

const { TaskCancelError, TaskAbortedError } = lib;
const createService = useServices();

/** Pushes a native no-op and waits for it: every event emitted before is then delivered. */
async function barrier(service) {
  const probe = await service.push({ classification: 'native:noop' });
  await waitForStatus(service, probe.id, 'succeeded');
}

function cancelError(id) {
  return { message: `Task ${id} canceled`, code: 400 };
}

describe('cancel', () => {
  test('cancelling a pending task ends it canceled; its handler never runs', async () => {
    const service = createService({ concurrency: 1 });
    const gate = deferred();
    const started = deferred();
    const ran = [];
    service.register('cancel:gate', () => {
      started.resolve();
      return gate.promise;
    });
    service.register('cancel:work', (input) => {
      ran.push(input);
      return input;
    });
    await service.push({ classification: 'cancel:gate' });
    await started.promise;
    const { task, tracker } = await service.push(
      { classification: 'cancel:work', input: 'x' },
      true,
    );
    const returned = await service.cancel(task.id);
    expect(returned.status).toBe('canceled');
    expect(returned.error).toEqual(cancelError(task.id));
    const err = await tracker.wait().catch((e) => e);
    expect(err).toBeInstanceOf(TaskCancelError);
    expect(err).toMatchObject({
      taskId: task.id,
      nextAction: 'canceled',
      code: 'E_TASK_CANCELED',
      details: cancelError(task.id),
    });
    gate.resolve('open');
    await barrier(service);
    expect(ran).toEqual([]);
    const events = await service.events(task.id);
    expect(events.map((e) => e.payload.status)).toEqual(['pending', 'canceled']);
    expect(events[1].payload).toEqual({ status: 'canceled', error: cancelError(task.id) });
  });

  test('cancel with a reason records it in the error details', async () => {
    const service = createService();
    const task = await service.schedule({ classification: 'native:noop' }).for(Date.now() + 60000);
    const returned = await service.cancel(task.id, 'not needed any more');
    expect(returned.error).toEqual({
      ...cancelError(task.id),
      details: { reason: 'not needed any more' },
    });
    expect((await service.read(task.id)).error).toEqual(returned.error);
  });

  test('cancelling a scheduled task is final: it never runs, even after its date', async () => {
    const service = createService();
    const ran = [];
    service.register('cancel:sched', (input) => {
      ran.push(input);
      return input;
    });
    const task = await service
      .schedule({ classification: 'cancel:sched', input: 'canceled' })
      .for(Date.now() + 300);
    expect(task.status).toBe('scheduled');
    await service.cancel(task.id);
    const later = await service
      .schedule({ classification: 'cancel:sched', input: 'later' })
      .for(Date.now() + 400);
    await waitForStatus(service, later.id, 'succeeded');
    expect(ran).toEqual(['later']);
    expect(await statusHistory(service, task.id)).toEqual(['scheduled', 'canceled']);
    expect((await service.read(task.id)).scheduledTo).toBeInstanceOf(Date);
  });

  test('cancelling a running handler aborts ctx.signal and discards its late result', async () => {
    const service = createService();
    const started = deferred();
    const returned = deferred();
    let signal;
    service.register('cancel:running', async (_input, ctx) => {
      signal = ctx.signal;
      started.resolve();
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
      returned.resolve();
      return 'late result';
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push({ classification: 'cancel:running' }, true);
    await started.promise;
    expect(signal.aborted).toBe(false);
    const canceled = await service.cancel(task.id);
    expect(canceled.status).toBe('canceled');
    await expect(tracker.wait()).rejects.toBeInstanceOf(TaskCancelError);
    await returned.promise;
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(TaskAbortedError);
    expect(signal.reason).toMatchObject({ reason: 'canceled', taskId: task.id, code: 'E_ABORTED' });
    await barrier(service);
    const stored = await service.read(task.id);
    expect(stored.status).toBe('canceled');
    expect(stored.output).toBeUndefined();
    expect(stored.error).toEqual(cancelError(task.id));
    expect(rec.statuses(task.id)).toEqual(['pending', 'running', 'canceled']);
  });

  test('a result reported right after the cancel (before the abort reaches the handler) is rejected', async () => {
    const service = createService();
    const started = deferred();
    const release = deferred();
    const after = deferred();
    service.register('cancel:race', async () => {
      started.resolve();
      const value = await release.promise;
      setImmediate(after.resolve);
      return value;
    });
    const { task } = await service.push({ classification: 'cancel:race' }, true);
    await started.promise;
    const cancelPromise = service.cancel(task.id);
    release.resolve('raced result');
    await cancelPromise;
    await after.promise;
    await barrier(service);
    const stored = await service.read(task.id);
    expect(stored.status).toBe('canceled');
    expect(stored.output).toBeUndefined();
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'canceled']);
  });

  test('cancelling a task waiting for a retry stops the retries', async () => {
    const service = createService();
    let runs = 0;
    service.register('cancel:retry', () => {
      runs += 1;
      throw new Error('fail');
    });
    const task = await service.push({
      classification: 'cancel:retry',
      maxAttempts: 5,
      backoff: fixedBackoff(400),
    });
    await waitForStatus(service, task.id, 'waiting_retry');
    const canceled = await service.cancel(task.id);
    expect(canceled.status).toBe('canceled');
    expect(canceled.nextRunAt).toBeUndefined();
    // Wait past the retry date: nothing runs again.
    const later = await service.schedule({ classification: 'native:noop' }).for(Date.now() + 500);
    await waitForStatus(service, later.id, 'succeeded');
    expect(runs).toBe(1);
    expect(await statusHistory(service, task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'canceled',
    ]);
  });

  test('cancelling an ended task changes nothing and emits nothing', async () => {
    const service = createService();
    service.register('cancel:ok', () => 0);
    service.register('cancel:bad', () => {
      throw new Error('bad');
    });
    const ok = await service.push({ classification: 'cancel:ok' }, true);
    await ok.tracker.wait();
    const bad = await service.push({ classification: 'cancel:bad' }, true);
    await bad.tracker.wait().catch(() => undefined);
    const gone = await service.schedule({ classification: 'native:noop' }).for(Date.now() + 60000);
    await service.cancel(gone.id);
    await barrier(service);

    const before = {
      ok: await service.read(ok.task.id),
      bad: await service.read(bad.task.id),
      gone: await service.read(gone.id),
    };
    const eventsBefore = {
      ok: await service.events(ok.task.id),
      bad: await service.events(bad.task.id),
      gone: await service.events(gone.id),
    };
    const rec = recordEvents(service);
    const afterCancel = {
      ok: await service.cancel(ok.task.id),
      bad: await service.cancel(bad.task.id, 'too late'),
      gone: await service.cancel(gone.id, 'again'),
    };
    await barrier(service);
    for (const key of ['ok', 'bad', 'gone']) {
      expect(afterCancel[key]).toEqual(before[key]);
      expect(await service.read(before[key].id)).toEqual(before[key]);
      expect(await service.events(before[key].id)).toEqual(eventsBefore[key]);
      expect(rec.of(before[key].id)).toEqual([]);
    }
    expect(afterCancel.ok).toMatchObject({ status: 'succeeded', output: 0 });
    expect(afterCancel.bad).toMatchObject({ status: 'failed', error: { message: 'bad' } });
  });

  test('a tracker fires onCancel once and resolve() rejects with TaskCancelError', async () => {
    const service = createService();
    const task = await service.schedule({ classification: 'native:noop' }).for(Date.now() + 60000);
    const { tracker } = await service.track(task.id);
    let calls = 0;
    tracker.onCancel((evt) => {
      calls += 1;
      expect(evt.payload.status).toBe('canceled');
    });
    const waited = tracker.wait().catch((e) => e);
    await service.cancel(task.id);
    const err = await waited;
    expect(err).toBeInstanceOf(TaskCancelError);
    await expect(tracker.resolve()).rejects.toBeInstanceOf(TaskCancelError);
    await barrier(service);
    expect(calls).toBe(1);
  });
});
