// Lock keys of tasks and of steps: runs sharing a key never overlap, whichever executor runs
// them (inline, worker pool, native); waiting for a lock costs no attempt and holds up no
// unrelated task.

const path = require('node:path');
const {
  deferred,
  delay,
  useServices,
  waitForStatus,
  statusHistory,
  withDeadline,
} = require('./helpers');

const STEPS = path.join(__dirname, 'fixtures/pool/steps.js');

const createService = useServices({ shutdownTimeoutMs: 200 });

function composite(steps, extra = {}) {
  return { classification: 'pipeline', atomicity: 'composite', steps, ...extra };
}

const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Counts runs in flight; `max` is the highest count seen. */
function concurrencyCounter() {
  const c = {
    now: 0,
    max: 0,
    enter() {
      c.now += 1;
      c.max = Math.max(c.max, c.now);
    },
    leave() {
      c.now -= 1;
    },
  };
  return c;
}

/**
 * The same count over a SharedArrayBuffer ([0] now, [1] max), shared with the pool workers
 * of `fixtures/pool/steps.js` (which count their `steps:wait` runs in it).
 */
function sharedCounter() {
  const buffer = new SharedArrayBuffer(8);
  const view = new Int32Array(buffer);
  return {
    buffer,
    enter() {
      const now = Atomics.add(view, 0, 1) + 1;
      for (;;) {
        const max = Atomics.load(view, 1);
        if (now <= max || Atomics.compareExchange(view, 1, max, now) === max) break;
      }
    },
    leave() {
      Atomics.sub(view, 0, 1);
    },
    get now() {
      return Atomics.load(view, 0);
    },
    get max() {
      return Atomics.load(view, 1);
    },
  };
}

/**
 * Counts the tasks of the service running at once, from their status events (delivered in
 * engine order): `running` enters, any other status leaves.
 */
function eventCounter(service, include = () => true) {
  const live = new Set();
  const c = { max: 0 };
  service.on('status', (evt) => {
    if (!include(evt.taskId)) return;
    if (evt.payload.status === 'running') live.add(evt.taskId);
    else live.delete(evt.taskId);
    c.max = Math.max(c.max, live.size);
  });
  return c;
}

async function allSucceeded(service, tasks) {
  await Promise.all(tasks.map((t) => waitForStatus(service, t.id, 'succeeded')));
}

/** Lets the dispatcher go round: a task pushed now has run to the end. */
async function barrier(service) {
  const probe = await service.push({ classification: 'native:noop' });
  await waitForStatus(service, probe.id, 'succeeded');
}

/** `lock:gate`: each run (keyed by its input) waits for `release(key)`. */
function gates(service, counter) {
  const map = new Map();
  const gate = (key) => {
    if (!map.has(key)) map.set(key, { started: deferred(), release: deferred() });
    return map.get(key);
  };
  const order = [];
  service.register('lock:gate', async (input) => {
    order.push(input);
    counter?.enter();
    const g = gate(input);
    g.started.resolve();
    try {
      return await g.release.promise;
    } finally {
      counter?.leave();
    }
  });
  service.register('lock:rec', (input) => {
    order.push(input);
    return input;
  });
  return {
    order,
    started: (key) => gate(key).started.promise,
    release: (key) => gate(key).release.resolve(key),
  };
}

