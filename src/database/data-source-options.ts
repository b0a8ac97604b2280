import { join } from 'node:path';
import { parse } from 'pg-connection-string';
import { DataSourceOptions } from 'typeorm';
import { SnakeNamingStrategy } from './snake-naming.strategy';
import { Allocation } from '../allocations/allocation.entity';
import { CachedFile } from '../files/cached-file.entity';
import { StateChange } from '../history/state-change.entity';
import { Instance } from '../instances/instance.entity';
import { Port } from '../instances/port.entity';
import { HostStatus } from '../instances/host-status.entity';
import { LeaderLease } from '../health/leader-lease.entity';

export const ENTITIES = [Instance, Port, HostStatus, Allocation, CachedFile, StateChange, LeaderLease];

/** One definition shared by the application and the migration CLI; the schema changes only through migrations. */
export function dataSourceOptions(databaseUrl: string): DataSourceOptions {
  // Parsed here rather than by TypeORM so that the URL's parameters are honoured, notably
  // ?host=/var/run/postgresql for the local socket (cheaper than TCP on loopback) and sslmode.
  const url = parse(databaseUrl);
  return {
    type: 'postgres',
    host: url.host ?? undefined,
    port: url.port ? Number(url.port) : undefined,
    username: url.user,
    password: url.password,
    database: url.database ?? undefined,
    ssl: url.ssl === undefined || url.ssl === false ? undefined : (url.ssl as boolean | object),
    entities: ENTITIES,
    migrations: [join(__dirname, '..', '..', 'migrations', '*.{ts,js}')],
    migrationsTableName: 'migrations',
    migrationsTransactionMode: 'each',
    synchronize: false,
    namingStrategy: new SnakeNamingStrategy(),
    extra: {
      max: Number(process.env.DATABASE_POOL_SIZE ?? 20),
      connectionTimeoutMillis: 5000,
      // A statement stuck behind a lock must not hold a request forever.
      statement_timeout: 30000,
      idle_in_transaction_session_timeout: 60000,
      application_name: 'pt-instance-manager',
    },
  };
}
