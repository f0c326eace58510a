// The durability promise of the SQLite store: a child process working on a database file is
// killed with SIGKILL at random moments and restarted; every task whose push resolved ends
// `succeeded`, and only the runs in flight at a kill are made again.
//
// The child is fixtures/crash/worker.js (one life of a worker); it logs every run of its
// handler and every accepted push to files, which the parent compares with the database.
// DECAF_CRASH_SUMMARY=1 prints the numbers of the run (tasks, kills, re-runs) on stderr.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { lib, FIXTURES, deferred, runNode, jsonLines, withDeadline } = require('./helpers');

const { TaskService } = lib;

const WORKER = path.join(FIXTURES, 'crash', 'worker.js');

const TOTAL = 4000;
const BATCH = 100;
// Spreads the first life's pushes over a few hundred ms: the first kill may cut them short.
const PAUSE_MS = 10;
const EXTRA_PER_RESTART = 50;
const KILLS = 4;
const CONCURRENCY = 4;
const LEASE_MS = 1500;
// Each kill may make a task's lease expire (one failed attempt): never enough to fail it.
const MAX_ATTEMPTS = KILLS + 3;
// Bounds, not timings: turn a hang into a clear failure.
const READY_BOUND_MS = 15000;
const KILL_BOUND_MS = 10000;
const FINISH_BOUND_MS = 60000;

let dir;
const children = new Set();

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'decaf-crash-'));
});

afterEach(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  await Promise.all(
    [...children].map((child) =>
      child.exitCode !== null || child.signalCode !== null
        ? undefined
        : new Promise((resolve) => child.once('close', resolve)),
    ),
  );
  children.clear();
  fs.rmSync(dir, { recursive: true, force: true });
});

function files() {
  return {
    db: path.join(dir, 'tasks.sqlite'),
    runsLog: path.join(dir, 'runs.log'),
    acceptedLog: path.join(dir, 'accepted.log'),
  };
}

function workerConfig(mode, extra = {}) {
  return JSON.stringify({
    ...files(),
    mode,
    total: TOTAL,
    batch: BATCH,
    pauseMs: PAUSE_MS,
    extra: EXTRA_PER_RESTART,
    leaseMs: LEASE_MS,
    concurrency: CONCURRENCY,
    maxAttempts: MAX_ATTEMPTS,
    ...extra,
  });
}

