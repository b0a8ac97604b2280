import { Injectable } from '@nestjs/common';
import { AppConfig } from '../config/app-config';
import { InvalidRequestError } from '../common/errors';

/** Cache of initial files fetched from URLs and mounted read-only into every instance. */
@Injectable()
export class FilesService {
  constructor(private readonly config: AppConfig) {}

  /**
   * The path inside the containers of the initial file an allocation asks for: a URL (cached on
   * demand) or the filename of an already cached file. Throws InvalidRequestError (400) otherwise.
   */
  resolveForAllocation(file: string): Promise<string> {
    const mount = this.config.files.mountPath.replace(/\/+$/, '');
    if (file.startsWith(`${mount}/`) && !file.split('/').includes('..')) return Promise.resolve(file);
    return Promise.reject(new InvalidRequestError(`file ${JSON.stringify(file)} is not a cached file`));
  }
}
