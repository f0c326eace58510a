import os from 'node:os';
import nodePath from 'node:path';
import {
  BackoffStrategy,
  DEFAULTS,
  EngineLogLevel,
  JitterStrategy,
  NATIVE_CLASSIFICATION_PREFIX,
  TaskStatus,
  TaskType,
} from './constants';
import { ErrorCode, TaskValidationError } from './errors';
import { assertJson, serializePayload } from './json';
import type {
  AdapterOptions,
  Backoff,
  Handler,
  HandlerContext,
  HandlerObject,
  ListFilter,
  ResourceLimits,
  TaskServiceOptions,
  TaskSpec,
  WorkerPoolOptions,
} from './types';

/** A `TypeError` / `RangeError` of this package: it carries `code: 'E_INVALID'`. */
export type CodedError<E extends Error> = E & { code: string };

/** A `TypeError` with `code: 'E_INVALID'` (a value of the wrong type). */
export function typeError(message: string): CodedError<TypeError> {
  return Object.assign(new TypeError(message), { code: ErrorCode.INVALID });
}

/** A `RangeError` with `code: 'E_INVALID'` (a value out of range). */
export function rangeError(message: string): CodedError<RangeError> {
  return Object.assign(new RangeError(message), { code: ErrorCode.INVALID });
}

const MAX_INT32 = 2 ** 31 - 1;

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Date) return 'a Date';
  return typeof value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

interface IntegerRule {
  readonly min: number;
  readonly max: number;
  /** e.g. "a positive integer". */
  readonly desc: string;
}

const POSITIVE: IntegerRule = { min: 1, max: MAX_INT32, desc: 'a positive integer' };
const NON_NEGATIVE: IntegerRule = { min: 0, max: MAX_INT32, desc: 'a non-negative integer' };
const NON_NEGATIVE_MS: IntegerRule = {
  min: 0,
  max: MAX_INT32,
  desc: 'a non-negative integer (milliseconds)',
};
const LEASE_MS: IntegerRule = {
  min: DEFAULTS.minLeaseMs,
  max: MAX_INT32,
  desc: `an integer of at least ${DEFAULTS.minLeaseMs} (milliseconds)`,
};
const PRIORITY: IntegerRule = { min: -MAX_INT32 - 1, max: MAX_INT32, desc: 'an integer' };
const BYTES: IntegerRule = {
  min: 1,
  max: Number.MAX_SAFE_INTEGER,
  desc: 'a positive integer (bytes)',
};

function integer(value: unknown, path: string, rule: IntegerRule): number {
  if (typeof value !== 'number') {
    throw typeError(`${path} must be ${rule.desc} (got ${typeName(value)})`);
  }
  if (Number.isNaN(value)) throw rangeError(`${path} must be ${rule.desc} (got NaN)`);
  if (!Number.isInteger(value) || value < rule.min) {
    throw rangeError(`${path} must be ${rule.desc} (got ${value})`);
  }
  if (value > rule.max) throw rangeError(`${path} must be at most ${rule.max} (got ${value})`);
  return value;
}

/** UTF-8 length of `value`, computed only when it might exceed `max`. */
function tooLong(value: string, max: number): number | undefined {
  if (value.length * 3 <= max) return undefined;
  const bytes = Buffer.byteLength(value, 'utf8');
  return bytes > max ? bytes : undefined;
}

function nonEmptyString(value: unknown, path: string, maxBytes = Number.POSITIVE_INFINITY): string {
  const bounded = maxBytes !== Number.POSITIVE_INFINITY;
  const desc = bounded
    ? `a non-empty string of at most ${maxBytes} bytes (UTF-8)`
    : 'a non-empty string';
  if (typeof value !== 'string') {
    throw typeError(`${path} must be ${desc} (got ${typeName(value)})`);
  }
  if (value.length === 0) throw rangeError(`${path} must be ${desc} (got an empty string)`);
  const bytes = bounded ? tooLong(value, maxBytes) : undefined;
  if (bytes !== undefined) throw rangeError(`${path} must be ${desc} (got ${bytes} bytes)`);
  return value;
}