/** Starts a worker life; `ready` resolves once it printed `{"ready":true}`. */
function startWorker(mode) {
  const child = spawn(process.execPath, [WORKER, workerConfig(mode)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  const ready = deferred();
  const closed = deferred();
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
    if (stdout.includes('"ready":true')) ready.resolve();
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  child.on('error', (err) => {
    ready.reject(err);
    closed.reject(err);
  });
  child.on('close', (code, signal) => {
    ready.reject(new Error(`worker exited before it was ready (${code ?? signal}): ${stderr}`));
    closed.resolve({ code, signal, stdout, stderr });
  });
  return { child, ready: ready.promise, closed: closed.promise };
}

/** One worker life ended by SIGKILL `afterMs` after it was ready. */
async function killedLife(mode, afterMs) {
  const life = startWorker(mode);
  await withDeadline(life.ready, READY_BOUND_MS, `worker (${mode}) ready`);
  await new Promise((resolve) => setTimeout(resolve, afterMs));
  // Still alive: it was working, not crashed on its own.
  if (life.child.exitCode !== null) {
    const { code, stderr } = await life.closed;
    throw new Error(`worker (${mode}) exited with ${code} before the kill: ${stderr}`);
  }
  life.child.kill('SIGKILL');
  const result = await withDeadline(life.closed, KILL_BOUND_MS, `worker (${mode}) killed`);
  expect({ mode, signal: result.signal, stderr: result.stderr }).toEqual({
    mode,
    signal: 'SIGKILL',
    stderr: '',
  });
}

/** Complete lines of a log (a line cut by a kill, without its newline, is dropped). */
function readLines(file) {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n');
  lines.pop(); // after the last newline: empty, or a cut line
  return lines.filter((line) => line.length > 0);
}

/** A service on the test's database with no handler: reads only. */
function openReader() {
  return new TaskService({ adapter: { kind: 'sqlite', path: files().db } });
}

describe('crash recovery on the SQLite store (child processes killed with SIGKILL)', () => {
  test(`up to ${TOTAL} + ${(KILLS - 1) * EXTRA_PER_RESTART} tasks, ${KILLS} SIGKILLs, concurrency ${CONCURRENCY}: no accepted task is lost, only in-flight runs are made again`, async () => {
    const delays = [];
    const acceptedAtKill = [];
    for (let kill = 0; kill < KILLS; kill++) {
      const afterMs = 200 + Math.floor(Math.random() * 600);
      delays.push(afterMs);
      await killedLife(kill === 0 ? 'push' : 'resume', afterMs);
      acceptedAtKill.push(readLines(files().acceptedLog).length);
    }

    const final = await runNode(WORKER, {
      args: [workerConfig('finish')],
      timeoutMs: FINISH_BOUND_MS,
    });
    expect({ timedOut: final.timedOut, code: final.code, stderr: final.stderr }).toEqual({
      timedOut: false,
      code: 0,
      stderr: '',
    });
    expect(jsonLines(final.stdout).at(-1)).toEqual({ done: true });

    const accepted = [...new Set(readLines(files().acceptedLog))];
    const runs = new Map();
    for (const id of readLines(files().runsLog)) runs.set(id, (runs.get(id) ?? 0) + 1);

    const reader = openReader();
    try {
      const stored = await reader.list();
      const byId = new Map(stored.map((t) => [t.id, t]));
      // Every life pushes (the restarted ones a few more): something was accepted.
      expect(accepted.length).toBeGreaterThan(0);

      // None lost: every accepted task is stored, succeeded, with its output.
      const lost = accepted.filter((id) => !byId.has(id));
      const notSucceeded = accepted
        .filter((id) => byId.has(id) && byId.get(id).status !== 'succeeded')
        .map((id) => ({ id, status: byId.get(id).status, error: byId.get(id).error }));
      expect({ lost, notSucceeded }).toEqual({ lost: [], notSucceeded: [] });
      for (const id of accepted) expect(byId.get(id).output).toEqual(byId.get(id).input);
      // Tasks stored by a push the kill cut short ran too: nothing is left active.
      expect(stored.filter((t) => t.status !== 'succeeded').map((t) => t.id)).toEqual([]);

      // Every accepted task ran; every run was of a stored task.
      const neverRan = accepted.filter((id) => !runs.has(id));
      const stray = [...runs.keys()].filter((id) => !byId.has(id));
      expect({ neverRan, stray }).toEqual({ neverRan: [], stray: [] });

      // Only runs in flight at a kill were made again: at most CONCURRENCY tasks per kill,
      // each re-run preceded by an expired lease (a failed attempt, E_LEASE_EXPIRED).
      const rerun = [...runs].filter(([, n]) => n > 1).map(([id]) => id);
      const recovered = stored.filter((t) => t.attempt > 0);
      if (process.env.DECAF_CRASH_SUMMARY) {
        process.stderr.write(
          `crash summary: ${JSON.stringify({
            stored: stored.length,
            accepted: accepted.length,
            kills: KILLS,
            killDelaysMs: delays,
            acceptedAtKill,
            runs: [...runs.values()].reduce((a, b) => a + b, 0),
            tasksRunTwiceOrMore: rerun.length,
            tasksWithExpiredLease: recovered.length,
          })}\n`,
        );
      }
      expect(rerun.length).toBeLessThanOrEqual(KILLS * CONCURRENCY);
      expect(recovered.length).toBeLessThanOrEqual(KILLS * CONCURRENCY);
      for (const id of rerun) {
        const task = byId.get(id);
        expect({ id, runsMinusOne: runs.get(id) - 1 <= task.attempt }).toEqual({
          id,
          runsMinusOne: true,
        });
        const codes = (await reader.events(id))
          .filter((e) => e.classification === 'status' && e.payload.error !== undefined)
          .map((e) => e.payload.error.code);
        expect(codes).toContain('E_LEASE_EXPIRED');
      }
      for (const task of stored) {
        expect({ id: task.id, runs: (runs.get(task.id) ?? 0) - 1 <= task.attempt }).toEqual({
          id: task.id,
          runs: true,
        });
      }

      // Events survived the kills in engine order: seq strictly increasing per task, and
      // exactly one terminal status.
      for (const task of [...recovered, ...stored.slice(0, 200), ...stored.slice(-200)]) {
        const events = await reader.events(task.id);
        const seqs = events.map((e) => e.seq);
        expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
        expect(new Set(seqs).size).toBe(seqs.length);
        const statuses = events
          .filter((e) => e.classification === 'status')
          .map((e) => e.payload.status);
        expect(statuses.filter((s) => s === 'succeeded')).toEqual(['succeeded']);
        expect(statuses.at(-1)).toBe('succeeded');
      }
    } finally {
      await reader.shutdown();
    }
  }, 120000);

  test('a restarted process that awaits start() stays alive until the unfinished tasks of its store ended', async () => {
    const tasks = await seedUnfinished(20);

    // The child registers its handler, awaits start() and does nothing else (no push, no
    // timer, no shutdown).
    const result = await runNode(WORKER, { args: [workerConfig('idle')], timeoutMs: 20000 });
    expect({ timedOut: result.timedOut, code: result.code, stderr: result.stderr }).toEqual({
      timedOut: false,
      code: 0,
      stderr: '',
    });

    const reader = openReader();
    try {
      const statuses = await Promise.all(tasks.map(async (t) => (await reader.read(t.id)).status));
      expect(statuses).toEqual(tasks.map(() => 'succeeded'));
      expect(new Set(readLines(files().runsLog))).toEqual(new Set(tasks.map((t) => t.id)));
    } finally {
      await reader.shutdown();
    }
  });

  test('a process that exits without start() fails none of the stored tasks it never ran', async () => {
    const tasks = await seedUnfinished(20);

    // Registers its handler, waits until the engine claimed stored tasks, and returns
    // without start(): nothing keeps the process alive, it exits.
    const result = await runNode(WORKER, {
      args: [workerConfig('register-only')],
      timeoutMs: 20000,
    });
    expect({ timedOut: result.timedOut, code: result.code, stderr: result.stderr }).toEqual({
      timedOut: false,
      code: 0,
      stderr: '',
    });

    const ran = new Set(readLines(files().runsLog));
    const reader = openReader();
    try {
      const stored = await Promise.all(tasks.map((t) => reader.read(t.id)));
      // A task whose handler never ran was not cut short: it must still be resumable, not
      // failed for good (maxAttempts is 1) with an attempt it never made.
      const spoiled = stored
        .filter((t) => !ran.has(t.id) && t.status !== 'pending')
        .map((t) => ({ status: t.status, attempt: t.attempt, code: t.error?.code }));
      expect(spoiled).toEqual([]);
    } finally {
      await reader.shutdown();
    }
  });
});

/**
 * Stores `n` unfinished tasks of 'crash:work' (maxAttempts 1) in the test's database, none
 * run: pushed on a service whose one slot is held, then released by its shutdown.
 */
async function seedUnfinished(n) {
  const gate = deferred();
  const started = deferred();
  const seeder = new TaskService({ adapter: { kind: 'sqlite', path: files().db }, concurrency: 1 });
  seeder.register('crash:work', async () => {
    started.resolve();
    await gate.promise;
    return 'seeder';
  });
  try {
    const tasks = await seeder.pushMany(
      Array.from({ length: n }, (_, i) => ({ classification: 'crash:work', input: { i } })),
    );
    await withDeadline(started.promise, 5000, 'the seeder started a run');
    await seeder.shutdown({ timeoutMs: 0 });
    const stored = await Promise.all(tasks.map(async (t) => (await seeder.read(t.id)).status));
    expect(stored).toEqual(tasks.map(() => 'pending'));
    return tasks;
  } finally {
    gate.resolve();
    await seeder.shutdown();
  }
}
