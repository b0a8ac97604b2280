import { Injectable, Logger } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { ContainerDriver, HostUsage } from '../container-driver/container-driver';

const CACHE_MS = 1000;

/**
 * Measures memory and CPU use on each Docker host (worker side) and records it in host_status, where
 * the API reads it to refuse creations early; creation jobs re-check a fresh figure before creating.
 */
@Injectable()
export class HostUsageService {
  private readonly logger = new Logger(HostUsageService.name);
  private readonly cache = new Map<string, { at: number; usage: Promise<HostUsage> }>();

  constructor(
    private readonly config: AppConfig,
    private readonly driver: ContainerDriver,
    private readonly dataSource: DataSource,
  ) {}

  async sample(host: string): Promise<HostUsage> {
    const cached = this.cache.get(host);
    if (cached && Date.now() - cached.at < CACHE_MS) return cached.usage;
    const usage = this.driver.usage(host);
    this.cache.set(host, { at: Date.now(), usage });
    try {
      const figures = await usage;
      await this.record(host, figures, null);
      return figures;
    } catch (error) {
      this.cache.delete(host);
      await this.record(host, null, error instanceof Error ? error.message : String(error)).catch(() => undefined);
      throw error;
    }
  }

  /** Samples every host; failures are recorded, not thrown. */
  async sampleAll(): Promise<void> {
    await Promise.all(this.driver.hostNames().map((host) => this.sample(host).catch(() => undefined)));
  }

  /** Why the host cannot take another instance right now (memory or CPU), or null. */
  async refusal(host: string): Promise<string | null> {
    let usage: HostUsage;
    try {
      usage = await this.sample(host);
    } catch (error) {
      return `cannot measure host ${host}: ${error instanceof Error ? error.message : String(error)}`;
    }
    const limits = this.config.limits;
    if (usage.memoryUsedPercent > limits.maxHostMemoryPercent) {
      return `host memory use ${usage.memoryUsedPercent.toFixed(1)}% on ${host} is above the limit of ${limits.maxHostMemoryPercent}%`;
    }
    if (usage.cpuUsedPercent > limits.maxHostCpuPercent) {
      return `host CPU use ${usage.cpuUsedPercent.toFixed(1)}% on ${host} is above the limit of ${limits.maxHostCpuPercent}%`;
    }
    return null;
  }

  private async record(host: string, usage: HostUsage | null, error: string | null): Promise<void> {
    try {
      await this.dataSource.query(
        `INSERT INTO "host_status" ("name", "reachable", "memory_total_bytes", "memory_used_percent", "cpu_count", "cpu_used_percent", "error", "sampled_at")
         VALUES ($1, $2, $3, $4, $5, $6, $7, now())
         ON CONFLICT ("name") DO UPDATE SET "reachable" = $2, "memory_total_bytes" = $3, "memory_used_percent" = $4,
           "cpu_count" = $5, "cpu_used_percent" = $6, "error" = $7, "sampled_at" = now()`,
        [host, usage !== null, usage?.memoryTotalBytes ?? 0, usage?.memoryUsedPercent ?? 0, usage?.cpuCount ?? 0, usage?.cpuUsedPercent ?? 0, error],
      );
    } catch (failure) {
      this.logger.warn(`could not record usage of ${host}: ${failure instanceof Error ? failure.message : String(failure)}`);
    }
  }
}