function string(value: unknown, path: string, maxBytes = Number.POSITIVE_INFINITY): string {
  if (typeof value !== 'string') {
    throw typeError(`${path} must be a string (got ${typeName(value)})`);
  }
  const bytes = maxBytes === Number.POSITIVE_INFINITY ? undefined : tooLong(value, maxBytes);
  if (bytes !== undefined) {
    throw rangeError(`${path} must be at most ${maxBytes} bytes (UTF-8) (got ${bytes} bytes)`);
  }
  return value;
}

function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean')
    throw typeError(`${path} must be a boolean (got ${typeName(value)})`);
  return value;
}

function oneOf<T extends string>(value: unknown, path: string, allowed: readonly T[]): T {
  const list = allowed.map((v) => `'${v}'`).join(', ');
  if (typeof value !== 'string') {
    throw typeError(`${path} must be one of ${list} (got ${typeName(value)})`);
  }
  if (!(allowed as readonly string[]).includes(value)) {
    throw rangeError(`${path} must be one of ${list} (got '${value}')`);
  }
  return value as T;
}

function plainObject(value: unknown, path: string): Record<string, unknown> {
  if (!isPlainObject(value))
    throw typeError(`${path} must be a plain object (got ${typeName(value)})`);
  return value;
}

function checkKeys(
  obj: Record<string, unknown>,
  path: string,
  known: readonly string[],
  what: string,
): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) {
      throw typeError(`${path}.${key} is not ${what} (known: ${known.join(', ')})`);
    }
  }
}

function stringArray(value: unknown, path: string): string[] {
  if (!Array.isArray(value))
    throw typeError(`${path} must be an array of strings (got ${typeName(value)})`);
  for (let i = 0; i < value.length; i++) {
    nonEmptyString(value[i], `${path}[${i}]`, DEFAULTS.maxKeyBytes);
  }
  return value as string[];
}

/** Validates a classification name (non-empty, at most 256 characters). */
export function validateClassification(value: unknown, path: string): string {
  return nonEmptyString(value, path, DEFAULTS.maxKeyBytes);
}

// ---------------------------------------------------------------------------------------------
// Service options

/** {@link TaskServiceOptions} with every default applied. */
export interface ResolvedOptions {
  concurrency: number;
  leaseMs: number;
  gracefulShutdownMs: number;
  logTailMax: number;
  adapter: AdapterOptions;
  workerId: string;
  autoShutdown: boolean;
  nativeThreads: number;
  logger: EngineLogLevel;
  maxPayloadBytes: number;
  workerPool: ResolvedWorkerPoolOptions | undefined;
  timeoutGraceMs: number;
  retention: { completedMs?: number; failedMs?: number };
}

function validateRetention(value: unknown): { completedMs?: number; failedMs?: number } {
  const r = plainObject(value, 'options.retention');
  checkKeys(r, 'options.retention', ['completedMs', 'failedMs'], 'a retention option');
  const out: { completedMs?: number; failedMs?: number } = {};
  if (r.completedMs !== undefined) {
    out.completedMs = integer(r.completedMs, 'options.retention.completedMs', NON_NEGATIVE_MS);
  }
  if (r.failedMs !== undefined) {
    out.failedMs = integer(r.failedMs, 'options.retention.failedMs', NON_NEGATIVE_MS);
  }
  return out;
}

/** `options.workerPool` with its defaults applied (modules resolved to absolute paths). */
export interface ResolvedWorkerPoolOptions {
  size: number;
  mode: 'node' | 'browser';
  modules: string[];
  concurrencyPerWorker: number;
  resourceLimits: ResourceLimits | undefined;
  restart: { maxPerMinute: number };
  workerData: unknown;
}

const POOL_KEYS: readonly (keyof WorkerPoolOptions)[] = [
  'size',
  'mode',
  'modules',
  'concurrencyPerWorker',
  'resourceLimits',
  'restart',
  'workerData',
];

const RESOURCE_LIMIT_KEYS: readonly (keyof ResourceLimits)[] = [
  'maxOldGenerationSizeMb',
  'maxYoungGenerationSizeMb',
  'codeRangeSizeMb',
  'stackSizeMb',
];

