import { isTerminalStatus, type LogLevel, TaskEventType, TaskStatus } from './constants';
import {
  ErrorCode,
  TaskCancelError,
  type TaskControlError,
  type TaskControlMeta,
  TaskDependencyFailedError,
  type TaskErrorFrom,
  TaskFailError,
  TaskRescheduleError,
  TaskRetryError,
} from './errors';
import type {
  BusContext,
  EventPipe,
  LogEntry,
  LogPipe,
  PipeType,
  StatusPayload,
  Task,
  TaskEvent,
  TaskEventObserver,
  TaskEventSource,
  TaskNextAction,
} from './types';

const RESOLVED: Promise<void> = Promise.resolve();

const RESOLVE_ON: readonly TaskStatus[] = [
  TaskStatus.SUCCEEDED,
  TaskStatus.FAILED,
  TaskStatus.CANCELED,
  TaskStatus.SCHEDULED,
];
const WAIT_ON: readonly TaskStatus[] = [
  TaskStatus.SUCCEEDED,
  TaskStatus.FAILED,
  TaskStatus.CANCELED,
];

/** What a tracker subscribes to: a bus, or anything exposing one (a TaskService). */
export type TrackerSource = TaskEventSource | { readonly bus: TaskEventSource };

/** Options of `new TaskTracker()` (used by `TaskService.track`). */
export interface TrackerOptions {
  /**
   * Persisted events of the task up to the moment it was read. The tracker takes the task's
   * state from the last status event among them and ignores live events it already contains
   * (by `seq`), so no transition is lost or applied twice.
   */
  history?: readonly TaskEvent[];
}

interface Waiter {
  readonly statuses: readonly TaskStatus[];
  readonly resolve: (value: unknown) => void;
  readonly reject: (reason: Error) => void;
}

interface TaskBusSource extends TaskEventSource {
  observeTask(taskId: string, observer: TaskEventObserver): () => void;
}

function hasTaskIndex(source: TaskEventSource): source is TaskBusSource {
  return typeof (source as Partial<TaskBusSource>).observeTask === 'function';
}

function busOf(source: TrackerSource): TaskEventSource {
  const bus = (source as { readonly bus?: TaskEventSource }).bus;
  return bus !== undefined && typeof bus.observe === 'function' ? bus : (source as TaskEventSource);
}

function report(ctx: BusContext | undefined, msg: string, err: unknown): void {
  if (ctx?.logger !== undefined) ctx.logger.error(msg, err);
  else
    process.emitWarning(`${msg}: ${(err as Error)?.message ?? String(err)}`, 'DecafTasksWarning');
}

function isoOf(ts: unknown): string {
  return ts instanceof Date ? ts.toISOString() : String(ts);
}

/**
 * Follows one task through its events (decaf's `TaskTracker` semantics).
 *
 * - `resolve()` settles on `succeeded` (with the output) or rejects on `failed`, `canceled`
 *   or `scheduled`; `wait()` only settles on the terminal statuses (it waits through retries
 *   and reschedules).
 * - Rejections are the handler's own error when it was thrown in this process, otherwise a
 *   {@link TaskFailError} / {@link TaskCancelError} / {@link TaskRescheduleError} /
 *   {@link TaskRetryError}; both carry `nextAction` (the status the task went to).
 * - A tracker for a task that already ended settles at once; once the task ends, the tracker
 *   unsubscribes itself.
 * - The tracker keeps `task` (the object it was given) up to date: `status`, `output`,
 *   `error`, `nextRunAt`, `scheduledTo`.
 *
 * @typeParam O the output of the task
 */
export class TaskTracker<O = unknown> implements TaskEventObserver {
  /** The tracked task, kept up to date by status events. */
  readonly task: Task<unknown, O>;
  #unsubscribe: () => void;
  #pipes: Map<PipeType, Set<EventPipe>> | undefined = new Map();
  readonly #waiters = new Set<Waiter>();
  #lastSeq = Number.NEGATIVE_INFINITY;
  #statusPayload: StatusPayload | undefined;
  #done = false;