describe('tasks sharing a lock never run at the same time', () => {
  test('20 inline tasks on one key with concurrency 8: one at a time; other tasks overlap', async () => {
    const service = createService({ concurrency: 8 });
    const locked = concurrencyCounter();
    const attempts = [];
    service.register('lock:work', async (_input, ctx) => {
      locked.enter();
      attempts.push(ctx.attempt);
      await tick(2);
      locked.leave();
      return null;
    });
    // Control: unlocked runs of the same shape do overlap (each waits for all four).
    const together = deferred();
    let arrived = 0;
    service.register('lock:free', async () => {
      arrived += 1;
      if (arrived === 4) together.resolve();
      await together.promise;
      return null;
    });
    const tasks = await service.pushMany([
      ...Array.from({ length: 20 }, (_, i) => ({
        classification: 'lock:work',
        input: i,
        lock: 'L',
      })),
      ...Array.from({ length: 4 }, () => ({ classification: 'lock:free' })),
    ]);
    await withDeadline(allSucceeded(service, tasks), 10_000, 'every task to succeed');
    expect(locked.max).toBe(1);
    expect(attempts).toEqual(Array.from({ length: 20 }, () => 1));
    for (const t of tasks.slice(0, 20)) {
      expect(await service.read(t.id)).toMatchObject({
        status: 'succeeded',
        attempt: 0,
        lock: 'L',
      });
    }
  });

  test('each key is serialized on its own; different keys run side by side', async () => {
    const service = createService({ concurrency: 8 });
    const perKey = { A: concurrencyCounter(), B: concurrencyCounter() };
    const both = concurrencyCounter();
    const meet = deferred();
    service.register('lock:keyed', async (input) => {
      perKey[input.key].enter();
      both.enter();
      // The first run of each key waits for the other key's first run: they must overlap.
      if (input.i === 0 && both.now === 2) meet.resolve();
      if (input.i === 0) await meet.promise;
      await tick(1);
      both.leave();
      perKey[input.key].leave();
      return null;
    });
    const specs = [];
    for (let i = 0; i < 6; i++) {
      for (const key of ['A', 'B']) {
        specs.push({ classification: 'lock:keyed', input: { key, i }, lock: key });
      }
    }
    const tasks = await service.pushMany(specs);
    await withDeadline(allSucceeded(service, tasks), 10_000, 'every task to succeed');
    expect(perKey.A.max).toBe(1);
    expect(perKey.B.max).toBe(1);
    expect(both.max).toBe(2);
  });

  test('native:sleep tasks on one key never overlap (seen through their status events)', async () => {
    const service = createService({ concurrency: 8, nativeThreads: 4 });
    const locked = new Set();
    const lockedLive = eventCounter(service, (id) => locked.has(id));
    const freeIds = new Set();
    const freeLive = eventCounter(service, (id) => freeIds.has(id));
    // Pushed as one batch, before any event is delivered.
    const tasks = await service.pushMany([
      ...Array.from({ length: 12 }, () => ({
        classification: 'native:sleep',
        input: { ms: 5 },
        lock: 'N',
      })),
      ...Array.from({ length: 4 }, () => ({ classification: 'native:sleep', input: { ms: 20 } })),
    ]);
    for (const t of tasks.slice(0, 12)) locked.add(t.id);
    for (const t of tasks.slice(12)) freeIds.add(t.id);
    await withDeadline(allSucceeded(service, tasks), 10_000, 'every task to succeed');
    expect(lockedLive.max).toBe(1);
    // The count does see overlap when there is some.
    expect(freeLive.max).toBeGreaterThan(1);
  });

  test('inline, worker-pool and native tasks on one key never overlap', async () => {
    const shared = sharedCounter();
    const service = createService({
      concurrency: 8,
      nativeThreads: 2,
      workerPool: { size: 2, modules: [STEPS], workerData: { counters: shared.buffer } },
    });
    service.on('warning', () => {});
    await service.start();
    const live = eventCounter(service);
    service.register('lock:inline', async () => {
      shared.enter();
      await tick(2);
      shared.leave();
      return null;
    });
    const specs = [];
    for (let i = 0; i < 6; i++) {
      specs.push({ classification: 'lock:inline', lock: 'X' });
      specs.push({ classification: 'steps:wait', input: { ms: 2 }, lock: 'X' });
      specs.push({ classification: 'native:sleep', input: { ms: 2 }, lock: 'X' });
    }
    const tasks = await service.pushMany(specs);
    await withDeadline(allSucceeded(service, tasks), 10_000, 'every task to succeed');
    // Inline and pool runs counted from the handlers; every run (native too) from events.
    expect(shared.now).toBe(0);
    expect(shared.max).toBe(1);
    expect(live.max).toBe(1);
    for (const t of tasks) expect((await service.read(t.id)).attempt).toBe(0);
  });
});

