// Composite tasks: steps run one by one (inline, in the worker pool, natively), step results,
// progress and update events, in-place step retries, canFail, ctx.scheduleSteps, ctx control
// calls inside a step, and log lines tagged with their step.

const path = require('node:path');
const {
  lib,
  deferred,
  useServices,
  waitFor,
  waitForStatus,
  recordEvents,
  statusHistory,
  withDeadline,
} = require('./helpers');

const { TaskValidationError, UnknownClassificationError, TaskCancelError, TaskRescheduleError } =
  lib;

const STEPS = path.join(__dirname, 'fixtures/pool/steps.js');
const AT_ONCE = { baseMs: 0, maxMs: 0 };

const createService = useServices({ shutdownTimeoutMs: 200 });

/** A composite spec (its own classification is never registered). */
function composite(steps, extra = {}) {
  return { classification: 'pipeline', atomicity: 'composite', steps, ...extra };
}

/** What a step run saw (inline handlers return it). */
function seen(input, ctx) {
  return {
    input: input ?? null,
    classification: ctx.classification,
    name: ctx.name ?? null,
    step: ctx.step,
    totalSteps: ctx.totalSteps,
    stepAttempt: ctx.stepAttempt,
    attempt: ctx.attempt,
  };
}

/** Registers a recording handler per classification; `calls` lists the runs in order. */
function recorders(service, classifications) {
  const calls = [];
  for (const classification of classifications) {
    service.register(classification, (input, ctx) => {
      calls.push({ ...seen(input, ctx), resultCache: ctx.resultCache });
      return { from: classification, input: input ?? null };
    });
  }
  return calls;
}

/** Payloads of the persisted events of one classification. */
async function payloads(service, taskId, classification) {
  const events = await service.events(taskId);
  return events.filter((e) => e.classification === classification).map((e) => e.payload);
}

/** A pool service serving the steps fixture (one worker), started. */
async function poolService(options = {}) {
  const service = createService({ ...options, workerPool: { size: 1, modules: [STEPS] } });
  service.on('warning', () => {});
  await service.start();
  return service;
}

describe('steps run in order', () => {
  test('each step runs once, in order, by its handler, with its input and step info', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a', 'c:b', 'c:c']);
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:a', input: 1 },
        { classification: 'c:b', name: 'second', input: { two: 2 } },
        { classification: 'c:c', input: 'three' },
      ]),
      true,
    );
    expect(task).toMatchObject({
      classification: 'pipeline',
      atomicity: 'composite',
      status: 'pending',
      currentStep: 0,
      stepResults: [],
    });
    expect(task.steps.map((s) => s.classification)).toEqual(['c:a', 'c:b', 'c:c']);
    const output = await tracker.resolve();
    expect(calls.map(({ resultCache, ...rest }) => rest)).toEqual([
      {
        input: 1,
        classification: 'c:a',
        name: null,
        step: 0,
        totalSteps: 3,
        stepAttempt: 1,
        attempt: 1,
      },
      {
        input: { two: 2 },
        classification: 'c:b',
        name: 'second',
        step: 1,
        totalSteps: 3,
        stepAttempt: 1,
        attempt: 1,
      },
      {
        input: 'three',
        classification: 'c:c',
        name: null,
        step: 2,
        totalSteps: 3,
        stepAttempt: 1,
        attempt: 1,
      },
    ]);
    const expectedResults = [
      { status: 'succeeded', output: { from: 'c:a', input: 1 }, attempt: 1 },
      { status: 'succeeded', output: { from: 'c:b', input: { two: 2 } }, attempt: 1 },
      { status: 'succeeded', output: { from: 'c:c', input: 'three' }, attempt: 1 },
    ];
    expect(output).toEqual({ stepResults: expectedResults });
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({
      status: 'succeeded',
      attempt: 0,
      currentStep: 2,
      stepResults: expectedResults,
      output: { stepResults: expectedResults },
    });
    // One `running` for the whole composite.
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test('a progress event before each step and one with its output after it', async () => {
    const service = createService();
    recorders(service, ['c:a', 'c:b']);
    const live = [];
    service.on('progress', (evt) => live.push(evt.payload));
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:a', input: 'x' },
        { classification: 'c:b' },
        { classification: 'native:echo', input: { n: 3 } },
      ]),
      true,
    );
    await tracker.resolve();
    const expected = [
      { currentStep: 0, totalSteps: 3 },
      { currentStep: 0, totalSteps: 3, output: { from: 'c:a', input: 'x' } },
      { currentStep: 1, totalSteps: 3 },
      { currentStep: 1, totalSteps: 3, output: { from: 'c:b', input: null } },
      { currentStep: 2, totalSteps: 3 },
      { currentStep: 2, totalSteps: 3, output: { n: 3 } },
    ];
    expect(await payloads(service, task.id, 'progress')).toEqual(expected);
    expect(live).toEqual(expected);
    // Progress events come between `running` and `succeeded`.
    const kinds = (await service.events(task.id)).map((e) =>
      e.classification === 'status' ? e.payload.status : e.classification,
    );
    expect(kinds).toEqual([
      'pending',
      'running',
      ...Array.from({ length: 6 }, () => 'progress'),
      'succeeded',
    ]);
  });

  test('a composite may mix inline, native and worker-pool steps', async () => {
    const service = await poolService();
    const calls = recorders(service, ['c:inline']);
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:inline', input: 'first' },
        { classification: 'native:echo', input: { native: true } },
        { classification: 'steps:record', input: 'pooled' },
        { classification: 'c:inline', input: 'last' },
      ]),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(stepResults.map((r) => r.status)).toEqual([
      'succeeded',
      'succeeded',
      'succeeded',
      'succeeded',
    ]);
    expect(stepResults[1].output).toEqual({ native: true });
    const pooled = stepResults[2].output;
    expect(pooled).toMatchObject({ input: 'pooled', step: 2, totalSteps: 4, stepAttempt: 1 });
    // It ran on the worker thread, not on this one (thread 0).
    expect(pooled.threadId).not.toBe(0);
    // The pool step read the inline and native outputs before it.
    expect(pooled.resultCache).toEqual({
      'c:inline': { from: 'c:inline', input: 'first' },
      'native:echo': { native: true },
      [`${task.id}:step:0`]: { from: 'c:inline', input: 'first' },
      [`${task.id}:step:1`]: { native: true },
    });
    expect(calls.map((c) => c.input)).toEqual(['first', 'last']);
    expect(calls[1].resultCache[`${task.id}:step:2`]).toEqual(pooled);
  });

  test('a step classification nobody handles is refused at push, nothing stored', async () => {
    const service = createService();
    recorders(service, ['c:a']);
    const err = await service
      .push(composite([{ classification: 'c:a' }, { classification: 'c:nobody' }]))
      .catch((e) => e);
    expect(err).toBeInstanceOf(UnknownClassificationError);
    expect(err.code).toBe('E_UNKNOWN_CLASSIFICATION');
    expect(await service.list()).toEqual([]);
  });
});

