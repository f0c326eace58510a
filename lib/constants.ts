/**
 * The life cycle of a task.
 *
 * `pending → running → succeeded | failed | waiting_retry`, `scheduled → pending`, and any
 * non-terminal state → `canceled`. `succeeded`, `failed` and `canceled` are terminal.
 */
export const TaskStatus = {
  /** Stored, waiting for a free slot (and for its dependencies / lock). */
  PENDING: 'pending',
  /** Waiting for its `scheduledTo` date. */
  SCHEDULED: 'scheduled',
  /** Claimed by an executor; a handler is running it. */
  RUNNING: 'running',
  /** Its last run failed and it waits for `nextRunAt` to run again. */
  WAITING_RETRY: 'waiting_retry',
  /** Terminal: the handler returned an output. */
  SUCCEEDED: 'succeeded',
  /** Terminal: the last allowed attempt failed. */
  FAILED: 'failed',
  /** Terminal: canceled by `service.cancel()` or by its handler. */
  CANCELED: 'canceled',
} as const;

/** One of the {@link TaskStatus} values. */
export type TaskStatus = (typeof TaskStatus)[keyof typeof TaskStatus];

/** The classifications of task events; `ALL` is only used to pipe every event. */
export const TaskEventType = {
  /** A status transition: payload {@link StatusPayload}. */
  STATUS: 'status',
  /** Log lines of a run: payload {@link LogEntry}[]. */
  LOG: 'log',
  /** Whatever the handler passed to `ctx.progress()`. */
  PROGRESS: 'progress',
  /** A change of the step plan of a composite task. */
  UPDATE: 'update',
  /** Every classification (only meaningful for `TaskTracker.pipe`). */
  ALL: 'all',
} as const;

/** One of the {@link TaskEventType} values (including `'all'`). */
export type TaskEventType = (typeof TaskEventType)[keyof typeof TaskEventType];

/** The classification of a real event (every {@link TaskEventType} but `'all'`). */
export type TaskEventClassification = Exclude<TaskEventType, 'all'>;

/** How the delay between two attempts grows. */
export const BackoffStrategy = {
  /** `baseMs * 2^(attempt - 1)`, capped by `maxMs`. */
  EXPONENTIAL: 'exponential',
  /** Always `baseMs`. */
  FIXED: 'fixed',
} as const;

/** One of the {@link BackoffStrategy} values. */
export type BackoffStrategy = (typeof BackoffStrategy)[keyof typeof BackoffStrategy];

/** Whether the retry delay is randomised. */
export const JitterStrategy = {
  /** The computed delay, exactly. */
  NONE: 'none',
  /** A random delay between 0 and the computed delay. */
  FULL: 'full',
} as const;

/** One of the {@link JitterStrategy} values. */
export type JitterStrategy = (typeof JitterStrategy)[keyof typeof JitterStrategy];

/** Whether a task is one run of one handler or a sequence of steps. */
export const TaskType = {
  /** One handler run. */
  ATOMIC: 'atomic',
  /** A sequence of steps, each run by its own handler. */
  COMPOSITE: 'composite',
} as const;

/** One of the {@link TaskType} values (the `atomicity` of a task). */
export type TaskType = (typeof TaskType)[keyof typeof TaskType];

/** Levels of the log lines a handler writes with `ctx.logger` / `ctx.pipe`. */
export const LogLevel = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
} as const;

/** One of the {@link LogLevel} values. */
export type LogLevel = (typeof LogLevel)[keyof typeof LogLevel];

/** Verbosity of the engine's own diagnostics (`options.logger`). */
export const EngineLogLevel = {
  OFF: 'off',
  ERROR: 'error',
  WARN: 'warn',
  INFO: 'info',
  DEBUG: 'debug',
  TRACE: 'trace',
} as const;

/** One of the {@link EngineLogLevel} values. */
export type EngineLogLevel = (typeof EngineLogLevel)[keyof typeof EngineLogLevel];

/** The statuses after which a task never changes again. */
export const TERMINAL_STATUSES: ReadonlySet<TaskStatus> = new Set<TaskStatus>([
  TaskStatus.SUCCEEDED,
  TaskStatus.FAILED,
  TaskStatus.CANCELED,
]);

/** Whether `status` is terminal (succeeded, failed or canceled). */
export function isTerminalStatus(status: TaskStatus): boolean {
  return TERMINAL_STATUSES.has(status);
}

/** The table name the event bus passes to observer filters (as decaf's `TaskEventModel`). */
export const TASK_EVENT_TABLE = 'task_event';

/** Classification prefix reserved for handlers written in Rust. */
export const NATIVE_CLASSIFICATION_PREFIX = 'native:';

/** Defaults of {@link TaskServiceOptions}. */
export const DEFAULTS = {
  concurrency: 16,
  leaseMs: 30_000,
  minLeaseMs: 100,
  gracefulShutdownMs: 10_000,
  logTailMax: 100,
  maxPayloadBytes: 16 * 1024 * 1024,
  /** Schema of the `postgres` adapter. */
  postgresSchema: 'decaf_tasks',
  maxAttempts: 1,
  priority: 0,
  /** Longest classification, lock key or dependency id, in UTF-8 bytes (as the engine). */
  maxKeyBytes: 256,
  /** Longest task or step name, in UTF-8 bytes. */
  maxNameBytes: 1024,
  backoff: {
    strategy: BackoffStrategy.EXPONENTIAL,
    baseMs: 1_000,
    maxMs: 60_000,
    jitter: JitterStrategy.FULL,
  },
} as const;