/** Resolves a handler module like `require` would from the current directory. */
function resolveModule(specifier: string, path: string): string {
  try {
    return require.resolve(specifier, { paths: [process.cwd()] });
  } catch (err) {
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new TaskValidationError(
      `${path} '${specifier}' does not resolve from ${process.cwd()}: ${why}`,
    );
  }
}

function validateWorkerPool(value: unknown): ResolvedWorkerPoolOptions | undefined {
  const o = plainObject(value, 'options.workerPool');
  checkKeys(o, 'options.workerPool', POOL_KEYS, 'a workerPool option');
  const size = o.size === undefined ? 0 : integer(o.size, 'options.workerPool.size', NON_NEGATIVE);
  const mode =
    o.mode === undefined
      ? 'node'
      : oneOf(o.mode, 'options.workerPool.mode', ['node', 'browser'] as const);
  const modules =
    o.modules === undefined ? [] : stringArray(o.modules, 'options.workerPool.modules');
  const resolved = modules.map((m, i) => resolveModule(m, `options.workerPool.modules[${i}]`));
  if (size > 0 && resolved.length === 0) {
    throw typeError(
      'options.workerPool.modules must list at least one handler module when size > 0',
    );
  }
  let resourceLimits: ResourceLimits | undefined;
  if (o.resourceLimits !== undefined) {
    const r = plainObject(o.resourceLimits, 'options.workerPool.resourceLimits');
    checkKeys(r, 'options.workerPool.resourceLimits', RESOURCE_LIMIT_KEYS, 'a resource limit');
    resourceLimits = {};
    for (const key of RESOURCE_LIMIT_KEYS) {
      if (r[key] !== undefined) {
        resourceLimits[key] = integer(r[key], `options.workerPool.resourceLimits.${key}`, POSITIVE);
      }
    }
  }
  let maxPerMinute = 10;
  if (o.restart !== undefined) {
    const r = plainObject(o.restart, 'options.workerPool.restart');
    checkKeys(r, 'options.workerPool.restart', ['maxPerMinute'], 'a restart option');
    if (r.maxPerMinute !== undefined) {
      maxPerMinute = integer(
        r.maxPerMinute,
        'options.workerPool.restart.maxPerMinute',
        NON_NEGATIVE,
      );
    }
  }
  if (size === 0) return undefined;
  return {
    size,
    mode,
    modules: resolved,
    concurrencyPerWorker:
      o.concurrencyPerWorker === undefined
        ? 1
        : integer(o.concurrencyPerWorker, 'options.workerPool.concurrencyPerWorker', POSITIVE),
    resourceLimits,
    restart: { maxPerMinute },
    workerData: o.workerData,
  };
}

const OPTION_KEYS: readonly (keyof TaskServiceOptions)[] = [
  'concurrency',
  'leaseMs',
  'gracefulShutdownMs',
  'logTailMax',
  'adapter',
  'workerId',
  'autoShutdown',
  'nativeThreads',
  'logger',
  'maxPayloadBytes',
  'workerPool',
  'timeoutGraceMs',
  'retention',
];

const ENGINE_LOG_LEVELS = Object.values(EngineLogLevel);

function defaultLogger(): EngineLogLevel {
  const env = process.env.DECAF_TASKS_LOG;
  if (env === undefined || env === '') return EngineLogLevel.OFF;
  const level = env.toLowerCase();
  if ((ENGINE_LOG_LEVELS as string[]).includes(level)) return level as EngineLogLevel;
  process.emitWarning(
    `DECAF_TASKS_LOG=${JSON.stringify(env)} is not one of ${ENGINE_LOG_LEVELS.join(', ')}; using 'off'`,
    { code: 'DECAF_TASKS_INVALID_ENV' },
  );
  return EngineLogLevel.OFF;
}

