import { DynamicModule, Module } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import { AppConfig } from './config/app-config';
import { ConfigModule } from './config/config.module';
import { ContainerDriverModule } from './container-driver/container-driver.module';
import { DatabaseModule } from './database/database.module';
import { HealthModule } from './health/health.module';
import { QueuesModule } from './queues/queues.module';
import { ApiModule } from './api.module';
import { WorkerModule } from './worker.module';

/**
 * One codebase, two roles: `api` serves HTTP and only writes rows and enqueues jobs; `worker` runs
 * the queue processors and the monitor, the only code that reaches Docker; `all` is both.
 */
@Module({})
export class AppModule {
  static forRole(config: AppConfig): DynamicModule {
    const serveApi = config.role !== 'worker';
    const runWorker = config.role !== 'api';
    return {
      module: AppModule,
      imports: [
        ConfigModule.forRoot(config),
        DatabaseModule,
        QueuesModule,
        ContainerDriverModule,
        HealthModule,
        ...(serveApi ? [ApiModule] : []),
        ...(runWorker ? [ScheduleModule.forRoot(), WorkerModule] : []),
      ],
    };
  }
}
