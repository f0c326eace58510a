import { TaskStatus } from './constants';
import { RunContext, type RunControl } from './context';
import {
  type AbortReason,
  fromNative,
  ServiceShutdownError,
  TaskAbortedError,
  TaskOutputError,
  TaskValidationError,
  UnknownClassificationError,
} from './errors';
import { assertJson, isJson, safeStringify } from './json';
import type { AbortMessage, ExecutorMessage, NativeEngine, Outcome, RunMessage } from './native';
import type { LeaseToken, TaskError } from './types';
import type { NormalizedHandler } from './validate';

/** How many tasks may have handler errors waiting for their status event. */
const MAX_REMEMBERED_TASKS = 10_000;

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

function runKey(taskId: string, token: LeaseToken): string {
  return `${taskId}\u0000${token}`;
}

/** The `TaskError` recorded for a thrown value. */
export function toTaskError(err: unknown): TaskError {
  if (typeof err !== 'object' || err === null) return { message: String(err) };
  const e = err as { message?: unknown; stack?: unknown; code?: unknown; details?: unknown };
  const out: TaskError = {
    message:
      typeof e.message === 'string' ? e.message : err instanceof Error ? '' : safeStringify(err),
  };
  if (typeof e.stack === 'string') out.stack = e.stack;
  if (typeof e.code === 'string' || (typeof e.code === 'number' && Number.isFinite(e.code))) {
    out.code = e.code;
  }
  if (e.details !== undefined && isJson(e.details)) out.details = e.details;
  return out;
}

/** One handler run: its lease token, its (lazy) abort controller, whether it ended. */
class Run implements RunControl {
  readonly taskId: string;
  readonly token: LeaseToken;
  readonly key: string;
  /**
   * Whether a failure of this run produces a `failed` / `waiting_retry` status event: not
   * for a composite step that is retried in place or may fail (`canFail`).
   */
  readonly failureIsVisible: boolean;
  ended = false;
  readonly #executor: InlineExecutor;
  #controller: AbortController | undefined;
  #abortReason: Error | undefined;

  constructor(executor: InlineExecutor, msg: RunMessage) {
    this.#executor = executor;
    this.taskId = msg.taskId;
    this.token = msg.token;
    this.key = runKey(msg.taskId, msg.token);
    const step = msg.step;
    this.failureIsVisible =
      step === undefined || (step.attempt >= step.maxAttempts && !step.canFail);
  }

  get native(): NativeEngine {
    return this.#executor.native;
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#abortReason !== undefined) this.#controller.abort(this.#abortReason);
    }
    return this.#controller.signal;
  }

  abort(reason: AbortReason): void {
    if (this.#abortReason !== undefined) return;
    this.#abortReason = new TaskAbortedError(this.taskId, reason);
    this.#controller?.abort(this.#abortReason);
  }

  end(outcome: Outcome): void {
    // A retry leaves a placeholder so that its waiting_retry event takes no handler error.
    this.#executor.report(
      this,
      JSON.stringify(outcome),
      outcome.kind === 'retry' ? null : undefined,
    );
    this.abort('handler');
  }

  warn(err: unknown): void {
    this.#executor.warn(err);
  }
}

/**
 * Runs the JS handlers registered on the thread that owns the service. The engine calls
 * `onWork()` (weak, coalesced) when messages wait; each `run` message calls the handler with
 * a {@link RunContext} and reports its outcome with one synchronous `report()` call (a
 * synchronous handler is reported at once, with no promise allocated); each `abort` message
 * aborts the run's `ctx.signal`. While anything runs, an unref'd timer renews the leases
 * every `leaseMs / 3`.
 */