describe('resultCache', () => {
  test('later steps read earlier outputs by classification (latest wins) and by step key', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a', 'c:b']);
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:a', input: 1 },
        { classification: 'c:b', input: 2 },
        { classification: 'c:a', input: 3 },
        { classification: 'c:b', input: 4 },
      ]),
      true,
    );
    await tracker.resolve();
    const out = (input, from) => ({ from, input });
    const key = (i) => `${task.id}:step:${i}`;
    expect(calls.map((c) => c.resultCache)).toEqual([
      {},
      { 'c:a': out(1, 'c:a'), [key(0)]: out(1, 'c:a') },
      {
        'c:a': out(1, 'c:a'),
        'c:b': out(2, 'c:b'),
        [key(0)]: out(1, 'c:a'),
        [key(1)]: out(2, 'c:b'),
      },
      {
        'c:a': out(3, 'c:a'),
        'c:b': out(2, 'c:b'),
        [key(0)]: out(1, 'c:a'),
        [key(1)]: out(2, 'c:b'),
        [key(2)]: out(3, 'c:a'),
      },
    ]);
  });

  test('an atomic task sees an empty resultCache and no step info', async () => {
    const service = createService();
    const calls = recorders(service, ['c:atomic']);
    const { tracker } = await service.push({ classification: 'c:atomic', input: 'solo' }, true);
    await tracker.resolve();
    expect(calls).toEqual([
      {
        input: 'solo',
        classification: 'c:atomic',
        name: null,
        step: undefined,
        totalSteps: undefined,
        stepAttempt: undefined,
        attempt: 1,
        resultCache: {},
      },
    ]);
  });
});

