/** What a pool worker is started with (`workerData`). */
export interface WorkerSetup {
  engineId: number;
  modules: string[];
  concurrency: number;
  leaseMs: number;
  /** `options.workerPool.workerData`, for the handler modules. */
  userData: unknown;
}

/** What a pool worker tells its pool. */
export type WorkerReport =
  | { type: 'ready'; executorId: number; classifications: string[] }
  | { type: 'load-error'; message: string; module?: string | undefined };
