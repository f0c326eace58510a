import { isMainThread, workerData as threadData } from 'node:worker_threads';
import type { WorkerSetup } from './worker-messages';

function poolUserData(): unknown {
  if (isMainThread || threadData === null || typeof threadData !== 'object') return undefined;
  const setup = threadData as Partial<WorkerSetup>;
  return typeof setup.engineId === 'number' && 'userData' in setup ? setup.userData : undefined;
}

/**
 * Inside a pool worker: the `workerPool.workerData` option of the service (structured
 * clone). `undefined` elsewhere.
 */
export const workerData: unknown = poolUserData();
