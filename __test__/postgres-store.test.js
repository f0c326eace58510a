// The PostgreSQL store through the public API, across processes: worker processes
// (fixtures/pg/worker.js) and a producer service in this process share one schema.
// Every test uses its own schema, dropped afterwards (CI shares the server).

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { lib } = require('./helpers');

const { TaskService, TaskValidationError, TaskNotFoundError } = lib;

const URL = process.env.DECAF_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const WORKER = path.join(__dirname, 'fixtures', 'pg', 'worker.js');
const TERMINAL = new Set(['succeeded', 'failed', 'canceled']);

jest.setTimeout(120_000);

const schemas = [];
const children = new Set();
const services = [];
let tmp;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'decaf-pg-'));
});

afterEach(async () => {
  for (const child of children) child.kill('SIGKILL');
  await Promise.all([...children].map((c) => c.exited));
  children.clear();
  await Promise.all(services.splice(0).map((s) => s.shutdown({ timeoutMs: 2000 })));
});

afterAll(() => {
  for (const schema of schemas) psql(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  fs.rmSync(tmp, { recursive: true, force: true });
});

function psql(sql) {
  execFileSync('psql', [URL, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { stdio: 'pipe' });
}

function newSchema() {
  const schema = `decaf_jest_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  schemas.push(schema);
  return schema;
}

function producer(schema, options = {}) {
  const service = new TaskService({
    adapter: { kind: 'postgres', url: URL, schema, pollMs: 30_000 },
    workerId: `producer-${process.pid}`,
    ...options,
  });
  services.push(service);
  return service;
}

/** Starts a worker process; resolves once its service is up. */
async function worker(schema, name, config = {}) {
  const runsLog = path.join(tmp, `${schema}-${name}.log`);
  const child = spawn(
    process.execPath,
    [
      WORKER,
      JSON.stringify({
        url: URL,
        schema,
        workerId: name,
        classes: ['pg:work'],
        runsLog,
        leaseMs: 10_000,
        concurrency: 4,
        delayMs: 1,
        ...config,
      }),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  child.exited = new Promise((resolve) => child.once('exit', resolve));
  children.add(child);
  const lines = readline.createInterface({ input: child.stdout });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`worker ${name} not ready: ${stderr}`)),
      30_000,
    );
    lines.on('line', (line) => {
      if (line.includes('"ready"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`worker ${name} exited with ${code}: ${stderr}`));
    });
  });
  child.removeAllListeners('exit');
  child.exited = new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', resolve);
  });
  return { child, runsLog, name };
}

/** `[{ id, worker, what, at }]` of a runs log. */
function runs(...logs) {
  return logs.flatMap((log) =>
    fs.existsSync(log)
      ? fs
          .readFileSync(log, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((line) => {
            const [id, worker, what, at] = line.split(' ');
            return { id, worker, what, at: Number(at) };
          })
      : [],
  );
}

/** Resolves once `service` has delivered a terminal status event for every id. */
function allEnded(service, ids, timeoutMs = 60_000) {
  const waiting = new Set(ids);
  if (waiting.size === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      service.off('status', onStatus);
      reject(new Error(`${waiting.size} of ${ids.length} tasks did not end in ${timeoutMs} ms`));
    }, timeoutMs);
    const onStatus = (evt) => {
      if (TERMINAL.has(evt.payload.status) && waiting.delete(evt.taskId) && waiting.size === 0) {
        clearTimeout(timer);
        service.off('status', onStatus);
        resolve();
      }
    };
    service.on('status', onStatus);
  });
}

async function waitFor(check, what, timeoutMs = 30_000) {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('several processes on one PostgreSQL schema', () => {
  test('a pure producer and two workers: every task runs exactly once; events and trackers cross processes', async () => {
    const schema = newSchema();
    const service = producer(schema);
    const [a, b] = await Promise.all([worker(schema, 'wa'), worker(schema, 'wb')]);
    const specs = Array.from({ length: 2000 }, (_, i) => ({
      classification: 'pg:work',
      input: { i },
    }));
    const ended = new Set();
    service.on('status', (evt) => {
      if (TERMINAL.has(evt.payload.status)) ended.add(evt.taskId);
    });
    const tasks = await service.pushMany(specs);
    const { tracker } = await service.push({ classification: 'pg:work' }, true);
    const output = await tracker.wait();
    expect(['wa', 'wb']).toContain(output.workerId);
    await allEnded(
      service,
      tasks.map((t) => t.id).filter((id) => !ended.has(id)),
    );
    const starts = runs(a.runsLog, b.runsLog).filter((r) => r.what === 'start');
    const perTask = new Map();
    for (const r of starts) perTask.set(r.id, (perTask.get(r.id) ?? 0) + 1);
    expect(perTask.size).toBe(2001);
    expect([...perTask.values()].every((n) => n === 1)).toBe(true);
    expect(starts.some((r) => r.worker === 'wa')).toBe(true);
    expect(starts.some((r) => r.worker === 'wb')).toBe(true);
    const stored = await service.list({ status: 'succeeded', limit: 5000 });
    expect(stored).toHaveLength(2001);
    // The producer reads the history written by the workers.
    const events = await service.events(tasks[0].id);
    expect(events.map((e) => e.payload.status).filter(Boolean)).toEqual([
      'pending',
      'running',
      'succeeded',
    ]);
  });

  test("a killed worker's tasks are recovered by the other after leaseMs, none lost", async () => {
    const schema = newSchema();
    const service = producer(schema);
    const config = { leaseMs: 1000, concurrency: 4, delayMs: 10 };
    const [a, b] = await Promise.all([worker(schema, 'ka', config), worker(schema, 'kb', config)]);
    const tasks = await service.pushMany(
      Array.from({ length: 1000 }, () => ({ classification: 'pg:work', maxAttempts: 3 })),
    );
    const done = allEnded(
      service,
      tasks.map((t) => t.id),
    );
    await waitFor(
      () => runs(a.runsLog).filter((r) => r.what === 'start').length >= 8,
      'worker ka to run some tasks',
    );
    a.child.kill('SIGKILL');
    await a.child.exited;
    await done;
    const list = await service.list({ limit: 5000 });
    expect(list.filter((t) => t.status === 'succeeded')).toHaveLength(1000);
    const starts = runs(a.runsLog, b.runsLog).filter((r) => r.what === 'start');
    const count = new Map();
    for (const r of starts) count.set(r.id, (count.get(r.id) ?? 0) + 1);
    const twice = [...count].filter(([, n]) => n > 1).map(([id]) => id);
    // Only the runs in flight on the killed worker ran again (at most its concurrency).
    expect(twice.length).toBeGreaterThan(0);
    expect(twice.length).toBeLessThanOrEqual(4);
    for (const id of twice) {
      const codes = (await service.events(id)).map((e) => e.payload?.error?.code);
      expect(codes).toContain('E_LEASE_EXPIRED');
    }
  });

  test('tasks sharing a lock key never overlap, whichever process runs them', async () => {
    const schema = newSchema();
    const service = producer(schema);
    // Each process serves one of the two classifications: both must take the key.
    const [a, b] = await Promise.all([
      worker(schema, 'la', { delayMs: 15, classes: ['pg:la'] }),
      worker(schema, 'lb', { delayMs: 15, classes: ['pg:lb'] }),
    ]);
    const tasks = await service.pushMany(
      Array.from({ length: 24 }, (_, i) => ({
        classification: i % 2 === 0 ? 'pg:la' : 'pg:lb',
        lock: 'L',
      })),
    );
    await allEnded(
      service,
      tasks.map((t) => t.id),
    );
    const log = runs(a.runsLog, b.runsLog);
    // Each ran once (a span mixing two runs would prove nothing).
    expect(log.filter((r) => r.what === 'start')).toHaveLength(tasks.length);
    const spans = tasks.map((t) => ({
      start: log.find((r) => r.id === t.id && r.what === 'start').at,
      end: log.find((r) => r.id === t.id && r.what === 'end').at,
    }));
    spans.sort((x, y) => x.start - y.start);
    for (let i = 1; i < spans.length; i++) {
      expect(spans[i].start).toBeGreaterThanOrEqual(spans[i - 1].end);
    }
    expect(new Set(log.map((r) => r.worker)).size).toBe(2);
  });

  test('a dependency holds across processes', async () => {
    const schema = newSchema();
    const service = producer(schema);
    const [a, b] = await Promise.all([
      worker(schema, 'da', { classes: ['pg:first'] }),
      worker(schema, 'db', { classes: ['pg:second'] }),
    ]);
    const first = await service.push({ classification: 'pg:first', input: { delayMs: 300 } });
    const { task: second, tracker } = await service.push(
      { classification: 'pg:second', dependencies: [first.id] },
      true,
    );
    expect(await tracker.wait()).toEqual(expect.objectContaining({ workerId: 'db' }));
    const log = runs(a.runsLog, b.runsLog);
    const firstEnd = log.find((r) => r.id === first.id && r.what === 'end').at;
    const secondStart = log.find((r) => r.id === second.id && r.what === 'start').at;
    expect(secondStart).toBeGreaterThanOrEqual(firstEnd);
  });

  test('a cancel from the producer aborts the run in the worker process and frees its slot', async () => {
    const schema = newSchema();
    const service = producer(schema);
    const a = await worker(schema, 'ca', { concurrency: 1 });
    const { task, tracker } = await service.push(
      { classification: 'pg:work', input: { delayMs: 60_000 } },
      true,
    );
    await waitFor(() => runs(a.runsLog).some((r) => r.what === 'start'), 'the run to start');
    await service.cancel(task.id, 'changed my mind');
    await expect(tracker.wait()).rejects.toThrow(/canceled/);
    await waitFor(
      () => runs(a.runsLog).some((r) => r.what === 'abort'),
      "the run's signal to abort",
    );
    // Its only slot is free again: the next task runs at once, not after 60 s.
    const next = await service.push({ classification: 'pg:work' }, true);
    expect(await next.tracker.wait()).toEqual(expect.objectContaining({ workerId: 'ca' }));
    expect((await service.read(task.id)).status).toBe('canceled');
  });

  test('a started worker process stays up while idle and exits by itself after a graceful shutdown', async () => {
    const schema = newSchema();
    const service = producer(schema);
    const a = await worker(schema, 'ia');
    await new Promise((r) => setTimeout(r, 1000));
    expect(a.child.exitCode).toBeNull();
    const { tracker } = await service.push({ classification: 'pg:work' }, true);
    expect(await tracker.wait()).toEqual(expect.objectContaining({ workerId: 'ia' }));
    a.child.kill('SIGTERM');
    // Exit code 0: nothing but the service held the process.
    expect(await a.child.exited).toBe(0);
  });

  test('an idle worker is woken by a push from another process (LISTEN/NOTIFY), not by its 30 s poll', async () => {
    const schema = newSchema();
    const service = producer(schema);
    const a = await worker(schema, 'na');
    await new Promise((r) => setTimeout(r, 300));
    const pushedAt = Date.now();
    const { tracker } = await service.push({ classification: 'pg:work' }, true);
    await tracker.wait();
    const start = runs(a.runsLog).find((r) => r.what === 'start').at;
    // A lost notification would leave it to the 30 s safety poll.
    expect(start - pushedAt).toBeLessThan(10_000);
  });
});

describe('one service on PostgreSQL', () => {
  const STEPS = path.join(__dirname, 'fixtures', 'pool', 'steps.js');

  test('a composite mixing inline, worker-pool and native steps keeps its step results in the schema', async () => {
    const schema = newSchema();
    const service = producer(schema, { workerPool: { size: 1, modules: [STEPS] } });
    service.on('warning', () => {});
    service.register('pg:inline', (_input, ctx) => ({ cached: ctx.resultCache['native:echo'] }));
    await service.start();
    const { task, tracker } = await service.push(
      {
        classification: 'pipeline',
        atomicity: 'composite',
        steps: [
          { classification: 'native:echo', input: { n: 1 } },
          { classification: 'steps:record', input: 'pool' },
          { classification: 'pg:inline' },
        ],
      },
      true,
    );
    const output = await tracker.wait();
    expect(output.stepResults.map((r) => r.status)).toEqual([
      'succeeded',
      'succeeded',
      'succeeded',
    ]);
    expect(output.stepResults[2].output).toEqual({ cached: { n: 1 } });
    const stored = await service.read(task.id);
    expect(stored.currentStep).toBe(2);
    expect(stored.stepResults).toEqual(output.stepResults);
    const progress = (await service.events(task.id)).filter((e) => e.classification === 'progress');
    expect(progress.map((e) => e.payload.currentStep)).toEqual([0, 0, 1, 1, 2, 2]);
  });

  test('a service restarted on the schema resumes what a producer left there', async () => {
    const schema = newSchema();
    const first = producer(schema);
    const tasks = await first.pushMany(
      Array.from({ length: 20 }, (_, i) => ({ classification: 'pg:later', input: i })),
    );
    await first.shutdown();
    const second = producer(schema);
    const ran = [];
    second.register('pg:later', (input) => {
      ran.push(input);
      return input * 2;
    });
    await second.start();
    await waitFor(
      async () => (await second.list({ status: 'succeeded', limit: 100 })).length === tasks.length,
      'the stored tasks to succeed',
    );
    expect(ran.sort((x, y) => x - y)).toEqual(tasks.map((_, i) => i));
    expect((await second.read(tasks[3].id)).output).toBe(6);
  });

  test('retention purges ended tasks and their events from the schema', async () => {
    const schema = newSchema();
    const service = producer(schema, { retention: { completedMs: 50 } });
    service.register('pg:short', () => 'done');
    const { task, tracker } = await service.push({ classification: 'pg:short' }, true);
    await tracker.wait();
    await waitFor(
      () =>
        service.read(task.id).then(
          () => false,
          (err) => err instanceof TaskNotFoundError,
        ),
      'the ended task to be purged',
    );
    await expect(service.events(task.id)).rejects.toBeInstanceOf(TaskNotFoundError);
  });
});

describe('bad PostgreSQL adapter options fail at construction', () => {
  test('an unreachable server is a clear error, not a hang', () => {
    const startedAt = Date.now();
    let err;
    try {
      new TaskService({
        adapter: { kind: 'postgres', url: 'postgres://postgres@127.0.0.1:1/test' },
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TaskValidationError);
    expect(err.message).toMatch(/127\.0\.0\.1:1/);
    expect(Date.now() - startedAt).toBeLessThan(20_000);
  });

  test('a URL or schema that is not valid is refused before connecting', () => {
    expect(() => new TaskService({ adapter: { kind: 'postgres', url: 'mysql://x' } })).toThrow(
      /must be a postgres:\/\/ or postgresql:\/\/ URL/,
    );
    expect(
      () => new TaskService({ adapter: { kind: 'postgres', url: URL, schema: 'Bad-Name' } }),
    ).toThrow(/lower-case SQL identifier/);
    expect(() => new TaskService({ adapter: { kind: 'postgres', url: URL, extra: 1 } })).toThrow(
      /not a postgres adapter option/,
    );
  });
});
