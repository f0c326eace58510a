const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

/**
 * On SIGINT / SIGTERM: removes its own listeners, runs `shutdown()` (gracefully), then
 * re-raises the signal so the process ends the way it would have without us (or the next
 * listener decides). Signal listeners do not keep the process alive.
 *
 * @returns a function that removes the listeners
 */
export function installAutoShutdown(shutdown: () => Promise<void>): () => void {
  let installed = true;
  const uninstall = (): void => {
    if (!installed) return;
    installed = false;
    for (const signal of SIGNALS) process.removeListener(signal, onSignal);
  };
  function onSignal(signal: NodeJS.Signals): void {
    uninstall();
    const reraise = (): void => {
      process.kill(process.pid, signal);
    };
    shutdown().then(reraise, (err: unknown) => {
      process.emitWarning(
        `decaf-tasks: graceful shutdown on ${signal} failed: ${(err as Error)?.message ?? String(err)}`,
        'DecafTasksWarning',
      );
      reraise();
    });
  }
  for (const signal of SIGNALS) process.on(signal, onSignal);
  return uninstall;
}