describe('step locks', () => {
  test('steps sharing a lock key never overlap across composites; their other steps do', async () => {
    const service = createService({ concurrency: 8 });
    const locked = concurrencyCounter();
    const free = concurrencyCounter();
    service.register('lock:step', async () => {
      locked.enter();
      await tick(2);
      locked.leave();
      return null;
    });
    // The first three free steps wait for each other: unlocked steps do overlap.
    const together = deferred();
    let arrived = 0;
    service.register('lock:free-step', async () => {
      free.enter();
      arrived += 1;
      if (arrived === 3) together.resolve();
      if (arrived <= 3) await together.promise;
      await tick(1);
      free.leave();
      return null;
    });
    const tasks = await service.pushMany(
      Array.from({ length: 10 }, () =>
        composite([
          { classification: 'lock:free-step' },
          { classification: 'lock:step', lock: 'S' },
          { classification: 'lock:free-step' },
        ]),
      ),
    );
    await withDeadline(allSucceeded(service, tasks), 10_000, 'every composite to succeed');
    expect(locked.max).toBe(1);
    expect(free.max).toBeGreaterThanOrEqual(3);
    for (const t of tasks) {
      const stored = await service.read(t.id);
      expect(stored.attempt).toBe(0);
      expect(stored.stepResults.map((r) => r.attempt)).toEqual([1, 1, 1]);
    }
  });

  test('a step lock excludes tasks of that key, and the other way round', async () => {
    const service = createService({ concurrency: 8 });
    const locked = concurrencyCounter();
    service.register('lock:either', async () => {
      locked.enter();
      await tick(2);
      locked.leave();
      return null;
    });
    const specs = [];
    for (let i = 0; i < 6; i++) {
      specs.push({ classification: 'lock:either', lock: 'K' });
      specs.push(composite([{ classification: 'lock:either', lock: 'K' }]));
      specs.push(composite([{ classification: 'lock:either' }], { lock: 'K' }));
      // The same key on the task and its step: held once, no deadlock.
      specs.push(composite([{ classification: 'lock:either', lock: 'K' }], { lock: 'K' }));
    }
    const tasks = await service.pushMany(specs);
    await withDeadline(allSucceeded(service, tasks), 10_000, 'every task to succeed');
    expect(locked.max).toBe(1);
  });

  test('inline, worker-pool and native steps on one key never overlap', async () => {
    const shared = sharedCounter();
    const service = createService({
      concurrency: 8,
      workerPool: { size: 2, modules: [STEPS], workerData: { counters: shared.buffer } },
    });
    service.on('warning', () => {});
    await service.start();
    service.register('lock:inline', async () => {
      shared.enter();
      await tick(2);
      shared.leave();
      return null;
    });
    // Single-step composites: a composite runs exactly while its step runs.
    const nativeIds = new Set();
    const nativeLive = eventCounter(service, (id) => nativeIds.has(id));
    // Every step here takes S. In engine order, each step run lies between the progress
    // event announcing it and the one carrying its output: at most one at a time, whichever
    // executor ran it (a native step overlapping a JS one shows here).
    const steps = { now: 0, max: 0 };
    service.on('progress', (evt) => {
      if ('output' in evt.payload) {
        steps.now -= 1;
      } else {
        steps.now += 1;
        steps.max = Math.max(steps.max, steps.now);
      }
    });
    const specs = [];
    for (let i = 0; i < 5; i++) {
      specs.push(
        composite([
          { classification: 'lock:inline', lock: 'S' },
          { classification: 'steps:wait', input: { ms: 2 }, lock: 'S' },
        ]),
      );
      specs.push(composite([{ classification: 'steps:wait', input: { ms: 2 }, lock: 'S' }]));
      specs.push(composite([{ classification: 'native:sleep', input: { ms: 2 }, lock: 'S' }]));
    }
    const tasks = await service.pushMany(specs);
    for (const [i, t] of tasks.entries()) if (i % 3 === 2) nativeIds.add(t.id);
    await withDeadline(allSucceeded(service, tasks), 10_000, 'every composite to succeed');
    expect(shared.now).toBe(0);
    expect(shared.max).toBe(1);
    expect(nativeLive.max).toBe(1);
    expect(steps).toEqual({ now: 0, max: 1 });
  });

  test("a composite holds its own lock from its first step to its end; a step's lock is freed after the step", async () => {
    const service = createService({ concurrency: 8 });
    const taskLock = concurrencyCounter();
    const { order, started, release } = gates(service, taskLock);
    service.register('lock:t-rec', (input) => {
      taskLock.enter();
      order.push(input);
      taskLock.leave();
      return input;
    });
    const { task: comp, tracker } = await service.push(
      composite(
        [
          { classification: 'lock:gate', input: 'step0', lock: 'S' },
          { classification: 'lock:gate', input: 'step1' },
        ],
        { lock: 'T' },
      ),
      true,
    );
    await started('step0');
    // Higher priority: it would be claimed first if T were free between the steps.
    const onTask = await service.push({
      classification: 'lock:t-rec',
      input: 'on-T',
      lock: 'T',
      priority: 10,
    });
    const onStep = await service.push({ classification: 'lock:rec', input: 'on-S', lock: 'S' });
    const free = await service.push({ classification: 'lock:rec', input: 'free' });
    await waitForStatus(service, free.id, 'succeeded');
    await barrier(service);
    // Step 0 holds both T (the task's) and S (its own).
    expect((await service.read(onTask.id)).status).toBe('pending');
    expect((await service.read(onStep.id)).status).toBe('pending');
    expect(order).toEqual(['step0', 'free']);
    release('step0');
    // S is free once step 0 is done, even while the composite goes on; T is not.
    await waitForStatus(service, onStep.id, 'succeeded');
    await started('step1');
    expect(order).not.toContain('on-T');
    // Step 1 holds T: a task on T pushed now waits for it.
    const onTaskLater = await service.push({
      classification: 'lock:t-rec',
      input: 'on-T-later',
      lock: 'T',
    });
    await barrier(service);
    expect((await service.read(onTaskLater.id)).status).toBe('pending');
    expect(order).not.toContain('on-T-later');
    release('step1');
    await tracker.resolve();
    await allSucceeded(service, [onTask, onTaskLater]);
    expect(order.indexOf('on-T')).toBeGreaterThan(order.indexOf('step1'));
    expect(order.indexOf('on-T-later')).toBeGreaterThan(order.indexOf('step1'));
    expect(taskLock.max).toBe(1);
    expect((await service.read(comp.id)).attempt).toBe(0);
  });
});

