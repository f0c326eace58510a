/**
 * Native JSON → JS objects: times (ms since the epoch) become `Date`s. The parsed objects are
 * converted in place (they are fresh from `JSON.parse` and owned by nobody else).
 */

import type { RawEvent, RawLogEntry, RawTask } from './native';
import type { LogEntry, StatusPayload, Task, TaskEvent } from './types';

type Mutable = Record<string, unknown>;

function dateField(obj: Mutable, key: string): void {
  const value = obj[key];
  if (typeof value === 'number') obj[key] = new Date(value);
  else if (value === null) delete obj[key];
}

function logEntries(entries: unknown): void {
  if (!Array.isArray(entries)) return;
  for (const entry of entries as RawLogEntry[]) {
    if (typeof entry.ts === 'number') (entry as unknown as LogEntry).ts = new Date(entry.ts);
  }
}

/** A task record from the engine, with its dates. */
export function toTask<I = unknown, O = unknown>(raw: RawTask): Task<I, O> {
  const t = raw as Mutable;
  dateField(t, 'createdAt');
  dateField(t, 'updatedAt');
  dateField(t, 'nextRunAt');
  dateField(t, 'scheduledTo');
  dateField(t, 'leaseExpiry');
  logEntries(t.logTail);
  return t as unknown as Task<I, O>;
}

/**
 * The record of a task just pushed, from its validated spec and the engine's reply row
 * `[id, status, createdAt]` (the engine does not send back what the caller already has).
 * `input` is the caller's own value (validated as JSON), not a copy.
 */
export function newTask<I = unknown, O = unknown>(
  fields: Record<string, unknown>,
  input: unknown,
  row: PushRow,
): Task<I, O> {
  const [id, status, createdAt] = row;
  const task: Record<string, unknown> = {
    id,
    classification: fields.classification,
    atomicity: fields.atomicity ?? 'atomic',
    status,
    input: input === undefined ? null : input,
    attempt: 0,
    maxAttempts: fields.maxAttempts,
    backoff: fields.backoff,
    priority: fields.priority,
    dependencies: fields.dependencies ?? [],
    leaseToken: 0,
    steps: fields.steps ?? [],
    stepResults: [],
    ...(fields.atomicity === 'composite' ? { currentStep: 0 } : {}),
    logTail: [],
    createdAt: new Date(createdAt),
    updatedAt: new Date(createdAt),
  };
  if (fields.name !== undefined) task.name = fields.name;
  if (fields.scheduledTo !== undefined) task.scheduledTo = new Date(fields.scheduledTo as number);
  if (fields.lock !== undefined) task.lock = fields.lock;
  if (fields.timeoutMs !== undefined) task.timeoutMs = fields.timeoutMs;
  return task as unknown as Task<I, O>;
}

/** What the engine's `push` returns per task. */
export type PushRow = [id: string, status: string, createdAt: number];

/** Task records from the engine (`list`). */
export function toTasks<I = unknown, O = unknown>(raw: RawTask[]): Task<I, O>[] {
  for (const t of raw) toTask(t);
  return raw as unknown as Task<I, O>[];
}

/** An event from the engine, with its dates (event `ts`, status dates, log entries' `ts`). */
export function toEvent(raw: RawEvent): TaskEvent {
  const e = raw as unknown as Mutable;
  // Derived here rather than sent: a third of the JSON of an event otherwise.
  e.id = `${raw.taskId}:${raw.classification}:${raw.uuid}`;
  e.ts = new Date(raw.ts);
  const payload = raw.payload;
  if (raw.classification === 'status') {
    if (payload !== null && typeof payload === 'object') {
      const p = payload as Mutable;
      if (p.nextRunAt !== undefined) dateField(p, 'nextRunAt');
      if (p.scheduledTo !== undefined) dateField(p, 'scheduledTo');
    }
  } else if (raw.classification === 'log') {
    logEntries(payload);
  }
  return e as unknown as TaskEvent;
}

/** Events from the engine (`drainEvents`, `events`). */
export function toEvents(raw: RawEvent[]): TaskEvent[] {
  for (const e of raw) toEvent(e);
  return raw as unknown as TaskEvent[];
}

/** Attaches the handler's own error to a live status payload (not enumerable, not persisted). */
export function attachOriginalError(payload: StatusPayload, error: Error): void {
  Object.defineProperty(payload, 'originalError', {
    value: error,
    enumerable: false,
    configurable: true,
    writable: true,
  });
}
