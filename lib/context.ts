import { DEFAULTS, LogLevel } from './constants';
import { fromNative, TaskValidationError } from './errors';
import { safeStringify } from './json';
import type { NativeEngine, Outcome, RunStep } from './native';
import type {
  HandlerContext,
  LeaseToken,
  StepInsertion,
  StepScheduler,
  TaskLogger,
  TaskStepSpec,
} from './types';
import {
  assertProgressData,
  typeError,
  validateReason,
  validateStep,
  validateWhen,
} from './validate';

/** Shared settled promise: ctx methods return it so `return ctx.retry()` works for free. */
const RESOLVED: Promise<void> = Promise.resolve();

const LEVELS: readonly string[] = Object.values(LogLevel);

/** The run behind a context (implemented by the inline executor). */
export interface RunControl {
  readonly taskId: string;
  readonly token: LeaseToken;
  readonly native: NativeEngine;
  /** Whether the run ended (reported, aborted or stale): ctx calls are then ignored. */
  readonly ended: boolean;
  /** The run's abort signal (created on first use). */
  readonly signal: AbortSignal;
  /** Reports `outcome` now, aborts the signal and ends the run. */
  end(outcome: Outcome): void;
  /** Reports a failure of a context call that must not break the handler. */
  warn(err: unknown): void;
}

/**
 * The `ctx` of one handler run. Logging, progress and heartbeats go straight into the engine
 * with synchronous calls; `cancel` / `retry` / `reschedule` report the outcome immediately,
 * abort `ctx.signal` and make the engine ignore whatever the handler returns later.
 */
export class RunContext implements HandlerContext {
  readonly taskId: string;
  readonly attempt: number;
  readonly classification: string;
  readonly name: string | undefined;
  readonly step: number | undefined;
  readonly totalSteps: number | undefined;
  readonly stepAttempt: number | undefined;
  readonly resultCache: Record<string, unknown>;
  readonly #run: RunControl;
  #logger: TaskLogger | undefined;

  constructor(
    run: RunControl,
    attempt: number,
    classification: string,
    name: string | undefined,
    resultCache: Record<string, unknown>,
    step?: RunStep,
  ) {
    this.#run = run;
    this.taskId = run.taskId;
    this.attempt = attempt;
    this.classification = classification;
    this.name = name;
    this.resultCache = resultCache;
    this.step = step?.index;
    this.totalSteps = step?.total;
    this.stepAttempt = step?.attempt;
  }

  get signal(): AbortSignal {
    return this.#run.signal;
  }

  get logger(): TaskLogger {
    if (this.#logger === undefined) {
      const log = (level: LogLevel) => (msg: string, meta?: unknown) => {
        this.#log(level, msg, meta);
      };
      this.#logger = {
        trace: log(LogLevel.TRACE),
        debug: log(LogLevel.DEBUG),
        info: log(LogLevel.INFO),
        warn: log(LogLevel.WARN),
        error: log(LogLevel.ERROR),
      };
    }
    return this.#logger;
  }

  pipe(level: LogLevel | (string & {}), msg: string, meta?: unknown): Promise<void> {
    if (typeof level !== 'string' || level === '') {
      throw typeError(
        `level must be a non-empty string such as ${LEVELS.join(', ')} (got ${String(level)})`,
      );
    }
    this.#log(level, msg, meta);
    return RESOLVED;
  }

  progress(data: unknown): Promise<void> {
    assertProgressData(data);
    const run = this.#run;
    if (run.ended) return RESOLVED;
    try {
      run.native.progress(run.taskId, run.token, JSON.stringify(data));
    } catch (err) {
      run.warn(fromNative(err));
    }
    return RESOLVED;
  }

  heartbeat(): Promise<void> {
    const run = this.#run;
    if (run.ended) return RESOLVED;
    try {
      run.native.heartbeat(run.taskId, run.token);
    } catch (err) {
      run.warn(fromNative(err));
    }
    return RESOLVED;
  }

  cancel(reason?: string | Error): Promise<void> {
    const why = validateReason(reason);
    if (!this.#run.ended) this.#run.end({ kind: 'cancel', reason: why ?? null });
    return RESOLVED;
  }

  retry(reason?: string | Error): Promise<void> {
    const why = validateReason(reason);
    if (!this.#run.ended) this.#run.end({ kind: 'retry', reason: why ?? null });
    return RESOLVED;
  }

  reschedule(when: Date | number, reason?: string | Error): Promise<void> {
    const at = validateWhen(when, 'when');
    const why = validateReason(reason);
    if (!this.#run.ended) this.#run.end({ kind: 'reschedule', at, reason: why ?? null });
    return RESOLVED;
  }

  scheduleSteps(...steps: TaskStepSpec[]): StepScheduler {
    return {
      afterCurrent: () => this.#schedule(steps, 'afterCurrent'),
      atEnd: () => this.#schedule(steps, 'atEnd'),
    };
  }

  #schedule(steps: unknown[], position: 'afterCurrent' | 'atEnd'): Promise<StepInsertion> {
    const run = this.#run;
    try {
      if (this.step === undefined) {
        throw new TaskValidationError(
          `ctx.scheduleSteps works only inside a step of a composite task (task ${run.taskId} is atomic)`,
        );
      }
      if (steps.length === 0) {
        throw new TaskValidationError('ctx.scheduleSteps needs at least one step');
      }
      const json = JSON.stringify(
        steps.map((s, i) => validateStep(s, `steps[${i}]`, DEFAULTS.maxPayloadBytes)),
      );
      const placed = run.ended
        ? null
        : run.native.scheduleSteps(run.taskId, run.token, json, position);
      if (placed === null) {
        throw new TaskValidationError(
          `ctx.scheduleSteps: the run of task ${run.taskId} already ended; no step was added`,
        );
      }
      return Promise.resolve({ insertionIndex: placed[0], totalSteps: placed[1] });
    } catch (err) {
      // Validation errors (TypeError / RangeError with a code) as they are; engine errors typed.
      const typed = err instanceof TypeError || err instanceof RangeError ? err : fromNative(err);
      return Promise.reject(typed);
    }
  }

  #log(level: string, msg: unknown, meta: unknown): void {
    const run = this.#run;
    if (run.ended) return;
    const text = typeof msg === 'string' ? msg : String(msg);
    const metaJson = meta === undefined ? null : safeStringify(meta);
    try {
      run.native.log(run.taskId, run.token, level, text, metaJson);
    } catch (err) {
      run.warn(fromNative(err));
    }
  }
}