export class InlineExecutor {
  readonly native: NativeEngine;
  readonly #id: number;
  readonly #handlers = new Map<string, NormalizedHandler>();
  readonly #running = new Map<string, Run>();
  readonly #renewEveryMs: number;
  readonly #warn: (err: unknown) => void;
  /** Per task, handler errors (or placeholders) waiting for their failed/waiting_retry event. */
  readonly #errors = new Map<string, (Error | undefined)[]>();
  #renewTimer: NodeJS.Timeout | undefined;
  #closed = false;
  /**
   * Successful outcomes waiting to be reported together (`[taskId, token, outcome]` JSON
   * fragments): one native call and one refill of the freed slots per batch, not per task.
   */
  #successes: { taskId: string; token: LeaseToken; outcome: string; json: string }[] = [];
  #flushScheduled = false;
  readonly #flush = (): void => this.#flushSuccesses();

  /**
   * Registers the executor with the engine on the calling thread, serving `handlers`
   * (classification → handler), at most `capacity` runs at once (no limit when omitted).
   * @throws the typed error of the engine's refusal
   */
  constructor(
    native: NativeEngine,
    handlers: ReadonlyMap<string, NormalizedHandler>,
    leaseMs: number,
    warn: (err: unknown) => void,
    capacity?: number,
  ) {
    this.native = native;
    this.#renewEveryMs = Math.max(1, Math.floor(leaseMs / 3));
    this.#warn = warn;
    try {
      this.#id = native.registerExecutor([...handlers.keys()], () => this.onWork(), capacity);
    } catch (err) {
      throw fromNative(err);
    }
    for (const [classification, handler] of handlers) this.#handlers.set(classification, handler);
  }

  /** The engine's id of this executor. */
  get id(): number {
    return this.#id;
  }

