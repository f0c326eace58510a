import type {
  BackoffStrategy,
  EngineLogLevel,
  JitterStrategy,
  LogLevel,
  TaskEventClassification,
  TaskEventType,
  TaskStatus,
  TaskType,
} from './constants';

/** A JSON value: what task inputs, outputs, progress data and log metadata must be. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

/** The store that keeps tasks and events. */
export type AdapterOptions =
  /** Fast, process local, lost on exit (the default). */
  | { kind: 'memory' }
  /**
   * An embedded SQLite database file (created if missing, WAL mode): tasks and events
   * survive a crash or restart of the process; a restarted service resumes them.
   */
  | { kind: 'sqlite'; path: string }
  /**
   * A PostgreSQL schema shared by every service that names it, on any machine: one queue,
   * several processes. `schema` defaults to `'decaf_tasks'`; it is created and migrated by
   * the service. `pollMs` (default 2000) bounds how long an idle service goes without
   * looking at the queue should a LISTEN/NOTIFY wake-up be lost.
   */
  | { kind: 'postgres'; url: string; schema?: string; pollMs?: number };

/** `resourceLimits` of each worker thread (see Node's `worker_threads.ResourceLimits`). */
export interface ResourceLimits {
  maxOldGenerationSizeMb?: number;
  maxYoungGenerationSizeMb?: number;
  codeRangeSizeMb?: number;
  stackSizeMb?: number;
}

/** `options.workerPool`: run the handlers of `modules` in Node worker threads. */
export interface WorkerPoolOptions {
  /** Worker threads; `0` (default) runs every handler inline. */
  size?: number;
  /**
   * `'node'` (default): worker threads. `'browser'`, or a runtime without `worker_threads`:
   * the modules' handlers run inline on the service's thread (a warning says so).
   */
  mode?: 'node' | 'browser';
  /**
   * Handler modules (paths resolved from `process.cwd()`, or package names), CommonJS or
   * ESM. Each exports (default export or `module.exports`) an object mapping classification
   * → handler (a function or `{ run, catch? }`); `defineHandlers()` types it.
   */
  modules?: string[];
  /** Runs at once per worker. Default `1`. */
  concurrencyPerWorker?: number;
  /** Limits of each worker; a worker that hits one is replaced and its runs retried. */
  resourceLimits?: ResourceLimits;
  /** Replacement of workers that died: at most `maxPerMinute` (default `10`) per minute. */
  restart?: { maxPerMinute?: number };
  /** Cloned into every worker: `require('decaf-tasks').workerData` inside handler modules. */
  workerData?: unknown;
}

/** Options of `new TaskService(options)`. Every field is optional. */
export interface TaskServiceOptions {
  /** How many tasks may run at the same time on this service. Default `16`. */
  concurrency?: number;
  /** Lease of a claimed task in ms (renewed while its handler runs). Default `30000`, min `100`. */
  leaseMs?: number;
  /** How long `shutdown()` waits for running tasks by default, in ms. Default `10000`. */
  gracefulShutdownMs?: number;
  /** How many log lines a task record keeps in `logTail`. Default `100`. */
  logTailMax?: number;
  /** The store. Default `{ kind: 'memory' }`. */
  adapter?: AdapterOptions;
  /** Identifies this process as lease owner. Default `` `${os.hostname()}:${process.pid}` ``. */
  workerId?: string;
  /** Shut down gracefully on SIGINT / SIGTERM, then re-raise the signal. Default `false`. */
  autoShutdown?: boolean;
  /** Threads of the engine for native (Rust) handlers. Default `os.availableParallelism()`. */
  nativeThreads?: number;
  /** Engine diagnostics on stderr. Default: env `DECAF_TASKS_LOG`, else `'off'`. */
  logger?: EngineLogLevel;
  /** Largest serialized task input accepted, in bytes. Default 16 MiB. */
  maxPayloadBytes?: number;
  /** Run the handlers of some modules in a pool of worker threads. Default: none. */
  workerPool?: WorkerPoolOptions;
  /**
   * After a run's `timeoutMs`, how long its handler may take to return before its worker is
   * terminated and replaced (inline and native runs are only reported). Default `1000`.
   */
  timeoutGraceMs?: number;
  /**
   * How long ended tasks (and their events) are kept: `completedMs` for succeeded tasks,
   * `failedMs` for failed and canceled ones. Omitted: forever (the default). A purged task
   * reads as not found. Long-running services on the in-memory store want this.
   */
  retention?: { completedMs?: number; failedMs?: number };
}