describe('waiting for a lock', () => {
  test('burns no attempt: tasks and steps that waited run on their first attempt', async () => {
    const service = createService({ concurrency: 8 });
    const { started, release } = gates(service);
    const seen = [];
    service.register('lock:seen', (input, ctx) => {
      seen.push({ input, attempt: ctx.attempt, stepAttempt: ctx.stepAttempt });
      return input;
    });
    const holder = await service.push({ classification: 'lock:gate', input: 'holder', lock: 'L' });
    await started('holder');
    const atomic = await service.push({ classification: 'lock:seen', input: 'atomic', lock: 'L' });
    const first = await service.push(
      composite([{ classification: 'lock:seen', input: 'first-step', lock: 'L' }]),
    );
    const later = await service.push(
      composite([
        { classification: 'lock:seen', input: 'free-step' },
        { classification: 'lock:seen', input: 'later-step', lock: 'L' },
      ]),
    );
    await waitForStatus(service, later.id, 'running');
    await barrier(service);
    expect(seen.map((s) => s.input)).toEqual(['free-step']);
    // Still waiting, with nothing counted.
    for (const t of [atomic, first, later]) {
      const stored = await service.read(t.id);
      expect(stored.attempt).toBe(0);
      expect(stored.status).toBe(t === later ? 'running' : 'pending');
    }
    release('holder');
    await allSucceeded(service, [holder, atomic, first, later]);
    expect(seen.map((s) => s.input).sort()).toEqual([
      'atomic',
      'first-step',
      'free-step',
      'later-step',
    ]);
    for (const s of seen) expect(s.attempt).toBe(1);
    for (const s of seen.filter((x) => x.input !== 'atomic')) expect(s.stepAttempt).toBe(1);
    for (const t of [atomic, first, later]) {
      const stored = await service.read(t.id);
      expect(stored.attempt).toBe(0);
      for (const r of stored.stepResults) expect(r.attempt).toBe(1);
      expect(await statusHistory(service, t.id)).toEqual(['pending', 'running', 'succeeded']);
    }
  });
  test('over several lease lengths costs no attempt either', async () => {
    const service = createService({ concurrency: 4, leaseMs: 100 });
    const { started, release } = gates(service);
    const seen = [];
    service.register('lock:seen', (input, ctx) => {
      seen.push([input, ctx.attempt]);
      return input;
    });
    const holder = await service.push({ classification: 'lock:gate', input: 'holder', lock: 'L' });
    await started('holder');
    const waiters = await service.pushMany([
      { classification: 'lock:seen', input: 'atomic', lock: 'L', maxAttempts: 1 },
      composite([
        { classification: 'lock:seen', input: 'step0' },
        { classification: 'lock:seen', input: 'step1', lock: 'L' },
      ]),
    ]);
    // Pacing only: several lease lengths pass while they wait.
    await delay(450);
    expect(seen).toEqual([['step0', 1]]);
    release('holder');
    await allSucceeded(service, [holder, ...waiters]);
    expect(seen.map(([, attempt]) => attempt)).toEqual([1, 1, 1]);
    for (const t of waiters) {
      expect((await service.read(t.id)).attempt).toBe(0);
      expect(await statusHistory(service, t.id)).toEqual(['pending', 'running', 'succeeded']);
    }
  });
});