describe('step retries', () => {
  test("a step's maxAttempts retries it in place: stepAttempt grows, the task attempt does not", async () => {
    const service = createService();
    const calls = recorders(service, ['c:a']);
    const runs = [];
    service.register('c:flaky', (_input, ctx) => {
      runs.push({ attempt: ctx.attempt, stepAttempt: ctx.stepAttempt, cache: ctx.resultCache });
      if (ctx.stepAttempt < 3) throw new Error(`flaky run ${ctx.stepAttempt}`);
      return 'third time lucky';
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:a', input: 'once' },
        { classification: 'c:flaky', maxAttempts: 3, backoff: AT_ONCE },
        { classification: 'c:a', input: 'after' },
      ]),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(runs.map((r) => [r.attempt, r.stepAttempt])).toEqual([
      [1, 1],
      [1, 2],
      [1, 3],
    ]);
    // Every in-place retry still sees the output of step 0.
    for (const r of runs) expect(r.cache['c:a']).toEqual({ from: 'c:a', input: 'once' });
    expect(calls.map((c) => c.input)).toEqual(['once', 'after']);
    expect(stepResults[1]).toEqual({
      status: 'succeeded',
      output: 'third time lucky',
      attempt: 3,
    });
    const stored = await service.read(task.id);
    expect(stored.attempt).toBe(0);
    expect(rec.statuses(task.id)).toEqual(['pending', 'running', 'succeeded']);
    // One warning log line of step 1 per in-place retry.
    const logs = rec
      .of(task.id)
      .filter((e) => e.classification === 'log')
      .flatMap((e) => e.payload);
    expect(logs).toHaveLength(2);
    for (const line of logs) expect(line).toMatchObject({ level: 'warn', step: 1 });
    expect(logs[0].msg).toContain('flaky run 1');
    expect(logs[1].msg).toContain('flaky run 2');
  });

  test('a step without maxAttempts retries in place under the task maxAttempts', async () => {
    const service = createService();
    const runs = [];
    service.register('c:flaky', (_input, ctx) => {
      runs.push([ctx.attempt, ctx.stepAttempt]);
      if (ctx.stepAttempt < 2) throw new Error('not yet');
      return 'ok';
    });
    const { task, tracker } = await service.push(
      composite([{ classification: 'c:flaky' }], { maxAttempts: 2, backoff: AT_ONCE }),
      true,
    );
    await tracker.resolve();
    expect(runs).toEqual([
      [1, 1],
      [1, 2],
    ]);
    expect(await service.read(task.id)).toMatchObject({ status: 'succeeded', attempt: 0 });
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test("a step's own backoff spaces its in-place retries, not the task's", async () => {
    const service = createService();
    const runs = [];
    service.register('c:flaky', (_input, ctx) => {
      runs.push(ctx.stepAttempt);
      if (ctx.stepAttempt === 1) throw new Error('once');
      return 'ok';
    });
    const { tracker } = await service.push(
      composite([{ classification: 'c:flaky', maxAttempts: 2, backoff: AT_ONCE }], {
        maxAttempts: 2,
        backoff: { strategy: 'fixed', baseMs: 600_000, maxMs: 600_000, jitter: 'none' },
      }),
      true,
    );
    // With the task's backoff the retry would come in 10 minutes.
    await withDeadline(tracker.resolve(), 10_000, 'the in-place retry under the step backoff');
    expect(runs).toEqual([1, 2]);
  });

  test('an exhausted step retries the task, which resumes at that step (earlier steps never rerun)', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a', 'c:b']);
    const runs = [];
    service.register('c:flaky', (_input, ctx) => {
      runs.push({ attempt: ctx.attempt, stepAttempt: ctx.stepAttempt, cache: ctx.resultCache });
      if (ctx.attempt === 1) throw new Error(`broke on run ${ctx.stepAttempt}`);
      return 'recovered';
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push(
      composite(
        [
          { classification: 'c:a', input: 'A' },
          { classification: 'c:b', input: 'B' },
          { classification: 'c:flaky', maxAttempts: 2, backoff: AT_ONCE },
          { classification: 'c:a', input: 'end' },
        ],
        { maxAttempts: 2, backoff: AT_ONCE },
      ),
      true,
    );
    // resolve() does not settle on waiting_retry: it waits for the end.
    const { stepResults } = await tracker.resolve();
    expect(runs.map((r) => [r.attempt, r.stepAttempt])).toEqual([
      [1, 1],
      [1, 2],
      [2, 1],
    ]);
    // Steps 0 and 1 ran once; their outputs are still cached for the resumed step.
    expect(calls.map((c) => c.input)).toEqual(['A', 'B', 'end']);
    const resumed = runs[2].cache;
    expect(resumed['c:a']).toEqual({ from: 'c:a', input: 'A' });
    expect(resumed[`${task.id}:step:1`]).toEqual({ from: 'c:b', input: 'B' });
    expect(stepResults.map((r) => [r.status, r.attempt])).toEqual([
      ['succeeded', 1],
      ['succeeded', 1],
      ['succeeded', 1],
      ['succeeded', 1],
    ]);
    expect(rec.statuses(task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'succeeded',
    ]);
    const retry = rec
      .of(task.id)
      .find((e) => e.classification === 'status' && e.payload.status === 'waiting_retry');
    expect(retry.payload.error.message).toBe('broke on run 2');
    expect(await service.read(task.id)).toMatchObject({ status: 'succeeded', attempt: 1 });
    // Step 2's progress-before event shows up again when the task resumes there.
    const before = (await payloads(service, task.id, 'progress'))
      .filter((p) => !('output' in p))
      .map((p) => p.currentStep);
    expect(before).toEqual([0, 1, 2, 2, 2, 3]);
  });

  test('the task fails once the step is exhausted and no task attempt is left', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a']);
    let flakyRuns = 0;
    service.register('c:broken', () => {
      flakyRuns += 1;
      throw new Error('always broken');
    });
    const { task, tracker } = await service.push(
      composite(
        [
          { classification: 'c:a', input: 'first' },
          { classification: 'c:broken', maxAttempts: 2, backoff: AT_ONCE },
          { classification: 'c:a', input: 'never' },
        ],
        { maxAttempts: 2, backoff: AT_ONCE },
      ),
      true,
    );
    const err = await tracker.resolve().catch((e) => e);
    expect(err.message).toBe('always broken');
    expect(err.nextAction).toBe('failed');
    // 2 in place × 2 task attempts; step 0 ran once; step 2 never.
    expect(flakyRuns).toBe(4);
    expect(calls.map((c) => c.input)).toEqual(['first']);
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({
      status: 'failed',
      attempt: 2,
      currentStep: 1,
      error: { message: 'always broken' },
    });
    expect(stored.stepResults).toHaveLength(2);
    expect(stored.stepResults[1]).toMatchObject({
      status: 'failed',
      error: { message: 'always broken' },
      attempt: 2,
    });
    expect(await statusHistory(service, task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'failed',
    ]);
  });
});

describe('failing steps', () => {
  test('without canFail a failed step fails the composite; later steps never run', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a']);
    const thrown = new Error('step 1 broke');
    service.register('c:broken', () => {
      throw thrown;
    });
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:a', input: 'first' },
        { classification: 'c:broken' },
        { classification: 'c:a', input: 'never' },
      ]),
      true,
    );
    const err = await tracker.resolve().catch((e) => e);
    // The tracker of this process rejects with the handler's own error.
    expect(err).toBe(thrown);
    expect(err.nextAction).toBe('failed');
    expect(calls.map((c) => c.input)).toEqual(['first']);
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({
      status: 'failed',
      attempt: 1,
      currentStep: 1,
      error: { message: 'step 1 broke' },
    });
    expect(stored.stepResults.map((r) => r.status)).toEqual(['succeeded', 'failed']);
    expect(stored.stepResults[1]).toMatchObject({ error: { message: 'step 1 broke' }, attempt: 1 });
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'failed']);
  });

  test('a canFail step is recorded failed, its catch hook runs after every failed run, the composite goes on', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a']);
    const caught = [];
    service.register('c:may-fail', {
      run(_input, ctx) {
        throw new Error(`may-fail run ${ctx.stepAttempt}`);
      },
      catch(input, error, ctx) {
        caught.push({
          input,
          message: error.message,
          step: ctx.step,
          stepAttempt: ctx.stepAttempt,
        });
      },
    });
    const { task, tracker } = await service.push(
      composite([
        {
          classification: 'c:may-fail',
          input: 'x',
          canFail: true,
          maxAttempts: 2,
          backoff: AT_ONCE,
        },
        { classification: 'c:a', input: 'goes on' },
      ]),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(caught).toEqual([
      { input: 'x', message: 'may-fail run 1', step: 0, stepAttempt: 1 },
      { input: 'x', message: 'may-fail run 2', step: 0, stepAttempt: 2 },
    ]);
    expect(stepResults[0]).toMatchObject({
      status: 'failed',
      error: { message: 'may-fail run 2' },
      attempt: 2,
    });
    expect(stepResults[0].output).toBeUndefined();
    expect(stepResults[1]).toEqual({
      status: 'succeeded',
      output: { from: 'c:a', input: 'goes on' },
      attempt: 1,
    });
    // A failed step has no output to read.
    expect(calls[0].resultCache).toEqual({});
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({ status: 'succeeded', attempt: 0, currentStep: 1 });
    const after = (await payloads(service, task.id, 'progress')).filter(
      (p) => p.currentStep === 0 && ('error' in p || 'output' in p),
    );
    expect(after).toHaveLength(1);
    expect(after[0]).toMatchObject({
      currentStep: 0,
      totalSteps: 2,
      error: { message: 'may-fail run 2' },
    });
    expect(after[0].output).toBeUndefined();
  });

  test("the tracker rejects with the error of the step that failed the composite, not an earlier canFail step's", async () => {
    const service = createService();
    const optional = new Error('optional step failed');
    const required = new Error('required step failed');
    service.register('c:optional', () => {
      throw optional;
    });
    service.register('c:required', () => {
      throw required;
    });
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:optional', canFail: true },
        { classification: 'c:required' },
      ]),
      true,
    );
    const failedEvent = waitForStatus(service, task.id, 'failed');
    const err = await tracker.wait().catch((e) => e);
    const stored = await service.read(task.id);
    expect(stored.error.message).toBe('required step failed');
    expect(stored.stepResults.map((r) => r.error.message)).toEqual([
      'optional step failed',
      'required step failed',
    ]);
    // The live failed event carries the handler error of the run that failed the task.
    expect((await failedEvent).payload.originalError).toBe(required);
    expect(err).toBe(required);
    expect(err.nextAction).toBe('failed');
  });

  test('after in-place step retries, live status events carry the error of the run that caused them', async () => {
    const service = createService();
    const thrown = [];
    service.register('c:flaky', (_input, ctx) => {
      const err = new Error(`run ${ctx.attempt}.${ctx.stepAttempt}`);
      thrown.push(err);
      throw err;
    });
    const { task, tracker } = await service.push(
      composite([{ classification: 'c:flaky', maxAttempts: 2 }], {
        maxAttempts: 2,
        backoff: AT_ONCE,
      }),
      true,
    );
    const seenErrors = [];
    service.on('status', (evt) => {
      if (evt.taskId !== task.id || evt.payload.error === undefined) return;
      seenErrors.push([
        evt.payload.status,
        evt.payload.error.message,
        evt.payload.originalError?.message,
      ]);
    });
    const err = await tracker.wait().catch((e) => e);
    expect(thrown.map((e) => e.message)).toEqual(['run 1.1', 'run 1.2', 'run 2.1', 'run 2.2']);
    expect((await service.read(task.id)).error.message).toBe('run 2.2');
    expect(seenErrors).toEqual([
      ['waiting_retry', 'run 1.2', 'run 1.2'],
      ['failed', 'run 2.2', 'run 2.2'],
    ]);
    expect(err).toBe(thrown[3]);
  });

  test('a native step that fails with canFail lets the composite go on', async () => {
    const service = createService();
    const { tracker } = await service.push(
      composite([
        { classification: 'native:fail', input: { message: 'native broke' }, canFail: true },
        { classification: 'native:echo', input: 'after' },
      ]),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(stepResults[0]).toMatchObject({
      status: 'failed',
      error: { message: 'native broke' },
      attempt: 1,
    });
    expect(stepResults[1]).toEqual({ status: 'succeeded', output: 'after', attempt: 1 });
  });
});