/** What a handler module exports: classification → handler. */
export type HandlerMap = Record<string, Handler | HandlerObject>;

/** How retries are spaced. */
export interface Backoff {
  /** `'exponential'` (default) or `'fixed'`. */
  strategy: BackoffStrategy;
  /** First delay in ms. Default `1000`. */
  baseMs: number;
  /** Largest delay in ms (at least `baseMs`). Default `60000`. */
  maxMs: number;
  /** `'full'` (default): a random delay in `[0, delay)`; `'none'`: the delay itself. */
  jitter: JitterStrategy;
}

/** A step of a composite task: run by the handler of its classification, in order. */
export interface TaskStepSpec<I = unknown> {
  /** Handler of this step (inline, in the worker pool or native: wherever it is registered). */
  classification: string;
  /** Optional name of the step (dependencies can name it). */
  name?: string;
  /** JSON input of the step. */
  input?: I;
  /** Lock key held while this step runs (besides the task's own `lock`). */
  lock?: string;
  /**
   * What this step waits for: `'<taskId>'` or `'<taskId>:<step index | name | classification>'`,
   * each of which must succeed first. One that fails or is canceled fails the task.
   */
  dependsOn?: string[];
  /** A failure of this step is recorded and the composite goes on (default false). */
  canFail?: boolean;
  /** Runs of this step before it fails, retried in place (default: the task's `maxAttempts`). */
  maxAttempts?: number;
  /** Delay between the in-place retries of this step (default: the task's `backoff`). */
  backoff?: Partial<Backoff>;
}

/** What a composite records for each step that ran: `task.stepResults[i]`. */
export interface StepResult<O = unknown> {
  /** `'succeeded'` or `'failed'`. */
  status: TaskStatus;
  /** The step's output (succeeded). */
  output?: O;
  /** The step's last error (failed). */
  error?: TaskError;
  /** Runs the step took. */
  attempt: number;
}

/** Where `ctx.scheduleSteps(...)` put the steps. */
export interface StepInsertion {
  /** Index of the first added step. */
  insertionIndex: number;
  /** Steps in the composite now. */
  totalSteps: number;
}

/** What `ctx.scheduleSteps(...steps)` returns: say where the steps go. */
export interface StepScheduler {
  /**
   * Right after the running step (after the steps this run already added there: several
   * calls keep their order). Rejects outside a composite step.
   */
  afterCurrent(): Promise<StepInsertion>;
  /** After the last step. Rejects outside a composite step. */
  atEnd(): Promise<StepInsertion>;
}

/** What `push()` accepts. Only `classification` is required. */
export interface TaskSpec<I = unknown> {
  /** The handler that runs the task (a registered classification, or a native one). */
  classification: string;
  /** JSON input handed to the handler. */
  input?: I;
  /** A human readable name. */
  name?: string;
  /** Runs allowed before the task fails for good. Default `1` (no retry). */
  maxAttempts?: number;
  /** Retry spacing; missing fields take the defaults. */
  backoff?: Partial<Backoff>;
  /** Higher runs first. Default `0`. */
  priority?: number;
  /** Do not run before this date (a `Date` or ms since the epoch). */
  scheduledTo?: Date | number;
  /** Tasks sharing a lock key never run at the same time. */
  lock?: string;
  /**
   * Longest a run may take, in ms: past it the run counts as a failed attempt (`E_TIMEOUT`,
   * retried under `maxAttempts`) and its `ctx.signal` aborts. A worker that does not return
   * the run within `timeoutGraceMs` is terminated and replaced.
   */
  timeoutMs?: number;
  /** Ids of tasks that must succeed before this one runs. */
  dependencies?: string[];
  /** `'atomic'` (default) or `'composite'`. */
  atomicity?: TaskType;
  /** Steps of a composite task. */
  steps?: TaskStepSpec[];
}

/** The error recorded on a task that failed (or was canceled / retried / rescheduled). */
export interface TaskError {
  message: string;
  stack?: string;
  code?: string | number;
  details?: unknown;
}