  /** The classifications this executor serves. */
  get classifications(): string[] {
    return [...this.#handlers.keys()];
  }

  /** Whether a handler is registered for `classification`. */
  has(classification: string): boolean {
    return this.#handlers.has(classification);
  }

  /** Serves one more classification. */
  add(classification: string, handler: NormalizedHandler): void {
    try {
      this.native.addClassifications(this.#id, [classification]);
    } catch (err) {
      throw fromNative(err);
    }
    this.#handlers.set(classification, handler);
  }

  /** How many runs are in progress. */
  get runningCount(): number {
    return this.#running.size;
  }

  /** Takes and handles every waiting message (the engine's `onWork` callback). */
  onWork(): void {
    let messages: ExecutorMessage[];
    try {
      const json = this.native.take(this.#id);
      if (json === '[]') return;
      messages = JSON.parse(json) as ExecutorMessage[];
    } catch (err) {
      this.#warnUnlessShutdown(err);
      return;
    }
    // A run whose abort is in the same batch never starts (it was canceled, released or
    // timed out before this thread got to it).
    let aborted: Set<string> | undefined;
    for (const msg of messages) {
      if (msg.type !== 'abort') continue;
      aborted ??= new Set();
      aborted.add(runKey(msg.taskId, msg.token));
    }
    for (const msg of messages) {
      if (msg.type === 'run') {
        if (aborted?.has(runKey(msg.taskId, msg.token)) !== true) this.#start(msg);
      } else if (msg.type === 'abort') this.#abort(msg);
    }
    this.#flushSuccesses();
  }

  /** Reports the batched successful outcomes in one native call. */
  #flushSuccesses(): void {
    this.#flushScheduled = false;
    if (this.#successes.length === 0) return;
    const batch = this.#successes;
    this.#successes = [];
    try {
      this.native.reportMany(`[${batch.map((s) => s.json).join(',')}]`);
    } catch {
      // One bad entry must not lose the others: report them one by one.
      for (const { taskId, token, outcome } of batch) {
        try {
          this.native.report(taskId, token, outcome);
        } catch (err) {
          this.#reportBare(taskId, token, err);
        }
      }
    }
  }

  /** Records a failure with a bare message when the engine refused a report. */
  #reportBare(taskId: string, token: LeaseToken, cause: unknown): void {
    const error: TaskError = {
      message: `the run's result could not be recorded: ${fromNative(cause).message}`,
      code: 'E_OUTPUT_NOT_JSON',
    };
    try {
      this.native.report(taskId, token, JSON.stringify({ kind: 'fail', error }));
    } catch (err) {
      this.#warn(fromNative(err));
    }
  }

  /**
   * The handler error to attach to a live status event, if this process recorded one. Each
   * accepted `fail` / `retry` report leaves one entry, consumed in order by the task's
   * `failed` / `waiting_retry` events; a terminal event forgets the task.
   */
  takeOriginalError(taskId: string, status: string): Error | undefined {
    if (this.#errors.size === 0) return undefined;
    const queue = this.#errors.get(taskId);
    if (queue === undefined) return undefined;
    let error: Error | undefined;
    if (status === TaskStatus.FAILED || status === TaskStatus.WAITING_RETRY) error = queue.shift();
    if (
      queue.length === 0 ||
      status === TaskStatus.FAILED ||
      status === TaskStatus.SUCCEEDED ||
      status === TaskStatus.CANCELED
    ) {
      this.#errors.delete(taskId);
    }
    return error;
  }

  /** Ends every run still in progress (after the engine shut down) and stops the timer. */
  close(): void {
    if (this.#closed) return;
    // Runs still queued were released by the engine's shutdown: start none of them.
    this.#closed = true;
    this.onWork();
    this.#flushSuccesses();
    for (const run of this.#running.values()) {
      run.ended = true;
      run.abort('shutdown');
    }
    this.#running.clear();
    this.#stopRenew();
    this.#errors.clear();
  }

  /**
   * Reports an outcome (JSON) of `run`. `error`: `undefined` for outcomes that produce no
   * failed / waiting_retry event, `null` (a placeholder) or the handler's error otherwise.
   */
  report(run: Run, outcomeJson: string, error: Error | null | undefined): boolean {
    if (run.ended) return false;
    this.#endRun(run);
    let accepted: boolean;
    try {
      accepted = this.native.report(run.taskId, run.token, outcomeJson);
    } catch (err) {
      this.#warn(fromNative(err));
      return false;
    }
    // A fail or retry outcome produces one failed / waiting_retry event: queue what trackers
    // of this process should reject with (the handler's own error, or nothing).
    if (accepted && error !== undefined) this.#remember(run.taskId, error ?? undefined);
    return accepted;
  }

  warn(err: unknown): void {
    this.#warn(err);
  }

  #start(msg: RunMessage): void {
    if (this.#closed) return;
    const run = new Run(this, msg);
    const handler = this.#handlers.get(msg.classification);
    if (handler === undefined) {
      this.#failWith(
        run,
        new UnknownClassificationError(
          `no handler is registered for classification '${msg.classification}' on this executor`,
        ),
      );
      return;
    }
    this.#running.set(run.key, run);
    if (this.#running.size === 1) this.#startRenew();
    const ctx = new RunContext(
      run,
      msg.attempt,
      msg.classification,
      msg.name ?? undefined,
      msg.resultCache ?? {},
      msg.step,
    );
    let result: unknown;
    try {
      result = handler.run.call(handler.self, msg.input, ctx);
    } catch (err) {
      this.#failed(run, handler, msg.input, ctx, err);
      return;
    }
    if (!isThenable(result)) {
      this.#succeeded(run, result);
      return;
    }
    try {
      result.then(
        (value) => this.#succeeded(run, value),
        (err: unknown) => this.#failed(run, handler, msg.input, ctx, err),
      );
    } catch (err) {
      this.#failed(run, handler, msg.input, ctx, err);
    }
  }

  #abort(msg: AbortMessage): void {
    const run = this.#running.get(runKey(msg.taskId, msg.token));
    if (run === undefined) return;
    // After a timeout the run stays: when the handler returns, its (dropped) report tells
    // the engine this thread is not stuck.
    if (msg.reason !== 'timeout') this.#endRun(run);
    run.abort(msg.reason);
  }

  #succeeded(run: Run, value: unknown): void {
    if (run.ended) return;
    const output = value === undefined ? null : value;
    let json: string;
    try {
      assertJson(output, 'output', 'task output', (message) => new TaskOutputError(message));
      json = JSON.stringify(output);
    } catch (err) {
      this.#failWith(run, err);
      return;
    }
    // Batched: flushed at the end of this onWork() batch, or in a microtask for results
    // of promises. Logs written by the run were recorded before, so they stay first.
    if (run.ended) return;
    this.#endRun(run);
    const outcome = `{"kind":"succeed","output":${json}}`;
    this.#successes.push({
      taskId: run.taskId,
      token: run.token,
      outcome,
      json: `[${JSON.stringify(run.taskId)},${run.token},${outcome}]`,
    });
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(this.#flush);
    }
  }

