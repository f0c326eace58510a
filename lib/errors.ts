import { TaskStatus } from './constants';
import type { TaskError, TaskNextAction } from './types';

/** Stable codes of the errors of this package. */
export const ErrorCode = {
  /** A config or task field is wrong (the message names it). */
  INVALID: 'E_INVALID',
  /** A task input is not JSON, or too large. */
  INVALID_INPUT: 'E_INVALID_INPUT',
  /** A serialized task input is larger than `options.maxPayloadBytes`. */
  PAYLOAD_TOO_LARGE: 'E_PAYLOAD_TOO_LARGE',
  /** A handler returned something that is not JSON. */
  OUTPUT_NOT_JSON: 'E_OUTPUT_NOT_JSON',
  /** No task with that id. */
  NOT_FOUND: 'E_NOT_FOUND',
  /** No handler for that classification can run on this service. */
  UNKNOWN_CLASSIFICATION: 'E_UNKNOWN_CLASSIFICATION',
  /** The service is shut down (or shutting down) and takes no new work. */
  SHUTDOWN: 'E_SHUTDOWN',
  /** A handler module of the worker pool could not be loaded or used. */
  HANDLER_MODULE: 'E_HANDLER_MODULE',
  /** A dependency names a task that does not exist (refused at push). */
  DEPENDENCY: 'E_DEPENDENCY',
  /** Code of the error of a task failed because a dependency failed or was canceled. */
  DEPENDENCY_FAILED: 'E_DEPENDENCY_FAILED',
  /** A bug: please report it. */
  INTERNAL: 'E_INTERNAL',
  /** A handler's run was aborted (cancel, lease lost, shutdown). */
  ABORTED: 'E_ABORTED',
  /** Tracker rejection: the task failed. */
  TASK_FAILED: 'E_TASK_FAILED',
  /** Tracker rejection: the task was canceled. */
  TASK_CANCELED: 'E_TASK_CANCELED',
  /** Tracker rejection: the task waits for a retry. */
  TASK_RETRY: 'E_TASK_RETRY',
  /** Tracker rejection: the task was (re)scheduled. */
  TASK_RESCHEDULED: 'E_TASK_RESCHEDULED',
} as const;

/** One of the {@link ErrorCode} values. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Base class of every error this package throws (except `TypeError` / `RangeError`). */
export class DecafTaskError extends Error {
  /** Stable code, e.g. `'E_NOT_FOUND'`. */
  readonly code: string;

  constructor(message: string, code: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** No task with that id (`E_NOT_FOUND`). */
export class TaskNotFoundError extends DecafTaskError {
  /** The id that was looked up, when known. */
  readonly taskId: string | undefined;

  constructor(message: string, options?: ErrorOptions & { taskId?: string }) {
    super(message, ErrorCode.NOT_FOUND, options);
    this.taskId = options?.taskId;
  }
}

/** A config or task field is wrong (`E_INVALID`); the message names the field. */
export class TaskValidationError extends DecafTaskError {
  constructor(message: string, options?: ErrorOptions, code: string = ErrorCode.INVALID) {
    super(message, code, options);
  }
}

/** A task input (or progress data) is not JSON (`E_INVALID_INPUT`); the message names the path. */
export class TaskInputError extends TaskValidationError {
  constructor(message: string, options?: ErrorOptions, code: string = ErrorCode.INVALID_INPUT) {
    super(message, options, code);
  }
}

/** A serialized task input is larger than `options.maxPayloadBytes` (`E_PAYLOAD_TOO_LARGE`). */
export class TaskPayloadTooLargeError extends TaskInputError {
  /** Size of the serialized payload, in bytes. */
  readonly size: number;
  /** The limit, in bytes. */
  readonly limit: number;

  constructor(message: string, size: number, limit: number) {
    super(message, undefined, ErrorCode.PAYLOAD_TOO_LARGE);
    this.size = size;
    this.limit = limit;
  }
}

/** A handler returned a value that is not JSON (`E_OUTPUT_NOT_JSON`): the run is failed. */
export class TaskOutputError extends TaskValidationError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options, ErrorCode.OUTPUT_NOT_JSON);
  }
}

/** No handler for that classification can run on this service (`E_UNKNOWN_CLASSIFICATION`). */
export class UnknownClassificationError extends DecafTaskError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCode.UNKNOWN_CLASSIFICATION, options);
  }
}

