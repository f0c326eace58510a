const { execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const { runNode, jsonLines } = require('./helpers');

const exec = promisify(execFile);
const ROOT = path.resolve(__dirname, '..');
const ADDON = 'decaf-tasks.linux-x64-gnu.node';

/** The script the installed package is exercised with (main thread + one worker thread). */
const APP_SCRIPT = `'use strict';
const { Worker, isMainThread, parentPort, threadId } = require('node:worker_threads');
const { TaskService } = require('decaf-tasks');

async function exercise(where) {
  const service = new TaskService({ concurrency: 2 });
  service.register('app:square', async (input, ctx) => {
    ctx.logger.info('squaring', { where });
    return { where, square: input * input, handlerThread: threadId };
  });
  const inline = await service.push({ classification: 'app:square', input: 7 }, true);
  const native = await service.push({ classification: 'native:echo', input: { where } }, true);
  const failing = await service.push({ classification: 'native:fail', input: { message: 'expected' } }, true);
  const result = {
    where,
    threadId,
    inline: await inline.tracker.wait(),
    native: await native.tracker.wait(),
    failed: await failing.tracker.wait().then(() => null, (err) => err.name + ': ' + err.message),
    logs: (await service.read(inline.task.id)).logTail.map((l) => l.msg),
  };
  await service.shutdown();
  return result;
}

if (isMainThread) {
  (async () => {
    console.log(JSON.stringify({ resolved: require.resolve('decaf-tasks'), path: process.env.PATH }));
    console.log(JSON.stringify(await exercise('main')));
    const worker = new Worker(__filename);
    const fromWorker = await new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error('worker exited with ' + code)));
    });
    console.log(JSON.stringify(fromWorker));
  })().catch((err) => {
    console.error(err && err.stack);
    process.exit(1);
  });
} else {
  exercise('worker').then((result) => parentPort.postMessage(result));
}
`;

function hasRustTool(dir) {
  return ['cargo', 'rustc'].some((tool) => fs.existsSync(path.join(dir, tool)));
}

/** The environment without any Rust toolchain: PATH stripped, CARGO_HOME / RUSTUP_HOME unset. */
function envWithoutRust() {
  const env = { ...process.env };
  delete env.CARGO_HOME;
  delete env.RUSTUP_HOME;
  delete env.RUSTUP_TOOLCHAIN;
  env.PATH = (process.env.PATH || '')
    .split(path.delimiter)
    .filter((dir) => dir !== '' && !hasRustTool(dir) && !/cargo|rustup/i.test(dir))
    .join(path.delimiter);
  return env;
}

describe('packaging', () => {
  let tmp;

  afterAll(() => {
    if (tmp !== undefined) fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('npm pack ships the addon, binding and dist; the installed package runs on the main thread and in a Worker without Rust', async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'decaf-tasks-pack-'));
    const packDir = path.join(tmp, 'pack');
    const appDir = path.join(tmp, 'app');
    fs.mkdirSync(packDir);
    fs.mkdirSync(appDir);

    // 1. Pack (no build scripts).
    const { stdout: packJson } = await exec(
      'npm',
      ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir],
      { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 },
    );
    const [pack] = JSON.parse(packJson);
    const files = pack.files.map((f) => f.path);
    for (const required of [
      ADDON,
      'binding.js',
      'binding.d.ts',
      'index.js',
      'index.d.ts',
      'package.json',
      'dist/index.js',
      'dist/index.d.ts',
      'dist/task-service.js',
      'dist/task-tracker.js',
    ]) {
      expect(files).toContain(required);
    }
    for (const file of files) {
      expect(file).not.toMatch(/^(src|crates|lib|__test__|target|scripts)\//);
      expect(file).not.toMatch(/^Cargo\.(toml|lock)$/);
    }
    const tarball = path.join(packDir, pack.filename);
    expect(fs.existsSync(tarball)).toBe(true);

    // 2. Install the tarball into a fresh project, offline.
    fs.writeFileSync(
      path.join(appDir, 'package.json'),
      JSON.stringify({ name: 'decaf-tasks-consumer', version: '1.0.0', private: true }),
    );
    await exec('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], {
      cwd: appDir,
      maxBuffer: 16 * 1024 * 1024,
    });
    const installed = path.join(appDir, 'node_modules', 'decaf-tasks');
    expect(fs.existsSync(path.join(installed, ADDON))).toBe(true);
    expect(fs.existsSync(path.join(installed, 'dist', 'index.js'))).toBe(true);

    // 3. Run it with no Rust toolchain reachable.
    const script = path.join(appDir, 'app.js');
    fs.writeFileSync(script, APP_SCRIPT);
    const env = envWithoutRust();
    const result = await runNode(script, { cwd: appDir, env, timeoutMs: 60000 });
    if (result.code !== 0) {
      throw new Error(
        `app exited with ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
      );
    }
    expect(result.timedOut).toBe(false);
    const [where, main, worker] = jsonLines(result.stdout);
    expect(where.resolved.startsWith(installed)).toBe(true);
    for (const dir of where.path.split(path.delimiter)) expect(hasRustTool(dir)).toBe(false);
    expect(main).toEqual({
      where: 'main',
      threadId: 0,
      inline: { where: 'main', square: 49, handlerThread: 0 },
      native: { where: 'main' },
      failed: 'TaskFailError: expected',
      logs: ['squaring'],
    });
    expect(worker.where).toBe('worker');
    expect(worker.threadId).toBeGreaterThan(0);
    expect(worker).toEqual({
      where: 'worker',
      threadId: worker.threadId,
      // Inline handlers run on the thread that registered them: the worker.
      inline: { where: 'worker', square: 49, handlerThread: worker.threadId },
      native: { where: 'worker' },
      failed: 'TaskFailError: expected',
      logs: ['squaring'],
    });
  }, 120000);
});
