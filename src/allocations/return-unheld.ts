import { QueueProducer } from '../queues/queue.producer';
import { AllocationStore } from './allocation.store';

/**
 * An instance left allocated with no holder (its allocation stopped waiting or could not be queued)
 * goes back to the pool through a release; if that cannot be queued now, the monitor finds it.
 */
export async function returnUnheld(store: AllocationStore, queues: QueueProducer, instanceId: number, reason: string): Promise<void> {
  const count = await store.releaseIfUnheld(instanceId, reason);
  if (count !== null) await queues.deallocate({ instanceId }, count).catch(() => undefined);
}
