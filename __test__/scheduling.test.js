const {
  deferred,
  useServices,
  waitFor,
  waitForStatus,
  recordEvents,
  statusHistory,
} = require('./helpers');

const createService = useServices();

/**
 * A service with concurrency 1 whose only slot is held by a running "gate" task, so that
 * everything pushed meanwhile queues up; `open()` frees the slot. `order` records the inputs
 * of the `sched:rec` tasks in the order they ran.
 */
async function gatedService(options = {}) {
  const service = createService({ concurrency: 1, ...options });
  const gate = deferred();
  const started = deferred();
  const order = [];
  service.register('sched:gate', () => {
    started.resolve();
    return gate.promise;
  });
  service.register('sched:rec', (input) => {
    order.push(input);
    return input;
  });
  const gateTask = await service.push({ classification: 'sched:gate' });
  await started.promise;
  return {
    service,
    order,
    open: () => gate.resolve('gate done'),
    gateTask,
  };
}

async function allSucceeded(service, tasks) {
  await Promise.all(tasks.map((t) => waitForStatus(service, t.id, 'succeeded')));
}

describe('dispatch order', () => {
  test('higher priority runs first; equal priority keeps insertion order', async () => {
    const { service, order, open } = await gatedService();
    const tasks = [];
    for (const [label, priority] of [
      ['p0-a', 0],
      ['p5-a', 5],
      ['m1', -1],
      ['p5-b', 5],
      ['p10', 10],
      ['p0-b', undefined],
    ]) {
      const spec = { classification: 'sched:rec', input: label };
      if (priority !== undefined) spec.priority = priority;
      tasks.push(await service.push(spec));
    }
    open();
    await allSucceeded(service, tasks);
    expect(order).toEqual(['p10', 'p5-a', 'p5-b', 'p0-a', 'p0-b', 'm1']);
  });

  test('pushMany keeps insertion order among equal priorities', async () => {
    const { service, order, open } = await gatedService();
    const labels = Array.from({ length: 20 }, (_, i) => `t${i}`);
    const tasks = await service.pushMany(
      labels.map((input) => ({ classification: 'sched:rec', input })),
    );
    open();
    await allSucceeded(service, tasks);
    expect(order).toEqual(labels);
  });

  test('at equal priority an earlier due time runs first; priority beats due time', async () => {
    const { service, order, open } = await gatedService();
    const now = Date.now();
    const tasks = [
      await service.push({ classification: 'sched:rec', input: 'due-now' }),
      await service.push({
        classification: 'sched:rec',
        input: 'due-5s-ago',
        scheduledTo: now - 5000,
      }),
      await service.push({
        classification: 'sched:rec',
        input: 'due-10s-ago',
        scheduledTo: new Date(now - 10000),
      }),
      await service.push({ classification: 'sched:rec', input: 'high-priority', priority: 1 }),
    ];
    // A scheduledTo in the past makes a pending task, not a scheduled one.
    expect(tasks.map((t) => t.status)).toEqual(['pending', 'pending', 'pending', 'pending']);
    open();
    await allSucceeded(service, tasks);
    expect(order).toEqual(['high-priority', 'due-10s-ago', 'due-5s-ago', 'due-now']);
  });
});