/** One log line. */
export interface LogEntry {
  ts: Date;
  level: LogLevel;
  msg: string;
  meta?: unknown;
  step?: number;
}

/** A stored task. */
export interface Task<I = unknown, O = unknown> {
  id: string;
  classification: string;
  name?: string;
  atomicity: TaskType;
  status: TaskStatus;
  input: I;
  output?: O;
  error?: TaskError;
  /** Runs already made (failed, retried or recovered). */
  attempt: number;
  maxAttempts: number;
  backoff: Backoff;
  priority: number;
  /** When a `waiting_retry` task runs again. */
  nextRunAt?: Date;
  /** When a `scheduled` task becomes due. */
  scheduledTo?: Date;
  dependencies: string[];
  lock?: string;
  timeoutMs?: number;
  leaseOwner?: string;
  leaseExpiry?: Date;
  leaseToken: LeaseToken;
  steps: TaskStepSpec[];
  /** Index of the step a composite runs now or next. */
  currentStep?: number;
  /** Results of the steps of a composite that ran (index = step index). */
  stepResults: StepResult[];
  /** The last `logTailMax` log lines. */
  logTail: LogEntry[];
  createdAt: Date;
  updatedAt: Date;
}

/** The fencing token of a claim (opaque: compare, never compute). */
export type LeaseToken = number;

/** Payload of a `status` event. */
export interface StatusPayload<O = unknown> {
  status: TaskStatus;
  output?: O;
  error?: TaskError;
  nextRunAt?: Date;
  scheduledTo?: Date;
  /**
   * Only on live events of this process, not enumerable: the very error the handler threw
   * (for `failed` / `waiting_retry`). Trackers reject with it.
   */
  readonly originalError?: Error;
}

/**
 * Payload of an `update` event (changes of the step plan of a composite task): steps added
 * by `ctx.scheduleSteps`, or withdrawn because the step that added them runs again after a
 * run that did not succeed (the new run plans again).
 */
export interface UpdatePayload {
  status: 'update';
  /** The step that added (or whose earlier run had added) the steps. */
  currentStep: number;
  /** Steps in the composite now. */
  totalSteps: number;
  output:
    | {
        /** How many steps were added. */
        added: number;
        /** Index of the first of them. */
        insertionIndex: number;
      }
    | {
        /** How many steps, added by an earlier run of the current step, were withdrawn. */
        removed: number;
      };
}

/** The payload type of each event classification. */
export interface TaskEventPayloads {
  status: StatusPayload;
  log: LogEntry[];
  progress: unknown;
  update: UpdatePayload;
}

/** An event of one classification. */
export interface TaskEventOf<C extends TaskEventClassification> {
  /** `"<taskId>:<classification>:<uuid>"`. */
  id: string;
  uuid: string;
  /** Engine order: strictly increasing. */
  seq: number;
  taskId: string;
  ts: Date;
  classification: C;
  payload: TaskEventPayloads[C];
}

/** A task event; narrow it with `classification`. */
export type TaskEvent<C extends TaskEventClassification = TaskEventClassification> =
  C extends TaskEventClassification ? TaskEventOf<C> : never;

/** Filter of `service.list()`. */
export interface ListFilter {
  status?: TaskStatus;
  classification?: string;
  /** At most this many tasks. */
  limit?: number;
  /** Skip this many tasks first. */
  offset?: number;
}

/** Options of `service.shutdown()`. */
export interface ShutdownOptions {
  /** How long to wait for running tasks, in ms. Default `options.gracefulShutdownMs`. */
  timeoutMs?: number;
}

/** The logger of a handler context: each call is one log event of the task. */
export interface TaskLogger {
  trace(msg: string, meta?: unknown): void;
  debug(msg: string, meta?: unknown): void;
  info(msg: string, meta?: unknown): void;
  warn(msg: string, meta?: unknown): void;
  error(msg: string, meta?: unknown): void;
}

