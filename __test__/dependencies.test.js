// Dependencies between tasks and steps: `dependencies` of a task and `dependsOn` of a step,
// on a whole task or on one step of a composite (by index, name or classification).

const {
  lib,
  deferred,
  delay,
  useServices,
  waitForEvent,
  waitForStatus,
  statusHistory,
} = require('./helpers');

const { TaskDependencyError, TaskDependencyFailedError, TaskFailError } = lib;

const createService = useServices({ shutdownTimeoutMs: 200 });

function composite(steps, extra = {}) {
  return { classification: 'pipeline', atomicity: 'composite', steps, ...extra };
}

/**
 * Registers `dep:gate`: each run (keyed by its input) waits until `release(key, output)`;
 * `started(key)` resolves once that run started. `dep:rec` records its input in `order`.
 */
function setup(service) {
  const gates = new Map();
  const gate = (key) => {
    if (!gates.has(key)) gates.set(key, { started: deferred(), release: deferred() });
    return gates.get(key);
  };
  const order = [];
  const held = (input) => {
    order.push(input);
    const g = gate(input);
    g.started.resolve();
    return g.release.promise;
  };
  // Two classifications with the same behaviour (a step can be named by its classification).
  service.register('dep:gate', held);
  service.register('dep:hold', held);
  service.register('dep:rec', (input) => {
    order.push(input);
    return input;
  });
  service.register('dep:fail', (input) => {
    order.push(input);
    throw new Error(`${input} failed`);
  });
  return {
    order,
    started: (key) => gate(key).started.promise,
    release: (key, output = key) => gate(key).release.resolve(output),
    fail: (key) => gate(key).release.reject(new Error(`${key} failed`)),
  };
}

/** Lets the dispatcher go round: a task pushed now has run to the end. */
async function barrier(service) {
  const probe = await service.push({ classification: 'native:noop' });
  await waitForStatus(service, probe.id, 'succeeded');
}

/** Whether a promise settled yet (without waiting for it). */
function settledFlag(promise) {
  const state = { settled: false };
  promise.then(
    () => {
      state.settled = true;
    },
    () => {
      state.settled = true;
    },
  );
  return state;
}

async function expectDependencyFailure(service, tracker, dependency, dependencyStatus) {
  const err = await tracker.wait().catch((e) => e);
  expect(err).toBeInstanceOf(TaskDependencyFailedError);
  expect(err).toBeInstanceOf(TaskFailError);
  expect(err).toMatchObject({
    code: 'E_DEPENDENCY_FAILED',
    nextAction: 'failed',
    taskId: tracker.taskId,
    dependency,
    dependencyStatus,
  });
  const stored = await service.read(tracker.taskId);
  expect(stored).toMatchObject({
    status: 'failed',
    attempt: 0,
    error: { code: 'E_DEPENDENCY_FAILED', details: { dependency, status: dependencyStatus } },
  });
  expect(stored.error.message).toContain(dependency);
  return stored;
}

