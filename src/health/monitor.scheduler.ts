import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { AppConfig } from '../config/app-config';
import { ContainerDriver, EngineEvent, EventSubscription } from '../container-driver/container-driver';
import { LeaderElectionService } from './leader-election.service';
import { MonitorService } from './monitor.service';

const LEASE = 'monitor';
const WATCHED_ACTIONS = new Set(['die', 'oom', 'destroy']);

/**
 * Runs the monitor pass on its interval in the elected worker only, and between passes reacts to the
 * engines' event streams (die, oom, destroy...) with an early pass. A broken stream is reopened with
 * backoff, and every reconnect is followed by a full pass, since events may have been missed.
 */
@Injectable()
export class MonitorScheduler implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(MonitorScheduler.name);
  private readonly subscriptions = new Map<string, EventSubscription>();
  private stopped = false;
  private eventPassTimer: NodeJS.Timeout | null = null;
  private leader = false;

  constructor(
    private readonly config: AppConfig,
    private readonly monitor: MonitorService,
    private readonly election: LeaderElectionService,
    private readonly driver: ContainerDriver,
    private readonly registry: SchedulerRegistry,
  ) {}

  onApplicationBootstrap(): void {
    if (!this.config.monitor.enabled) return;
    const interval = setInterval(() => void this.tick(), this.config.monitor.intervalMs);
    this.registry.addInterval('monitor', interval);
    void this.tick();
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopped = true;
    if (this.eventPassTimer) clearTimeout(this.eventPassTimer);
    for (const subscription of this.subscriptions.values()) subscription.close();
    if (this.leader) await this.election.release(LEASE);
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    this.leader = await this.election.acquire(LEASE, this.config.monitor.leaderLeaseMs);
    if (!this.leader) {
      for (const [host, subscription] of this.subscriptions) {
        subscription.close();
        this.subscriptions.delete(host);
      }
      return;
    }
    for (const host of this.driver.hostNames()) {
      if (!this.subscriptions.has(host)) void this.subscribe(host, 0);
    }
    await this.runPass('interval');
  }

  private async runPass(why: string): Promise<void> {
    try {
      const report = await this.monitor.pass();
      if (report.repairs.length > 0) {
        this.logger.log(`pass (${why}) in ${report.durationMs} ms: ${report.repairs.length} repair(s)`);
      }
    } catch (error) {
      this.logger.warn(`pass (${why}) failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  private async subscribe(host: string, failures: number): Promise<void> {
    if (this.stopped || !this.leader || this.subscriptions.has(host)) return;
    try {
      const subscription = await this.driver.events(
        host,
        (event) => this.onEvent(event),
        (error) => {
          this.subscriptions.delete(host);
          this.logger.warn(`event stream of ${host} broke: ${error.message}; reopening`);
          setTimeout(() => void this.subscribe(host, 1), 500).unref();
        },
      );
      this.subscriptions.set(host, subscription);
      if (failures > 0) {
        this.logger.log(`event stream of ${host} reopened; running a full pass`);
        await this.runPass(`reconnected to ${host}`);
      }
    } catch (error) {
      const delay = Math.min(500 * 2 ** failures, 10000);
      this.logger.warn(`cannot open the event stream of ${host}: ${error instanceof Error ? error.message : String(error)}; retrying in ${delay} ms`);
      setTimeout(() => void this.subscribe(host, failures + 1), delay).unref();
    }
  }

  /** Coalesces a burst of events into one early pass. */
  private onEvent(event: EngineEvent): void {
    if (!WATCHED_ACTIONS.has(event.action) || this.eventPassTimer) return;
    this.eventPassTimer = setTimeout(() => {
      this.eventPassTimer = null;
      void this.runPass(`event ${event.action} on ${event.containerId.slice(0, 12)}`);
    }, 200);
  }
}