  /**
   * @param source the service (or its `bus`, or any decaf-style event bus)
   * @param task the task to follow, as read or pushed
   */
  constructor(source: TrackerSource, task: Task<unknown, O>, options?: TrackerOptions) {
    this.task = task;
    const bus = busOf(source);
    const taskId = task.id;
    const prefix = `${taskId}:`;
    this.#unsubscribe = hasTaskIndex(bus)
      ? bus.observeTask(taskId, this)
      : bus.observe(
          this,
          (table, _event, id) => table === 'task_event' && String(id).startsWith(prefix),
        );
    const history = options?.history;
    if (history !== undefined) {
      for (const evt of history) {
        if (typeof evt.seq === 'number' && evt.seq > this.#lastSeq) this.#lastSeq = evt.seq;
        if (evt.classification === TaskEventType.STATUS && evt.payload !== undefined) {
          this.#apply(evt.payload);
        }
      }
    }
    if (isTerminalStatus(this.task.status)) this.#complete();
  }

  /** Id of the tracked task. */
  get taskId(): string {
    return this.task.id;
  }

  /** Last known status of the task. */
  get status(): TaskStatus {
    return this.task.status;
  }

  /** Whether the task reached a terminal status (the tracker no longer listens). */
  get done(): boolean {
    return this.#done;
  }

  /**
   * Settles on the next decisive status: resolves with the output on `succeeded`, rejects on
   * `failed`, `canceled` or `scheduled` (a scheduled task rejects with a
   * {@link TaskRescheduleError} at once).
   */
  resolve(): Promise<O> {
    return this.#await(RESOLVE_ON);
  }

  /** Settles when the task ends: resolves with the output, or rejects (failed / canceled). */
  wait(): Promise<O> {
    return this.#await(WAIT_ON);
  }

  /** Calls `handler(event, ctx)` when the task succeeds (at once if it already did). */
  onSucceed(handler: EventPipe): () => void {
    return this.#onStatus(TaskStatus.SUCCEEDED, handler);
  }

  /** Calls `handler(event, ctx)` when the task fails for good (at once if it already did). */
  onFailure(handler: EventPipe): () => void {
    return this.#onStatus(TaskStatus.FAILED, handler);
  }

  /** Calls `handler(event, ctx)` when the task is canceled (at once if it already was). */
  onCancel(handler: EventPipe): () => void {
    return this.#onStatus(TaskStatus.CANCELED, handler);
  }

  /** Calls `handler(event, ctx)` for each `update` event (step plan changes). */
  onUpdate(handler: EventPipe): () => void {
    return this.pipe(handler, TaskEventType.UPDATE);
  }

  /**
   * Hands the log lines of each `log` event to `pipe`, as `[level, "<iso ts> - <msg>", meta]`
   * tuples (tuples already in that shape pass through).
   */
  logs(pipe: LogPipe): () => void {
    return this.pipe((evt) => {
      if (evt.classification !== TaskEventType.LOG) return;
      const entries = (evt.payload ?? []) as unknown[];
      const tuples = entries.map((entry) =>
        Array.isArray(entry)
          ? (entry as [LogLevel, string, unknown])
          : ([
              (entry as LogEntry).level,
              `${isoOf((entry as LogEntry).ts)} - ${(entry as LogEntry).msg}`,
              (entry as LogEntry).meta,
            ] as [LogLevel, string, unknown]),
      );
      return pipe(tuples);
    }, TaskEventType.LOG);
  }

  /**
   * Calls `fn(event, ctx)` for every event of the task of classification `type` (default:
   * all). Pipes run in registration order; a throwing pipe is reported and skipped.
   * @returns a function that removes the pipe
   */
  pipe(fn: EventPipe, type: PipeType = TaskEventType.ALL): () => void {
    if (typeof fn !== 'function')
      throw new TypeError('pipe must be a function (event, ctx) => void');
    const pipes = this.#pipes;
    if (pipes === undefined) return () => {};
    let set = pipes.get(type);
    if (set === undefined) {
      set = new Set();
      pipes.set(type, set);
    }
    set.add(fn);
    return () => {
      this.#pipes?.get(type)?.delete(fn);
    };
  }

  /**
   * Observer entry point: the bus calls it for each event of the task. Events already seen
   * (by `seq`) are ignored.
   */
  refresh(evt: TaskEvent, ctx?: BusContext): Promise<void> {
    const pipes = this.#pipes;
    if (pipes === undefined || evt === null || typeof evt !== 'object') return RESOLVED;
    if (typeof evt.seq === 'number') {
      if (evt.seq <= this.#lastSeq) return RESOLVED;
      this.#lastSeq = evt.seq;
    }
    if (typeof evt.taskId === 'string' && evt.taskId !== this.task.id) return RESOLVED;
    let status: TaskStatus | undefined;
    if (
      evt.classification === TaskEventType.STATUS &&
      evt.payload !== undefined &&
      evt.payload !== null
    ) {
      this.#apply(evt.payload);
      status = evt.payload.status;
    }
    let pending: Promise<unknown>[] | undefined;
    const all = pipes.get(TaskEventType.ALL);
    const own = pipes.get(evt.classification);
    if (all !== undefined || own !== undefined) {
      const toRun = [...(all ?? []), ...(own ?? [])];
      for (const fn of toRun) {
        const result = this.#runPipe(fn, evt, ctx);
        if (result === undefined) continue;
        if (pending === undefined) pending = [result];
        else pending.push(result);
      }
    }
    if (status !== undefined) {
      this.#settle(status);
      if (isTerminalStatus(status)) this.#complete();
    }
    return pending === undefined ? RESOLVED : Promise.all(pending).then(() => undefined);
  }

  #runPipe(
    fn: EventPipe,
    evt: TaskEvent,
    ctx: BusContext | undefined,
  ): Promise<unknown> | undefined {
    const onError = (err: unknown) =>
      report(
        ctx,
        `task ${this.task.id}: a tracker pipe failed on a ${evt.classification} event`,
        err,
      );
    try {
      const result = fn(evt, ctx as BusContext);
      if (result !== undefined && typeof (result as Promise<void>).then === 'function') {
        return (result as Promise<void>).then(undefined, onError);
      }
    } catch (err) {
      onError(err);
    }
    return undefined;
  }

  /** Records a status payload into `task`. */
  #apply(payload: StatusPayload): void {
    const task = this.task;
    this.#statusPayload = payload;
    task.status = payload.status;
    if (payload.output !== undefined && payload.output !== null) task.output = payload.output as O;
    if (payload.error !== undefined && payload.error !== null) task.error = payload.error;
    if (payload.nextRunAt !== undefined) task.nextRunAt = payload.nextRunAt;
    if (payload.scheduledTo !== undefined) task.scheduledTo = payload.scheduledTo;
  }

