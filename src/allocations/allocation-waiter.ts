import { Injectable, OnModuleInit } from '@nestjs/common';
import { jobId } from '../queues/queue.constants';
import { QueueProducer } from '../queues/queue.producer';
import { WakeList } from '../common/wake-list';
import type { HandOut } from './allocation.store';

/**
 * Wakes the requests waiting on allocate jobs as soon as Bull reports a job finished (global events
 * over Redis pub/sub). A wake-up is only a hint to read the row again; waiters also re-read it on a
 * short interval, so a lost message costs latency, never a wrong answer.
 */
@Injectable()
export class AllocationWaiter implements OnModuleInit {
  private readonly waiting = new Map<string, WakeList<HandOut>>();

  constructor(private readonly queues: QueueProducer) {}

  onModuleInit(): void {
    void this.queues.high.on('global:completed', (jobId: string) => this.wake(String(jobId)));
    void this.queues.high.on('global:failed', (jobId: string) => this.wake(String(jobId)));
  }

  /**
   * Wakes the waiters of an allocation at once; a worker in the same process calls it as soon as the
   * row is settled, with the active allocation when it has it (the waiter then needs no read).
   */
  settled(allocationId: number, handOut?: HandOut): void {
    this.wake(jobId.allocate(allocationId), handOut);
  }

  private wake(job: string, handOut?: HandOut): void {
    const waiters = this.waiting.get(job);
    if (!waiters) return;
    this.waiting.delete(job);
    waiters.wake(handOut);
  }

  /** Resolves when the job finishes (with the hand-out if a local worker gave it) or after `ms`, whichever comes first. */
  async wait(job: string, ms: number): Promise<HandOut | undefined> {
    let waiters = this.waiting.get(job);
    if (!waiters) {
      waiters = new WakeList<HandOut>();
      this.waiting.set(job, waiters);
    }
    const handOut = await waiters.wait(ms);
    if (waiters.size === 0 && this.waiting.get(job) === waiters) this.waiting.delete(job);
    return handOut;
  }
}
