import { readFileSync, readdirSync } from 'node:fs';

/** CPU time (ms) of every process, grouped: the service, the bench, Postgres, Redis, the engine (dockerd, containerd, shims and the runc they reap). */
export type CpuSnapshot = Map<string, number>;

const TICK_MS = 10; // USER_HZ is 100 on Linux

function group(comm: string, pid: number, servicePid: number): string {
  if (pid === servicePid) return 'service';
  if (pid === process.pid) return 'bench client';
  if (comm === 'postgres') return 'postgres';
  if (comm.startsWith('redis')) return 'redis';
  if (comm === 'dockerd' || comm.startsWith('containerd') || comm === 'runc') return 'engine';
  if (comm === 'ptdemo') return 'apps';
  if (comm.startsWith('kworker') || comm.startsWith('ksoftirq') || comm.startsWith('rcu')) return 'kernel threads';
  return comm;
}

/** Sums utime + stime (and cutime + cstime: children reaped, such as runc) per group. */
export function cpuSnapshot(servicePid: number): CpuSnapshot {
  const totals: CpuSnapshot = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, so index 11.
    const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
    const name = group(comm, Number(entry), servicePid);
    totals.set(name, (totals.get(name) ?? 0) + ticks * TICK_MS);
  }
  return totals;
}

/** Accumulates CPU deltas per group over the spans measured with `span`. */
export class CpuAccount {
  private readonly totals = new Map<string, number>();
  spans = 0;

  async span<T>(servicePid: number, run: () => Promise<T>): Promise<T> {
    const before = cpuSnapshot(servicePid);
    const result = await run();
    const after = cpuSnapshot(servicePid);
    for (const [name, value] of after) {
      const delta = value - (before.get(name) ?? 0);
      // A process that ended within the span (its time moved to its parent's cutime) gives nothing back.
      if (delta > 0) this.totals.set(name, (this.totals.get(name) ?? 0) + delta);
    }
    this.spans += 1;
    return result;
  }

  /** CPU ms per operation, per group. */
  perOperation(operations: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, value] of [...this.totals].sort((a, b) => b[1] - a[1])) {
      const perOp = value / Math.max(1, operations);
      if (perOp >= 0.05) out[name] = Number(perOp.toFixed(2));
    }
    return out;
  }
}
