import { EventEmitter } from 'node:events';
import { installAutoShutdown } from './auto-shutdown';
import {
  attachOriginalError,
  newTask,
  type PushRow,
  toEvent,
  toEvents,
  toTask,
  toTasks,
} from './convert';
import { fromNative, InternalError, ServiceShutdownError, TaskValidationError } from './errors';
import { TaskEventBus } from './event-bus';
import { loadHandlerModules } from './handler-module';
import { InlineExecutor } from './inline-executor';
import { KeepAlive } from './keep-alive';
import {
  loadNative,
  type NativeConfig,
  type NativeEngine,
  type RawEvent,
  type RawTask,
} from './native';
import { TaskTracker } from './task-tracker';
import type {
  BusContext,
  BusLogger,
  Handler,
  HandlerObject,
  ListFilter,
  ShutdownOptions,
  Task,
  TaskEvent,
  TaskServiceOptions,
  TaskSpec,
} from './types';
import {
  type NormalizedHandler,
  prepareListFilter,
  prepareSpec,
  prepareSpecs,
  type ResolvedOptions,
  typeError,
  validateOptions,
  validateReason,
  validateRegistration,
  validateShutdownOptions,
  validateTaskId,
  validateWhen,
} from './validate';
import { WorkerPool } from './worker-pool';

/** Most events delivered in one turn of the event loop before yielding. */
const MAX_EVENTS_PER_TURN = 4096;

function hasWorkerThreads(): boolean {
  try {
    return typeof require('node:worker_threads').Worker === 'function';
  } catch {
    return false;
  }
}

/** The events of a {@link TaskService} and their listeners. */
export interface TaskServiceListener {
  /** Every task event, in engine order (emitted before the event of its classification). */
  event: (event: TaskEvent) => void;
  /** A status transition: `{ status, output?, error?, nextRunAt?, scheduledTo? }`. */
  status: (event: TaskEvent<'status'>) => void;
  /** Log lines written by a handler (`ctx.logger`, `ctx.pipe`) or by the engine. */
  log: (event: TaskEvent<'log'>) => void;
  /** Whatever a handler passed to `ctx.progress()`. */
  progress: (event: TaskEvent<'progress'>) => void;
  /** A change of the step plan of a composite task. */
  update: (event: TaskEvent<'update'>) => void;
  /**
   * A listener or observer threw, or a background call into the engine failed. Only emitted
   * when listened to; otherwise reported with `process.emitWarning`.
   */
  error: (error: Error) => void;
  /**
   * Something the service did on its own that you may want to know: a worker replaced, a
   * fallback to inline execution. Only emitted when listened to; otherwise reported with
   * `process.emitWarning`.
   */
  warning: (message: string) => void;
}

/** The name of a {@link TaskService} event. */
export type TaskServiceEvent = keyof TaskServiceListener;

/** A pushed task with a tracker following it. */
export interface TrackedTask<I = unknown, O = unknown> {
  task: Task<I, O>;
  tracker: TaskTracker<O>;
}

/** What `service.schedule(spec)` returns: say when with `.for(date)`. */
export interface ScheduleBuilder<R> {
  /** Pushes the task with `scheduledTo: when`. */
  for(when: Date | number): Promise<R>;
}

type AnyListener = (...args: unknown[]) => unknown;

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

/**
 * The decaf task service: register handlers, push tasks, follow them.
 *
 * One native engine per service is the single source of truth for leases, retries,
 * scheduling and events. Handlers registered here run inline on this thread; every event is
 * delivered in engine order to the `'event'` listeners, then to the listeners of its
 * classification, then to the observers of {@link TaskService.bus}.
 *
 * Public async methods never throw: they return rejected promises. The constructor and
 * `register()` throw synchronously.
 *
 * @example
 * ```ts
 * const service = new TaskService({ concurrency: 8 });
 * service.register('resize', async (input: { url: string }, ctx) => {
 *   ctx.logger.info('resizing', { url: input.url });
 *   return { ok: true };
 * });
 * const { tracker } = await service.push({ classification: 'resize', input: { url } }, true);
 * const output = await tracker.wait();
 * await service.shutdown();
 * ```
 */
