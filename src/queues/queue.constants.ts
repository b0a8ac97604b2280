import { JobOptions } from 'bull';

/** Allocations and releases: what a waiting user feels. */
export const HIGH_QUEUE = 'high';
/** Creation, deletion, readiness, restarts and pool top-ups. */
export const NORMAL_QUEUE = 'normal';

export const HighJob = {
  Allocate: 'allocate',
  Deallocate: 'deallocate',
} as const;
export type HighJobName = (typeof HighJob)[keyof typeof HighJob];

export const NormalJob = {
  Create: 'create',
  Delete: 'delete',
  WaitReady: 'wait-ready',
  Restart: 'restart',
  Replenish: 'replenish',
  Monitor: 'monitor',
} as const;
export type NormalJobName = (typeof NormalJob)[keyof typeof NormalJob];

/** Every job names the row it moves forward; the row, not the job, is the truth. */
export interface AllocateJob {
  allocationId: number;
  /** The idle instance the allocation already holds (claimed with the row), so the worker reads nothing first. */
  instance?: { id: number; host: string; dockerId: string | null; ports: Record<string, number>; hot: boolean };
  /** The allocation's file (with `instance`). */
  fileUrl?: string | null;
}
export interface DeallocateJob {
  instanceId: number;
  /** The instance as the statement that moved it to releasing returned it; only for a run in that same process. */
  justReleased?: { host: string; dockerId: string | null; ports: Record<string, number> };
}
export interface InstanceJob {
  instanceId: number;
}
export type ReplenishJob = Record<string, never>;

/**
 * Deterministic job ids: the same request for the same row is never queued twice while one is
 * waiting, and a job re-run after a stall finds the row already moved and does nothing.
 */
export const jobId = {
  allocate: (allocationId: number) => `allocate-${allocationId}`,
  deallocate: (instanceId: number, allocationCount: number) => `deallocate-${instanceId}-${allocationCount}`,
  create: (instanceId: number) => `create-${instanceId}`,
  delete: (instanceId: number) => `delete-${instanceId}`,
  waitReady: (instanceId: number, restartCount: number) => `wait-ready-${instanceId}-${restartCount}`,
  restart: (instanceId: number, restartCount: number) => `restart-${instanceId}-${restartCount}`,
  replenish: () => 'replenish',
  monitor: () => `monitor-${Date.now()}`,
};

const BASE: JobOptions = {
  removeOnComplete: true,
  // A kept failed job would block its id: the monitor's re-queue of the same request would be a no-op.
  // Failures are logged by the processor, and the row keeps the reason.
  removeOnFail: true,
};

export const JOB_OPTIONS = {
  [HighJob.Allocate]: { ...BASE, priority: 1, attempts: 1 },
  [HighJob.Deallocate]: { ...BASE, priority: 2, attempts: 3, backoff: { type: 'exponential', delay: 200 } },
  [NormalJob.Create]: { ...BASE, attempts: 3, backoff: { type: 'exponential', delay: 500 } },
  [NormalJob.Delete]: { ...BASE, attempts: 5, backoff: { type: 'exponential', delay: 500 } },
  [NormalJob.WaitReady]: { ...BASE, attempts: 2, backoff: { type: 'fixed', delay: 500 } },
  [NormalJob.Restart]: { ...BASE, attempts: 1 },
  [NormalJob.Replenish]: { ...BASE, attempts: 1 },
  [NormalJob.Monitor]: { ...BASE, attempts: 1, priority: 1 },
} satisfies Record<HighJobName | NormalJobName, JobOptions>;

/** Bull queue settings: stalled jobs are noticed quickly and re-run (every job is safe to run twice). */
export const QUEUE_SETTINGS = {
  lockDuration: 10000,
  stalledInterval: 5000,
  maxStalledCount: 2,
};

/** How long a job whose worker died or stalled may stay active before Bull notices and runs it again. */
export const STALL_WINDOW_MS = QUEUE_SETTINGS.lockDuration + QUEUE_SETTINGS.stalledInterval;