/** What a handler receives besides its input. */
export interface HandlerContext {
  /** Id of the task being run. */
  readonly taskId: string;
  /** 1-based number of this run. */
  readonly attempt: number;
  /** Classification of the task. */
  readonly classification: string;
  /** Name of the task, if it has one. */
  readonly name: string | undefined;
  /** Index of the step this run is, in a composite task (undefined for atomic tasks). */
  readonly step: number | undefined;
  /** Steps in the composite when this run started (undefined for atomic tasks). */
  readonly totalSteps: number | undefined;
  /** 1-based run of this step (its in-place retries); undefined for atomic tasks. */
  readonly stepAttempt: number | undefined;
  /** Aborted on cancel, lease loss, shutdown, or when the handler called cancel/retry/reschedule. */
  readonly signal: AbortSignal;
  /** Log lines of the task (kept in its `logTail`, emitted as `log` events). */
  readonly logger: TaskLogger;
  /**
   * Outputs of the earlier (succeeded) steps of a composite task, by classification and by
   * `'<taskId>:step:<i>'`. Empty for atomic tasks.
   */
  readonly resultCache: Record<string, unknown>;
  /**
   * Adds steps to the running composite: `.afterCurrent()` or `.atEnd()`. Each call emits an
   * `update` event; the steps are persisted with the task and survive retries.
   */
  scheduleSteps(...steps: TaskStepSpec[]): StepScheduler;
  /** One log line at `level` (a {@link LogLevel}, or a pipe's own level name). Ignored once the run ended. */
  pipe(level: LogLevel | (string & {}), msg: string, meta?: unknown): Promise<void>;
  /** A `progress` event carrying `data` (JSON). Ignored once the run ended. */
  progress(data: unknown): Promise<void>;
  /** Renews the lease now (leases are renewed automatically while the handler runs). */
  heartbeat(): Promise<void>;
  /** Ends the run: the task is canceled (final). The handler's later result is ignored. */
  cancel(reason?: string | Error): Promise<void>;
  /** Ends the run: the task waits for a retry (under its backoff). */
  retry(reason?: string | Error): Promise<void>;
  /** Ends the run: the task is scheduled again for `when`. */
  reschedule(when: Date | number, reason?: string | Error): Promise<void>;
}

/** A handler as a function: returns (or resolves to) the JSON output of the task. */
export type Handler<I = unknown, O = unknown> = (input: I, ctx: HandlerContext) => O | Promise<O>;

/** A handler as an object: `run` does the work; `catch` is called when `run` throws. */
export interface HandlerObject<I = unknown, O = unknown> {
  run(input: I, ctx: HandlerContext): O | Promise<O>;
  /** Called with the error before the failure is recorded (retry or final). */
  catch?(input: I, error: unknown, ctx: HandlerContext): void | Promise<void>;
}

/** A log pipe of `TaskTracker.logs`: receives `[level, "<iso ts> - <msg>", meta]` tuples. */
export type LogPipe = (logs: [LogLevel, string, unknown][]) => void | Promise<void>;

/** Receives the events of a tracked task. */
export type EventPipe = (event: TaskEvent, ctx: BusContext) => void | Promise<void>;

/** Logger handed to observers with each event (mirrors decaf's `ctx.logger`). */
export interface BusLogger {
  error(msg: string, ...args: unknown[]): void;
  warn(msg: string, ...args: unknown[]): void;
  info(msg: string, ...args: unknown[]): void;
  debug(msg: string, ...args: unknown[]): void;
}

/** The context the bus passes to `observer.refresh(event, ctx)`. */
export interface BusContext {
  readonly logger: BusLogger;
}

/** An observer of the event bus (decaf's `Observer`). */
export interface TaskEventObserver {
  refresh(event: TaskEvent, ctx: BusContext): void | Promise<void>;
}

/**
 * Decides whether an observer receives an event: called as
 * `filter('task_event', classification, eventId, ctx)`.
 */
export type ObserverFilter = (
  table: string,
  event: string,
  id: string,
  ...args: unknown[]
) => boolean;

/** Anything with decaf's `TaskEventBus` observe API. */
export interface TaskEventSource {
  observe(observer: TaskEventObserver, filter?: ObserverFilter): () => void;
  unObserve(observer: TaskEventObserver): void;
}

/** The statuses a tracker's rejection may carry as `nextAction`. */
export type TaskNextAction = Extract<
  TaskStatus,
  'canceled' | 'waiting_retry' | 'scheduled' | 'failed'
>;

/** The pipe types of `TaskTracker.pipe`. */
export type PipeType = TaskEventType;