describe('a task waits for what it depends on', () => {
  test('a task dependency: runs only once the dependency succeeded', async () => {
    const service = createService({ concurrency: 4 });
    const { order, started, release } = setup(service);
    const first = await service.push({ classification: 'dep:gate', input: 'first' });
    await started('first');
    const { task, tracker } = await service.push(
      { classification: 'dep:rec', input: 'second', dependencies: [first.id] },
      true,
    );
    expect(task.dependencies).toEqual([first.id]);
    const flag = settledFlag(tracker.resolve());
    await barrier(service);
    expect(flag.settled).toBe(false);
    expect((await service.read(task.id)).status).toBe('pending');
    expect(order).toEqual(['first']);
    release('first');
    await expect(tracker.resolve()).resolves.toBe('second');
    expect(order).toEqual(['first', 'second']);
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test('a dependency that already succeeded lets the task run at once', async () => {
    const service = createService();
    setup(service);
    const done = await service.push({ classification: 'dep:rec', input: 'done' });
    await waitForStatus(service, done.id, 'succeeded');
    const { tracker } = await service.push(
      { classification: 'dep:rec', input: 'after', dependencies: [done.id, `${done.id}`] },
      true,
    );
    await expect(tracker.resolve()).resolves.toBe('after');
  });

  test('a task depends on one step of a composite, by index, name or classification', async () => {
    const service = createService({ concurrency: 8 });
    const { order, started, release } = setup(service);
    const { task: up } = await service.push(
      composite([
        { classification: 'dep:gate', name: 'fetch', input: 'up0' },
        { classification: 'dep:hold', input: 'up1' },
      ]),
      true,
    );
    await started('up0');
    const refs = [`${up.id}:0`, `${up.id}:fetch`, `${up.id}:dep:hold`, up.id];
    const dependents = [];
    for (const [i, ref] of refs.entries()) {
      dependents.push(
        await service.push(
          { classification: 'dep:rec', input: `down${i}`, dependencies: [ref] },
          true,
        ),
      );
    }
    const flags = dependents.map((d) => settledFlag(d.tracker.resolve()));
    await barrier(service);
    expect(flags.map((f) => f.settled)).toEqual([false, false, false, false]);
    // Step 0 done: the dependents on it run while the composite goes on with step 1.
    release('up0');
    await Promise.all([dependents[0].tracker.resolve(), dependents[1].tracker.resolve()]);
    await started('up1');
    await barrier(service);
    expect((await service.read(up.id)).status).toBe('running');
    expect(flags.map((f) => f.settled)).toEqual([true, true, false, false]);
    // A dependent on step 0 pushed now (the composite still runs step 1) runs at once.
    const late = await service.push(
      { classification: 'dep:rec', input: 'late', dependencies: [`${up.id}:fetch`] },
      true,
    );
    await expect(late.tracker.resolve()).resolves.toBe('late');
    expect((await service.read(up.id)).status).toBe('running');
    // Step 1, by its classification (which holds a ':' like the reference's separator).
    release('up1');
    await Promise.all(dependents.map((d) => d.tracker.resolve()));
    expect(order.slice(0, 1)).toEqual(['up0']);
    expect(order.indexOf('up1')).toBeLessThan(order.indexOf('down2'));
    expect(order.indexOf('up1')).toBeLessThan(order.indexOf('down3'));
  });

  test('a step depends on a step of another task; waiting shows no status change', async () => {
    const service = createService({ concurrency: 4 });
    const { order, started, release } = setup(service);
    const { task: up } = await service.push(
      composite([
        { classification: 'dep:gate', name: 'fetch', input: 'up-fetch' },
        { classification: 'dep:hold', input: 'up-b' },
      ]),
      true,
    );
    await started('up-fetch');
    const { task: down, tracker } = await service.push(
      composite([
        { classification: 'dep:rec', input: 'down-free' },
        { classification: 'dep:rec', input: 'down-0', dependsOn: [`${up.id}:fetch`] },
        { classification: 'dep:rec', input: 'down-1', dependsOn: [`${up.id}:dep:hold`] },
      ]),
      true,
    );
    const flag = settledFlag(tracker.resolve());
    // Its free first step runs; its second step waits for upstream's held step 0.
    await waitForEvent(
      service,
      down.id,
      (e) =>
        e.classification === 'progress' && e.payload.currentStep === 0 && 'output' in e.payload,
      'step 0 of the dependent done',
    );
    await barrier(service);
    expect(flag.settled).toBe(false);
    let waiting = await service.read(down.id);
    expect(waiting).toMatchObject({ status: 'running', currentStep: 1, attempt: 0 });
    expect(waiting.stepResults).toHaveLength(1);
    expect(order).toEqual(['up-fetch', 'down-free']);
    release('up-fetch');
    await started('up-b');
    // Step 1 ran; step 2 waits for upstream's step 1 (the held 'dep:hold' step).
    await waitForEvent(
      service,
      down.id,
      (e) =>
        e.classification === 'progress' && e.payload.currentStep === 1 && 'output' in e.payload,
      'step 1 of the dependent done',
    );
    await barrier(service);
    expect(flag.settled).toBe(false);
    waiting = await service.read(down.id);
    expect(waiting).toMatchObject({ status: 'running', currentStep: 2 });
    // Both became runnable when upstream's step 0 succeeded: either may start first.
    expect(order.slice(0, 2)).toEqual(['up-fetch', 'down-free']);
    expect(order.slice(2).sort()).toEqual(['down-0', 'up-b']);
    release('up-b');
    const { stepResults } = await tracker.resolve();
    expect(stepResults.map((r) => r.output)).toEqual(['down-free', 'down-0', 'down-1']);
    expect(order[4]).toBe('down-1');
    expect(await statusHistory(service, down.id)).toEqual(['pending', 'running', 'succeeded']);
    expect((await service.read(down.id)).attempt).toBe(0);
  });

  test('a first step waiting for a dependency leaves the composite pending', async () => {
    const service = createService({ concurrency: 4 });
    const { order, started, release } = setup(service);
    const up = await service.push({ classification: 'dep:gate', input: 'up' });
    await started('up');
    const { task: down, tracker } = await service.push(
      composite([{ classification: 'dep:rec', input: 'down', dependsOn: [up.id] }]),
      true,
    );
    const flag = settledFlag(tracker.resolve());
    await barrier(service);
    expect(flag.settled).toBe(false);
    expect((await service.read(down.id)).status).toBe('pending');
    release('up');
    await tracker.resolve();
    expect(order).toEqual(['up', 'down']);
    expect(await statusHistory(service, down.id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test('a dependency that fails an attempt but succeeds on retry does not fail its dependent', async () => {
    const service = createService();
    setup(service);
    let runs = 0;
    service.register('dep:flaky', () => {
      runs += 1;
      if (runs === 1) throw new Error('first attempt fails');
      return 'eventually';
    });
    const flaky = await service.push({
      classification: 'dep:flaky',
      maxAttempts: 2,
      backoff: { baseMs: 20, maxMs: 20 },
    });
    const { tracker } = await service.push(
      { classification: 'dep:rec', input: 'dependent', dependencies: [flaky.id] },
      true,
    );
    await expect(tracker.resolve()).resolves.toBe('dependent');
    expect(runs).toBe(2);
  });
});

test('waiting for a dependency over several lease lengths costs no attempt', async () => {
  const service = createService({ concurrency: 4, leaseMs: 100 });
  const { order, started, release } = setup(service);
  const up = await service.push({ classification: 'dep:gate', input: 'up' });
  await started('up');
  const atomic = await service.push(
    { classification: 'dep:rec', input: 'atomic', dependencies: [up.id] },
    true,
  );
  const between = await service.push(
    composite([
      { classification: 'dep:rec', input: 'step0' },
      { classification: 'dep:rec', input: 'step1', dependsOn: [up.id] },
    ]),
    true,
  );
  // Pacing only: several lease lengths pass while both wait.
  await delay(450);
  expect(order).toEqual(['up', 'step0']);
  release('up');
  await atomic.tracker.resolve();
  await between.tracker.resolve();
  for (const t of [atomic.task, between.task]) {
    expect(await service.read(t.id)).toMatchObject({ status: 'succeeded', attempt: 0 });
    expect(await statusHistory(service, t.id)).toEqual(['pending', 'running', 'succeeded']);
  }
});

describe('chains and fan-in', () => {
  test('A → B → C run in order, each once its predecessor succeeded', async () => {
    const service = createService({ concurrency: 8 });
    const { order, started, release } = setup(service);
    const a = await service.push({ classification: 'dep:gate', input: 'A' });
    const b = await service.push({ classification: 'dep:gate', input: 'B', dependencies: [a.id] });
    const { task: c, tracker } = await service.push(
      composite([{ classification: 'dep:rec', input: 'C', dependsOn: [b.id] }]),
      true,
    );
    await started('A');
    await barrier(service);
    expect(order).toEqual(['A']);
    release('A');
    await started('B');
    await barrier(service);
    expect(order).toEqual(['A', 'B']);
    expect((await service.read(c.id)).status).toBe('pending');
    release('B');
    await tracker.resolve();
    expect(order).toEqual(['A', 'B', 'C']);
  });

  test('fan-in: C waits for both A and B', async () => {
    const service = createService({ concurrency: 8 });
    const { order, started, release } = setup(service);
    const a = await service.push({ classification: 'dep:gate', input: 'A' });
    const b = await service.push({ classification: 'dep:gate', input: 'B' });
    const { task: c, tracker } = await service.push(
      { classification: 'dep:rec', input: 'C', dependencies: [a.id, b.id] },
      true,
    );
    await Promise.all([started('A'), started('B')]);
    release('B');
    await waitForStatus(service, b.id, 'succeeded');
    await barrier(service);
    expect((await service.read(c.id)).status).toBe('pending');
    release('A');
    await expect(tracker.resolve()).resolves.toBe('C');
    expect(order).toEqual(['A', 'B', 'C']);
  });

  test('fan-in on steps: a step waits for steps of two composites', async () => {
    const service = createService({ concurrency: 8 });
    const { order, started, release } = setup(service);
    const { task: a } = await service.push(
      composite([{ classification: 'dep:gate', name: 'make', input: 'A' }]),
      true,
    );
    const { task: b } = await service.push(
      composite([
        { classification: 'dep:rec', input: 'B0' },
        { classification: 'dep:gate', name: 'make', input: 'B1' },
      ]),
      true,
    );
    const { tracker } = await service.push(
      composite([
        { classification: 'dep:rec', input: 'C', dependsOn: [`${a.id}:make`, `${b.id}:make`] },
      ]),
      true,
    );
    await Promise.all([started('A'), started('B1')]);
    release('A');
    await waitForStatus(service, a.id, 'succeeded');
    await barrier(service);
    expect(order).not.toContain('C');
    release('B1');
    await tracker.resolve();
    expect(order[order.length - 1]).toBe('C');
  });

  test('a failure propagates down a chain: each dependent fails without running', async () => {
    const service = createService();
    const { order } = setup(service);
    const a = await service.push({ classification: 'dep:fail', input: 'A' });
    const b = await service.push(
      { classification: 'dep:rec', input: 'B', dependencies: [a.id] },
      true,
    );
    const c = await service.push(
      composite([{ classification: 'dep:rec', input: 'C', dependsOn: [b.task.id] }]),
      true,
    );
    await expectDependencyFailure(service, b.tracker, a.id, 'failed');
    const stored = await expectDependencyFailure(service, c.tracker, b.task.id, 'failed');
    expect(stored.stepResults).toEqual([]);
    expect(order).toEqual(['A']);
    expect(await statusHistory(service, b.task.id)).toEqual(['pending', 'failed']);
    expect(await statusHistory(service, c.task.id)).toEqual(['pending', 'failed']);
  });

  test('fan-in with one canceled dependency fails the dependent, naming that one', async () => {
    const service = createService({ concurrency: 8 });
    const { order, started, release } = setup(service);
    const a = await service.push({ classification: 'dep:gate', input: 'A' });
    const later = await service
      .schedule({ classification: 'dep:rec', input: 'B' })
      .for(Date.now() + 60_000);
    const { tracker } = await service.push(
      { classification: 'dep:rec', input: 'C', dependencies: [a.id, later.id] },
      true,
    );
    await started('A');
    release('A');
    await waitForStatus(service, a.id, 'succeeded');
    await service.cancel(later.id);
    await expectDependencyFailure(service, tracker, later.id, 'canceled');
    expect(order).toEqual(['A']);
  });
});

describe('a failed or canceled dependency fails the dependent', () => {
  test('a failed task dependency: the tracker rejects with TaskDependencyFailedError, no attempt', async () => {
    const service = createService();
    const { order, started, fail } = setup(service);
    const up = await service.push({ classification: 'dep:gate', input: 'up' });
    await started('up');
    const { task, tracker } = await service.push(
      { classification: 'dep:rec', input: 'never', dependencies: [up.id] },
      true,
    );
    const resolved = tracker.resolve().catch((e) => e);
    fail('up');
    const err = await resolved;
    expect(err).toBeInstanceOf(TaskDependencyFailedError);
    expect(err.dependency).toBe(up.id);
    expect(err.dependencyStatus).toBe('failed');
    await expectDependencyFailure(service, tracker, up.id, 'failed');
    expect(order).toEqual(['up']);
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'failed']);
  });

  test('a tracker made later by service.track() rejects with TaskDependencyFailedError too', async () => {
    const service = createService();
    setup(service);
    const up = await service.push({ classification: 'dep:fail', input: 'up' });
    const down = await service.push({
      classification: 'dep:rec',
      input: 'never',
      dependencies: [up.id],
    });
    await waitForStatus(service, down.id, 'failed');
    const { tracker } = await service.track(down.id);
    const err = await tracker.resolve().catch((e) => e);
    expect(err).toBeInstanceOf(TaskDependencyFailedError);
    expect(err).toMatchObject({
      taskId: down.id,
      dependency: up.id,
      dependencyStatus: 'failed',
      nextAction: 'failed',
    });
  });

  test('a dependency that already failed fails the dependent at once', async () => {
    const service = createService();
    const { order } = setup(service);
    const up = await service.push({ classification: 'dep:fail', input: 'up' });
    await waitForStatus(service, up.id, 'failed');
    const { tracker } = await service.push(
      { classification: 'dep:rec', input: 'never', dependencies: [up.id] },
      true,
    );
    await expectDependencyFailure(service, tracker, up.id, 'failed');
    expect(order).toEqual(['up']);
  });

  test('a failed canFail step, referenced by index or name, fails its dependents; the whole composite does not', async () => {
    const service = createService({ concurrency: 8 });
    const { order, started, fail, release } = setup(service);
    const { task: up, tracker: upTracker } = await service.push(
      composite([
        { classification: 'dep:gate', name: 'optional', input: 'up0', canFail: true },
        { classification: 'dep:gate', input: 'up1' },
      ]),
      true,
    );
    await started('up0');
    const byIndex = await service.push(
      { classification: 'dep:rec', input: 'by-index', dependencies: [`${up.id}:0`] },
      true,
    );
    const byName = await service.push(
      composite([
        { classification: 'dep:rec', input: 'by-name', dependsOn: [`${up.id}:optional`] },
      ]),
      true,
    );
    const onWhole = await service.push(
      { classification: 'dep:rec', input: 'on-whole', dependencies: [up.id] },
      true,
    );
    fail('up0');
    await expectDependencyFailure(service, byIndex.tracker, `${up.id}:0`, 'failed');
    await expectDependencyFailure(service, byName.tracker, `${up.id}:optional`, 'failed');
    // The composite itself goes on and succeeds: a dependent on it as a whole runs.
    await started('up1');
    release('up1');
    const { stepResults } = await upTracker.resolve();
    expect(stepResults.map((r) => r.status)).toEqual(['failed', 'succeeded']);
    await expect(onWhole.tracker.resolve()).resolves.toBe('on-whole');
    expect(order).toEqual(['up0', 'up1', 'on-whole']);
  });

  test('a step dependency that fails fails the composite after its earlier steps, with no attempt', async () => {
    const service = createService({ concurrency: 4 });
    const { order, started, fail } = setup(service);
    const up = await service.push({ classification: 'dep:gate', input: 'up' });
    await started('up');
    const { task, tracker } = await service.push(
      composite([
        { classification: 'dep:rec', input: 'down0' },
        { classification: 'dep:rec', input: 'down1', dependsOn: [up.id] },
        { classification: 'dep:rec', input: 'down2' },
      ]),
      true,
    );
    await waitForEvent(
      service,
      task.id,
      (e) =>
        e.classification === 'progress' && e.payload.currentStep === 0 && 'output' in e.payload,
      'step 0 done',
    );
    fail('up');
    const stored = await expectDependencyFailure(service, tracker, up.id, 'failed');
    expect(stored.stepResults).toEqual([{ status: 'succeeded', output: 'down0', attempt: 1 }]);
    expect(order).toEqual(['up', 'down0']);
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'failed']);
  });

  test('a step of a composite that failed before reaching it counts as failed', async () => {
    const service = createService();
    const { order } = setup(service);
    const { task: up } = await service.push(
      composite([
        { classification: 'dep:fail', input: 'up0' },
        { classification: 'dep:rec', name: 'unreached', input: 'up1' },
      ]),
      true,
    );
    const { tracker } = await service.push(
      { classification: 'dep:rec', input: 'never', dependencies: [`${up.id}:unreached`] },
      true,
    );
    const err = await tracker.wait().catch((e) => e);
    expect(err).toBeInstanceOf(TaskDependencyFailedError);
    expect(err.dependency).toBe(`${up.id}:unreached`);
    expect(err.dependencyStatus).toBe('failed');
    expect(order).toEqual(['up0']);
  });

  test('a canceled composite fails the dependents of its steps', async () => {
    const service = createService({ concurrency: 4 });
    const { order, started } = setup(service);
    const { task: up } = await service.push(
      composite([
        { classification: 'dep:gate', input: 'up0' },
        { classification: 'dep:rec', input: 'up1' },
      ]),
      true,
    );
    await started('up0');
    const { tracker } = await service.push(
      { classification: 'dep:rec', input: 'never', dependencies: [`${up.id}:1`] },
      true,
    );
    await service.cancel(up.id);
    await expectDependencyFailure(service, tracker, `${up.id}:1`, 'canceled');
    expect(order).toEqual(['up0']);
  });
});

describe('a dependency on nothing is refused at push', () => {
  test('missing task or step: TaskDependencyError (E_DEPENDENCY), nothing stored', async () => {
    const service = createService();
    setup(service);
    const { task: up } = await service.push(
      composite([{ classification: 'dep:rec', name: 'only', input: 'up' }]),
      true,
    );
    await waitForStatus(service, up.id, 'succeeded');
    const missing = [
      '0190a0a0-0000-7000-8000-000000000000',
      '0190a0a0-0000-7000-8000-000000000000:0',
      `${up.id}:1`,
      `${up.id}:nope`,
      `${up.id}:dep:nobody`,
    ];
    for (const dep of missing) {
      const onTask = await service
        .push({ classification: 'dep:rec', dependencies: [dep] })
        .catch((e) => e);
      expect(onTask).toBeInstanceOf(TaskDependencyError);
      expect(onTask.code).toBe('E_DEPENDENCY');
      const onStep = await service
        .push(
          composite([
            { classification: 'dep:rec' },
            { classification: 'dep:rec', dependsOn: [`${up.id}:only`, dep] },
          ]),
        )
        .catch((e) => e);
      expect(onStep).toBeInstanceOf(TaskDependencyError);
      expect(onStep.code).toBe('E_DEPENDENCY');
    }
    const batch = await service
      .pushMany([
        { classification: 'dep:rec', dependencies: [`${up.id}:only`] },
        { classification: 'dep:rec', dependencies: [`${up.id}:9`] },
      ])
      .catch((e) => e);
    expect(batch).toBeInstanceOf(TaskDependencyError);
    expect((await service.list()).map((t) => t.id)).toEqual([up.id]);
    // The valid references are accepted.
    const ok = await service.push({
      classification: 'dep:rec',
      input: 'ok',
      dependencies: [up.id, `${up.id}:0`, `${up.id}:only`, `${up.id}:dep:rec`],
    });
    await waitForStatus(service, ok.id, 'succeeded');
  });
});

describe('a composite with task dependencies', () => {
  test('none of its steps runs before every dependency succeeded', async () => {
    const service = createService();
    const gate = deferred();
    service.register('dep:gate', () => gate.promise);
    const ran = [];
    service.register('dep:step', (input) => {
      ran.push(input);
      return input;
    });
    const first = await service.push({ classification: 'dep:gate' });
    const { task, tracker } = await service.push(
      {
        classification: 'pipeline',
        atomicity: 'composite',
        dependencies: [first.id],
        steps: [
          { classification: 'dep:step', input: 'a' },
          { classification: 'dep:step', input: 'b' },
        ],
      },
      true,
    );
    const probe = await service.push({ classification: 'native:noop' }, true);
    await probe.tracker.wait();
    expect(ran).toEqual([]);
    expect((await service.read(task.id)).status).toBe('pending');
    gate.resolve('done');
    const { stepResults } = await tracker.resolve();
    expect(stepResults.map((r) => r.output)).toEqual(['a', 'b']);
  });

  test('a failed dependency fails it with the dependency error; no step runs', async () => {
    const service = createService();
    service.register('dep:fails', () => {
      throw new Error('no');
    });
    const ran = [];
    service.register('dep:step', (input) => {
      ran.push(input);
      return input;
    });
    const first = await service.push({ classification: 'dep:fails' });
    const { task, tracker } = await service.push(
      {
        classification: 'pipeline',
        atomicity: 'composite',
        dependencies: [first.id],
        steps: [{ classification: 'dep:step', input: 'a' }],
      },
      true,
    );
    const err = await tracker.wait().catch((e) => e);
    expect(err).toBeInstanceOf(TaskDependencyFailedError);
    expect(err.dependency).toBe(first.id);
    expect(ran).toEqual([]);
    expect((await service.read(task.id)).error.code).toBe('E_DEPENDENCY_FAILED');
  });
});
