// The SQLite store (adapter { kind: 'sqlite', path }) through the public API: what a
// shutdown and a reopen keep, resumed work, event numbering, retention, dependencies and
// locks, bad configurations, and two services sharing one file.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const {
  lib,
  deferred,
  useServices,
  waitFor,
  waitForStatus,
  statusHistory,
  withDeadline,
  fixedBackoff,
} = require('./helpers');

const {
  TaskService,
  TaskValidationError,
  TaskNotFoundError,
  TaskDependencyError,
  TaskDependencyFailedError,
  UnknownClassificationError,
} = lib;

const createService = useServices({ shutdownTimeoutMs: 200 });

// Bounds, not timings: a hang fails fast with a clear message.
const DEADLINE_MS = 10000;

let root;
let fileCount = 0;

beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'decaf-sqlite-'));
});

// After every afterEach (the services are shut down by then).
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

/** A fresh database path (the file does not exist yet). */
function freshDb() {
  fileCount += 1;
  return path.join(root, `tasks-${fileCount}.sqlite`);
}

function sqlite(file, options = {}) {
  return createService({ adapter: { kind: 'sqlite', path: file }, ...options });
}

/** Every task of a service with its events. */
async function snapshot(service) {
  const tasks = await service.list();
  const events = {};
  for (const task of tasks) events[task.id] = await service.events(task.id);
  return { tasks, events };
}

function allSettled(trackers) {
  return withDeadline(
    Promise.allSettled(trackers.map((t) => t.wait())),
    DEADLINE_MS,
    'tasks ended',
  );
}