function validateAdapter(value: unknown): AdapterOptions {
  const adapter = plainObject(value, 'options.adapter');
  const kind = adapter.kind;
  if (typeof kind !== 'string') {
    throw typeError(`options.adapter.kind must be a string (got ${typeName(kind)})`);
  }
  switch (kind) {
    case 'memory':
      checkKeys(adapter, 'options.adapter', ['kind'], 'a memory adapter option');
      return { kind };
    case 'sqlite': {
      checkKeys(adapter, 'options.adapter', ['kind', 'path'], 'a sqlite adapter option');
      const file = nonEmptyString(adapter.path, 'options.adapter.path');
      if (file.includes('\0')) {
        throw typeError('options.adapter.path must not contain a NUL character');
      }
      // Absolute, so that every thread and a restarted process open the same file.
      return { kind, path: nodePath.resolve(file) };
    }
    case 'postgres': {
      checkKeys(
        adapter,
        'options.adapter',
        ['kind', 'url', 'schema', 'pollMs'],
        'a postgres adapter option',
      );
      const url = nonEmptyString(adapter.url, 'options.adapter.url');
      if (!/^postgres(ql)?:\/\//.test(url)) {
        throw rangeError(
          `options.adapter.url must be a postgres:// or postgresql:// URL (got '${url.slice(0, 40)}')`,
        );
      }
      const schema =
        adapter.schema === undefined
          ? DEFAULTS.postgresSchema
          : nonEmptyString(adapter.schema, 'options.adapter.schema');
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
        throw rangeError(
          `options.adapter.schema must be a lower-case SQL identifier: a-z, 0-9 and _, not starting with a digit, at most 63 characters (got '${schema}')`,
        );
      }
      const out: AdapterOptions = { kind, url, schema };
      if (adapter.pollMs !== undefined) {
        out.pollMs = integer(adapter.pollMs, 'options.adapter.pollMs', POSITIVE);
      }
      return out;
    }
    default:
      throw new TaskValidationError(
        `options.adapter.kind '${kind}' is not available: use 'memory', 'sqlite' or 'postgres'`,
      );
  }
}

/**
 * Validates `new TaskService(options)` and applies the defaults. Throws a `TypeError` for a
 * wrong type or an unknown key, a `RangeError` for a value out of range, and a
 * {@link TaskValidationError} for an adapter that does not exist.
 */
export function validateOptions(options: unknown): ResolvedOptions {
  if (options === undefined) options = {};
  const o = plainObject(options, 'options');
  checkKeys(o, 'options', OPTION_KEYS, 'a TaskService option');
  const has = (key: keyof TaskServiceOptions): boolean => o[key] !== undefined;
  return {
    concurrency: has('concurrency')
      ? integer(o.concurrency, 'options.concurrency', POSITIVE)
      : DEFAULTS.concurrency,
    leaseMs: has('leaseMs') ? integer(o.leaseMs, 'options.leaseMs', LEASE_MS) : DEFAULTS.leaseMs,
    gracefulShutdownMs: has('gracefulShutdownMs')
      ? integer(o.gracefulShutdownMs, 'options.gracefulShutdownMs', NON_NEGATIVE_MS)
      : DEFAULTS.gracefulShutdownMs,
    logTailMax: has('logTailMax')
      ? integer(o.logTailMax, 'options.logTailMax', NON_NEGATIVE)
      : DEFAULTS.logTailMax,
    adapter: has('adapter') ? validateAdapter(o.adapter) : { kind: 'memory' },
    workerId: has('workerId')
      ? nonEmptyString(o.workerId, 'options.workerId')
      : `${os.hostname()}:${process.pid}`,
    autoShutdown: has('autoShutdown') ? boolean(o.autoShutdown, 'options.autoShutdown') : false,
    nativeThreads: has('nativeThreads')
      ? integer(o.nativeThreads, 'options.nativeThreads', POSITIVE)
      : os.availableParallelism(),
    logger: has('logger') ? oneOf(o.logger, 'options.logger', ENGINE_LOG_LEVELS) : defaultLogger(),
    maxPayloadBytes: has('maxPayloadBytes')
      ? integer(o.maxPayloadBytes, 'options.maxPayloadBytes', BYTES)
      : DEFAULTS.maxPayloadBytes,
    workerPool: has('workerPool') ? validateWorkerPool(o.workerPool) : undefined,
    timeoutGraceMs: has('timeoutGraceMs')
      ? integer(o.timeoutGraceMs, 'options.timeoutGraceMs', NON_NEGATIVE_MS)
      : 1000,
    retention: has('retention') ? validateRetention(o.retention) : {},
  };
}

