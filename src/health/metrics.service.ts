import { Injectable } from '@nestjs/common';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { DataSource } from 'typeorm';

/** Prometheus metrics: process figures, instances and allocations per state (read from the store at scrape time), hand-out latency. */
@Injectable()
export class MetricsService {
  readonly registry = new Registry();
  readonly allocationSeconds = new Histogram({
    name: 'ptim_allocation_duration_seconds',
    help: 'Time to answer POST /allocations, by outcome',
    labelNames: ['outcome'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly allocationsTotal = new Counter({
    name: 'ptim_allocation_requests_total',
    help: 'POST /allocations answered, by outcome',
    labelNames: ['outcome'],
    registers: [this.registry],
  });

  constructor(dataSource: DataSource) {
    collectDefaultMetrics({ register: this.registry, prefix: 'ptim_' });
    const byState = async (table: 'instance' | 'allocation', gauge: Gauge) => {
      const rows = (await dataSource.query(`SELECT "state", count(*)::int AS "count" FROM "${table}" GROUP BY "state"`)) as {
        state: string;
        count: number;
      }[];
      gauge.reset();
      for (const row of rows) gauge.set({ state: row.state }, row.count);
    };
    new Gauge({
      name: 'ptim_instances',
      help: 'Instances per state',
      labelNames: ['state'],
      registers: [this.registry],
      async collect() {
        await byState('instance', this);
      },
    });
    new Gauge({
      name: 'ptim_allocations',
      help: 'Allocations per state',
      labelNames: ['state'],
      registers: [this.registry],
      async collect() {
        await byState('allocation', this);
      },
    });
  }

  observeAllocation(outcome: string, seconds: number): void {
    this.allocationSeconds.observe({ outcome }, seconds);
    this.allocationsTotal.inc({ outcome });
  }
}