/**
 * A dependency names a task (or a step of one) that does not exist (`E_DEPENDENCY`): a task
 * can only depend on tasks pushed before it. Nothing of the push is stored.
 */
export class TaskDependencyError extends DecafTaskError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCode.DEPENDENCY, options);
  }
}

/** A handler module of the worker pool threw on load or exports no usable handler (`E_HANDLER_MODULE`). */
export class HandlerModuleError extends DecafTaskError {
  /** The module (absolute path) at fault. */
  readonly module: string;
  constructor(module: string, message: string, options?: ErrorOptions) {
    super(`handler module ${module}: ${message}`, ErrorCode.HANDLER_MODULE, options);
    this.module = module;
  }
}

/** The service is shut down or shutting down and takes no new work (`E_SHUTDOWN`). */
export class ServiceShutdownError extends DecafTaskError {
  constructor(
    message = 'the TaskService is shut down and takes no new work',
    options?: ErrorOptions,
  ) {
    super(message, ErrorCode.SHUTDOWN, options);
  }
}

/** A bug in decaf-tasks (`E_INTERNAL`): a caught panic, a failing store, an unexpected reply. */
export class InternalError extends DecafTaskError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCode.INTERNAL, options);
  }
}

/** Why a running handler was aborted. */
export type AbortReason = 'canceled' | 'lease_lost' | 'shutdown' | 'timeout' | 'handler';

/** The `reason` of an aborted `ctx.signal` (`E_ABORTED`). */
export class TaskAbortedError extends DecafTaskError {
  /** The task whose run was aborted. */
  readonly taskId: string;
  /** `'canceled'`, `'lease_lost'`, `'shutdown'`, `'timeout'`, or `'handler'` (ctx.cancel/retry/reschedule). */
  readonly reason: AbortReason;

  constructor(taskId: string, reason: AbortReason) {
    super(abortMessage(taskId, reason), ErrorCode.ABORTED);
    this.taskId = taskId;
    this.reason = reason;
  }
}

function abortMessage(taskId: string, reason: AbortReason): string {
  switch (reason) {
    case 'canceled':
      return `task ${taskId} was canceled`;
    case 'lease_lost':
      return `task ${taskId} lost its lease (it may be run again elsewhere)`;
    case 'shutdown':
      return `task ${taskId} was aborted: the service is shutting down`;
    case 'timeout':
      return `task ${taskId} ran past its timeoutMs`;
    case 'handler':
      return `task ${taskId}: the handler ended its run (cancel, retry or reschedule)`;
  }
}

/** Extra data of tracker rejections (dates of the next run). */
export interface TaskControlMeta {
  nextRunAt?: Date;
  scheduledTo?: Date;
}

/**
 * Base of the errors a `TaskTracker` rejects with when no handler error of this process is
 * available: they carry the task id, the recorded {@link TaskError} and the `nextAction`.
 */
export class TaskControlError extends DecafTaskError {
  /** The task. */
  readonly taskId: string;
  /** The error recorded on the task, if any. */
  readonly details: TaskError | undefined;
  /** `nextRunAt` / `scheduledTo` when known. */
  readonly meta: TaskControlMeta | undefined;
  /** What happens to the task next. */
  nextAction: TaskNextAction;

  constructor(
    message: string,
    code: string,
    taskId: string,
    nextAction: TaskNextAction,
    details?: TaskError,
    meta?: TaskControlMeta,
  ) {
    super(message, code);
    this.taskId = taskId;
    this.details = details;
    this.meta = meta;
    this.nextAction = nextAction;
  }
}

/** The task failed for good (`nextAction: 'failed'`). */
export class TaskFailError extends TaskControlError {
  constructor(
    taskId: string,
    details?: TaskError,
    meta?: TaskControlMeta,
    code: string = ErrorCode.TASK_FAILED,
  ) {
    super(
      details?.message ?? `Task ${taskId} failed`,
      code,
      taskId,
      TaskStatus.FAILED,
      details,
      meta,
    );
  }
}

/**
 * The task failed without running because a task (or a step) it depends on failed or was
 * canceled (`E_DEPENDENCY_FAILED`, `nextAction: 'failed'`). No attempt was counted.
 */
export class TaskDependencyFailedError extends TaskFailError {
  /** The dependency reference (`"<taskId>"` or `"<taskId>:<step>"`). */
  readonly dependency: string | undefined;
  /** How it ended: `'failed'` or `'canceled'`. */
  readonly dependencyStatus: string | undefined;

