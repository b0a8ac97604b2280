import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { dataSourceOptions } from './data-source-options';

/** The DataSource used by the TypeORM CLI (`npm run migration:run|revert|generate`). */
const url = process.env.DATABASE_URL;
if (!url) {
  process.stderr.write('DATABASE_URL is required: a URL with scheme postgres or postgresql\n');
  process.exit(1);
}
export default new DataSource(dataSourceOptions(url));
