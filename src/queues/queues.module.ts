import { BullModule } from '@nestjs/bull';
import { Global, Module } from '@nestjs/common';
import { AppConfig } from '../config/app-config';
import { HIGH_QUEUE, NORMAL_QUEUE, QUEUE_SETTINGS } from './queue.constants';
import { QueueProducer } from './queue.producer';
import { redisOptions } from './redis-options';

/** Registers the two Bull queues and the producer every module uses to enqueue work. Processors live in the worker. */
@Global()
@Module({
  imports: [
    BullModule.forRootAsync({
      inject: [AppConfig],
      useFactory: (config: AppConfig) => ({
        redis: redisOptions(config.redisUrl),
        prefix: config.queuePrefix,
        settings: QUEUE_SETTINGS,
      }),
    }),
    BullModule.registerQueue({ name: HIGH_QUEUE }, { name: NORMAL_QUEUE }),
  ],
  providers: [QueueProducer],
  exports: [BullModule, QueueProducer],
})
export class QueuesModule {}
