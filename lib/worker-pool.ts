/**
 * The worker pool: `size` Node worker threads, each running `worker-entry.js`, which
 * registers one executor with the service's engine. The engine stays the only one that
 * claims and emits; the pool only keeps the workers there: it replaces a worker that dies
 * (its runs were already counted as failed attempts by the engine), at most
 * `restart.maxPerMinute` times a minute, and never loops on a module that throws on load.
 */

import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { fromNative, HandlerModuleError } from './errors';
import type { NativeEngine } from './native';
import type { ResolvedWorkerPoolOptions } from './validate';
import type { WorkerReport, WorkerSetup } from './worker-messages';

const ENTRY = path.join(__dirname, 'worker-entry.js');
const MINUTE_MS = 60_000;

interface Slot {
  worker: Worker;
  executorId: number | undefined;
  exitReason: string | undefined;
}

export class WorkerPool {
  readonly #native: NativeEngine;
  readonly #options: ResolvedWorkerPoolOptions;
  readonly #setup: WorkerSetup;
  readonly #warn: (message: string) => void;
  readonly #slots = new Set<Slot>();
  readonly #restarts: number[] = [];
  #classifications: string[] = [];
  #started = false;
  #closing = false;
  #respawnTimer: NodeJS.Timeout | undefined;

  constructor(
    native: NativeEngine,
    options: ResolvedWorkerPoolOptions,
    leaseMs: number,
    warn: (message: string) => void,
  ) {
    this.#native = native;
    this.#options = options;
    this.#warn = warn;
    this.#setup = {
      engineId: native.id,
      modules: options.modules,
      concurrency: options.concurrencyPerWorker,
      leaseMs,
      userData: options.workerData,
    };
  }

  /** Workers registered with the engine now. */
  get readyCount(): number {
    let n = 0;
    for (const slot of this.#slots) if (slot.executorId !== undefined) n += 1;
    return n;
  }

  /** Classifications the workers serve (known once started). */
  get classifications(): readonly string[] {
    return this.#classifications;
  }

  /**
   * Starts `size` workers; resolves once every one registered, rejects with a
   * {@link HandlerModuleError} (naming the module) if one cannot load its modules.
   */
  async start(): Promise<void> {
    const ready = Array.from({ length: this.#options.size }, () => this.#spawn());
    try {
      const served = await Promise.all(ready);
      this.#classifications = served[0] ?? [];
      this.#started = true;
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /**
   * Terminates the worker of executor `executorId` (stuck on a timed-out run); it is
   * replaced like any dead worker. `false` if no worker has that executor.
   */
  terminateExecutor(executorId: number): boolean {
    for (const slot of this.#slots) {
      if (slot.executorId === executorId) {
        slot.exitReason = 'terminated: a timed-out run did not return';
        void slot.worker.terminate();
        return true;
      }
    }
    return false;
  }

  /** Terminates every worker (their leases were released by the engine's shutdown). */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#respawnTimer !== undefined) clearTimeout(this.#respawnTimer);
    await Promise.all([...this.#slots].map((slot) => slot.worker.terminate()));
  }

  #spawn(): Promise<string[]> {
    return new Promise<string[]>((resolve, reject) => {
      const worker = new Worker(ENTRY, {
        workerData: this.#setup,
        resourceLimits: this.#options.resourceLimits,
      });
      const slot: Slot = { worker, executorId: undefined, exitReason: undefined };
      this.#slots.add(slot);
      worker.on('message', (msg: WorkerReport) => {
        if (msg.type === 'ready') {
          slot.executorId = msg.executorId;
          resolve(msg.classifications);
        } else if (msg.type === 'load-error') {
          const error = new HandlerModuleError(
            msg.module ?? this.#setup.modules.join(', '),
            msg.message,
          );
          slot.exitReason = error.message;
          reject(error);
          void worker.terminate();
        }
      });
      worker.on('error', (err) => {
        slot.exitReason = `uncaught ${err.name}: ${err.message}`;
      });
      worker.on('exit', (code) => {
        this.#slots.delete(slot);
        const reason = `worker thread exited (code ${code})${slot.exitReason ? `: ${slot.exitReason}` : ''}`;
        if (slot.executorId !== undefined) {
          try {
            this.#native.removeExecutor(slot.executorId, reason);
          } catch (err) {
            this.#warn(fromNative(err).message);
          }
        } else {
          reject(new HandlerModuleError(this.#setup.modules.join(', '), reason));
        }
        if (this.#started && !this.#closing) this.#replace(reason);
      });
      // The pool never keeps the process alive: the service's keep-alive does while tasks
      // are active. After the listeners: attaching a 'message' listener refs the port again.
      worker.unref();
    });
  }

  /** Starts a replacement, within `restart.maxPerMinute`. */
  #replace(reason: string): void {
    const now = Date.now();
    while (this.#restarts.length > 0 && (this.#restarts[0] as number) <= now - MINUTE_MS) {
      this.#restarts.shift();
    }
    if (this.#restarts.length >= this.#options.restart.maxPerMinute) {
      const wait = (this.#restarts[0] as number) + MINUTE_MS - now;
      this.#warn(`${reason}; restart limit reached, next replacement in ${wait} ms`);
      if (this.#respawnTimer === undefined) {
        this.#respawnTimer = setTimeout(() => {
          this.#respawnTimer = undefined;
          if (!this.#closing) this.#replace(reason);
        }, wait);
        this.#respawnTimer.unref();
      }
      return;
    }
    this.#restarts.push(now);
    this.#warn(`${reason}; starting a replacement`);
    this.#spawn().catch((err: unknown) => this.#warn((err as Error).message));
  }
}