describe('SQLite store: a reopened service sees what was stored', () => {
  test('tasks, outputs (null and falsy too), errors, logTail, events and stepResults survive a shutdown and a reopen', async () => {
    const file = freshDb();
    const first = sqlite(file);
    first.register('p:echo', (input, ctx) => {
      ctx.logger.info('echo', { input });
      return input;
    });
    first.register('p:fail', (input, ctx) => {
      ctx.logger.warn('about to fail');
      throw Object.assign(new Error(`boom ${input}`), { code: 'E_BOOM', details: { input } });
    });
    first.register('p:progress', async (input, ctx) => {
      await ctx.progress({ pct: 50 });
      ctx.logger.debug('half way', { step: ctx.step });
      return { doubled: input * 2 };
    });

    const outputs = [null, 0, '', false, { nested: [1, 'two', { three: 3 }] }, 'text'];
    const pushed = [];
    for (const input of outputs) {
      pushed.push(await first.push({ classification: 'p:echo', input, name: 'echo' }, true));
    }
    pushed.push(await first.push({ classification: 'p:fail', input: 7, maxAttempts: 2 }, true));
    pushed.push(
      await first.push(
        {
          classification: 'p',
          atomicity: 'composite',
          name: 'composite',
          steps: [
            { classification: 'p:echo', input: 'first' },
            { classification: 'p:progress', name: 'double', input: 21 },
            { classification: 'p:fail', input: 'optional', canFail: true, maxAttempts: 1 },
            { classification: 'p:echo', input: 0 },
          ],
        },
        true,
      ),
    );
    pushed.push(
      await first.push(
        { classification: 'p:fail', input: 1, backoff: fixedBackoff(1), maxAttempts: 2 },
        true,
      ),
    );
    const scheduled = await first
      .schedule({ classification: 'p:echo', input: 'later', priority: 3, lock: 'k' })
      .for(Date.now() + 3_600_000);
    const canceled = await first.push({
      classification: 'p:echo',
      input: 'never',
      scheduledTo: Date.now() + 3_600_000,
    });
    await first.cancel(canceled.id, 'not needed');
    await allSettled(pushed.map((p) => p.tracker));

    const before = await snapshot(first);
    await first.shutdown();

    const second = sqlite(file);
    const after = await snapshot(second);
    expect(after.tasks.map((t) => t.id)).toEqual(before.tasks.map((t) => t.id));
    expect(after).toEqual(before);
    for (const task of before.tasks) {
      expect(await second.read(task.id)).toEqual(task);
    }

    // The values themselves, not only their equality with the first service's.
    const ids = pushed.map((p) => p.task.id);
    for (const [i, output] of outputs.entries()) {
      const task = await second.read(ids[i]);
      expect(task.status).toBe('succeeded');
      expect('output' in task).toBe(true);
      expect(task.output).toEqual(output);
      expect(task.logTail.map((l) => [l.level, l.msg, l.meta])).toEqual([
        ['info', 'echo', { input: output }],
      ]);
      expect(task.logTail[0].ts).toBeInstanceOf(Date);
      const last = (await second.events(ids[i])).at(-1);
      expect(last.payload).toEqual({ status: 'succeeded', output });
      expect('output' in last.payload).toBe(true);
    }

    const failed = await second.read(ids[outputs.length]);
    expect(failed).toMatchObject({
      status: 'failed',
      attempt: 2,
      maxAttempts: 2,
      error: { message: 'boom 7', code: 'E_BOOM', details: { input: 7 } },
    });
    expect(failed.error.stack).toMatch(/boom 7/);
    expect(failed.logTail.map((l) => l.msg)).toEqual(['about to fail', 'about to fail']);
    expect(await statusHistory(second, failed.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'failed',
    ]);

    const comp = await second.read(ids[outputs.length + 1]);
    expect(comp.status).toBe('succeeded');
    expect(comp.stepResults).toEqual([
      { status: 'succeeded', output: 'first', attempt: 1 },
      { status: 'succeeded', output: { doubled: 42 }, attempt: 1 },
      expect.objectContaining({
        status: 'failed',
        error: expect.objectContaining({ message: 'boom optional', code: 'E_BOOM' }),
      }),
      { status: 'succeeded', output: 0, attempt: 1 },
    ]);
    expect(comp.output).toEqual({ stepResults: comp.stepResults });
    expect(comp.steps.map((s) => s.classification)).toEqual([
      'p:echo',
      'p:progress',
      'p:fail',
      'p:echo',
    ]);
    expect(comp.logTail.map((l) => [l.msg, l.step])).toEqual([
      ['echo', 0],
      ['half way', 1],
      ['about to fail', 2],
      ['echo', 3],
    ]);
    const progress = (await second.events(comp.id)).filter((e) => e.classification === 'progress');
    expect(progress.map((e) => e.payload)).toContainEqual({ pct: 50 });

    expect(await second.read(scheduled.id)).toMatchObject({
      status: 'scheduled',
      scheduledTo: scheduled.scheduledTo,
      priority: 3,
      lock: 'k',
      input: 'later',
    });
    expect(await second.read(canceled.id)).toMatchObject({
      status: 'canceled',
      error: { message: `Task ${canceled.id} canceled`, code: 400 },
    });

    // Filters read the same store.
    expect((await second.list({ status: 'failed' })).map((t) => t.id)).toEqual(
      before.tasks.filter((t) => t.status === 'failed').map((t) => t.id),
    );
    expect((await second.list({ classification: 'p', limit: 5 })).map((t) => t.id)).toEqual([
      comp.id,
    ]);
    expect((await second.list({ offset: 2, limit: 3 })).map((t) => t.id)).toEqual(
      before.tasks.slice(2, 5).map((t) => t.id),
    );
    await expect(second.read('no-such-task')).rejects.toBeInstanceOf(TaskNotFoundError);
  });

  test("a reopened service's tracker of an ended task settles from the stored history", async () => {
    const file = freshDb();
    const first = sqlite(file);
    const ok = await first.push({ classification: 'native:echo', input: false }, true);
    const ko = await first.push(
      { classification: 'native:fail', input: { message: 'nope' } },
      true,
    );
    await allSettled([ok.tracker, ko.tracker]);
    await first.shutdown();

    const second = sqlite(file);
    const { tracker } = await second.track(ok.task.id);
    await expect(withDeadline(tracker.wait(), DEADLINE_MS, 'tracker')).resolves.toBe(false);
    const failed = await second.track(ko.task.id);
    await expect(withDeadline(failed.tracker.wait(), DEADLINE_MS, 'tracker')).rejects.toMatchObject(
      { taskId: ko.task.id, nextAction: 'failed' },
    );
  });
});