export class TaskService extends EventEmitter {
  /** decaf-style observer API: `observe(observer, filter?)`, `unObserve(observer)`. */
  readonly bus: TaskEventBus;
  readonly #options: ResolvedOptions;
  readonly #native: NativeEngine;
  readonly #keepAlive = new KeepAlive();
  /** Held from `start()` to `shutdown()` on a shared store: the service serves its queue. */
  readonly #serving = new KeepAlive();
  #executor: InlineExecutor | undefined;
  #pool: WorkerPool | undefined;
  /** Settles once the worker pool is up (undefined without a pool). */
  #ready: Promise<void> | undefined;
  #poolUp = false;
  #closed = false;
  #shutdown: Promise<void> | undefined;
  #uninstallSignals: (() => void) | undefined;
  #draining = false;
  #resumeScheduled = false;
  #drainAgain = false;

  /**
   * @throws TypeError / RangeError for a wrong option (the message names it),
   *   {@link TaskValidationError} for an unavailable adapter, {@link InternalError} when the
   *   native addon cannot be loaded
   */
  constructor(options?: TaskServiceOptions) {
    super();
    const resolved = validateOptions(options);
    this.#options = resolved;
    const { NativeEngine: Engine } = loadNative();
    const config: NativeConfig = {
      concurrency: resolved.concurrency,
      leaseMs: resolved.leaseMs,
      logTailMax: resolved.logTailMax,
      workerId: resolved.workerId,
      nativeThreads: resolved.nativeThreads,
      adapter: resolved.adapter,
      logger: resolved.logger,
      timeoutGraceMs: resolved.timeoutGraceMs,
      retention: resolved.retention,
    };
    const logger: BusLogger = {
      error: (msg, ...args) =>
        this.#reportError(args.length > 0 ? asError(args[0]) : new Error(msg), msg),
      warn: (msg) => process.emitWarning(`decaf-tasks: ${msg}`, 'DecafTasksWarning'),
      info: () => {},
      debug: () => {},
    };
    const busContext: BusContext = { logger };
    this.bus = new TaskEventBus(busContext);
    try {
      this.#native = new Engine(JSON.stringify(config), () => this.#drain());
    } catch (err) {
      throw fromNative(err);
    }
    if (resolved.autoShutdown) this.#uninstallSignals = installAutoShutdown(() => this.shutdown());
    this.#ready = this.#startPool();
    // Surfaced by start() and push(); never an unhandled rejection.
    this.#ready?.catch(() => {});
  }

  /** The options in force (defaults applied). */
  get options(): Readonly<ResolvedOptions> {
    return this.#options;
  }

