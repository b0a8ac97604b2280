export const ALLOCATION_STATES = ['pending', 'active', 'ended', 'failed', 'expired'] as const;
export type AllocationState = (typeof ALLOCATION_STATES)[number];
export const OPEN_ALLOCATION_STATES: readonly AllocationState[] = ['pending', 'active'];
export const ALLOCATION_FAILURES = ['capacity', 'engine', 'timeout', 'queue', 'cancelled', 'file'] as const;
export type AllocationFailure = (typeof ALLOCATION_FAILURES)[number];