// ---------------------------------------------------------------------------------------------
// Task specs

const SPEC_KEYS: readonly (keyof TaskSpec)[] = [
  'classification',
  'input',
  'name',
  'maxAttempts',
  'backoff',
  'priority',
  'scheduledTo',
  'lock',
  'dependencies',
  'atomicity',
  'steps',
  'timeoutMs',
];

const STEP_KEYS = [
  'classification',
  'name',
  'input',
  'lock',
  'dependsOn',
  'canFail',
  'maxAttempts',
  'backoff',
] as const;

const BACKOFF_KEYS: readonly (keyof Backoff)[] = ['strategy', 'baseMs', 'maxMs', 'jitter'];

function validateBackoff(value: unknown, path: string, fill: boolean): Partial<Backoff> {
  const b = plainObject(value, path);
  checkKeys(b, path, BACKOFF_KEYS, 'a backoff field');
  const out: Partial<Backoff> = {};
  if (b.strategy !== undefined) {
    out.strategy = oneOf(b.strategy, `${path}.strategy`, Object.values(BackoffStrategy));
  }
  if (b.baseMs !== undefined) out.baseMs = integer(b.baseMs, `${path}.baseMs`, NON_NEGATIVE_MS);
  if (b.maxMs !== undefined) out.maxMs = integer(b.maxMs, `${path}.maxMs`, NON_NEGATIVE_MS);
  if (b.jitter !== undefined)
    out.jitter = oneOf(b.jitter, `${path}.jitter`, Object.values(JitterStrategy));
  if (out.baseMs !== undefined && out.maxMs !== undefined && out.maxMs < out.baseMs) {
    throw rangeError(
      `${path}.maxMs (${out.maxMs}) must be at least ${path}.baseMs (${out.baseMs})`,
    );
  }
  if (!fill) return out;
  const baseMs = out.baseMs ?? DEFAULTS.backoff.baseMs;
  if (out.maxMs !== undefined && out.maxMs < baseMs) {
    throw rangeError(
      `${path}.maxMs (${out.maxMs}) must be at least the default baseMs (${baseMs})`,
    );
  }
  return {
    strategy: out.strategy ?? DEFAULTS.backoff.strategy,
    baseMs,
    maxMs: out.maxMs ?? Math.max(DEFAULTS.backoff.maxMs, baseMs),
    jitter: out.jitter ?? DEFAULTS.backoff.jitter,
  };
}

function validateDate(value: unknown, path: string): number {
  if (value instanceof Date) {
    const ms = value.getTime();
    if (Number.isNaN(ms)) throw rangeError(`${path} is an invalid Date`);
    return ms;
  }
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) {
      throw rangeError(
        `${path} must be a valid Date or a non-negative number of ms since the epoch (got ${value})`,
      );
    }
    return Math.trunc(value);
  }
  throw typeError(
    `${path} must be a Date or a number of ms since the epoch (got ${typeName(value)})`,
  );
}

/** Validates a date argument (`Date` or ms since the epoch) and returns it in ms. */
export function validateWhen(value: unknown, path: string): number {
  return validateDate(value, path);
}

/** Validates one step of a composite (`path` names it) and returns its JSON fields. */
export function validateStep(
  value: unknown,
  path: string,
  maxPayloadBytes: number,
): Record<string, unknown> {
  const s = plainObject(value, path);
  checkKeys(s, path, STEP_KEYS, 'a step field');
  const out: Record<string, unknown> = {
    classification: validateClassification(s.classification, `${path}.classification`),
  };
  if (s.name !== undefined) out.name = string(s.name, `${path}.name`, DEFAULTS.maxNameBytes);
  if (s.input !== undefined) {
    serializePayload(s.input, `${path}.input`, maxPayloadBytes);
    out.input = s.input;
  }
  if (s.lock !== undefined) out.lock = nonEmptyString(s.lock, `${path}.lock`, DEFAULTS.maxKeyBytes);
  if (s.dependsOn !== undefined) out.dependsOn = stringArray(s.dependsOn, `${path}.dependsOn`);
  if (s.canFail !== undefined) out.canFail = boolean(s.canFail, `${path}.canFail`);
  if (s.maxAttempts !== undefined) {
    out.maxAttempts = integer(s.maxAttempts, `${path}.maxAttempts`, POSITIVE);
  }
  if (s.backoff !== undefined) out.backoff = validateBackoff(s.backoff, `${path}.backoff`, false);
  return out;
}

