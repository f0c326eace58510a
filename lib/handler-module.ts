/**
 * Handler modules: the files a worker pool loads. A module exports (as its default export,
 * or as `module.exports`) an object mapping classification → handler.
 */

import { pathToFileURL } from 'node:url';
import { HandlerModuleError } from './errors';
import type { HandlerMap } from './types';
import { type NormalizedHandler, validateRegistration } from './validate';

/**
 * Types a handler module's export. Returns its argument unchanged.
 *
 * @example
 * ```ts
 * // handlers.ts, compiled to handlers.js and listed in workerPool.modules
 * import { defineHandlers } from 'decaf-tasks';
 * export default defineHandlers({
 *   resize: async (input: { url: string }, ctx) => { ctx.logger.info('resizing'); return { ok: true }; },
 * });
 * ```
 */
export function defineHandlers<M extends HandlerMap>(handlers: M): M {
  return handlers;
}

async function importModule(path: string): Promise<unknown> {
  try {
    return require(path);
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'ERR_REQUIRE_ESM') throw err;
    return import(pathToFileURL(path).href);
  }
}

/** Loads `paths` (absolute) and returns their handlers; the first problem throws. */
export async function loadHandlerModules(
  paths: readonly string[],
): Promise<Map<string, NormalizedHandler>> {
  const handlers = new Map<string, NormalizedHandler>();
  for (const path of paths) {
    let loaded: unknown;
    try {
      loaded = await importModule(path);
    } catch (err) {
      throw new HandlerModuleError(
        path,
        `threw while loading: ${(err as Error)?.message ?? String(err)}`,
        { cause: err },
      );
    }
    let map = loaded as Record<string, unknown> | null;
    if (map !== null && typeof map === 'object' && 'default' in map && map.default !== undefined) {
      map = map.default as Record<string, unknown> | null;
    }
    if (map === null || typeof map !== 'object' || Array.isArray(map)) {
      throw new HandlerModuleError(
        path,
        'must export an object mapping classification → handler (default export or module.exports)',
      );
    }
    for (const [classification, handler] of Object.entries(map)) {
      if (classification === '__esModule') continue;
      if (handlers.has(classification)) {
        throw new HandlerModuleError(path, `classification '${classification}' is defined twice`);
      }
      try {
        handlers.set(classification, validateRegistration(classification, handler).handler);
      } catch (err) {
        throw new HandlerModuleError(path, (err as Error).message, { cause: err });
      }
    }
  }
  if (handlers.size === 0) {
    throw new HandlerModuleError(paths.join(', '), 'no handler is exported');
  }
  return handlers;
}