describe('SQLite store: a restarted service resumes the work', () => {
  test('tasks released by a shutdown run on the next service: all succeed, no attempt counted', async () => {
    const file = freshDb();
    const N = 6;
    const first = sqlite(file, { concurrency: 1 });
    const gate = deferred();
    const started = deferred();
    const firstRuns = [];
    first.register('slow', async (input, ctx) => {
      firstRuns.push(input);
      started.resolve(ctx.taskId);
      await gate.promise;
      return 'from the first service';
    });
    const tasks = await first.pushMany(
      Array.from({ length: N }, (_, n) => ({ classification: 'slow', input: n, maxAttempts: 3 })),
    );
    const runningId = await withDeadline(started.promise, DEADLINE_MS, 'first run started');
    expect(runningId).toBe(tasks[0].id);
    await first.shutdown({ timeoutMs: 20 });
    // Its handler returns only now: a late result, dropped.
    gate.resolve();
    expect((await first.list()).map((t) => [t.status, t.attempt])).toEqual(
      tasks.map(() => ['pending', 0]),
    );

    const second = sqlite(file, { concurrency: 2 });
    const secondRuns = [];
    second.register('slow', (input, ctx) => {
      secondRuns.push({ input, attempt: ctx.attempt });
      return `done ${input}`;
    });
    const trackers = await Promise.all(tasks.map(async (t) => (await second.track(t.id)).tracker));
    const results = await allSettled(trackers);
    expect(results.map((r) => r.value)).toEqual(tasks.map((_, n) => `done ${n}`));
    expect(firstRuns).toEqual([0]);
    expect(secondRuns.map((r) => r.input).sort()).toEqual(tasks.map((_, n) => n));
    expect(secondRuns.every((r) => r.attempt === 1)).toBe(true);
    const final = await second.list();
    expect(final.map((t) => [t.status, t.attempt, t.output])).toEqual(
      tasks.map((_, n) => ['succeeded', 0, `done ${n}`]),
    );
    expect(await statusHistory(second, tasks[0].id)).toEqual([
      'pending',
      'running',
      'pending',
      'running',
      'succeeded',
    ]);
    expect(await statusHistory(second, tasks[1].id)).toEqual(['pending', 'running', 'succeeded']);
  });

  test('dependencies, waiting retries and scheduled tasks are resumed by the next service', async () => {
    const file = freshDb();
    // Two slots: the gate holds one, the flaky task fails its first run in the other.
    const first = sqlite(file, { concurrency: 2 });
    const gate = deferred();
    const started = deferred();
    first.register('r:gate', async () => {
      started.resolve();
      await gate.promise;
      return 'first';
    });
    first.register('r:rec', () => 'first');
    first.register('r:flaky', () => {
      throw new Error('first try fails');
    });
    const up = await first.push({ classification: 'r:gate', input: 'up' });
    const dependent = await first.push({
      classification: 'r:rec',
      input: 'dependent',
      dependencies: [up.id],
    });
    const retried = await first.push({
      classification: 'r:flaky',
      maxAttempts: 2,
      // Due after the shutdown below (well after), on the second service.
      backoff: fixedBackoff(1500),
    });
    const later = await first
      .schedule({ classification: 'r:rec', input: 'later' })
      .for(Date.now() + 1500);
    await withDeadline(started.promise, DEADLINE_MS, 'the gate ran');
    await withDeadline(
      waitForStatus(first, retried.id, 'waiting_retry'),
      DEADLINE_MS,
      'the flaky task waits for its retry',
    );
    await first.shutdown({ timeoutMs: 0 });
    gate.resolve();
    const stored = await first.list();
    expect(stored.map((t) => t.status)).toEqual([
      'pending',
      'pending',
      'waiting_retry',
      'scheduled',
    ]);

    const second = sqlite(file);
    const order = [];
    second.register('r:gate', (input) => {
      order.push(input);
      return 'second';
    });
    second.register('r:rec', (input) => {
      order.push(input);
      return 'second';
    });
    second.register('r:flaky', (_input, ctx) => `retried on attempt ${ctx.attempt}`);
    const trackers = await Promise.all(
      [up, dependent, retried, later].map(async (t) => (await second.track(t.id)).tracker),
    );
    const results = await allSettled(trackers);
    expect(results.map((r) => r.value)).toEqual([
      'second',
      'second',
      'retried on attempt 2',
      'second',
    ]);
    expect(order.indexOf('up')).toBeLessThan(order.indexOf('dependent'));
    expect((await second.read(retried.id)).attempt).toBe(1);
  });

  test('a composite released in the middle resumes at its current step on the next service', async () => {
    const file = freshDb();
    const first = sqlite(file);
    const gate = deferred();
    const started = deferred();
    const firstCalls = [];
    first.register('cs:one', (input) => {
      firstCalls.push('one');
      return { one: input };
    });
    first.register('cs:two', async () => {
      firstCalls.push('two');
      started.resolve();
      await gate.promise;
      return 'two from the first service';
    });
    first.register('cs:three', () => 'never here');
    const task = await first.push({
      classification: 'cs',
      atomicity: 'composite',
      steps: [
        { classification: 'cs:one', input: 1 },
        { classification: 'cs:two', input: 2 },
        { classification: 'cs:three', input: 3 },
      ],
    });
    await withDeadline(started.promise, DEADLINE_MS, 'step two started');
    await first.shutdown({ timeoutMs: 0 });
    gate.resolve();
    expect(await first.read(task.id)).toMatchObject({ currentStep: 1, attempt: 0 });

    const second = sqlite(file);
    const secondCalls = [];
    second.register('cs:one', () => {
      secondCalls.push({ step: 'one' });
      return 'one again';
    });
    second.register('cs:two', (input, ctx) => {
      secondCalls.push({ step: 'two', cache: ctx.resultCache['cs:one'] });
      return { two: input };
    });
    second.register('cs:three', (input) => {
      secondCalls.push({ step: 'three' });
      return { three: input };
    });
    const { tracker } = await second.track(task.id);
    const output = await withDeadline(tracker.wait(), DEADLINE_MS, 'the composite ended');
    expect(firstCalls).toEqual(['one', 'two']);
    expect(secondCalls).toEqual([{ step: 'two', cache: { one: 1 } }, { step: 'three' }]);
    expect(output.stepResults.map((r) => [r.status, r.output])).toEqual([
      ['succeeded', { one: 1 }],
      ['succeeded', { two: 2 }],
      ['succeeded', { three: 3 }],
    ]);
  });

  test('event seq keeps increasing across a reopen', async () => {
    const file = freshDb();
    const first = sqlite(file);
    const old = [];
    for (const input of ['a', 'b']) {
      const { task, tracker } = await first.push({ classification: 'native:echo', input }, true);
      await tracker.wait();
      old.push(task.id);
    }
    const oldEvents = (await Promise.all(old.map((id) => first.events(id)))).flat();
    let lastSeq = Math.max(...oldEvents.map((e) => e.seq));
    await first.shutdown();

    for (let reopen = 0; reopen < 2; reopen++) {
      const next = sqlite(file);
      const live = [];
      next.on('event', (evt) => live.push(evt.seq));
      const { task, tracker } = await next.push({ classification: 'native:echo', input: 1 }, true);
      await tracker.wait();
      const seqs = (await next.events(task.id)).map((e) => e.seq);
      expect(seqs.length).toBeGreaterThanOrEqual(3);
      // After every event stored before this reopen.
      expect(Math.min(...seqs)).toBeGreaterThan(lastSeq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      await waitFor(() => live.length >= seqs.length, { what: 'live events delivered' });
      expect(Math.min(...live)).toBeGreaterThan(lastSeq);
      // The old history is untouched.
      expect((await Promise.all(old.map((id) => next.events(id)))).flat()).toEqual(oldEvents);
      await next.shutdown();
      lastSeq = Math.max(...seqs);
    }
    const last = sqlite(file);
    const all = (await Promise.all((await last.list()).map((t) => last.events(t.id)))).flat();
    const seqs = all.map((e) => e.seq);
    expect(new Set(seqs).size).toBe(seqs.length);
  });
});

describe('SQLite store: retention', () => {
  test('ended tasks are purged after completedMs / failedMs', async () => {
    const service = sqlite(freshDb(), { retention: { completedMs: 50, failedMs: 60_000 } });
    const ok = await service.push({ classification: 'native:echo', input: 'brief' }, true);
    const ko = await service.push({ classification: 'native:fail' }, true);
    await allSettled([ok.tracker, ko.tracker]);
    await waitFor(
      async () => (await service.read(ok.task.id).catch((e) => e)) instanceof TaskNotFoundError,
      { timeoutMs: DEADLINE_MS, intervalMs: 20, what: 'the succeeded task purged' },
    );
    await expect(service.events(ok.task.id)).rejects.toBeInstanceOf(TaskNotFoundError);
    expect((await service.read(ko.task.id)).status).toBe('failed');
    expect((await service.list()).map((t) => t.id)).toEqual([ko.task.id]);
    await expect(
      service.push({ classification: 'native:echo', dependencies: [ok.task.id] }),
    ).rejects.toBeInstanceOf(TaskDependencyError);
  });

  test('a service reopened with retention purges the tasks that ended before', async () => {
    const file = freshDb();
    const first = sqlite(file);
    const ended = await first.push({ classification: 'native:echo', input: 'old' }, true);
    await ended.tracker.wait();
    await first.shutdown();

    const second = sqlite(file, { retention: { completedMs: 50 } });
    await waitFor(
      async () => (await second.read(ended.task.id).catch((e) => e)) instanceof TaskNotFoundError,
      { timeoutMs: DEADLINE_MS, intervalMs: 20, what: 'the task ended before the reopen purged' },
    );
    expect(await second.list()).toEqual([]);
  });
});

describe('SQLite store: dependencies and locks (smoke)', () => {
  test('a dependent runs after its dependency; a failed dependency fails the dependent', async () => {
    const service = sqlite(freshDb());
    const gate = deferred();
    const order = [];
    service.register('d:gate', async (input) => {
      order.push(input);
      await gate.promise;
      return input;
    });
    service.register('d:rec', (input) => {
      order.push(input);
      return input;
    });
    const up = await service.push({ classification: 'd:gate', input: 'up' }, true);
    const down = await service.push(
      { classification: 'd:rec', input: 'down', dependencies: [up.task.id] },
      true,
    );
    await withDeadline(waitForStatus(service, up.task.id, 'running'), DEADLINE_MS, 'up running');
    expect((await service.read(down.task.id)).status).toBe('pending');
    gate.resolve();
    await expect(withDeadline(down.tracker.wait(), DEADLINE_MS, 'dependent')).resolves.toBe('down');
    expect(order).toEqual(['up', 'down']);

    const bad = await service.push({ classification: 'native:fail' }, true);
    const blocked = await service.push(
      { classification: 'd:rec', input: 'never', dependencies: [bad.task.id] },
      true,
    );
    const err = await withDeadline(blocked.tracker.wait(), DEADLINE_MS, 'dependent').catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(TaskDependencyFailedError);
    expect(err).toMatchObject({
      code: 'E_DEPENDENCY_FAILED',
      dependency: bad.task.id,
      dependencyStatus: 'failed',
    });
    expect(await service.read(blocked.task.id)).toMatchObject({
      status: 'failed',
      attempt: 0,
      error: { code: 'E_DEPENDENCY_FAILED' },
    });
    expect(order).not.toContain('never');
    await expect(
      service.push({ classification: 'd:rec', dependencies: ['missing-task'] }),
    ).rejects.toBeInstanceOf(TaskDependencyError);
  });

  test('tasks sharing a lock never overlap; other tasks run meanwhile', async () => {
    const service = sqlite(freshDb(), { concurrency: 4 });
    let inLock = 0;
    let maxInLock = 0;
    let running = 0;
    let maxRunning = 0;
    service.register('l:work', async (input) => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      if (input.lock) {
        inLock += 1;
        maxInLock = Math.max(maxInLock, inLock);
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (input.lock) inLock -= 1;
      running -= 1;
      return input.n;
    });
    const specs = Array.from({ length: 8 }, (_, n) => ({
      classification: 'l:work',
      input: { n, lock: n % 2 === 0 },
      ...(n % 2 === 0 ? { lock: 'shared' } : {}),
    }));
    const tasks = await service.pushMany(specs);
    const trackers = await Promise.all(tasks.map(async (t) => (await service.track(t.id)).tracker));
    const results = await allSettled(trackers);
    expect(results.map((r) => r.value)).toEqual(specs.map((_, n) => n));
    expect(maxInLock).toBe(1);
    expect(maxRunning).toBeGreaterThan(1);
  });

  test('a classification no handler serves is refused (the store is not shared)', async () => {
    const service = sqlite(freshDb());
    await expect(service.push({ classification: 'nobody' })).rejects.toBeInstanceOf(
      UnknownClassificationError,
    );
    expect(await service.list()).toEqual([]);
  });
});

describe('SQLite store: bad configuration', () => {
  const expectInvalid = (adapter, Class, message) => {
    let thrown;
    try {
      new TaskService({ adapter });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(Class);
    expect(thrown.code).toBe('E_INVALID');
    // A string: the message names it (a path, compared verbatim).
    if (typeof message === 'string') expect(thrown.message).toContain(message);
    else expect(thrown.message).toMatch(message);
    return thrown;
  };
  test('a missing, empty or wrongly typed path is a TypeError / RangeError; an unknown kind a TaskValidationError', () => {
    expectInvalid({ kind: 'sqlite' }, TypeError, /options\.adapter\.path/);
    expectInvalid({ kind: 'sqlite', path: '' }, RangeError, /options\.adapter\.path/);
    expectInvalid({ kind: 'sqlite', path: 42 }, TypeError, /options\.adapter\.path/);
    expectInvalid({ kind: 'sqlite', path: 'a\0b' }, TypeError, /NUL/);
    expectInvalid(
      { kind: 'sqlite', path: path.join(root, 'x.sqlite'), mode: 'wal' },
      TypeError,
      /options\.adapter\.mode/,
    );
    expectInvalid({ kind: 'memory', path: 'x' }, TypeError, /options\.adapter\.path/);
    expectInvalid({ kind: 'mongo' }, TaskValidationError, /mongo/);
  });

  test('a file that cannot be a database is a TaskValidationError naming the path, thrown by the constructor', () => {
    const dir = fs.mkdtempSync(path.join(root, 'bad-'));
    const inMissingDir = path.join(dir, 'missing', 'tasks.sqlite');
    expectInvalid({ kind: 'sqlite', path: inMissingDir }, TaskValidationError, inMissingDir);
    expect(fs.existsSync(path.join(dir, 'missing'))).toBe(false);

    expectInvalid({ kind: 'sqlite', path: dir }, TaskValidationError, dir);

    const junk = path.join(dir, 'junk.sqlite');
    const junkText = 'this is not a SQLite database\n'.repeat(200);
    fs.writeFileSync(junk, junkText);
    expectInvalid({ kind: 'sqlite', path: junk }, TaskValidationError, junk);
    // The file is left as it was.
    expect(fs.readFileSync(junk, 'utf8')).toBe(junkText);

    const aFile = path.join(dir, 'plain-file');
    fs.writeFileSync(aFile, 'x');
    const underFile = path.join(aFile, 'tasks.sqlite');
    expectInvalid({ kind: 'sqlite', path: underFile }, TaskValidationError, underFile);
  });

  test('after refused configurations, a good one works; an empty file and a relative path are fine', async () => {
    const dir = fs.mkdtempSync(path.join(root, 'good-'));
    expect(() => new TaskService({ adapter: { kind: 'sqlite', path: dir } })).toThrow(
      TaskValidationError,
    );
    const empty = path.join(dir, 'empty.sqlite');
    fs.writeFileSync(empty, '');
    const a = sqlite(empty);
    const { tracker } = await a.push({ classification: 'native:echo', input: 'ok' }, true);
    await expect(withDeadline(tracker.wait(), DEADLINE_MS, 'echo')).resolves.toBe('ok');

    const absolute = path.join(dir, 'relative.sqlite');
    const relative = path.relative(process.cwd(), absolute);
    expect(path.isAbsolute(relative)).toBe(false);
    const b = sqlite(relative);
    expect(b.options.adapter).toEqual({ kind: 'sqlite', path: absolute });
    expect(fs.existsSync(absolute)).toBe(true);
    const pushed = await b.push({ classification: 'native:echo', input: 'rel' }, true);
    await expect(withDeadline(pushed.tracker.wait(), DEADLINE_MS, 'echo')).resolves.toBe('rel');
  });
});

describe('SQLite store: two services in one process on the same file', () => {
  test('each runs its own tasks while the other reads them; nothing is lost or corrupted', async () => {
    const file = freshDb();
    const a = sqlite(file, { concurrency: 2 });
    const b = sqlite(file, { concurrency: 2 });
    const gate = deferred();
    const ranOnA = [];
    const ranOnB = [];
    a.register('two:a', async (input) => {
      ranOnA.push(input);
      await gate.promise;
      return { a: input };
    });
    b.register('two:b', (input) => {
      ranOnB.push(input);
      return { b: input };
    });

    const fromA = await a.pushMany(
      Array.from({ length: 6 }, (_, n) => ({ classification: 'two:a', input: n })),
    );
    await waitFor(() => ranOnA.length === 2, { timeoutMs: DEADLINE_MS, what: 'A runs two tasks' });
    // B reads A's tasks as they are now.
    const seenByB = await Promise.all(fromA.map(async (t) => (await b.read(t.id)).status));
    expect(seenByB).toEqual(['running', 'running', 'pending', 'pending', 'pending', 'pending']);
    expect((await b.list({ classification: 'two:a' })).map((t) => t.id)).toEqual(
      fromA.map((t) => t.id),
    );

    // Meanwhile B pushes and runs its own; A reads them.
    const fromB = await b.pushMany(
      Array.from({ length: 6 }, (_, n) => ({ classification: 'two:b', input: n })),
    );
    const bTrackers = await Promise.all(fromB.map(async (t) => (await b.track(t.id)).tracker));
    const bResults = await allSettled(bTrackers);
    expect(bResults.map((r) => r.value)).toEqual(fromB.map((_, n) => ({ b: n })));
    expect((await Promise.all(fromB.map((t) => a.read(t.id)))).map((t) => t.output)).toEqual(
      fromB.map((_, n) => ({ b: n })),
    );

    gate.resolve();
    const aTrackers = await Promise.all(fromA.map(async (t) => (await a.track(t.id)).tracker));
    const aResults = await allSettled(aTrackers);
    expect(aResults.map((r) => r.value)).toEqual(fromA.map((_, n) => ({ a: n })));

    // Each ran only its own classification, each task once.
    expect([...ranOnA].sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect([...ranOnB].sort()).toEqual([0, 1, 2, 3, 4, 5]);
    // Both see the same records and histories.
    const ids = [...fromA, ...fromB].map((t) => t.id);
    for (const id of ids) {
      expect(await b.read(id)).toEqual(await a.read(id));
      expect(await b.events(id)).toEqual(await a.events(id));
    }
    await Promise.all([a.shutdown(), b.shutdown()]);

    // A third service on the file finds everything intact.
    const c = sqlite(file);
    const all = await c.list();
    expect(all.map((t) => t.id).sort()).toEqual([...ids].sort());
    expect(all.every((t) => t.status === 'succeeded')).toBe(true);
    for (const id of ids) {
      expect(await statusHistory(c, id)).toEqual(['pending', 'running', 'succeeded']);
    }
  });
});
