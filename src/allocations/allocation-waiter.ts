import { Injectable, OnModuleInit } from '@nestjs/common';
import { QueueProducer } from '../queues/queue.producer';

/**
 * Wakes the requests waiting on allocate jobs as soon as Bull reports a job finished (global events
 * over Redis pub/sub). A wake-up is only a hint to read the row again; waiters also re-read it on a
 * short interval, so a lost message costs latency, never a wrong answer.
 */
@Injectable()
export class AllocationWaiter implements OnModuleInit {
  private readonly waiting = new Map<string, Set<() => void>>();

  constructor(private readonly queues: QueueProducer) {}

  onModuleInit(): void {
    const wake = (jobId: string) => {
      const waiters = this.waiting.get(String(jobId));
      if (!waiters) return;
      this.waiting.delete(String(jobId));
      for (const resolve of waiters) resolve();
    };
    void this.queues.high.on('global:completed', wake);
    void this.queues.high.on('global:failed', wake);
  }

  /** Resolves when the job finishes or after `ms`, whichever comes first. */
  wait(jobId: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let waiters = this.waiting.get(jobId);
      if (!waiters) {
        waiters = new Set();
        this.waiting.set(jobId, waiters);
      }
      const done = () => {
        clearTimeout(timer);
        this.waiting.get(jobId)?.delete(done);
        if (this.waiting.get(jobId)?.size === 0) this.waiting.delete(jobId);
        resolve();
      };
      const timer = setTimeout(done, ms);
      waiters.add(done);
    });
  }
}
