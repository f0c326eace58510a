/**
 * The native binding (`binding.js`, built by `napi build` from `src/`), typed from
 * docs/native-binding.md. Everything crosses as JSON strings, numbers, booleans and strings;
 * every method that can fail throws an `Error` whose message is `"<CODE>: <message>"`
 * (see `fromNative` in errors.ts). Times are ms since the epoch.
 */

import type { LogLevel } from './constants';
import { InternalError } from './errors';
import type { AdapterOptions, LeaseToken, TaskError } from './types';

/** The engine of one TaskService. */
export interface NativeEngine {
  /** Engine id, unique in the process. */
  readonly id: number;
  /** Validates and stores specs (a JSON array); returns JSON `Task[]`. */
  push(specsJson: string): string;
  /** JSON `Task`; throws `E_NOT_FOUND`. */
  read(id: string): string;
  /** JSON `Task[]` matching `{ status?, classification?, limit?, offset? }`, by creation. */
  list(filterJson: string): string;
  /** JSON `Event[]`: the persisted events of a task, oldest first; throws `E_NOT_FOUND`. */
  events(id: string): string;
  /** Cancels a non-terminal task; returns JSON `Task` (unchanged when already ended). */
  cancel(id: string, reason?: string | null): string;
  /** JSON `Event[]` waiting for JS (`"[]"` if none), in engine order. */
  drainEvents(): string;
  /** Tasks not terminal (pending, scheduled, running, waiting_retry). */
  activeCount(): number;
  /**
   * Registers an executor on the calling thread (at most `capacity` runs at once); returns
   * its id. `onWork` is weak. Torn down with its thread.
   */
  registerExecutor(classifications: string[], onWork: () => void, capacity?: number): number;
  /** Removes an executor whose thread is gone; its runs count a failed attempt. */
  removeExecutor(executorId: number, reason: string): number;
  /** The executor now also serves these classifications. */
  addClassifications(executorId: number, classifications: string[]): void;
  /** JSON `ExecutorMessage[]` waiting for that executor. */
  take(executorId: number): string;
  /** Renews the lease of every task the executor runs; returns how many it renewed. */
  renew(executorId: number): number;
  /** Ends a run with an `Outcome` (JSON); `false` if the token is stale (result dropped). */
  report(taskId: string, token: LeaseToken, outcomeJson: string): boolean;
  /** Ends many runs: a JSON array of `[taskId, token, outcome]`; returns how many were recorded. */
  reportMany(reportsJson: string): number;
  /** One log line; `false` if stale. */
  log(
    taskId: string,
    token: LeaseToken,
    level: string,
    msg: string,
    metaJson: string | null,
  ): boolean;
  /** A progress event; `false` if stale. */
  progress(taskId: string, token: LeaseToken, dataJson: string): boolean;
  /** Renews one lease; `false` if stale. */
  heartbeat(taskId: string, token: LeaseToken): boolean;
  /**
   * Adds steps (JSON array) to the composite of a step run; `[insertionIndex, totalSteps]`,
   * or `null` when the run is no longer current.
   */
  scheduleSteps(
    taskId: string,
    token: LeaseToken,
    stepsJson: string,
    position: 'afterCurrent' | 'atEnd',
  ): [number, number] | null;
  /** Classifications served by native (Rust) handlers, e.g. `native:cpu`. */
  nativeClassifications(): string[];
  /** Executors whose timed-out run did not return within the grace period, since the last call. */
  drainStuck(): number[];
  /** Stops claiming, waits up to `timeoutMs` for running tasks, releases the rest. Idempotent. */
  shutdown(timeoutMs: number): Promise<void>;
}

/** `new NativeEngine(configJson, onEvents)`; `onEvents` is weak and coalesced. */
export interface NativeEngineConstructor {
  new (configJson: string, onEvents: () => void): NativeEngine;
  /** A handle on engine `engineId` of this process, for a worker thread (no events). */
  attach(engineId: number): NativeEngine;
}

/** What `binding.js` exports. */
export interface NativeBinding {
  NativeEngine: NativeEngineConstructor;
}

/** The config the engine takes (already validated by `validate.ts`). */
export interface NativeConfig {
  concurrency: number;
  leaseMs: number;
  logTailMax: number;
  workerId: string;
  nativeThreads: number;
  adapter: AdapterOptions;
  logger?: string;
  timeoutGraceMs: number;
  retention: { completedMs?: number; failedMs?: number };
}

/** A task as the engine sends it (times in ms). */
export interface RawTask {
  id: string;
  createdAt: number;
  updatedAt: number;
  nextRunAt?: number | null;
  scheduledTo?: number | null;
  leaseExpiry?: number | null;
  logTail?: RawLogEntry[];
  [field: string]: unknown;
}

/** A log line as the engine sends it. */
export interface RawLogEntry {
  ts: number;
  level: LogLevel;
  msg: string;
  meta?: unknown;
  step?: number;
}

/** An event as the engine sends it. */
export interface RawEvent {
  /** Not sent by the engine: `convert.ts` derives it. */
  id?: string;
  uuid: string;
  seq: number;
  taskId: string;
  ts: number;
  classification: 'status' | 'log' | 'progress' | 'update';
  payload: unknown;
}

/** A message to an inline executor: run a task. */
export interface RunMessage {
  type: 'run';
  taskId: string;
  token: LeaseToken;
  classification: string;
  name?: string | null;
  /** 1-based number of this run. */
  attempt: number;
  input: unknown;
  resultCache?: Record<string, unknown> | null;
  /** Present when the run is a step of a composite task. */
  step?: RunStep;
}

/** Which step of a composite a run is. */
export interface RunStep {
  index: number;
  total: number;
  name?: string;
  /** 1-based run of this step (its in-place retries). */
  attempt: number;
  maxAttempts: number;
  canFail: boolean;
  /** Classification of the composite task. */
  taskClassification: string;
}

/** A message to an inline executor: stop a run. */
export interface AbortMessage {
  type: 'abort';
  taskId: string;
  token: LeaseToken;
  reason: 'canceled' | 'lease_lost' | 'shutdown' | 'timeout';
}

/** What `take()` returns (as JSON). */
export type ExecutorMessage = RunMessage | AbortMessage;

/** The end of a run, for `report()`. */
export type Outcome =
  | { kind: 'succeed'; output: unknown }
  | { kind: 'fail'; error: TaskError }
  | { kind: 'retry'; reason: string | null }
  | { kind: 'cancel'; reason: string | null }
  | { kind: 'reschedule'; at: number; reason: string | null };

let binding: NativeBinding | undefined;

/**
 * Loads the addon once (lazily, so that importing the package never fails: only creating a
 * service needs it). The path is relative to `dist/`.
 */
export function loadNative(): NativeBinding {
  if (binding !== undefined) return binding;
  let loaded: unknown;
  try {
    loaded = require('../binding.js');
  } catch (err) {
    throw new InternalError(
      `the native addon of decaf-tasks could not be loaded (${(err as Error).message}); ` +
        'build it with `npm run build:native`',
      { cause: err },
    );
  }
  const ctor = (loaded as Partial<NativeBinding> | null)?.NativeEngine;
  if (typeof ctor !== 'function') {
    throw new InternalError('the native addon of decaf-tasks does not export NativeEngine');
  }
  binding = loaded as NativeBinding;
  return binding;
}
