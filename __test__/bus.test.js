const { lib, useServices, waitForStatus, fixedBackoff } = require('./helpers');

const { TaskTracker } = lib;
const createService = useServices();

async function barrier(service) {
  const probe = await service.push({ classification: 'native:noop' });
  await waitForStatus(service, probe.id, 'succeeded');
}

/**
 * A minimal tracker written the way decaf code uses its TaskEventBus: it observes with a
 * filter on (table, event, id), receives `refresh(evt, ctx)`, and unobserves when done.
 * It knows nothing about decaf-tasks.
 */
class DecafStyleTracker {
  constructor(bus, taskId) {
    this.taskId = taskId;
    this.events = [];
    this.filterCalls = [];
    this.contexts = [];
    this.done = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.unobserve = bus.observe(this, (table, event, id) => {
      this.filterCalls.push([table, event, id]);
      return table === 'task_event' && id.startsWith(`${taskId}:`);
    });
  }

  async refresh(evt, ctx) {
    this.events.push(evt);
    this.contexts.push(ctx);
    if (evt.classification !== 'status') return;
    const { status, output, error } = evt.payload;
    if (status === 'succeeded') {
      this.unobserve();
      this._resolve(output);
    } else if (status === 'failed' || status === 'canceled') {
      this.unobserve();
      this._reject(Object.assign(new Error(error ? error.message : status), { status }));
    }
  }
}

describe('service.bus (decaf TaskEventBus compatible)', () => {
  test('a decaf-style observer with a filter follows its task through refresh(evt, ctx)', async () => {
    const service = createService();
    service.register('bus:work', async (input, ctx) => {
      ctx.logger.info('working');
      await ctx.progress({ pct: 50 });
      return { result: input };
    });
    const other = await service.push({ classification: 'native:noop' });
    const task = await service.push({ classification: 'bus:work', input: 'x' });
    const tracker = new DecafStyleTracker(service.bus, task.id);
    await expect(tracker.done).resolves.toEqual({ result: 'x' });
    expect(tracker.events.map((e) => e.classification)).toEqual([
      'status',
      'status',
      'log',
      'progress',
      'status',
    ]);
    expect(tracker.events.every((e) => e.taskId === task.id)).toBe(true);
    // The filter saw ('task_event', classification, event id) for the observed events...
    for (const evt of tracker.events) {
      expect(tracker.filterCalls).toContainEqual(['task_event', evt.classification, evt.id]);
    }
    // ...and for the other task's events, which it refused.
    expect(tracker.filterCalls.some(([, , id]) => id.startsWith(`${other.id}:`))).toBe(true);
    for (const [table, event] of tracker.filterCalls) {
      expect(table).toBe('task_event');
      expect(['status', 'log', 'progress', 'update']).toContain(event);
    }
    // ctx carries a decaf-style logger.
    const ctx = tracker.contexts[0];
    for (const level of ['error', 'warn', 'info', 'debug'])
      expect(typeof ctx.logger[level]).toBe('function');
    expect(service.bus.count()).toBe(0);
  });

  test('a decaf-style observer sees failures and cancellations', async () => {
    const service = createService();
    const failing = await service.push({
      classification: 'native:fail',
      input: { message: 'bus failure' },
      maxAttempts: 2,
      backoff: fixedBackoff(1),
    });
    const failTracker = new DecafStyleTracker(service.bus, failing.id);
    await expect(failTracker.done).rejects.toMatchObject({
      status: 'failed',
      message: 'bus failure',
    });
    expect(
      failTracker.events.filter((e) => e.classification === 'status').map((e) => e.payload.status),
    ).toContain('waiting_retry');

    const later = await service.schedule({ classification: 'native:noop' }).for(Date.now() + 60000);
    const cancelTracker = new DecafStyleTracker(service.bus, later.id);
    await service.cancel(later.id);
    await expect(cancelTracker.done).rejects.toMatchObject({ status: 'canceled' });
  });

  test('observe without a filter receives every event; unobserve / unObserve stop delivery', async () => {
    const service = createService();
    const all = [];
    const second = [];
    const observerA = { refresh: (evt) => all.push(evt.id) };
    const observerB = { refresh: (evt) => second.push(evt.id) };
    const unobserveA = service.bus.observe(observerA);
    service.bus.observe(observerB);
    expect(service.bus.count()).toBe(2);
    const t1 = await service.push({ classification: 'native:echo', input: 1 });
    await waitForStatus(service, t1.id, 'succeeded');
    await barrier(service);
    const persisted = (await service.events(t1.id)).map((e) => e.id);
    expect(all).toEqual(expect.arrayContaining(persisted));
    expect(second).toEqual(expect.arrayContaining(persisted));
    unobserveA();
    service.bus.unObserve(observerB);
    expect(service.bus.count()).toBe(0);
    const seenA = all.length;
    const seenB = second.length;
    const t2 = await service.push({ classification: 'native:echo', input: 2 });
    await waitForStatus(service, t2.id, 'succeeded');
    expect(all.length).toBe(seenA);
    expect(second.length).toBe(seenB);
    // Unobserving twice, or an unknown observer, is harmless.
    unobserveA();
    service.bus.unObserve({ refresh() {} });
  });

  test('observe refuses a non-observer, a non-function filter and a duplicate', () => {
    const service = createService();
    expect(() => service.bus.observe({})).toThrow(TypeError);
    expect(() => service.bus.observe(null)).toThrow(TypeError);
    const observer = { refresh() {} };
    expect(() => service.bus.observe(observer, 'filter')).toThrow(TypeError);
    const off = service.bus.observe(observer);
    expect(() => service.bus.observe(observer)).toThrow(TypeError);
    off();
  });

  test('a throwing or rejecting observer (or filter) does not stop the others and is reported', async () => {
    const service = createService();
    const errors = [];
    service.on('error', (err) => errors.push(err));
    const seen = [];
    service.bus.observe({
      refresh() {
        throw new Error('observer threw');
      },
    });
    service.bus.observe({
      refresh: async () => {
        throw new Error('observer rejected');
      },
    });
    service.bus.observe({ refresh() {} }, () => {
      throw new Error('filter threw');
    });
    service.bus.observe(
      { refresh: (evt) => seen.push(evt.payload.status) },
      (_t, e) => e === 'status',
    );
    const task = await service.push({ classification: 'native:echo', input: 0 });
    await waitForStatus(service, task.id, 'succeeded');
    await barrier(service);
    expect(seen.slice(0, 3)).toEqual(['pending', 'running', 'succeeded']);
    const messages = errors.map((e) => e.message);
    expect(messages).toContain('observer threw');
    expect(messages).toContain('observer rejected');
    expect(messages).toContain('filter threw');
  });

  test('the library TaskTracker works on any decaf-style bus (observe / unObserve only)', async () => {
    const service = createService();
    const calls = { observe: 0, unobserve: 0 };
    const decafBus = {
      observe(observer, filter) {
        calls.observe += 1;
        const off = service.bus.observe(observer, filter);
        return () => {
          calls.unobserve += 1;
          off();
        };
      },
      unObserve(observer) {
        service.bus.unObserve(observer);
      },
    };
    service.register('bus:tracked', (input) => input + 1);
    const task = await service.push({ classification: 'bus:tracked', input: 41 });
    const tracker = new TaskTracker(decafBus, task);
    await expect(tracker.wait()).resolves.toBe(42);
    expect(calls).toEqual({ observe: 1, unobserve: 1 });
    expect(service.bus.count()).toBe(0);
  });
});
