/** Longest delay a timer accepts is 2^31 - 1 ms; the keep-alive only needs to exist. */
const FOREVER_MS = 2 ** 30;

function noop(): void {}

/**
 * Keeps the Node process alive while a service has unfinished tasks.
 *
 * The addon's callbacks are weak: they never keep the event loop alive on their own. The
 * service acquires this right after a push and releases it only from its event drain, once
 * the engine reports no active task, so the last status event is always delivered before
 * Node may exit. An idle service holds nothing; a disposed one never holds anything again.
 */
export class KeepAlive {
  #timer: NodeJS.Timeout | undefined;
  #disposed = false;

  /** Whether the process is currently kept alive. */
  get held(): boolean {
    return this.#timer !== undefined;
  }

  /** Keeps the process alive (no-op when held or disposed). */
  acquire(): void {
    if (this.#timer !== undefined || this.#disposed) return;
    this.#timer = setInterval(noop, FOREVER_MS);
  }

  /** Lets the process exit again. */
  release(): void {
    if (this.#timer === undefined) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Releases for good: later `acquire()` calls do nothing. */
  dispose(): void {
    this.#disposed = true;
    this.release();
  }
}