  #failed(
    run: Run,
    handler: NormalizedHandler,
    input: unknown,
    ctx: RunContext,
    err: unknown,
  ): void {
    if (run.ended) return;
    const hook = handler.catch;
    if (hook !== undefined) {
      let result: unknown;
      try {
        result = hook.call(handler.self, input, err, ctx);
      } catch (hookErr) {
        this.#hookFailed(ctx, hookErr);
      }
      if (isThenable(result)) {
        result.then(
          () => this.#failWith(run, err),
          (hookErr: unknown) => {
            this.#hookFailed(ctx, hookErr);
            this.#failWith(run, err);
          },
        );
        return;
      }
    }
    this.#failWith(run, err);
  }

  #hookFailed(ctx: RunContext, hookErr: unknown): void {
    const { message, stack } = toTaskError(hookErr);
    ctx.logger.error(`the handler's catch() hook failed: ${message}`, { stack });
  }

  /** Reports a failure (the hook already ran, or there is none). */
  #failWith(run: Run, err: unknown): void {
    if (run.ended) return;
    const error = toTaskError(err);
    const original = err instanceof Error ? err : undefined;
    this.#endRun(run);
    let accepted: boolean;
    try {
      accepted = this.native.report(run.taskId, run.token, JSON.stringify({ kind: 'fail', error }));
    } catch (first) {
      const mapped = fromNative(first);
      if (!(mapped instanceof TaskValidationError)) {
        this.#warn(mapped);
        return;
      }
      // The engine refused a field of the error (code, details): record the bare message.
      try {
        const bare: TaskError = { message: error.message, stack: error.stack };
        accepted = this.native.report(
          run.taskId,
          run.token,
          JSON.stringify({ kind: 'fail', error: bare }),
        );
      } catch (second) {
        this.#warn(fromNative(second));
        return;
      }
    }
    if (accepted && run.failureIsVisible) this.#remember(run.taskId, original);
  }

  /** Reports a failed engine call, except the refusals of an engine that is shutting down. */
  #warnUnlessShutdown(err: unknown): void {
    const error = fromNative(err);
    if (!(error instanceof ServiceShutdownError)) this.#warn(error);
  }

  #endRun(run: Run): void {
    run.ended = true;
    if (this.#running.delete(run.key) && this.#running.size === 0) this.#stopRenew();
  }

  #remember(taskId: string, error: Error | undefined): void {
    const queue = this.#errors.get(taskId);
    if (queue !== undefined) {
      queue.push(error);
      return;
    }
    if (this.#errors.size >= MAX_REMEMBERED_TASKS) {
      const oldest = this.#errors.keys().next();
      if (oldest.done !== true) this.#errors.delete(oldest.value);
    }
    this.#errors.set(taskId, [error]);
  }

  #startRenew(): void {
    if (this.#renewTimer !== undefined) return;
    this.#renewTimer = setInterval(() => {
      try {
        this.native.renew(this.#id);
      } catch (err) {
        this.#warnUnlessShutdown(err);
      }
    }, this.#renewEveryMs);
    this.#renewTimer.unref();
  }

  #stopRenew(): void {
    if (this.#renewTimer === undefined) return;
    clearInterval(this.#renewTimer);
    this.#renewTimer = undefined;
  }
}
