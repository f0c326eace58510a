const { spawn } = require('node:child_process');
const path = require('node:path');
const { FIXTURES, runNode, jsonLines } = require('./helpers');

const SCRIPT = path.join(FIXTURES, 'exit-scenarios.js');
// A bound for "exits by itself": the scenarios need well under a second of work.
const EXIT_BOUND_MS = 20000;

async function scenario(name) {
  const result = await runNode(SCRIPT, { args: [name], timeoutMs: EXIT_BOUND_MS });
  if (result.timedOut || result.code !== 0) {
    throw new Error(
      `scenario ${name}: ${result.timedOut ? 'did not exit by itself' : `exit code ${result.code}`}\n` +
        `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
    );
  }
  return result;
}

describe('process exit (child processes, no shutdown() call)', () => {
  test('an idle service does not keep the process alive', async () => {
    const { stdout } = await scenario('idle');
    expect(jsonLines(stdout)).toEqual([{ scenario: 'idle', ready: true }]);
  });

  test('the process exits once its awaited tasks are done', async () => {
    const { stdout, stderr } = await scenario('after-task');
    expect(jsonLines(stdout)).toEqual([
      { scenario: 'after-task', output: 3 },
      { scenario: 'after-task', output: 'native' },
    ]);
    expect(stderr).not.toMatch(/DecafTasksWarning/);
  });

  test('the process stays alive until fire-and-forget tasks (retries, scheduled) ended, then exits', async () => {
    const { stdout, stderr } = await scenario('fire-and-forget');
    const lines = jsonLines(stdout);
    expect(lines[0]).toEqual({ pushed: 6 });
    const done = lines.slice(1);
    expect(done).toHaveLength(6);
    expect(done.every((l) => l.status === 'succeeded')).toBe(true);
    expect(done.map((l) => l.output)).toEqual(
      expect.arrayContaining([
        'slow-1',
        'slow-2',
        'slow-3',
        { sleptMs: 100 },
        'retried flaky',
        'scheduled',
      ]),
    );
    expect(stderr).not.toMatch(/DecafTasksWarning/);
  });

  test('a worker pool never shut down lets the process exit once its task is done', async () => {
    const { stdout } = await scenario('pool-task');
    expect(jsonLines(stdout)).toEqual([{ scenario: 'pool-task', output: { doubled: 8 } }]);
  });

  test('two services in one process, none shut down, let it exit', async () => {
    const { stdout } = await scenario('two-services');
    expect(jsonLines(stdout)).toEqual([
      { scenario: 'two-services', outputs: ['from a', 'from b'] },
    ]);
  });

  test('a shut down service and an idle one let the process exit', async () => {
    const { stdout } = await scenario('after-shutdown');
    expect(jsonLines(stdout)).toEqual([{ scenario: 'after-shutdown', output: 'second' }]);
  });

  test('a worker thread whose service is never shut down ends by itself', async () => {
    const { stdout } = await scenario('worker-idle');
    expect(jsonLines(stdout)).toEqual([{ scenario: 'worker-idle', output: 42, exitCode: 0 }]);
  });

  test('autoShutdown: SIGTERM shuts the service down gracefully, then the process ends by the signal', async () => {
    const child = spawn(process.execPath, [SCRIPT, 'auto-shutdown'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let signalled = false;
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      if (!signalled && stdout.includes('"started":true')) {
        signalled = true;
        child.kill('SIGTERM');
      }
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_BOUND_MS);
    const [code, signal] = await new Promise((resolve) =>
      child.on('close', (c, s) => resolve([c, s])),
    );
    clearTimeout(timer);
    expect({ code, signal, stderr }).toEqual({ code: null, signal: 'SIGTERM', stderr: '' });
    const lines = jsonLines(stdout);
    // The handler ran to its end (not aborted), and its success was delivered before exit.
    expect(lines.filter((l) => l.status !== undefined)).toEqual([
      { status: 'pending' },
      { status: 'running' },
      { status: 'succeeded', output: 'graceful' },
    ]);
    const at = (obj) => lines.findIndex((l) => JSON.stringify(l) === JSON.stringify(obj));
    expect(at({ started: true })).toBeGreaterThanOrEqual(0);
    expect(at({ finished: true, aborted: false })).toBeGreaterThan(at({ started: true }));
    expect(at({ status: 'succeeded', output: 'graceful' })).toBeGreaterThan(
      at({ finished: true, aborted: false }),
    );
    expect(lines).toHaveLength(5);
  });
});