describe('ctx.scheduleSteps', () => {
  test('afterCurrent inserts after the running step in call order; atEnd appends; each is announced', async () => {
    const service = createService();
    const calls = recorders(service, ['c:rec']);
    const placed = [];
    service.register('c:grow', async (_input, ctx) => {
      placed.push(
        await ctx.scheduleSteps({ classification: 'c:rec', name: 'x', input: 'x' }).afterCurrent(),
      );
      placed.push(
        await ctx
          .scheduleSteps(
            { classification: 'c:rec', name: 'y1', input: 'y1' },
            { classification: 'c:rec', name: 'y2', input: 'y2' },
          )
          .afterCurrent(),
      );
      placed.push(
        await ctx.scheduleSteps({ classification: 'c:rec', name: 'z', input: 'z' }).atEnd(),
      );
      return 'grown';
    });
    const updates = [];
    service.on('update', (evt) => updates.push(evt));
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:rec', name: 'first', input: 'first' },
        { classification: 'c:grow' },
        { classification: 'c:rec', name: 'last', input: 'last' },
      ]),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(placed).toEqual([
      { insertionIndex: 2, totalSteps: 4 },
      { insertionIndex: 3, totalSteps: 6 },
      { insertionIndex: 6, totalSteps: 7 },
    ]);
    expect(calls.map((c) => [c.input, c.step, c.totalSteps])).toEqual([
      ['first', 0, 3],
      ['x', 2, 7],
      ['y1', 3, 7],
      ['y2', 4, 7],
      ['last', 5, 7],
      ['z', 6, 7],
    ]);
    expect(calls.map((c) => c.name)).toEqual(['first', 'x', 'y1', 'y2', 'last', 'z']);
    expect(stepResults).toHaveLength(7);
    const expectedUpdates = [
      {
        status: 'update',
        currentStep: 1,
        totalSteps: 4,
        output: { added: 1, insertionIndex: 2 },
      },
      {
        status: 'update',
        currentStep: 1,
        totalSteps: 6,
        output: { added: 2, insertionIndex: 3 },
      },
      {
        status: 'update',
        currentStep: 1,
        totalSteps: 7,
        output: { added: 1, insertionIndex: 6 },
      },
    ];
    expect(updates.map((e) => e.payload)).toEqual(expectedUpdates);
    expect(updates.every((e) => e.taskId === task.id && e.classification === 'update')).toBe(true);
    expect(await payloads(service, task.id, 'update')).toEqual(expectedUpdates);
    const stored = await service.read(task.id);
    expect(stored.steps.map((s) => s.name ?? s.classification)).toEqual([
      'first',
      'c:grow',
      'x',
      'y1',
      'y2',
      'last',
      'z',
    ]);
    // The step that scheduled saw the composite's size at its start; the progress events
    // after it show the new size.
    const progress = await payloads(service, task.id, 'progress');
    expect(progress.find((p) => p.currentStep === 1 && 'output' in p)).toEqual({
      currentStep: 1,
      totalSteps: 7,
      output: 'grown',
    });
  });

  test('the tracker hears each update through onUpdate', async () => {
    const service = createService();
    service.register('c:noop', () => null);
    service.register('c:grow', async (_input, ctx) => {
      await ctx.scheduleSteps({ classification: 'c:noop' }).atEnd();
      return null;
    });
    const { tracker } = await service.push(composite([{ classification: 'c:grow' }]), true);
    const heard = [];
    tracker.onUpdate((evt) => heard.push(evt.payload.output));
    const { stepResults } = await tracker.resolve();
    expect(heard).toEqual([{ added: 1, insertionIndex: 1 }]);
    expect(stepResults).toHaveLength(2);
  });

  test('inserted steps are persisted and survive a task retry', async () => {
    const service = createService();
    const calls = recorders(service, ['c:rec']);
    let growRuns = 0;
    service.register('c:grow', async (_input, ctx) => {
      growRuns += 1;
      await ctx.scheduleSteps({ classification: 'c:rec', input: 'inserted' }).atEnd();
      return 'grown';
    });
    const flakyRuns = [];
    service.register('c:flaky', (_input, ctx) => {
      flakyRuns.push(ctx.attempt);
      if (ctx.attempt === 1) throw new Error('first task attempt fails');
      return 'ok';
    });
    const retried = deferred();
    service.on('status', (evt) => {
      if (evt.payload.status === 'waiting_retry') retried.resolve();
    });
    const { task, tracker } = await service.push(
      composite([{ classification: 'c:grow' }, { classification: 'c:flaky', maxAttempts: 1 }], {
        maxAttempts: 2,
        backoff: { baseMs: 20, maxMs: 20 },
      }),
      true,
    );
    await retried.promise;
    // Persisted before the retry.
    const between = await service.read(task.id);
    expect(between.steps.map((s) => s.classification)).toEqual(['c:grow', 'c:flaky', 'c:rec']);
    const { stepResults } = await tracker.resolve();
    expect(growRuns).toBe(1);
    expect(flakyRuns).toEqual([1, 2]);
    expect(calls.map((c) => c.input)).toEqual(['inserted']);
    expect(stepResults.map((r) => r.output)).toEqual([
      'grown',
      'ok',
      { from: 'c:rec', input: 'inserted' },
    ]);
    expect(await service.read(task.id)).toMatchObject({ status: 'succeeded', attempt: 1 });
  });

  test("a step retried after it planned steps plans again: the failed run's steps are withdrawn", async () => {
    const service = createService();
    const calls = recorders(service, ['c:rec']);
    service.register('c:planner', async (_input, ctx) => {
      await ctx
        .scheduleSteps({ classification: 'c:rec', input: `after-${ctx.stepAttempt}` })
        .afterCurrent();
      await ctx.scheduleSteps({ classification: 'c:rec', input: `end-${ctx.stepAttempt}` }).atEnd();
      if (ctx.stepAttempt === 1) throw new Error('fails after planning');
      return 'planned';
    });
    const updates = [];
    service.on('update', (evt) => updates.push(evt.payload.output));
    const { tracker } = await service.push(
      composite([
        { classification: 'c:planner', maxAttempts: 2, backoff: AT_ONCE },
        { classification: 'c:rec', input: 'last' },
      ]),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(calls.map((c) => c.input)).toEqual(['after-2', 'last', 'end-2']);
    expect(stepResults).toHaveLength(4);
    expect(updates).toEqual([
      { added: 1, insertionIndex: 1 },
      { added: 1, insertionIndex: 3 },
      { removed: 2 },
      { added: 1, insertionIndex: 1 },
      { added: 1, insertionIndex: 3 },
    ]);
  });

  test('refused outside a composite step, for a bad step, an unknown classification or no step', async () => {
    const service = createService();
    service.register('c:noop', () => null);
    const errors = {};
    const capture = async (label, fn) => {
      errors[label] = await fn().then(
        (v) => ({ resolved: v }),
        (e) => e,
      );
    };
    service.register('c:try-atomic', async (_input, ctx) => {
      await capture('atomic', () => ctx.scheduleSteps({ classification: 'c:noop' }).atEnd());
      return null;
    });
    service.register('c:try-bad', async (_input, ctx) => {
      await capture('badField', () =>
        ctx.scheduleSteps({ classification: 'c:noop', maxAttempts: 0 }).afterCurrent(),
      );
      await capture('badType', () =>
        ctx.scheduleSteps({ classification: 'c:noop', canFail: 'yes' }).afterCurrent(),
      );
      await capture('unknownKey', () =>
        ctx.scheduleSteps({ classification: 'c:noop', when: 1 }).atEnd(),
      );
      await capture('unknown', () => ctx.scheduleSteps({ classification: 'c:nobody' }).atEnd());
      await capture('empty', () => ctx.scheduleSteps().atEnd());
      return null;
    });
    await (await service.push({ classification: 'c:try-atomic' }, true)).tracker.resolve();
    const { task, tracker } = await service.push(
      composite([{ classification: 'c:try-bad' }]),
      true,
    );
    const { stepResults } = await tracker.resolve();

    expect(errors.atomic).toBeInstanceOf(TaskValidationError);
    expect(errors.atomic.code).toBe('E_INVALID');
    expect(errors.atomic.message).toContain('composite');
    expect(errors.badField).toBeInstanceOf(RangeError);
    expect(errors.badField.code).toBe('E_INVALID');
    expect(errors.badField.message).toContain('maxAttempts');
    expect(errors.badType).toBeInstanceOf(TypeError);
    expect(errors.badType.code).toBe('E_INVALID');
    expect(errors.badType.message).toContain('canFail');
    expect(errors.unknownKey.code).toBe('E_INVALID');
    expect(errors.unknownKey.message).toContain('when');
    expect(errors.unknown).toBeInstanceOf(UnknownClassificationError);
    expect(errors.unknown.message).toContain('c:nobody');
    expect(errors.empty).toBeInstanceOf(TaskValidationError);
    // Nothing was added.
    expect(stepResults).toHaveLength(1);
    expect((await service.read(task.id)).steps).toHaveLength(1);
    expect(await payloads(service, task.id, 'update')).toEqual([]);
  });

  test('refused once the run ended (after ctx.cancel): nothing is added', async () => {
    const service = createService();
    service.register('c:noop', () => null);
    let late;
    service.register('c:late', async (_input, ctx) => {
      await ctx.cancel('stop');
      late = await ctx
        .scheduleSteps({ classification: 'c:noop' })
        .atEnd()
        .catch((e) => e);
      return null;
    });
    const { task, tracker } = await service.push(composite([{ classification: 'c:late' }]), true);
    await expect(tracker.resolve()).rejects.toBeInstanceOf(TaskCancelError);
    await waitFor(() => late !== undefined, { what: 'the late scheduleSteps call' });
    expect(late).toBeInstanceOf(TaskValidationError);
    expect((await service.read(task.id)).steps).toHaveLength(1);
    expect(await payloads(service, task.id, 'update')).toEqual([]);
  });

  test('a native step added by a step runs too', async () => {
    const service = createService();
    service.register('c:grow', async (_input, ctx) => {
      await ctx
        .scheduleSteps({ classification: 'native:echo', input: 'from native' })
        .afterCurrent();
      return 'grown';
    });
    const { tracker } = await service.push(
      composite([{ classification: 'c:grow' }, { classification: 'native:noop' }]),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(stepResults.map((r) => r.output)).toEqual(['grown', 'from native', null]);
  });
});

