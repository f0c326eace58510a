import { TaskInputError, TaskPayloadTooLargeError, type TaskValidationError } from './errors';
import type { JsonValue } from './types';

/** Builds the error thrown by {@link assertJson}. */
export type JsonErrorFactory = (message: string) => TaskValidationError;

const inputError: JsonErrorFactory = (message) => new TaskInputError(message);

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

function formatPath(root: string, keys: readonly (string | number)[]): string {
  let out = root;
  for (const key of keys) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (IDENTIFIER.test(key)) out += `.${key}`;
    else out += `[${JSON.stringify(key)}]`;
  }
  return out;
}

/** Why `value` is not JSON, or `undefined` when it is a JSON scalar / plain container. */
function describeNonJson(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      return Number.isFinite(value) ? undefined : `is ${String(value)}`;
    case 'undefined':
      return 'is undefined (use null, or leave the key out)';
    case 'function':
      return 'is a function';
    case 'symbol':
      return 'is a symbol';
    case 'bigint':
      return 'is a BigInt (use a string or a number)';
    default: {
      if (value === null || Array.isArray(value)) return undefined;
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto === Object.prototype || proto === null) return undefined;
      if (value instanceof Date) return 'is a Date (use an ISO string: date.toISOString())';
      const ctor = (value as { constructor?: { name?: unknown } }).constructor;
      const name =
        typeof ctor?.name === 'string' && ctor.name !== '' ? ctor.name : 'non-plain object';
      if (value instanceof Map || value instanceof Set)
        return `is a ${name} (use an object or an array)`;
      return `is a ${name} instance (only plain objects, arrays, strings, finite numbers, booleans and null are JSON)`;
    }
  }
}

/**
 * Throws unless `value` is strictly JSON: plain objects, arrays, strings, finite numbers,
 * booleans and null. Refuses functions, symbols, BigInt, `undefined` (anywhere, including
 * object properties and array holes), NaN/Infinity, cycles, Dates, Maps, Sets and class
 * instances, with a message naming the path, e.g.
 * `"input.items[2].fn is a function; task input must be JSON"`.
 *
 * @param value the value to check
 * @param root the name of the value in messages (`'input'`, `'specs[3].input'`, ...)
 * @param what what must be JSON, for messages (`'task input'`, `'progress data'`, ...)
 * @param makeError builds the thrown error (default: {@link TaskInputError})
 */
export function assertJson(
  value: unknown,
  root: string,
  what = 'task input',
  makeError: JsonErrorFactory = inputError,
): asserts value is JsonValue {
  const problem = findNonJson(value);
  if (problem !== undefined) {
    throw makeError(`${formatPath(root, problem.path)} ${problem.reason}; ${what} must be JSON`);
  }
}

/** Whether `value` is strictly JSON (see {@link assertJson}). */
export function isJson(value: unknown): value is JsonValue {
  return findNonJson(value) === undefined;
}

interface NonJson {
  path: (string | number)[];
  reason: string;
}

function findNonJson(value: unknown): NonJson | undefined {
  // Fast path for scalars, the most common inputs and outputs.
  if (typeof value !== 'object' || value === null) {
    const reason = describeNonJson(value);
    return reason === undefined ? undefined : { path: [], reason };
  }
  const path: (string | number)[] = [];
  const ancestors = new Set<object>();
  const reason = walk(value, path, ancestors);
  return reason === undefined ? undefined : { path, reason };
}

/**
 * Deepest nesting accepted: the engine's JSON parser stops at 128 levels, and payloads are
 * wrapped in a few levels of their own on the way.
 */
export const MAX_JSON_DEPTH = 100;

/** Depth-first walk; on failure `path` holds the keys down to the offending value. */
function walk(
  value: unknown,
  path: (string | number)[],
  ancestors: Set<object>,
): string | undefined {
  const reason = describeNonJson(value);
  if (reason !== undefined) return reason;
  if (typeof value !== 'object' || value === null) return undefined;
  if (ancestors.has(value)) return 'is a circular reference';
  if (path.length >= MAX_JSON_DEPTH) return `nests more than ${MAX_JSON_DEPTH} levels deep`;
  ancestors.add(value);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      path.push(i);
      const inner = walk(value[i], path, ancestors);
      if (inner !== undefined) return inner;
      path.pop();
    }
  } else {
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      path.push(key);
      const inner = walk(record[key], path, ancestors);
      if (inner !== undefined) return inner;
      path.pop();
    }
  }
  ancestors.delete(value);
  return undefined;
}

/** Size in bytes of `json` encoded as UTF-8, computed only when it might exceed `limit`. */
function exceeds(json: string, limit: number): number | undefined {
  // A UTF-16 code unit is at most 3 UTF-8 bytes: short strings need no exact count.
  if (json.length * 3 <= limit) return undefined;
  const size = Buffer.byteLength(json, 'utf8');
  return size > limit ? size : undefined;
}

/**
 * Checks that `value` is JSON ({@link assertJson}) and not larger than `limit` bytes once
 * serialized; returns the JSON text.
 */
export function serializePayload(
  value: unknown,
  root: string,
  limit: number,
  what = 'task input',
): string {
  assertJson(value, root, what);
  const json = JSON.stringify(value);
  const size = exceeds(json, limit);
  if (size !== undefined) {
    throw new TaskPayloadTooLargeError(
      `${root} is ${size} bytes once serialized, more than options.maxPayloadBytes (${limit})`,
      size,
      limit,
    );
  }
  return json;
}

function plainReplacer(_key: string, val: unknown): unknown {
  if (typeof val === 'bigint') return val.toString();
  if (val instanceof Error) {
    const code = (val as { code?: unknown }).code;
    return { name: val.name, message: val.message, stack: val.stack, code };
  }
  return val;
}

/**
 * `JSON.stringify` that never throws: cycles become `"[Circular]"`, BigInt a string,
 * Errors `{ name, message, stack, code }`. For log metadata, never for task data.
 */
export function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value, plainReplacer) ?? 'null';
  } catch {
    const seen = new WeakSet<object>();
    const replacer = (key: string, val: unknown): unknown => {
      const plain = plainReplacer(key, val);
      if (typeof plain === 'object' && plain !== null) {
        if (seen.has(plain)) return '[Circular]';
        seen.add(plain);
      }
      return plain;
    };
    try {
      return JSON.stringify(value, replacer) ?? 'null';
    } catch (err) {
      return JSON.stringify(`[unserializable: ${(err as Error).message}]`);
    }
  }
}
