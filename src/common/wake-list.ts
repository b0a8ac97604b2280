/**
 * Waiters that resolve when woken (with the value given, if any) or after their own timeout,
 * whichever comes first: a hint to look again, never the only way to find out.
 */
export class WakeList<T = void> {
  private readonly waiters = new Set<(value?: T) => void>();

  get size(): number {
    return this.waiters.size;
  }

  wait(ms: number): Promise<T | undefined> {
    return new Promise((resolve) => {
      const done = (value?: T) => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve(value);
      };
      const timer = setTimeout(() => done(), ms);
      this.waiters.add(done);
    });
  }

  wake(value?: T): void {
    for (const done of [...this.waiters]) done(value);
  }
}
