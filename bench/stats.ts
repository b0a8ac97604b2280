/** Latency samples and their summary (nearest-rank percentiles, milliseconds). */
export interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

export function summarize(samples: number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((total, value) => total + value, 0);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    mean: sorted.length ? sum / sorted.length : NaN,
  };
}

/** Named series of samples, filled as the run goes. */
export class Samples {
  private readonly series = new Map<string, number[]>();

  add(name: string, ms: number): void {
    const list = this.series.get(name) ?? [];
    list.push(ms);
    this.series.set(name, list);
  }

  get(name: string): number[] {
    return this.series.get(name) ?? [];
  }

  summary(name: string): Summary {
    return summarize(this.get(name));
  }

  names(): string[] {
    return [...this.series.keys()];
  }
}

export const round = (value: number, digits = 1): number => (Number.isFinite(value) ? Number(value.toFixed(digits)) : value);