/**
 * Validates one task spec and returns it as the JSON the engine takes (defaults applied,
 * `scheduledTo` in ms). `path` names the spec in messages (`'spec'`, `'specs[2]'`); the input
 * is named `input` for a single push and `specs[2].input` in a batch.
 */
/** A validated spec: its JSON for the engine, its normalized fields and its input. */
export interface PreparedSpec {
  json: string;
  fields: Record<string, unknown>;
  input: unknown;
}

export function prepareSpec(
  spec: unknown,
  path: string,
  inputPath: string,
  maxPayloadBytes: number,
): PreparedSpec {
  const s = plainObject(spec, path);
  checkKeys(s, path, SPEC_KEYS, 'a task spec field');
  const out: Record<string, unknown> = {
    classification: validateClassification(s.classification, `${path}.classification`),
  };
  if (s.name !== undefined) out.name = string(s.name, `${path}.name`, DEFAULTS.maxNameBytes);
  out.maxAttempts =
    s.maxAttempts === undefined
      ? DEFAULTS.maxAttempts
      : integer(s.maxAttempts, `${path}.maxAttempts`, POSITIVE);
  out.backoff = validateBackoff(s.backoff === undefined ? {} : s.backoff, `${path}.backoff`, true);
  out.priority =
    s.priority === undefined
      ? DEFAULTS.priority
      : integer(s.priority, `${path}.priority`, PRIORITY);
  if (s.scheduledTo !== undefined)
    out.scheduledTo = validateDate(s.scheduledTo, `${path}.scheduledTo`);
  if (s.lock !== undefined) out.lock = nonEmptyString(s.lock, `${path}.lock`, DEFAULTS.maxKeyBytes);
  if (s.timeoutMs !== undefined)
    out.timeoutMs = integer(s.timeoutMs, `${path}.timeoutMs`, POSITIVE);
  if (s.dependencies !== undefined) {
    out.dependencies = stringArray(s.dependencies, `${path}.dependencies`);
  }
  if (s.atomicity !== undefined) {
    out.atomicity = oneOf(s.atomicity, `${path}.atomicity`, Object.values(TaskType));
  }
  if (s.steps !== undefined) {
    if (!Array.isArray(s.steps)) {
      throw typeError(`${path}.steps must be an array of step objects (got ${typeName(s.steps)})`);
    }
    out.steps = s.steps.map((step, i) =>
      validateStep(step, `${path}.steps[${i}]`, maxPayloadBytes),
    );
  }
  const stepCount = Array.isArray(s.steps) ? s.steps.length : 0;
  if (out.atomicity === TaskType.COMPOSITE) {
    if (stepCount === 0) {
      throw rangeError(
        `${path}.steps must hold at least one step when ${path}.atomicity is 'composite'`,
      );
    }
  } else if (stepCount > 0) {
    throw rangeError(`${path}.steps are only allowed when ${path}.atomicity is 'composite'`);
  }
  const rest = JSON.stringify(out);
  if (s.input === undefined) return { json: rest, fields: out, input: null };
  const input = serializePayload(s.input, inputPath, maxPayloadBytes);
  // `rest` is a non-empty object: splice the already serialized input in front of its fields.
  return { json: `{"input":${input},${rest.slice(1)}`, fields: out, input: s.input };
}

/** Validates the argument of `pushMany` and returns the JSON array the engine takes. */
export function prepareSpecs(
  specs: unknown,
  maxPayloadBytes: number,
): { json: string; prepared: PreparedSpec[] } {
  if (!Array.isArray(specs))
    throw typeError(`specs must be an array of task specs (got ${typeName(specs)})`);
  const prepared = new Array<PreparedSpec>(specs.length);
  const parts = new Array<string>(specs.length);
  for (let i = 0; i < specs.length; i++) {
    const p = prepareSpec(specs[i], `specs[${i}]`, `specs[${i}].input`, maxPayloadBytes);
    prepared[i] = p;
    parts[i] = p.json;
  }
  return { json: `[${parts.join(',')}]`, prepared };
}