describe('concurrency', () => {
  test('never more than `concurrency` handlers run; a freed slot is refilled', async () => {
    const service = createService({ concurrency: 3 });
    let running = 0;
    let maxRunning = 0;
    const started = [];
    const gates = new Map();
    service.register('sched:slot', (input) => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      started.push(input);
      const gate = deferred();
      gates.set(input, gate);
      return gate.promise.then(() => {
        running -= 1;
        return input;
      });
    });
    const tasks = await service.pushMany(
      Array.from({ length: 9 }, (_, i) => ({ classification: 'sched:slot', input: i })),
    );
    await waitFor(() => started.length === 3, { what: 'three running handlers' });
    expect((await service.list({ status: 'running' })).length).toBe(3);
    expect((await service.list({ status: 'pending' })).length).toBe(6);
    // Free one slot at a time: each release lets exactly one more task start.
    for (let released = 0; released < 6; released++) {
      gates.get(started[released]).resolve();
      await waitFor(() => started.length === 4 + released, { what: `start #${4 + released}` });
      expect(running).toBeLessThanOrEqual(3);
    }
    for (const input of started.slice(6)) gates.get(input).resolve();
    await allSucceeded(service, tasks);
    expect(started.slice().sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(maxRunning).toBe(3);
  });

  test('native tasks share the same concurrency cap', async () => {
    const service = createService({ concurrency: 2, nativeThreads: 4 });
    const rec = recordEvents(service);
    let live = 0;
    let maxLive = 0;
    service.on('status', (evt) => {
      if (evt.payload.status === 'running') live += 1;
      else if (['succeeded', 'failed', 'canceled'].includes(evt.payload.status)) live -= 1;
      maxLive = Math.max(maxLive, live);
    });
    const tasks = await service.pushMany(
      Array.from({ length: 8 }, () => ({ classification: 'native:sleep', input: { ms: 20 } })),
    );
    await allSucceeded(service, tasks);
    expect(maxLive).toBe(2);
    for (const t of tasks) expect(rec.statuses(t.id)).toEqual(['pending', 'running', 'succeeded']);
  });
});

describe('scheduled tasks', () => {
  test('schedule(spec).for(date) stores a scheduled task that runs at its date, not before', async () => {
    const service = createService();
    let ranAt;
    service.register('sched:at', () => {
      ranAt = Date.now();
      return 'ran';
    });
    const when = new Date(Date.now() + 250);
    const { task, tracker } = await service
      .schedule({ classification: 'sched:at', input: 1 }, true)
      .for(when);
    expect(task.status).toBe('scheduled');
    expect(task.scheduledTo).toBeInstanceOf(Date);
    expect(task.scheduledTo.getTime()).toBe(when.getTime());
    expect((await service.read(task.id)).status).toBe('scheduled');
    await expect(tracker.wait()).resolves.toBe('ran');
    expect(ranAt).toBeGreaterThanOrEqual(when.getTime());
    expect(await statusHistory(service, task.id)).toEqual(['scheduled', 'running', 'succeeded']);
    const events = await service.events(task.id);
    expect(events[0].payload.scheduledTo).toBeInstanceOf(Date);
    expect(events[0].payload.scheduledTo.getTime()).toBe(when.getTime());
    expect(events[1].ts.getTime()).toBeGreaterThanOrEqual(when.getTime());
  });

  test('scheduled tasks fire in due order, each at or after its date', async () => {
    const service = createService({ concurrency: 1 });
    const runs = [];
    service.register('sched:due', (input) => {
      runs.push({ input, at: Date.now() });
      return input;
    });
    const base = Date.now();
    const plan = [
      ['c', 600],
      ['a', 300],
      ['b', 450],
    ];
    const tasks = [];
    for (const [input, offset] of plan) {
      tasks.push(await service.schedule({ classification: 'sched:due', input }).for(base + offset));
    }
    // Other work pushed meanwhile does not make the scheduled tasks run early.
    const now = await service.push({ classification: 'sched:due', input: 'now' });
    await allSucceeded(service, [...tasks, now]);
    expect(runs.map((r) => r.input)).toEqual(['now', 'a', 'b', 'c']);
    for (const [input, offset] of plan) {
      expect(runs.find((r) => r.input === input).at).toBeGreaterThanOrEqual(base + offset);
    }
  });

  test('push accepts scheduledTo as ms since the epoch', async () => {
    const service = createService();
    const at = Date.now() + 150;
    const task = await service.push({ classification: 'native:echo', input: 'x', scheduledTo: at });
    expect(task.status).toBe('scheduled');
    expect(task.scheduledTo.getTime()).toBe(at);
    const evt = await waitForStatus(service, task.id, 'running');
    expect(evt.ts.getTime()).toBeGreaterThanOrEqual(at);
    await waitForStatus(service, task.id, 'succeeded');
  });
});