describe('ctx.cancel / retry / reschedule inside a step', () => {
  test('ctx.cancel() cancels the whole composite; later steps never run', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a']);
    service.register('c:cancel', (_input, ctx) => ctx.cancel('enough'));
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:a', input: 'first' },
        { classification: 'c:cancel', canFail: true, maxAttempts: 3 },
        { classification: 'c:a', input: 'never' },
      ]),
      true,
    );
    const err = await tracker.resolve().catch((e) => e);
    expect(err).toBeInstanceOf(TaskCancelError);
    expect(err.nextAction).toBe('canceled');
    expect(calls.map((c) => c.input)).toEqual(['first']);
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({ status: 'canceled', currentStep: 1 });
    expect(stored.error.details).toEqual({ reason: 'enough' });
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'canceled']);
  });

  test('service.cancel() during a step aborts it; its late result and later steps are dropped', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a']);
    const started = deferred();
    const finish = deferred();
    let signal;
    service.register('c:held', async (_input, ctx) => {
      signal = ctx.signal;
      started.resolve();
      await finish.promise;
      return 'late';
    });
    const { task, tracker } = await service.push(
      composite([{ classification: 'c:held' }, { classification: 'c:a', input: 'never' }]),
      true,
    );
    await started.promise;
    await service.cancel(task.id, 'stop the pipeline');
    await expect(tracker.wait()).rejects.toBeInstanceOf(TaskCancelError);
    expect(signal.aborted).toBe(true);
    finish.resolve();
    // A task pushed after the late result was returned has run to its end.
    const probe = await service.push({ classification: 'native:noop' }, true);
    await probe.tracker.wait();
    expect(calls).toEqual([]);
    const stored = await service.read(task.id);
    expect(stored.status).toBe('canceled');
    expect(stored.output).toBeUndefined();
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'canceled']);
  });

  test('ctx.retry() retries the task: not an in-place step retry, not swallowed by canFail', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a']);
    const runs = [];
    service.register('c:retry', (_input, ctx) => {
      runs.push([ctx.attempt, ctx.stepAttempt]);
      if (ctx.attempt === 1) return ctx.retry('again please');
      return 'second task attempt';
    });
    const { task, tracker } = await service.push(
      composite(
        [
          { classification: 'c:a', input: 'first' },
          { classification: 'c:retry', maxAttempts: 5, canFail: true, backoff: AT_ONCE },
          { classification: 'c:a', input: 'last' },
        ],
        { maxAttempts: 2, backoff: AT_ONCE },
      ),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(runs).toEqual([
      [1, 1],
      [2, 1],
    ]);
    expect(calls.map((c) => c.input)).toEqual(['first', 'last']);
    expect(stepResults[1]).toEqual({
      status: 'succeeded',
      output: 'second task attempt',
      attempt: 1,
    });
    expect(await service.read(task.id)).toMatchObject({ status: 'succeeded', attempt: 1 });
    expect(await statusHistory(service, task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'succeeded',
    ]);
  });

  test('ctx.reschedule() leaves the composite scheduled at the step that asked', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a']);
    const at = Date.now() + 60_000;
    service.register('c:later', (_input, ctx) => ctx.reschedule(at, 'much later'));
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:a', input: 'first' },
        { classification: 'c:later' },
        { classification: 'c:a', input: 'last' },
      ]),
      true,
    );
    const err = await tracker.resolve().catch((e) => e);
    expect(err).toBeInstanceOf(TaskRescheduleError);
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({ status: 'scheduled', currentStep: 1, attempt: 0 });
    expect(stored.scheduledTo.getTime()).toBe(at);
    expect(stored.stepResults).toHaveLength(1);
    expect(calls.map((c) => c.input)).toEqual(['first']);
  });

  test('ctx.reschedule() schedules the task, which resumes at the same step', async () => {
    const service = createService();
    const calls = recorders(service, ['c:a']);
    const runs = [];
    service.register('c:later', (_input, ctx) => {
      runs.push(ctx.attempt);
      if (runs.length === 1) return ctx.reschedule(Date.now() + 30, 'not now');
      return 'later';
    });
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:a', input: 'first' },
        { classification: 'c:later' },
        { classification: 'c:a', input: 'last' },
      ]),
      true,
    );
    const err = await tracker.resolve().catch((e) => e);
    expect(err).toBeInstanceOf(TaskRescheduleError);
    expect(err.nextAction).toBe('scheduled');
    const { stepResults } = await tracker.wait();
    expect(runs).toHaveLength(2);
    expect(calls.map((c) => c.input)).toEqual(['first', 'last']);
    expect(stepResults.map((r) => r.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    expect(stepResults[1].output).toBe('later');
    expect(await statusHistory(service, task.id)).toEqual([
      'pending',
      'running',
      'scheduled',
      'running',
      'succeeded',
    ]);
  });
});

