import { TASK_EVENT_TABLE } from './constants';
import type {
  BusContext,
  ObserverFilter,
  TaskEvent,
  TaskEventObserver,
  TaskEventSource,
} from './types';

/**
 * The observer API of a TaskService, shaped like decaf's `TaskEventBus` so that code written
 * against it (a decaf `TaskTracker`, for one) works unchanged: for every event, in engine order,
 * each observer's `filter('task_event', classification, eventId, ctx)` is asked (a throwing
 * filter counts as `false`), then `observer.refresh(event, ctx)` is called. A throwing or
 * rejecting observer is reported through `ctx.logger.error` and never stops the others.
 */
export class TaskEventBus implements TaskEventSource {
  readonly #observers = new Map<TaskEventObserver, ObserverFilter | undefined>();
  /** Observers of one task each (trackers): found by task id, not by asking every filter. */
  readonly #byTask = new Map<string, Set<TaskEventObserver>>();
  #taskObservers = 0;
  readonly #ctx: BusContext;

  /** @param ctx passed to every filter and `refresh` call (its `logger` reports failures) */
  constructor(ctx: BusContext) {
    this.#ctx = ctx;
  }

  /** How many observers are registered. */
  count(): number {
    return this.#observers.size + this.#taskObservers;
  }

  /**
   * Registers `observer` (optionally only for the events `filter` accepts).
   * @returns a function that unregisters it
   * @throws TypeError when `observer` has no `refresh` method or is already registered
   */
  observe(observer: TaskEventObserver, filter?: ObserverFilter): () => void {
    if (typeof observer?.refresh !== 'function') {
      throw new TypeError('observer must be an object with a refresh(event, ctx) method');
    }
    if (filter !== undefined && typeof filter !== 'function') {
      throw new TypeError('filter must be a function (table, event, id) => boolean');
    }
    if (this.#observers.has(observer)) throw new TypeError('observer is already registered');
    this.#observers.set(observer, filter);
    return () => this.unObserve(observer);
  }

  /** Unregisters `observer` (no-op when it is not registered). */
  unObserve(observer: TaskEventObserver): void {
    this.#observers.delete(observer);
  }

  /**
   * Registers `observer` for the events of one task only. Same as `observe` with a filter
   * accepting the ids starting with `"<taskId>:"`, but costs nothing to the other events.
   * @returns a function that unregisters it
   */
  observeTask(taskId: string, observer: TaskEventObserver): () => void {
    let set = this.#byTask.get(taskId);
    if (set === undefined) {
      set = new Set();
      this.#byTask.set(taskId, set);
    }
    if (!set.has(observer)) {
      set.add(observer);
      this.#taskObservers++;
    }
    const observers = set;
    return () => {
      if (!observers.delete(observer)) return;
      this.#taskObservers--;
      if (observers.size === 0 && this.#byTask.get(taskId) === observers)
        this.#byTask.delete(taskId);
    };
  }

  /** Delivers one event to every accepting observer. */
  dispatch(event: TaskEvent): void {
    if (this.#taskObservers !== 0) {
      const forTask = this.#byTask.get(event.taskId);
      if (forTask !== undefined) for (const observer of forTask) this.#refresh(observer, event);
    }
    if (this.#observers.size === 0) return;
    const ctx = this.#ctx;
    // Map iteration visits observers added meanwhile and skips those removed meanwhile.
    for (const [observer, filter] of this.#observers) {
      if (filter !== undefined) {
        let accepted: boolean;
        try {
          accepted = filter(TASK_EVENT_TABLE, event.classification, event.id, ctx);
        } catch (err) {
          ctx.logger.error(
            `observer filter threw for event ${event.id}; skipping the observer`,
            err,
          );
          continue;
        }
        if (!accepted) continue;
      }
      this.#refresh(observer, event);
    }
  }

  #refresh(observer: TaskEventObserver, event: TaskEvent): void {
    const ctx = this.#ctx;
    try {
      const result = observer.refresh(event, ctx);
      if (result !== undefined && typeof (result as Promise<void>).then === 'function') {
        (result as Promise<void>).then(undefined, (err: unknown) =>
          ctx.logger.error(`observer refresh rejected for event ${event.id}`, err),
        );
      }
    } catch (err) {
      ctx.logger.error(`observer refresh threw for event ${event.id}`, err);
    }
  }
}
