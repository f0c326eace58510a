const { threadId } = require('node:worker_threads');
const { lib, deferred, useServices, waitForStatus, statusHistory } = require('./helpers');

const { TaskService, TaskTracker, TaskStatus } = lib;
const createService = useServices();

describe('task lifecycle', () => {
  test('the package exports the public API', () => {
    expect(typeof TaskService).toBe('function');
    expect(typeof TaskTracker).toBe('function');
    expect(TaskStatus).toMatchObject({
      PENDING: 'pending',
      SCHEDULED: 'scheduled',
      RUNNING: 'running',
      WAITING_RETRY: 'waiting_retry',
      SUCCEEDED: 'succeeded',
      FAILED: 'failed',
      CANCELED: 'canceled',
    });
    for (const name of [
      'TaskFailError',
      'TaskCancelError',
      'TaskRescheduleError',
      'TaskRetryError',
      'TaskNotFoundError',
      'UnknownClassificationError',
      'ServiceShutdownError',
      'TaskPayloadTooLargeError',
      'TaskInputError',
      'TaskValidationError',
    ]) {
      expect(typeof lib[name]).toBe('function');
    }
  });

  test('options getter applies the documented defaults', () => {
    const service = createService();
    expect(service.options).toMatchObject({
      concurrency: 16,
      leaseMs: 30000,
      gracefulShutdownMs: 10000,
      logTailMax: 100,
      adapter: { kind: 'memory' },
      autoShutdown: false,
    });
    expect(typeof service.options.workerId).toBe('string');
    expect(service.options.workerId.length).toBeGreaterThan(0);
    expect(service.closed).toBe(false);
  });

  test('push stores a pending task with the default fields', async () => {
    const service = createService();
    const gate = deferred();
    service.register('lifecycle:gate', () => gate.promise);
    const before = Date.now();
    const task = await service.push({ classification: 'lifecycle:gate', input: { a: 1 } });
    expect(typeof task.id).toBe('string');
    expect(task.id.length).toBeGreaterThan(0);
    expect(task).toMatchObject({
      classification: 'lifecycle:gate',
      atomicity: 'atomic',
      status: 'pending',
      input: { a: 1 },
      attempt: 0,
      maxAttempts: 1,
      backoff: { strategy: 'exponential', baseMs: 1000, maxMs: 60000, jitter: 'full' },
      priority: 0,
      dependencies: [],
      steps: [],
      logTail: [],
    });
    expect(task.createdAt).toBeInstanceOf(Date);
    expect(task.updatedAt).toBeInstanceOf(Date);
    expect(task.createdAt.getTime()).toBeGreaterThanOrEqual(before - 1);
    expect(task.output).toBeUndefined();
    gate.resolve('ok');
    await waitForStatus(service, task.id, 'succeeded');
  });

  test('a pushed task runs through pending → running → succeeded and keeps its output', async () => {
    const service = createService();
    service.register('lifecycle:add', async (input) => input.a + input.b);
    const { task, tracker } = await service.push(
      { classification: 'lifecycle:add', input: { a: 2, b: 40 }, name: 'the answer' },
      true,
    );
    expect(tracker).toBeInstanceOf(TaskTracker);
    await expect(tracker.wait()).resolves.toBe(42);
    const stored = await service.read(task.id);
    expect(stored).toMatchObject({
      id: task.id,
      name: 'the answer',
      status: 'succeeded',
      output: 42,
      attempt: 0,
    });
    expect(stored.error == null).toBe(true);
    expect(stored.leaseOwner == null).toBe(true);
    expect(stored.leaseExpiry).toBeUndefined();
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test('a handler may be a { run, catch } object; catch sees the error before the failure is recorded', async () => {
    const service = createService();
    const calls = [];
    const handler = {
      factor: 3,
      run(input) {
        if (input === 'boom') throw new Error('run failed');
        return input * this.factor;
      },
      async catch(input, error, ctx) {
        const current = await service.read(ctx.taskId);
        calls.push({ input, message: error.message, status: current.status });
      },
    };
    service.register('lifecycle:object', handler);
    const ok = await service.push({ classification: 'lifecycle:object', input: 5 }, true);
    await expect(ok.tracker.wait()).resolves.toBe(15);
    const bad = await service.push({ classification: 'lifecycle:object', input: 'boom' }, true);
    await expect(bad.tracker.wait()).rejects.toThrow('run failed');
    expect(calls).toEqual([{ input: 'boom', message: 'run failed', status: 'running' }]);
    const stored = await service.read(bad.task.id);
    expect(stored.status).toBe('failed');
    expect(stored.error.message).toBe('run failed');
  });

  test('a handler returning undefined stores null; synchronous handlers work', async () => {
    const service = createService();
    service.register('lifecycle:void', () => undefined);
    const { task, tracker } = await service.push({ classification: 'lifecycle:void' }, true);
    await expect(tracker.wait()).resolves.toBeNull();
    const stored = await service.read(task.id);
    expect(stored.status).toBe('succeeded');
    expect(stored.output).toBeNull();
  });

  test('a handler that throws fails the task (maxAttempts defaults to 1) with its message and code', async () => {
    const service = createService();
    service.register('lifecycle:throw', () => {
      const err = new Error('nope');
      err.code = 'E_MINE';
      throw err;
    });
    const { task, tracker } = await service.push({ classification: 'lifecycle:throw' }, true);
    await expect(tracker.wait()).rejects.toThrow('nope');
    const stored = await service.read(task.id);
    expect(stored.status).toBe('failed');
    expect(stored.attempt).toBe(1);
    expect(stored.error).toMatchObject({ message: 'nope', code: 'E_MINE' });
    expect(typeof stored.error.stack).toBe('string');
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'failed']);
  });

  test('a handler returning a non-JSON output fails the task with E_OUTPUT_NOT_JSON', async () => {
    const service = createService();
    service.register('lifecycle:bad-output', () => ({ when: new Date(0), fn: () => 1 }));
    const { task, tracker } = await service.push({ classification: 'lifecycle:bad-output' }, true);
    await expect(tracker.wait()).rejects.toMatchObject({ nextAction: 'failed' });
    const stored = await service.read(task.id);
    expect(stored.status).toBe('failed');
    expect(stored.error.code).toBe('E_OUTPUT_NOT_JSON');
    expect(stored.error.message).toMatch(/output\.when/);
  });

  test('inline handlers run on the thread that registered them, with a context', async () => {
    const service = createService();
    let seen;
    service.register('lifecycle:ctx', (_input, ctx) => {
      seen = {
        threadId: require('node:worker_threads').threadId,
        taskId: ctx.taskId,
        attempt: ctx.attempt,
        classification: ctx.classification,
        name: ctx.name,
        resultCache: ctx.resultCache,
        signalAborted: ctx.signal.aborted,
      };
      return 'done';
    });
    const { task, tracker } = await service.push(
      { classification: 'lifecycle:ctx', name: 'named' },
      true,
    );
    await tracker.wait();
    expect(seen).toEqual({
      threadId,
      taskId: task.id,
      attempt: 1,
      classification: 'lifecycle:ctx',
      name: 'named',
      resultCache: {},
      signalAborted: false,
    });
  });

  test('pushMany stores all specs in order and runs them', async () => {
    const service = createService();
    service.register('lifecycle:double', (x) => x * 2);
    const tasks = await service.pushMany([
      { classification: 'lifecycle:double', input: 1 },
      { classification: 'lifecycle:double', input: 2 },
      { classification: 'native:echo', input: 'three' },
    ]);
    expect(tasks.map((t) => t.input)).toEqual([1, 2, 'three']);
    expect(new Set(tasks.map((t) => t.id)).size).toBe(3);
    const outputs = await Promise.all(
      tasks.map(async (t) => {
        await waitForStatus(service, t.id, 'succeeded');
        return (await service.read(t.id)).output;
      }),
    );
    expect(outputs).toEqual([2, 4, 'three']);
    await expect(service.pushMany([])).resolves.toEqual([]);
  });

  test('list filters by status and classification, pages with limit/offset, orders by creation', async () => {
    const service = createService({ concurrency: 1 });
    const gate = deferred();
    const started = deferred();
    service.register('lifecycle:block', () => {
      started.resolve();
      return gate.promise;
    });
    service.register('lifecycle:other', () => 'x');
    const first = await service.push({ classification: 'lifecycle:block' });
    await started.promise;
    const rest = await service.pushMany([
      { classification: 'lifecycle:other', input: 1 },
      { classification: 'lifecycle:other', input: 2 },
      { classification: 'lifecycle:other', input: 3 },
    ]);
    const all = await service.list();
    expect(all.map((t) => t.id)).toEqual([first.id, ...rest.map((t) => t.id)]);
    expect((await service.list({ status: 'running' })).map((t) => t.id)).toEqual([first.id]);
    expect((await service.list({ status: 'pending' })).map((t) => t.input)).toEqual([1, 2, 3]);
    expect((await service.list({ classification: 'lifecycle:other' })).length).toBe(3);
    expect((await service.list({ classification: 'lifecycle:none' })).length).toBe(0);
    expect(
      (await service.list({ classification: 'lifecycle:other', limit: 1, offset: 1 })).map(
        (t) => t.input,
      ),
    ).toEqual([2]);
    expect((await service.list({ offset: 10 })).length).toBe(0);
    gate.resolve('done');
    await waitForStatus(service, rest[2].id, 'succeeded');
    expect((await service.list({ status: 'succeeded' })).length).toBe(4);
  });

  test('read returns a fresh snapshot with Date fields', async () => {
    const service = createService();
    const started = deferred();
    const gate = deferred();
    service.register('lifecycle:snap', () => {
      started.resolve();
      return gate.promise;
    });
    const task = await service.push({ classification: 'lifecycle:snap' });
    await started.promise;
    const running = await service.read(task.id);
    expect(running.status).toBe('running');
    expect(running.leaseOwner).toBe(service.options.workerId);
    expect(running.leaseExpiry).toBeInstanceOf(Date);
    expect(typeof running.leaseToken).toBe('number');
    running.status = 'mutated';
    expect((await service.read(task.id)).status).toBe('running');
    gate.resolve(1);
    await waitForStatus(service, task.id, 'succeeded');
  });

  test('start() resolves on an open service', async () => {
    const service = createService();
    await expect(service.start()).resolves.toBeUndefined();
  });
});