describe('no head-of-line blocking', () => {
  test('unrelated tasks pushed after many waiters of a held lock run and finish', async () => {
    const service = createService({ concurrency: 2 });
    const { order, started, release } = gates(service);
    const holder = await service.push({ classification: 'lock:gate', input: 'holder', lock: 'L' });
    await started('holder');
    const waiters = await service.pushMany([
      ...Array.from({ length: 10 }, (_, i) => ({
        classification: 'lock:rec',
        input: `L${i}`,
        lock: 'L',
      })),
      ...Array.from({ length: 5 }, (_, i) =>
        composite([{ classification: 'lock:rec', input: `L-step${i}`, lock: 'L' }]),
      ),
      ...Array.from({ length: 3 }, () => ({
        classification: 'native:sleep',
        input: { ms: 1 },
        lock: 'L',
      })),
    ]);
    const unrelated = await service.pushMany([
      { classification: 'lock:rec', input: 'free-inline' },
      { classification: 'native:echo', input: 'free-native' },
      { classification: 'lock:rec', input: 'other-key', lock: 'M' },
      composite([
        { classification: 'lock:rec', input: 'free-step' },
        { classification: 'lock:rec', input: 'other-key-step', lock: 'M' },
      ]),
    ]);
    await withDeadline(
      allSucceeded(service, unrelated),
      10_000,
      'the unrelated tasks while L is held',
    );
    expect(order).toEqual(['holder', 'free-inline', 'other-key', 'free-step', 'other-key-step']);
    for (const t of waiters) expect((await service.read(t.id)).status).toBe('pending');
    release('holder');
    await withDeadline(allSucceeded(service, [holder, ...waiters]), 10_000, 'the waiters');
    for (const t of waiters) expect((await service.read(t.id)).attempt).toBe(0);
  });

  test('a composite whose next step waits for a lock holds up no one', async () => {
    const service = createService({ concurrency: 2 });
    const { order, started, release } = gates(service);
    await service.push({ classification: 'lock:gate', input: 'holder', lock: 'L' });
    await started('holder');
    const { task: comp, tracker } = await service.push(
      composite([
        { classification: 'lock:rec', input: 'before' },
        { classification: 'lock:rec', input: 'locked', lock: 'L' },
      ]),
      true,
    );
    const others = await service.pushMany(
      Array.from({ length: 6 }, (_, i) => ({ classification: 'lock:rec', input: `other${i}` })),
    );
    await allSucceeded(service, others);
    const waiting = await service.read(comp.id);
    expect(waiting).toMatchObject({ status: 'running', currentStep: 1, attempt: 0 });
    expect(order).not.toContain('locked');
    release('holder');
    const { stepResults } = await tracker.resolve();
    expect(stepResults.map((r) => r.output)).toEqual(['before', 'locked']);
  });
});