  #await(statuses: readonly TaskStatus[]): Promise<O> {
    const status = this.task.status;
    if (statuses.includes(status)) {
      return status === TaskStatus.SUCCEEDED
        ? Promise.resolve(this.#output())
        : Promise.reject(this.#error(status));
    }
    if (this.#done) {
      // Ended on a status this call does not settle on: cannot happen with terminal statuses.
      return Promise.reject(this.#error(status));
    }
    return new Promise<O>((resolve, reject) => {
      this.#waiters.add({ statuses, resolve: resolve as (value: unknown) => void, reject });
    });
  }

  #settle(status: TaskStatus): void {
    if (this.#waiters.size === 0) return;
    for (const waiter of this.#waiters) {
      if (!waiter.statuses.includes(status)) continue;
      this.#waiters.delete(waiter);
      if (status === TaskStatus.SUCCEEDED) waiter.resolve(this.#output());
      else waiter.reject(this.#error(status));
    }
  }

  #output(): O {
    const payload = this.#statusPayload;
    if (payload?.output !== undefined && payload.status === TaskStatus.SUCCEEDED)
      return payload.output as O;
    return (this.task.output ?? null) as O;
  }

  /** The rejection for `status`: the handler's own error if known here, else a typed one. */
  #error(status: TaskStatus): TaskErrorFrom {
    const payload = this.#statusPayload?.status === status ? this.#statusPayload : undefined;
    const nextAction = status as TaskNextAction;
    const original = payload?.originalError;
    if (original instanceof Error) {
      const err = original as TaskErrorFrom;
      err.nextAction = nextAction;
      return err;
    }
    const task = this.task;
    const details = payload?.error ?? task.error;
    const metaSource = payload ?? task;
    let meta: TaskControlMeta | undefined;
    if (metaSource.nextRunAt instanceof Date || metaSource.scheduledTo instanceof Date) {
      meta = {};
      if (metaSource.nextRunAt instanceof Date) meta.nextRunAt = metaSource.nextRunAt;
      if (metaSource.scheduledTo instanceof Date) meta.scheduledTo = metaSource.scheduledTo;
    }
    let err: TaskControlError;
    switch (status) {
      case TaskStatus.CANCELED:
        err = new TaskCancelError(task.id, details, meta);
        break;
      case TaskStatus.WAITING_RETRY:
        err = new TaskRetryError(task.id, details, meta);
        break;
      case TaskStatus.SCHEDULED:
        err = new TaskRescheduleError(task.id, details, meta);
        break;
      default:
        err =
          details?.code === ErrorCode.DEPENDENCY_FAILED
            ? new TaskDependencyFailedError(task.id, details, meta)
            : new TaskFailError(task.id, details, meta);
    }
    return err;
  }

  #onStatus(status: TaskStatus, handler: EventPipe): () => void {
    if (typeof handler !== 'function')
      throw new TypeError('handler must be a function (event, ctx) => void');
    const wrapped: EventPipe = (evt, ctx) => {
      if (evt.classification !== TaskEventType.STATUS || evt.payload?.status !== status) return;
      return handler(evt, ctx);
    };
    const remove = this.pipe(wrapped, TaskEventType.STATUS);
    if (this.task.status === status)
      void this.#runPipe(wrapped, this.#currentStatusEvent(), undefined);
    return remove;
  }

  /** A status event describing the current state (for hooks registered after the fact). */
  #currentStatusEvent(): TaskEvent<'status'> {
    const task = this.task;
    const payload: StatusPayload = this.#statusPayload ?? { status: task.status };
    if (this.#statusPayload === undefined) {
      if (task.status === TaskStatus.SUCCEEDED) payload.output = task.output;
      if (task.error !== undefined) payload.error = task.error;
      if (task.nextRunAt !== undefined) payload.nextRunAt = task.nextRunAt;
      if (task.scheduledTo !== undefined) payload.scheduledTo = task.scheduledTo;
    }
    return {
      id: `${task.id}:status:current`,
      uuid: 'current',
      seq: this.#lastSeq === Number.NEGATIVE_INFINITY ? -1 : this.#lastSeq,
      taskId: task.id,
      ts: task.updatedAt ?? new Date(),
      classification: 'status',
      payload,
    };
  }

  /** Stops listening once the task ended. */
  #complete(): void {
    if (this.#done) return;
    this.#done = true;
    this.#unsubscribe();
    this.#unsubscribe = () => {};
    this.#pipes = undefined;
  }
}
