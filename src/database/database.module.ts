import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AppConfig } from '../config/app-config';
import { dataSourceOptions } from './data-source-options';

@Module({
  imports: [
    TypeOrmModule.forRootAsync({
      inject: [AppConfig],
      useFactory: (config: AppConfig) => ({
        ...dataSourceOptions(config.databaseUrl),
        // Keep trying at start-up (Postgres may still be starting); the pool reconnects after restarts.
        retryAttempts: 30,
        retryDelay: 1000,
      }),
    }),
  ],
})
export class DatabaseModule {}
