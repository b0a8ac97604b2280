import { Injectable, OnModuleDestroy } from '@nestjs/common';
import { HealthIndicatorResult, HealthIndicatorService } from '@nestjs/terminus';
import Redis from 'ioredis';
import { DataSource } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { ContainerDriver } from '../container-driver/container-driver';
import { redisOptions } from '../queues/redis-options';

const CHECK_TIMEOUT_MS = 2000;

async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const reason = (error: unknown): string => (error instanceof Error ? error.message : String(error)) || 'unreachable';

@Injectable()
export class PostgresHealthIndicator {
  constructor(
    private readonly dataSource: DataSource,
    private readonly indicators: HealthIndicatorService,
  ) {}

  async check(): Promise<HealthIndicatorResult> {
    const session = this.indicators.check('postgres');
    try {
      await within(this.dataSource.query('SELECT 1'), 'postgres');
      return session.up();
    } catch (error) {
      return session.down({ message: reason(error) });
    }
  }
}

@Injectable()
export class RedisHealthIndicator implements OnModuleDestroy {
  /** Its own connection that never queues commands while down, so the check answers at once. */
  private readonly client: Redis;

  constructor(
    config: AppConfig,
    private readonly indicators: HealthIndicatorService,
  ) {
    this.client = new Redis({
      ...redisOptions(config.redisUrl),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      lazyConnect: true,
    });
    this.client.on('error', () => undefined);
  }

  async onModuleDestroy(): Promise<void> {
    this.client.disconnect();
    await Promise.resolve();
  }

  async check(): Promise<HealthIndicatorResult> {
    const session = this.indicators.check('redis');
    try {
      if (this.client.status === 'wait') await within(this.client.connect(), 'redis');
      await within(this.client.ping(), 'redis');
      return session.up();
    } catch (error) {
      return session.down({ message: reason(error) });
    }
  }
}

@Injectable()
export class DockerHealthIndicator {
  constructor(
    private readonly driver: ContainerDriver,
    private readonly indicators: HealthIndicatorService,
  ) {}

  async check(): Promise<HealthIndicatorResult> {
    const session = this.indicators.check('docker');
    const hosts: Record<string, string> = {};
    let down = false;
    await Promise.all(
      this.driver.hostNames().map(async (host) => {
        try {
          await within(this.driver.ping(host), `docker host ${host}`);
          hosts[host] = 'up';
        } catch (error) {
          hosts[host] = `down: ${reason(error)}`;
          down = true;
        }
      }),
    );
    return down ? session.down({ hosts }) : session.up({ hosts });
  }
}
