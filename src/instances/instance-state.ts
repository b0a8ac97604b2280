export const INSTANCE_STATES = [
  'creating',
  'starting',
  'idle',
  'allocated',
  'releasing',
  'error',
  'deleting',
  'deleted',
] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

/** States in which the instance owns a container (or is about to). */
export const LIVE_INSTANCE_STATES: readonly InstanceState[] = ['creating', 'starting', 'idle', 'allocated', 'releasing', 'error', 'deleting'];
/** States that stop being true by themselves after a bounded time. */
export const TRANSITIONAL_INSTANCE_STATES: readonly InstanceState[] = ['creating', 'starting', 'releasing', 'deleting'];
