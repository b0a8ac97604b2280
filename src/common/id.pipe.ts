import { ArgumentMetadata, Injectable, PipeTransform } from '@nestjs/common';
import { InvalidRequestError } from './errors';

/** Path ids are positive integers; anything else is a 400 that names the parameter. */
@Injectable()
export class IdPipe implements PipeTransform<string, number> {
  transform(value: string, metadata: ArgumentMetadata): number {
    const name = metadata.data ?? 'id';
    if (!/^\d{1,9}$/.test(value) || Number(value) < 1) {
      throw new InvalidRequestError(`${name} must be a positive integer (got ${JSON.stringify(value).slice(0, 40)})`);
    }
    return Number(value);
  }
}