// ---------------------------------------------------------------------------------------------
// Other arguments

const LIST_KEYS: readonly (keyof ListFilter)[] = ['status', 'classification', 'limit', 'offset'];

/** Validates the filter of `list()` and returns its JSON. */
export function prepareListFilter(filter: unknown): string {
  if (filter === undefined) return '{}';
  const f = plainObject(filter, 'filter');
  checkKeys(f, 'filter', LIST_KEYS, 'a list filter field');
  const out: ListFilter = {};
  if (f.status !== undefined)
    out.status = oneOf(f.status, 'filter.status', Object.values(TaskStatus));
  if (f.classification !== undefined) {
    out.classification = validateClassification(f.classification, 'filter.classification');
  }
  if (f.limit !== undefined) out.limit = integer(f.limit, 'filter.limit', POSITIVE);
  if (f.offset !== undefined) out.offset = integer(f.offset, 'filter.offset', NON_NEGATIVE);
  return JSON.stringify(out);
}

/** Validates a task id argument. */
export function validateTaskId(id: unknown, path = 'id'): string {
  return nonEmptyString(id, path);
}

/** Validates an optional reason argument (string, or an Error whose message is used). */
export function validateReason(reason: unknown, path = 'reason'): string | undefined {
  if (reason === undefined || reason === null) return undefined;
  if (reason instanceof Error) return reason.message;
  return string(reason, path);
}

/** Validates `shutdown(options)` and returns the timeout to use. */
export function validateShutdownOptions(options: unknown, defaultTimeoutMs: number): number {
  if (options === undefined) return defaultTimeoutMs;
  const o = plainObject(options, 'options');
  checkKeys(o, 'options', ['timeoutMs'], 'a shutdown option');
  if (o.timeoutMs === undefined) return defaultTimeoutMs;
  return integer(o.timeoutMs, 'options.timeoutMs', NON_NEGATIVE_MS);
}

/** A handler with its `this`, ready to call. */
export interface NormalizedHandler {
  readonly run: (input: unknown, ctx: HandlerContext) => unknown;
  readonly catch: ((input: unknown, error: unknown, ctx: HandlerContext) => unknown) | undefined;
  /** `this` of the calls (the handler object, or undefined for a function). */
  readonly self: unknown;
}

/** Validates the arguments of `register()`. */
export function validateRegistration(
  classification: unknown,
  handler: unknown,
): { classification: string; handler: NormalizedHandler } {
  const name = validateClassification(classification, 'classification');
  if (name.startsWith(NATIVE_CLASSIFICATION_PREFIX)) {
    throw new TaskValidationError(
      `classification '${name}' is reserved: names starting with '${NATIVE_CLASSIFICATION_PREFIX}' belong to native (Rust) handlers`,
    );
  }
  if (typeof handler === 'function') {
    return {
      classification: name,
      handler: { run: handler as Handler, catch: undefined, self: undefined },
    };
  }
  if (typeof handler !== 'object' || handler === null) {
    throw typeError(
      `handler must be a function (input, ctx) => output or an object with a run(input, ctx) method (got ${typeName(handler)})`,
    );
  }
  const obj = handler as Partial<HandlerObject>;
  if (typeof obj.run !== 'function') {
    throw typeError(`handler.run must be a function (got ${typeName(obj.run)})`);
  }
  if (obj.catch !== undefined && typeof obj.catch !== 'function') {
    throw typeError(`handler.catch must be a function (got ${typeName(obj.catch)})`);
  }
  return {
    classification: name,
    handler: {
      run: obj.run as NormalizedHandler['run'],
      catch: obj.catch as NormalizedHandler['catch'],
      self: handler,
    },
  };
}

/** Checks `data` is JSON for `ctx.progress` (throws {@link TaskInputError} naming the path). */
export function assertProgressData(data: unknown): void {
  assertJson(data, 'data', 'progress data');
}
