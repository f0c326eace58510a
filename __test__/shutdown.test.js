const {
  lib,
  deferred,
  useServices,
  waitForStatus,
  recordEvents,
  statusHistory,
} = require('./helpers');

const { ServiceShutdownError, TaskAbortedError } = lib;
const createService = useServices();

/** Registers a handler that signals its start and only ends when its signal aborts. */
function registerHanging(service, classification) {
  const started = deferred();
  const state = { signal: undefined, returned: false };
  service.register(classification, async (_input, ctx) => {
    state.signal = ctx.signal;
    started.resolve();
    await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
    state.returned = true;
    return 'late result';
  });
  return { started: started.promise, state };
}

describe('shutdown', () => {
  test('an idle service shuts down; closed becomes true', async () => {
    const service = createService();
    expect(service.closed).toBe(false);
    await expect(service.shutdown()).resolves.toBeUndefined();
    expect(service.closed).toBe(true);
  });

  test('shutdown twice is harmless: the same promise, and later calls resolve too', async () => {
    const service = createService();
    const first = service.shutdown();
    const second = service.shutdown({ timeoutMs: 5 });
    expect(second).toBe(first);
    await first;
    await expect(service.shutdown()).resolves.toBeUndefined();
  });

  test('shutdown waits for running handlers that finish within the timeout', async () => {
    const service = createService();
    const started = deferred();
    const release = deferred();
    let signal;
    service.register('shutdown:finishing', async (_input, ctx) => {
      signal = ctx.signal;
      started.resolve();
      return release.promise;
    });
    const rec = recordEvents(service);
    const task = await service.push({ classification: 'shutdown:finishing' });
    await started.promise;
    let resolved = false;
    const stopping = service.shutdown({ timeoutMs: 20000 }).then(() => {
      resolved = true;
    });
    // The service stops taking work at once...
    await expect(service.push({ classification: 'native:noop' })).rejects.toBeInstanceOf(
      ServiceShutdownError,
    );
    expect(resolved).toBe(false);
    // ...and the running handler may finish: its result is kept.
    release.resolve('finished during shutdown');
    await stopping;
    expect(signal.aborted).toBe(false);
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({ status: 'succeeded', output: 'finished during shutdown' });
    // The last events were delivered before shutdown resolved.
    expect(rec.statuses(task.id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test('after the timeout, running handlers are aborted and their tasks go back to pending', async () => {
    const service = createService();
    const { started, state } = registerHanging(service, 'shutdown:hanging');
    const rec = recordEvents(service);
    const task = await service.push({ classification: 'shutdown:hanging' });
    await started;
    await service.shutdown({ timeoutMs: 50 });
    expect(state.signal.aborted).toBe(true);
    expect(state.signal.reason).toBeInstanceOf(TaskAbortedError);
    expect(state.signal.reason.reason).toBe('shutdown');
    const stored = await service.read(task.id);
    expect(stored.status).toBe('pending');
    expect(stored.attempt).toBe(0);
    expect(stored.leaseOwner == null).toBe(true);
    expect(stored.leaseExpiry).toBeUndefined();
    expect(stored.output).toBeUndefined();
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'pending']);
    expect(rec.statuses(task.id)).toEqual(['pending', 'running', 'pending']);
    // The handler's late result (it returns once aborted) is not recorded.
    await new Promise((resolve) => setImmediate(resolve));
    expect(state.returned).toBe(true);
    expect((await service.read(task.id)).status).toBe('pending');
  });

  test('the default timeout is options.gracefulShutdownMs', async () => {
    const service = createService({ gracefulShutdownMs: 30 });
    const { started, state } = registerHanging(service, 'shutdown:default');
    const task = await service.push({ classification: 'shutdown:default' });
    await started;
    await service.shutdown();
    expect(state.signal.aborted).toBe(true);
    expect((await service.read(task.id)).status).toBe('pending');
  });

  test('a running native task is aborted and released; queued tasks stay pending', async () => {
    const service = createService({ concurrency: 1, nativeThreads: 1 });
    const sleeping = await service.push({ classification: 'native:sleep', input: { ms: 60000 } });
    await waitForStatus(service, sleeping.id, 'running');
    const queued = await service.pushMany([
      { classification: 'native:noop' },
      { classification: 'native:noop' },
    ]);
    await service.shutdown({ timeoutMs: 30 });
    expect((await service.read(sleeping.id)).status).toBe('pending');
    for (const t of queued) expect((await service.read(t.id)).status).toBe('pending');
    expect(await statusHistory(service, sleeping.id)).toEqual(['pending', 'running', 'pending']);
  });

  test('push, pushMany, schedule and register are refused after shutdown; nothing is stored', async () => {
    const service = createService();
    service.register('shutdown:known', () => 1);
    await service.shutdown();
    const refusals = [
      service.push({ classification: 'shutdown:known' }),
      service.push({ classification: 'shutdown:known' }, true),
      service.pushMany([{ classification: 'shutdown:known' }]),
      service.schedule({ classification: 'shutdown:known' }).for(Date.now() + 1000),
      service.start(),
    ];
    for (const promise of refusals) {
      const err = await promise.catch((e) => e);
      expect(err).toBeInstanceOf(ServiceShutdownError);
      expect(err.code).toBe('E_SHUTDOWN');
    }
    expect(() => service.register('shutdown:new', () => 1)).toThrow(ServiceShutdownError);
    expect(await service.list()).toEqual([]);
  });

  test('push during a pending shutdown is refused too', async () => {
    const service = createService();
    const { started } = registerHanging(service, 'shutdown:during');
    await service.push({ classification: 'shutdown:during' });
    await started;
    const stopping = service.shutdown({ timeoutMs: 50 });
    const err = await service.push({ classification: 'shutdown:during' }).catch((e) => e);
    expect(err).toBeInstanceOf(ServiceShutdownError);
    await stopping;
    expect((await service.list()).length).toBe(1);
  });

  test('bad shutdown options are rejected without shutting down', async () => {
    const service = createService();
    await expect(service.shutdown({ timeoutMs: -1 })).rejects.toThrow(RangeError);
    await expect(service.shutdown({ timeout: 5 })).rejects.toThrow(TypeError);
    expect(service.closed).toBe(false);
    const task = await service.push({ classification: 'native:echo', input: 'still open' });
    await waitForStatus(service, task.id, 'succeeded');
  });

  test('reads still work after shutdown', async () => {
    const service = createService();
    const task = await service.push({ classification: 'native:echo', input: 'kept' });
    await waitForStatus(service, task.id, 'succeeded');
    await service.shutdown();
    expect((await service.read(task.id)).output).toBe('kept');
    expect((await service.list()).length).toBe(1);
    expect((await service.events(task.id)).length).toBe(3);
    const { tracker } = await service.track(task.id);
    await expect(tracker.wait()).resolves.toBe('kept');
  });
});