  /** Whether `shutdown()` was called: the service takes no new work. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Runs the tasks of `classification` with `handler` on this thread: a function
   * `(input, ctx) => output` or an object `{ run(input, ctx), catch?(input, error, ctx) }`.
   *
   * @returns this service, for chaining
   * @throws TypeError for a wrong argument, {@link TaskValidationError} for a reserved
   *   (`native:`) or already registered classification, {@link ServiceShutdownError} after
   *   `shutdown()`
   */
  register<I = unknown, O = unknown>(
    classification: string,
    handler: Handler<I, O> | HandlerObject<I, O>,
  ): this {
    if (this.#closed) throw new ServiceShutdownError();
    const registration = validateRegistration(classification, handler);
    const name = registration.classification;
    this.#registerInline(name, registration.handler);
    return this;
  }

  #registerInline(name: string, handler: NormalizedHandler): void {
    const executor = this.#executor;
    if (executor === undefined) {
      this.#executor = new InlineExecutor(
        this.#native,
        new Map([[name, handler]]),
        this.#options.leaseMs,
        (err: unknown) => this.#reportError(asError(err), 'inline executor'),
      );
      return;
    }
    if (executor.has(name)) {
      throw new TaskValidationError(`a handler is already registered for classification '${name}'`);
    }
    executor.add(name, handler);
  }

  /** Worker threads registered with the engine now (0 without a pool). */
  get workerCount(): number {
    return this.#pool?.readyCount ?? 0;
  }

  /**
   * Starts the worker pool (or, in `'browser'` mode, loads its modules inline). Resolves once
   * every worker registered its handlers; rejects with {@link HandlerModuleError} when a
   * module cannot be loaded.
   */
  #startPool(): Promise<void> | undefined {
    const pool = this.#options.workerPool;
    if (pool === undefined) return undefined;
    if (pool.mode === 'browser' || !hasWorkerThreads()) {
      const why = hasWorkerThreads()
        ? `workerPool.mode is '${pool.mode}'`
        : 'worker_threads is unavailable in this runtime';
      // After the constructor returns, so that a 'warning' listener can see it.
      queueMicrotask(() =>
        this.#warn(`${why}: the handlers of ${pool.modules.join(', ')} run inline on this thread`),
      );
      return loadHandlerModules(pool.modules).then((handlers) => {
        for (const [name, handler] of handlers) this.#registerInline(name, handler);
      });
    }
    this.#pool = new WorkerPool(this.#native, pool, this.#options.leaseMs, (message) =>
      this.#warn(message),
    );
    return this.#pool.start();
  }

  /** Waits for the pool (if any) before work that needs its classifications. */
  async #whenReady(): Promise<void> {
    if (this.#ready === undefined) return;
    if (this.#poolUp) return;
    // Workers are unref'd: while someone waits for them to start, keep the process alive.
    const hold = setInterval(() => {}, 2 ** 30);
    try {
      await this.#ready;
      this.#poolUp = true;
    } finally {
      clearInterval(hold);
    }
  }

  /**
   * Validates and stores a task. With `track === true`, resolves with `{ task, tracker }`.
   * Rejects with TypeError / RangeError / {@link TaskInputError} for a bad spec (nothing is
   * stored), {@link UnknownClassificationError}, or {@link ServiceShutdownError}.
   */
  push<I = unknown, O = unknown>(spec: TaskSpec<I>, track?: false): Promise<Task<I, O>>;
  push<I = unknown, O = unknown>(spec: TaskSpec<I>, track: true): Promise<TrackedTask<I, O>>;
  push<I = unknown, O = unknown>(
    spec: TaskSpec<I>,
    track?: boolean,
  ): Promise<Task<I, O> | TrackedTask<I, O>>;
  async push<I = unknown, O = unknown>(
    spec: TaskSpec<I>,
    track = false,
  ): Promise<Task<I, O> | TrackedTask<I, O>> {
    if (typeof track !== 'boolean')
      throw typeError(`track must be a boolean (got ${typeof track})`);
    this.#assertOpen();
    const prepared = prepareSpec(spec, 'spec', 'input', this.#options.maxPayloadBytes);
    await this.#whenReady();
    const row = this.#pushJson(`[${prepared.json}]`)[0] as PushRow;
    const task = newTask<I, O>(prepared.fields, prepared.input, row);
    if (!track) return task;
    return { task, tracker: new TaskTracker<O>(this, task) };
  }

  /**
   * Validates every spec, then stores them all in one engine call: if any spec is bad the
   * promise rejects (naming `specs[i]`) and nothing is stored.
   */
  async pushMany<I = unknown, O = unknown>(specs: readonly TaskSpec<I>[]): Promise<Task<I, O>[]> {
    this.#assertOpen();
    const { json, prepared } = prepareSpecs(specs, this.#options.maxPayloadBytes);
    if (prepared.length === 0) return [];
    await this.#whenReady();
    const rows = this.#pushJson(json) as PushRow[];
    return prepared.map((p, i) => newTask<I, O>(p.fields, p.input, rows[i] as PushRow));
  }

  /**
   * Pushes `spec` to run at a given date: `service.schedule(spec).for(date)`.
   * With `track === true`, `.for()` resolves with `{ task, tracker }`.
   */
  schedule<I = unknown, O = unknown>(spec: TaskSpec<I>, track?: false): ScheduleBuilder<Task<I, O>>;
  schedule<I = unknown, O = unknown>(
    spec: TaskSpec<I>,
    track: true,
  ): ScheduleBuilder<TrackedTask<I, O>>;
  schedule<I = unknown, O = unknown>(
    spec: TaskSpec<I>,
    track = false,
  ): ScheduleBuilder<Task<I, O> | TrackedTask<I, O>> {
    return {
      for: async (when: Date | number) => {
        this.#assertOpen();
        const scheduledTo = validateWhen(when, 'when');
        if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
          throw typeError('spec must be a plain object');
        }
        return this.push<I, O>({ ...spec, scheduledTo }, track);
      },
    };
  }

  /** The task with that id; rejects with {@link TaskNotFoundError}. */
  async read<I = unknown, O = unknown>(id: string): Promise<Task<I, O>> {
    const taskId = validateTaskId(id);
    return toTask<I, O>(JSON.parse(this.#call(() => this.#native.read(taskId))) as RawTask);
  }

  /** Tasks matching `filter` (`status`, `classification`, `limit`, `offset`), by creation. */
  async list<I = unknown, O = unknown>(filter?: ListFilter): Promise<Task<I, O>[]> {
    const json = prepareListFilter(filter);
    return toTasks<I, O>(JSON.parse(this.#call(() => this.#native.list(json))) as RawTask[]);
  }

  /**
   * Cancels a task that has not ended (final: a late result of its handler is dropped, its
   * running handler sees `ctx.signal` abort). On an ended task, changes nothing.
   * @returns the task after the call
   */
  async cancel<I = unknown, O = unknown>(id: string, reason?: string): Promise<Task<I, O>> {
    const taskId = validateTaskId(id);
    const why = validateReason(reason);
    const json = this.#call(() =>
      why === undefined ? this.#native.cancel(taskId) : this.#native.cancel(taskId, why),
    );
    return toTask<I, O>(JSON.parse(json) as RawTask);
  }

  /** The persisted events of a task, oldest first; rejects with {@link TaskNotFoundError}. */
  async events(id: string): Promise<TaskEvent[]> {
    const taskId = validateTaskId(id);
    return toEvents(JSON.parse(this.#call(() => this.#native.events(taskId))) as RawEvent[]);
  }

  /**
   * Reads a task and follows it. The tracker starts from the task's persisted events, so no
   * transition between the read and the subscription is lost or applied twice.
   */
  async track<I = unknown, O = unknown>(id: string): Promise<TrackedTask<I, O>> {
    const taskId = validateTaskId(id);
    // Synchronous from here on: no event can be delivered between these calls.
    const task = toTask<I, O>(JSON.parse(this.#call(() => this.#native.read(taskId))) as RawTask);
    const history = toEvents(
      JSON.parse(this.#call(() => this.#native.events(taskId))) as RawEvent[],
    );
    return { task, tracker: new TaskTracker<O>(this, task, { history }) };
  }

  /**
   * Resolves once the service runs (the worker pool, if any, is up). The engine claims from
   * construction on; on a durable store, this also keeps the process alive until the
   * unfinished tasks found in the store are done (or `shutdown()`). On a shared store
   * (`postgres`), other processes push work at any time: the process is kept alive until
   * `shutdown()`, as a queue worker's is (a pure producer need not call `start()`).
   */
  async start(): Promise<void> {
    this.#assertOpen();
    await this.#whenReady();
    if (this.#closed) return;
    if (this.#options.adapter.kind === 'postgres') {
      this.#serving.acquire();
      return;
    }
    // A durable store may hold work of an earlier process: the engine claims it as soon as
    // its handlers are registered; keep the process alive until it is done (the drain that
    // delivers the last terminal event releases this).
    if (this.#call(() => this.#native.activeCount()) > 0) this.#keepAlive.acquire();
  }

  /**
   * Stops taking work, waits up to `timeoutMs` (default `options.gracefulShutdownMs`) for the
   * running tasks, aborts and releases the others (they go back to `pending`), delivers the
   * last events and lets the process exit. Idempotent: every call returns the same promise.
   */
  shutdown(options?: ShutdownOptions): Promise<void> {
    if (this.#shutdown !== undefined) return this.#shutdown;
    let timeoutMs: number;
    try {
      timeoutMs = validateShutdownOptions(options, this.#options.gracefulShutdownMs);
    } catch (err) {
      return Promise.reject(err);
    }
    this.#closed = true;
    this.#uninstallSignals?.();
    this.#uninstallSignals = undefined;
    this.#shutdown = this.#stop(timeoutMs);
    return this.#shutdown;
  }

  override on<E extends TaskServiceEvent>(event: E, listener: TaskServiceListener[E]): this {
    return super.on(event, listener as AnyListener);
  }

  override once<E extends TaskServiceEvent>(event: E, listener: TaskServiceListener[E]): this {
    return super.once(event, listener as AnyListener);
  }

  override off<E extends TaskServiceEvent>(event: E, listener: TaskServiceListener[E]): this {
    return super.off(event, listener as AnyListener);
  }

  override addListener<E extends TaskServiceEvent>(
    event: E,
    listener: TaskServiceListener[E],
  ): this {
    return super.addListener(event, listener as AnyListener);
  }

  override removeListener<E extends TaskServiceEvent>(
    event: E,
    listener: TaskServiceListener[E],
  ): this {
    return super.removeListener(event, listener as AnyListener);
  }

  async #stop(timeoutMs: number): Promise<void> {
    let failure: Error | undefined;
    try {
      await this.#native.shutdown(timeoutMs);
    } catch (err) {
      failure = fromNative(err);
    }
    this.#executor?.close();
    await this.#pool?.close();
    this.#drain(true);
    this.#keepAlive.dispose();
    this.#serving.dispose();
    if (failure !== undefined) throw failure;
  }

  #assertOpen(): void {
    if (this.#closed) throw new ServiceShutdownError();
  }

  /** One native call; its error mapped to the typed class. */
  #call<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw fromNative(err);
    }
  }

  #pushJson(specsJson: string): unknown[] {
    const json = this.#call(() => this.#native.push(specsJson));
    // Every push emits a status event: the drain that delivers the last one releases this.
    this.#keepAlive.acquire();
    return JSON.parse(json) as unknown[];
  }

  /**
   * Delivers waiting events, in engine order. A backlog is delivered in turns of at most
   * {@link MAX_EVENTS_PER_TURN} events, yielding to the event loop in between, so a burst
   * never blocks this thread for long; `all` (at shutdown) delivers everything now.
   */
  #drain(all = false): void {
    if (this.#draining) {
      // Called from a listener: let the outer loop deliver the newer events, in order.
      this.#drainAgain = true;
      return;
    }
    this.#draining = true;
    let delivered = 0;
    try {
      do {
        if (!all && delivered >= MAX_EVENTS_PER_TURN) {
          this.#resumeDrain();
          return;
        }
        this.#drainAgain = false;
        let json: string;
        try {
          json = this.#native.drainEvents();
        } catch (err) {
          const error = fromNative(err);
          // Once shut down, an engine that refuses to drain has nothing left to say.
          if (!(this.#closed && error instanceof ServiceShutdownError)) {
            this.#reportError(error, 'drainEvents');
          }
          break;
        }
        if (json === '[]') continue;
        // The engine hands events over in bounded batches: ask again until none wait.
        this.#drainAgain = true;
        let batch: RawEvent[];
        try {
          batch = JSON.parse(json) as RawEvent[];
        } catch (err) {
          this.#reportError(
            new InternalError('drainEvents returned invalid JSON', { cause: err }),
            'drainEvents',
          );
          break;
        }
        this.#deliver(batch);
        delivered += batch.length;
      } while (this.#drainAgain);
      this.#terminateStuck();
    } finally {
      this.#draining = false;
    }
    if (this.#keepAlive.held) {
      let active = 0;
      try {
        active = this.#native.activeCount();
      } catch {
        active = 0;
      }
      if (active === 0) this.#keepAlive.release();
    }
  }

  /** Continues a long drain on a later turn of the event loop (once). */
  #resumeDrain(): void {
    if (this.#resumeScheduled) return;
    this.#resumeScheduled = true;
    setImmediate(() => {
      this.#resumeScheduled = false;
      this.#drain();
    });
  }

  /** Executors whose timed-out run never returned: terminate their worker (it is replaced). */
  #terminateStuck(): void {
    let stuck: number[];
    try {
      stuck = this.#native.drainStuck();
    } catch {
      return;
    }
    for (const executorId of stuck) {
      if (this.#pool?.terminateExecutor(executorId) === true) {
        this.#warn(
          `a timed-out run did not return within timeoutGraceMs: its worker was terminated`,
        );
      } else {
        this.#warn(
          `a timed-out run did not return within timeoutGraceMs on executor ${executorId} (inline or native: it cannot be terminated)`,
        );
      }
    }
  }

  #deliver(batch: RawEvent[]): void {
    const executor = this.#executor;
    for (const raw of batch) {
      let event: TaskEvent;
      try {
        event = toEvent(raw);
      } catch (err) {
        this.#reportError(
          new InternalError('the engine sent a malformed event', { cause: err }),
          'drain',
        );
        continue;
      }
      if (executor !== undefined && event.classification === 'status') {
        const original = executor.takeOriginalError(event.taskId, event.payload.status);
        if (original !== undefined) attachOriginalError(event.payload, original);
      }
      if (this.listenerCount('event') > 0) this.#emitSafe('event', event);
      if (this.listenerCount(event.classification) > 0) this.#emitSafe(event.classification, event);
      this.bus.dispatch(event);
    }
  }

  /** Calls each listener of `name` in turn: one that throws or rejects never stops the others. */
  #emitSafe(name: string, event: TaskEvent | string): void {
    const listeners = this.rawListeners(name) as AnyListener[];
    for (const listener of listeners) {
      try {
        const result = listener.call(this, event);
        if (isThenable(result)) {
          result.then(undefined, (err: unknown) =>
            this.#reportError(asError(err), `an async '${name}' listener rejected`),
          );
        }
      } catch (err) {
        this.#reportError(asError(err), `a '${name}' listener threw`);
      }
    }
  }

  /** Emits `'warning'` (a message) when someone listens, else a process warning. */
  #warn(message: string): void {
    if (this.listenerCount('warning') > 0) {
      this.#emitSafe('warning', message);
      return;
    }
    process.emitWarning(`decaf-tasks: ${message}`, 'DecafTasksWarning');
  }

  /** Emits `'error'` when someone listens, else a process warning. Never throws. */
  #reportError(error: Error, context: string): void {
    if (this.listenerCount('error') > 0) {
      try {
        this.emit('error', error);
        return;
      } catch (err) {
        error = asError(err);
      }
    }
    process.emitWarning(`decaf-tasks: ${context}: ${error.message}`, {
      type: 'DecafTasksWarning',
      detail: error.stack,
    });
  }
}