describe('lock keys and dependencies', () => {
  test('tasks sharing a lock key never run at the same time', async () => {
    const service = createService({ concurrency: 4 });
    let running = 0;
    let maxRunning = 0;
    const started = [];
    const gates = [];
    service.register('sched:locked', (input) => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      started.push(input);
      const gate = deferred();
      gates.push(gate);
      return gate.promise.then(() => {
        running -= 1;
        return input;
      });
    });
    const tasks = await service.pushMany([
      { classification: 'sched:locked', input: 'a', lock: 'same-key' },
      { classification: 'sched:locked', input: 'b', lock: 'same-key' },
    ]);
    await waitFor(() => started.length >= 1, { what: 'first locked task' });
    // Give the dispatcher every chance to (wrongly) start the second one: a probe task
    // pushed after it must have run first.
    const probe = await service.push({ classification: 'native:noop' });
    await waitForStatus(service, probe.id, 'succeeded');
    expect(started).toEqual(['a']);
    gates[0].resolve();
    await waitFor(() => started.length === 2, { what: 'second locked task' });
    gates[1].resolve();
    await allSucceeded(service, tasks);
    expect(maxRunning).toBe(1);
  });

  test('a task does not run before its dependencies succeeded', async () => {
    const service = createService({ concurrency: 4 });
    const gate = deferred();
    const started = deferred();
    service.register('sched:dep-first', () => {
      started.resolve();
      return gate.promise;
    });
    const first = await service.push({ classification: 'sched:dep-first' });
    await started.promise;
    const second = await service.push({ classification: 'native:noop', dependencies: [first.id] });
    expect(second.dependencies).toEqual([first.id]);
    const probe = await service.push({ classification: 'native:noop' });
    await waitForStatus(service, probe.id, 'succeeded');
    expect((await service.read(second.id)).status).toBe('pending');
    gate.resolve('first done');
    await waitForStatus(service, second.id, 'succeeded');
    const [firstEvents, secondEvents] = [
      await service.events(first.id),
      await service.events(second.id),
    ];
    const firstDone = firstEvents.find((e) => e.payload.status === 'succeeded');
    const secondRun = secondEvents.find((e) => e.payload.status === 'running');
    expect(secondRun.seq).toBeGreaterThan(firstDone.seq);
  });

  test('lock waiting costs no attempt and never holds up unlocked tasks', async () => {
    const service = createService({ concurrency: 2 });
    const started = deferred();
    const release = deferred();
    service.register('sched:holder', () => {
      started.resolve();
      return release.promise;
    });
    const holder = await service.push({ classification: 'sched:holder', lock: 'L' });
    await started.promise;
    const waiter = await service.push({
      classification: 'native:echo',
      input: 'waiter',
      lock: 'L',
    });
    const free = await service.pushMany(
      Array.from({ length: 5 }, (_, i) => ({ classification: 'native:echo', input: i })),
    );
    await allSucceeded(service, free);
    expect((await service.read(waiter.id)).status).toBe('pending');
    release.resolve('held');
    await allSucceeded(service, [holder, waiter]);
    expect(await service.read(waiter.id)).toMatchObject({ status: 'succeeded', attempt: 0 });
    expect(await statusHistory(service, waiter.id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test('a failed or canceled dependency fails its dependents (and theirs) with E_DEPENDENCY_FAILED', async () => {
    const service = createService();
    const failing = await service.push({
      classification: 'native:fail',
      input: { message: 'dep failed' },
    });
    const child = await service.push({ classification: 'native:noop', dependencies: [failing.id] });
    const grandChild = await service.push({
      classification: 'native:noop',
      dependencies: [child.id],
    });
    await waitForStatus(service, grandChild.id, 'failed');
    const c = await service.read(child.id);
    expect(c).toMatchObject({
      status: 'failed',
      attempt: 0,
      error: {
        code: 'E_DEPENDENCY_FAILED',
        details: { dependency: failing.id, status: 'failed' },
      },
    });
    expect(await statusHistory(service, child.id)).toEqual(['pending', 'failed']);
    expect((await service.read(grandChild.id)).error.details).toEqual({
      dependency: child.id,
      status: 'failed',
    });

    const later = await service.schedule({ classification: 'native:noop' }).for(Date.now() + 60000);
    const dependent = await service.push({
      classification: 'native:noop',
      dependencies: [later.id],
    });
    await service.cancel(later.id);
    await waitForStatus(service, dependent.id, 'failed');
    expect((await service.read(dependent.id)).error).toMatchObject({
      code: 'E_DEPENDENCY_FAILED',
      details: { dependency: later.id, status: 'canceled' },
    });
  });
});