describe('logs of steps', () => {
  test('log lines written during a step carry its index (events and logTail)', async () => {
    const service = createService();
    service.register('c:log', (input, ctx) => {
      ctx.logger.info(`hello from ${input}`);
      ctx.logger.debug(`debug from ${input}`, { input });
      return null;
    });
    const live = [];
    service.on('log', (evt) => live.push(...evt.payload));
    const { task, tracker } = await service.push(
      composite([
        { classification: 'c:log', input: 'zero' },
        { classification: 'native:fail', input: { succeedOnAttempt: 1 } },
        { classification: 'c:log', input: 'two' },
      ]),
      true,
    );
    await tracker.resolve();
    const expected = [
      ['info', 'hello from zero', 0],
      ['debug', 'debug from zero', 0],
      ['info', 'attempt 1', 1],
      ['info', 'hello from two', 2],
      ['debug', 'debug from two', 2],
    ];
    const shape = (entries) => entries.map((l) => [l.level, l.msg, l.step]);
    expect(shape(live.filter((l) => l !== undefined))).toEqual(expected);
    const persisted = (await payloads(service, task.id, 'log')).flat();
    expect(shape(persisted)).toEqual(expected);
    expect(persisted[1].meta).toEqual({ input: 'zero' });
    const stored = await service.read(task.id);
    expect(shape(stored.logTail)).toEqual(expected);
  });

  test('an atomic task writes log lines without a step', async () => {
    const service = createService();
    service.register('c:log', (_input, ctx) => {
      ctx.logger.info('atomic line');
      return null;
    });
    const { task, tracker } = await service.push({ classification: 'c:log' }, true);
    await tracker.resolve();
    const [line] = (await service.read(task.id)).logTail;
    expect(line.msg).toBe('atomic line');
    expect(line.step).toBeUndefined();
  });
});

