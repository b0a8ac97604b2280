import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { dataSourceOptions } from '../../src/database/data-source-options';
import { testEnv } from './env';

/** A clean schema for the run: everything dropped, then built by the migrations (never synchronize). */
export default async function globalSetup(): Promise<void> {
  const dataSource = new DataSource(dataSourceOptions(testEnv().DATABASE_URL!));
  await dataSource.initialize();
  await dataSource.query('DROP SCHEMA public CASCADE');
  await dataSource.query('CREATE SCHEMA public');
  await dataSource.runMigrations({ transaction: 'each' });
  await dataSource.destroy();
}
