/**
 * The entry of every pool worker thread: attach to the service's engine, load the handler
 * modules, register one executor with them, and then only run what the engine hands over.
 * Logs, progress, heartbeats and results go straight into the engine with synchronous
 * native calls; the engine emits the events on the owning service.
 */

import { parentPort, workerData } from 'node:worker_threads';
import { loadHandlerModules } from './handler-module';
import { InlineExecutor } from './inline-executor';
import { loadNative } from './native';
import type { WorkerReport, WorkerSetup } from './worker-messages';

function post(message: WorkerReport): void {
  parentPort?.postMessage(message);
}

async function main(setup: WorkerSetup): Promise<void> {
  let handlers: Awaited<ReturnType<typeof loadHandlerModules>>;
  try {
    handlers = await loadHandlerModules(setup.modules);
  } catch (err) {
    const e = err as Error & { module?: string };
    post({ type: 'load-error', message: e.message, module: e.module });
    return;
  }
  const native = loadNative().NativeEngine.attach(setup.engineId);
  const executor = new InlineExecutor(
    native,
    handlers,
    setup.leaseMs,
    (err) => process.emitWarning(`decaf-tasks worker: ${(err as Error)?.message ?? err}`),
    setup.concurrency,
  );
  // The executor's wake-ups are weak: this listener keeps the worker alive until it is
  // terminated by the pool.
  parentPort?.on('message', () => {});
  post({ type: 'ready', executorId: executor.id, classifications: executor.classifications });
}

if (parentPort !== null) {
  main(workerData as WorkerSetup).catch((err: unknown) => {
    post({ type: 'load-error', message: (err as Error)?.message ?? String(err) });
  });
}