describe('steps in the worker pool', () => {
  test('pool steps run in order with step info and the resultCache of earlier steps', async () => {
    const service = await poolService();
    const { task, tracker } = await service.push(
      composite([
        { classification: 'steps:record', input: 'one' },
        { classification: 'steps:record', input: 'two', name: 'named' },
        { classification: 'steps:record', input: 'three' },
      ]),
      true,
    );
    const { stepResults } = await tracker.resolve();
    const outputs = stepResults.map((r) => r.output);
    expect(outputs.map((o) => [o.input, o.step, o.totalSteps, o.stepAttempt, o.attempt])).toEqual([
      ['one', 0, 3, 1, 1],
      ['two', 1, 3, 1, 1],
      ['three', 2, 3, 1, 1],
    ]);
    expect(outputs[0].resultCache).toEqual({});
    expect(outputs[1].resultCache).toEqual({
      'steps:record': outputs[0],
      [`${task.id}:step:0`]: outputs[0],
    });
    expect(outputs[2].resultCache).toEqual({
      'steps:record': outputs[1],
      [`${task.id}:step:0`]: outputs[0],
      [`${task.id}:step:1`]: outputs[1],
    });
    // Pool log lines carry the step too.
    const lines = (await service.read(task.id)).logTail.map((l) => [l.msg, l.step]);
    expect(lines).toEqual([
      ['pool step 0', 0],
      ['pool step 1', 1],
      ['pool step 2', 2],
    ]);
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test('a pool step schedules steps (afterCurrent and atEnd) and they run', async () => {
    const service = await poolService();
    const updates = [];
    service.on('update', (evt) => updates.push(evt.payload));
    const { task, tracker } = await service.push(
      composite([
        {
          classification: 'steps:grow',
          input: {
            steps: [
              { classification: 'steps:record', input: 'inserted-a' },
              { classification: 'native:echo', input: 'inserted-b' },
            ],
          },
        },
        {
          classification: 'steps:grow',
          input: { atEnd: true, steps: [{ classification: 'steps:record', input: 'appended' }] },
        },
        { classification: 'native:echo', input: 'original-last' },
      ]),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(stepResults[0].output.placed).toEqual({ insertionIndex: 1, totalSteps: 5 });
    expect(stepResults[3].output.placed).toEqual({ insertionIndex: 5, totalSteps: 6 });
    const label = (r) => (typeof r.output === 'string' ? r.output : r.output.input);
    expect(stepResults.map((r) => (r.output?.placed ? 'grow' : label(r)))).toEqual([
      'grow',
      'inserted-a',
      'inserted-b',
      'grow',
      'original-last',
      'appended',
    ]);
    expect(updates).toEqual([
      { status: 'update', currentStep: 0, totalSteps: 5, output: { added: 2, insertionIndex: 1 } },
      { status: 'update', currentStep: 3, totalSteps: 6, output: { added: 1, insertionIndex: 5 } },
    ]);
    expect((await service.read(task.id)).steps).toHaveLength(6);
    // The appended pool step read the output of the native step inserted before it.
    expect(stepResults[5].output.resultCache[`${task.id}:step:2`]).toBe('inserted-b');
  });

  test('a failing pool step with canFail runs its catch hook in the worker, the composite goes on', async () => {
    const service = await poolService();
    const { task, tracker } = await service.push(
      composite([
        { classification: 'steps:flaky', canFail: true, maxAttempts: 2, backoff: AT_ONCE },
        { classification: 'steps:record', input: 'after' },
      ]),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(stepResults[0]).toMatchObject({
      status: 'failed',
      error: { message: 'pool flaky run 2' },
      attempt: 2,
    });
    expect(stepResults[1].output.input).toBe('after');
    const lines = (await service.read(task.id)).logTail
      .filter((l) => l.level === 'info')
      .map((l) => [l.msg, l.step]);
    expect(lines).toEqual([
      ['caught pool flaky run 1', 0],
      ['caught pool flaky run 2', 0],
      ['pool step 1', 1],
    ]);
  });

  test('a failing pool step without canFail fails the composite', async () => {
    const service = await poolService();
    const { task, tracker } = await service.push(
      composite([
        { classification: 'steps:flaky' },
        { classification: 'steps:record', input: 'never' },
      ]),
      true,
    );
    const err = await tracker.resolve().catch((e) => e);
    expect(err.nextAction).toBe('failed');
    expect(err.message).toBe('pool flaky run 1');
    const stored = await service.read(task.id);
    expect(stored.status).toBe('failed');
    expect(stored.stepResults).toHaveLength(1);
  });
});

describe('step backoff', () => {
  const FIXED_150 = { strategy: 'fixed', baseMs: 150, maxMs: 150, jitter: 'none' };

  /** Runs a one-step composite whose step fails once; the times of its two runs and the retry log. */
  async function failOnce(service, step, task) {
    const runs = [];
    service.register(step.classification, (_input, ctx) => {
      runs.push(Date.now());
      if (ctx.stepAttempt === 1) throw new Error('the first run fails');
      return 'ok';
    });
    const { task: pushed, tracker } = await service.push(
      composite([{ maxAttempts: 2, ...step }], task),
      true,
    );
    await tracker.resolve();
    const logs = (await payloads(service, pushed.id, 'log')).flat().map((l) => l.msg);
    return { gap: runs[1] - runs[0], logs, stored: await service.read(pushed.id) };
  }

  test("a step's own backoff spaces its in-place retry, whatever the task's", async () => {
    const service = createService();
    const { gap, logs, stored } = await failOnce(
      service,
      { classification: 'c:own-backoff', backoff: FIXED_150 },
      { backoff: AT_ONCE },
    );
    expect(logs.some((m) => /retrying in 150 ms/.test(m))).toBe(true);
    expect(gap).toBeGreaterThanOrEqual(150);
    expect(stored.attempt).toBe(0);
  });

  test("a step without a backoff retries with the task's", async () => {
    const service = createService();
    const { gap, logs } = await failOnce(
      service,
      { classification: 'c:task-backoff' },
      { backoff: FIXED_150 },
    );
    expect(logs.some((m) => /retrying in 150 ms/.test(m))).toBe(true);
    expect(gap).toBeGreaterThanOrEqual(150);
  });
});

describe('ctx.cancel / retry / reschedule inside a worker-pool step', () => {
  test('ctx.cancel() in a pool step cancels the whole composite', async () => {
    const service = await poolService();
    const { task, tracker } = await service.push(
      composite([
        { classification: 'steps:cancel', canFail: true, maxAttempts: 3 },
        { classification: 'steps:record', input: 'never' },
      ]),
      true,
    );
    await expect(tracker.resolve()).rejects.toBeInstanceOf(TaskCancelError);
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({ status: 'canceled', currentStep: 0 });
    expect(stored.error.details).toEqual({ reason: 'from the pool' });
    expect(stored.stepResults).toEqual([]);
  });

  test('ctx.retry() in a pool step retries the task, not the step', async () => {
    const service = await poolService();
    const { task, tracker } = await service.push(
      composite(
        [
          { classification: 'steps:record', input: 'first' },
          { classification: 'steps:retry-once', canFail: true, maxAttempts: 4 },
        ],
        { maxAttempts: 2, backoff: AT_ONCE },
      ),
      true,
    );
    const { stepResults } = await tracker.resolve();
    expect(stepResults[1]).toEqual({ status: 'succeeded', output: { attempt: 2 }, attempt: 1 });
    // The first step succeeded on the first task attempt and did not run again.
    expect(stepResults[0].output.attempt).toBe(1);
    expect(await statusHistory(service, task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'succeeded',
    ]);
  });

  test('ctx.reschedule() in a pool step schedules the task, which resumes at that step', async () => {
    const service = await poolService();
    const { task, tracker } = await service.push(
      composite([
        { classification: 'steps:record', input: 'first' },
        { classification: 'steps:later-once' },
      ]),
      true,
    );
    await expect(tracker.resolve()).rejects.toBeInstanceOf(TaskRescheduleError);
    const { stepResults } = await tracker.wait();
    expect(stepResults.map((r) => r.output?.input ?? r.output)).toEqual(['first', 'later']);
    expect(await statusHistory(service, task.id)).toEqual([
      'pending',
      'running',
      'scheduled',
      'running',
      'succeeded',
    ]);
  });
});

describe('dependsOn of scheduled steps', () => {
  test('a step added with dependsOn waits for it; a missing reference is refused and adds nothing', async () => {
    const service = createService();
    const gate = deferred();
    service.register('c:gate', () => gate.promise);
    const ran = [];
    service.register('c:after', (input) => {
      ran.push(input);
      return input;
    });
    const other = await service.push({ classification: 'c:gate' });
    let refused;
    service.register('c:planner', async (_input, ctx) => {
      refused = await ctx
        .scheduleSteps({ classification: 'c:after', dependsOn: ['no-such-task'] })
        .afterCurrent()
        .catch((e) => e);
      await ctx
        .scheduleSteps({ classification: 'c:after', input: 'waited', dependsOn: [other.id] })
        .afterCurrent();
      return 'planned';
    });
    const { task, tracker } = await service.push(
      composite([{ classification: 'c:planner' }]),
      true,
    );
    await waitFor(async () => (await service.read(task.id)).currentStep === 1, {
      what: 'the composite to reach the added step',
    });
    // It waits for the other task: a task pushed now runs to its end first.
    const probe = await service.push({ classification: 'native:noop' }, true);
    await probe.tracker.wait();
    expect(ran).toEqual([]);
    expect((await service.read(task.id)).status).toBe('running');
    expect(refused).toBeInstanceOf(lib.TaskDependencyError);
    expect((await service.read(task.id)).steps).toHaveLength(2);
    gate.resolve('open');
    const { stepResults } = await tracker.resolve();
    expect(stepResults.map((r) => r.output)).toEqual(['planned', 'waited']);
  });
});
