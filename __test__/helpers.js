// Shared helpers of the decaf-tasks test suites (plain CommonJS, loaded by every suite).

const { spawn } = require('node:child_process');
const path = require('node:path');
const lib = require('..');

/** A promise with its resolve / reject exposed. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * Returns a factory of TaskServices that are all shut down after each test of the calling
 * suite (so that Jest exits by itself). Call it at the top level of a suite file.
 */
function useServices({ shutdownTimeoutMs = 500 } = {}) {
  const services = [];
  afterEach(async () => {
    const list = services.splice(0);
    await Promise.all(
      list.map((s) => s.shutdown({ timeoutMs: shutdownTimeoutMs }).catch(() => undefined)),
    );
  });
  return (options) => {
    const service = new lib.TaskService(options);
    // Tests wait on many tasks at once, each with its own listener.
    service.setMaxListeners(0);
    trackDelivery(service);
    services.push(service);
    return service;
  };
}

/** Per service: ids of the events already delivered to its listeners. */
const delivered = new WeakMap();

/** Records which events the service delivered (first 'event' listener of the service). */
function trackDelivery(service) {
  const ids = new Set();
  delivered.set(service, ids);
  service.on('event', (evt) => ids.add(evt.id));
}

/**
 * Polls `fn` (sync or async) until it returns a truthy value; rejects after `timeoutMs`.
 * Only for conditions no event or promise can signal.
 */
async function waitFor(fn, { timeoutMs = 10000, intervalMs = 5, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * Resolves with the first event of `taskId` matching `predicate` once it has been delivered
 * to the service's listeners (so everything emitted before it was delivered too). Looks at
 * the persisted history and at live events, both set up synchronously: nothing can slip in
 * between. An event persisted but not yet delivered is waited for.
 */
function waitForEvent(service, taskId, predicate, what = 'event') {
  const seen = delivered.get(service);
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (evt) => {
      done = true;
      service.off('event', onEvent);
      resolve(evt);
    };
    let expectedId;
    const onEvent = (evt) => {
      if (done || evt.taskId !== taskId) return;
      if (expectedId !== undefined ? evt.id === expectedId : predicate(evt)) finish(evt);
    };
    service.on('event', onEvent);
    // The native read happens synchronously inside this call.
    service.events(taskId).then(
      (history) => {
        if (done) return;
        const hit = history.find(predicate);
        if (hit === undefined) return;
        if (seen === undefined || seen.has(hit.id)) finish(hit);
        else expectedId = hit.id;
      },
      (err) => {
        service.off('event', onEvent);
        reject(new Error(`${what}: ${err.message}`));
      },
    );
  });
}

/** Resolves with the status event of `taskId` reaching `status` (the `nth` time, 1-based). */
function waitForStatus(service, taskId, status, nth = 1) {
  let seen = 0;
  const seenIds = new Set();
  return waitForEvent(
    service,
    taskId,
    (evt) => {
      if (evt.classification !== 'status' || evt.payload.status !== status) return false;
      if (seenIds.has(evt.id)) return false;
      seenIds.add(evt.id);
      seen += 1;
      return seen === nth;
    },
    `status ${status}`,
  );
}

/** Resolves with the first terminal status event (succeeded / failed / canceled) of a task. */
function waitForEnd(service, taskId) {
  return waitForEvent(
    service,
    taskId,
    (evt) =>
      evt.classification === 'status' &&
      ['succeeded', 'failed', 'canceled'].includes(evt.payload.status),
    'terminal status',
  );
}

/** Records every event the service emits, in order. */
function recordEvents(service) {
  const all = [];
  service.on('event', (evt) => all.push(evt));
  return {
    all,
    of: (taskId) => all.filter((e) => e.taskId === taskId),
    statuses: (taskId) =>
      all
        .filter((e) => e.taskId === taskId && e.classification === 'status')
        .map((e) => e.payload.status),
  };
}

/** The statuses of the persisted status events of a task, oldest first. */
async function statusHistory(service, taskId) {
  const events = await service.events(taskId);
  return events.filter((e) => e.classification === 'status').map((e) => e.payload.status);
}

/**
 * Lets time pass. Only for pacing a scenario (e.g. "the service was idle for a while", "the
 * task has been running for several lease lengths"), never to wait for a result: a correct
 * engine passes whatever the duration.
 */
function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Settles like `promise`, or rejects with `what` after `ms` (so that a hang fails fast with
 * a clear message instead of the Jest timeout). A bound, not a timing assertion.
 */
function withDeadline(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no result after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Blocks the event loop (this thread) for `ms` milliseconds. */
function blockFor(ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // busy wait on purpose
  }
}

/** A fixed, jitter-free backoff (fast retries in tests). */
function fixedBackoff(baseMs = 5) {
  return { strategy: 'fixed', baseMs, maxMs: baseMs, jitter: 'none' };
}

const FIXTURES = path.join(__dirname, 'fixtures');

/**
 * Runs `node <script> ...args` in a child process and collects its output. Kills it after
 * `timeoutMs` (then `timedOut` is true): a bound for "exits by itself", not a timing check.
 */
function runNode(script, { args = [], cwd, env, timeoutMs = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd,
      env: env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

/** Parses the JSON lines a fixture printed (other lines are ignored). */
function jsonLines(stdout) {
  return stdout
    .split('\n')
    .filter((line) => line.startsWith('{') || line.startsWith('['))
    .map((line) => JSON.parse(line));
}

module.exports = {
  lib,
  deferred,
  useServices,
  waitFor,
  waitForEvent,
  waitForStatus,
  waitForEnd,
  recordEvents,
  statusHistory,
  blockFor,
  delay,
  withDeadline,
  fixedBackoff,
  FIXTURES,
  runNode,
  jsonLines,
};
