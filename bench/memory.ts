import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { rssMb } from './service';

/** MemAvailable of the host, in MB. */
export function hostAvailableMb(): number {
  const match = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return match ? Number(match[1]) / 1024 : NaN;
}

/** Memory charged to one container's cgroup (v1 or v2), in MB: usage and the anonymous (RSS) part. */
export function containerMemoryMb(id: string): { usage: number; anon: number } | null {
  const candidates = [`/sys/fs/cgroup/memory/docker/${id}`, `/sys/fs/cgroup/docker/${id}`, `/sys/fs/cgroup/system.slice/docker-${id}.scope`];
  for (const dir of candidates) {
    if (!existsSync(dir)) continue;
    const v1 = existsSync(`${dir}/memory.usage_in_bytes`);
    const usage = Number(readFileSync(`${dir}/${v1 ? 'memory.usage_in_bytes' : 'memory.current'}`, 'utf8'));
    const stat = readFileSync(`${dir}/memory.stat`, 'utf8');
    const anon = Number((v1 ? /^total_rss (\d+)/m : /^anon (\d+)/m).exec(stat)?.[1] ?? NaN);
    return { usage: usage / 1048576, anon: anon / 1048576 };
  }
  return null;
}

/** RSS of the containerd shim process of each given container, in MB (the per-container runtime cost). */
export function shimRssMb(ids: string[]): number[] {
  const wanted = new Set(ids);
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (!args[0]?.includes('containerd-shim')) continue;
      const at = args.indexOf('-id');
      if (at >= 0 && wanted.has(args[at + 1])) found.push(rssMb(Number(entry)));
    } catch {
      // the process ended meanwhile
    }
  }
  return found;
}

/** Samples a process's RSS every 100 ms and keeps the figures per named phase. */
export class RssSampler {
  private phase: string | null = null;
  private readonly figures = new Map<string, number[]>();
  private timer: NodeJS.Timeout | undefined;

  start(pid: () => number): void {
    this.timer = setInterval(() => {
      if (this.phase === null) return;
      const value = rssMb(pid());
      if (!Number.isFinite(value)) return;
      const list = this.figures.get(this.phase) ?? [];
      list.push(value);
      this.figures.set(this.phase, list);
    }, 100);
    this.timer.unref();
  }

  set(phase: string | null): void {
    this.phase = phase;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  report(): Record<string, { samples: number; meanMb: number; maxMb: number }> {
    const out: Record<string, { samples: number; meanMb: number; maxMb: number }> = {};
    for (const [phase, list] of this.figures) {
      out[phase] = {
        samples: list.length,
        meanMb: Number((list.reduce((a, b) => a + b, 0) / list.length).toFixed(1)),
        maxMb: Number(Math.max(...list).toFixed(1)),
      };
    }
    return out;
  }
}