  constructor(taskId: string, details?: TaskError, meta?: TaskControlMeta) {
    super(taskId, details, meta, ErrorCode.DEPENDENCY_FAILED);
    const data = details?.details as { dependency?: unknown; status?: unknown } | undefined;
    this.dependency = typeof data?.dependency === 'string' ? data.dependency : undefined;
    this.dependencyStatus = typeof data?.status === 'string' ? data.status : undefined;
  }
}

/** The task was canceled (`nextAction: 'canceled'`). */
export class TaskCancelError extends TaskControlError {
  constructor(taskId: string, details?: TaskError, meta?: TaskControlMeta) {
    super(
      details?.message ?? `Task ${taskId} canceled`,
      ErrorCode.TASK_CANCELED,
      taskId,
      TaskStatus.CANCELED,
      details,
      meta,
    );
  }
}

/** The task waits for a retry (`nextAction: 'waiting_retry'`). */
export class TaskRetryError extends TaskControlError {
  constructor(taskId: string, details?: TaskError, meta?: TaskControlMeta) {
    const at = meta?.nextRunAt ? ` at ${meta.nextRunAt.toISOString()}` : '';
    super(
      details?.message ?? `Task ${taskId} scheduled for retry${at}`,
      ErrorCode.TASK_RETRY,
      taskId,
      TaskStatus.WAITING_RETRY,
      details,
      meta,
    );
  }
}

/** The task was (re)scheduled (`nextAction: 'scheduled'`). */
export class TaskRescheduleError extends TaskControlError {
  constructor(taskId: string, details?: TaskError, meta?: TaskControlMeta) {
    const to = meta?.scheduledTo ? ` to ${meta.scheduledTo.toISOString()}` : '';
    super(
      details?.message ?? `Task ${taskId} rescheduled${to}`,
      ErrorCode.TASK_RESCHEDULED,
      taskId,
      TaskStatus.SCHEDULED,
      details,
      meta,
    );
  }
}

/** An error of a tracker rejection: a {@link TaskControlError} or a handler's own error. */
export type TaskErrorFrom<E extends Error = Error> = E & {
  nextAction: TaskNextAction;
  taskId?: string;
  details?: TaskError;
  meta?: TaskControlMeta;
};

/**
 * Whether `error` is a tracker rejection (it has a `nextAction`), optionally of a given class.
 *
 * @example
 * ```ts
 * try { await tracker.wait(); } catch (err) {
 *   if (isTaskError(err) && err.nextAction === 'canceled') { ... }
 * }
 * ```
 */
export function isTaskError<E extends Error = Error>(
  error: unknown,
  ErrorClass?: abstract new (...args: never[]) => E,
): error is TaskErrorFrom<E> {
  if (!(error instanceof Error)) return false;
  if (typeof (error as { nextAction?: unknown }).nextAction !== 'string') return false;
  return ErrorClass === undefined || error instanceof ErrorClass;
}

const NATIVE_CODE = /^(E_[A-Z0-9_]+): ?([\s\S]*)$/;

/**
 * Maps an error thrown by the native binding (`"<CODE>: <message>"`) to its typed class.
 * Errors without a known code become {@link InternalError}; typed errors pass through.
 */
export function fromNative(err: unknown): DecafTaskError {
  if (err instanceof DecafTaskError) return err;
  // Not `instanceof Error`: the addon's errors come from the main realm, which is not the
  // realm of a vm context (Jest runs every test file in one).
  const raw = (err as { message?: unknown } | null)?.message;
  const text = typeof raw === 'string' ? raw : String(err);
  const match = NATIVE_CODE.exec(text);
  const options: ErrorOptions = { cause: err };
  if (match === null) return new InternalError(text, options);
  const code = match[1] as string;
  const message = match[2] as string;
  switch (code) {
    case ErrorCode.NOT_FOUND:
      return new TaskNotFoundError(message, options);
    case ErrorCode.INVALID:
      return new TaskValidationError(message, options);
    case ErrorCode.INVALID_INPUT:
      return new TaskInputError(message, options);
    case ErrorCode.UNKNOWN_CLASSIFICATION:
      return new UnknownClassificationError(message, options);
    case ErrorCode.SHUTDOWN:
      return new ServiceShutdownError(message, options);
    case ErrorCode.DEPENDENCY:
      return new TaskDependencyError(message, options);
    case ErrorCode.INTERNAL:
      return new InternalError(message, options);
    default:
      return new InternalError(text, options);
  }
}
