import { ArgumentsHost, Catch, ExceptionFilter, HttpException, HttpStatus, Logger } from '@nestjs/common';
import { Response } from 'express';
import { DomainError, ServiceUnavailableError } from './errors';

interface HttpErrorBody {
  message?: string | string[];
  error?: string;
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', '57P01', '57P02', '57P03', '08000', '08003', '08006']);

/** A lost or refused database connection: a transient 503, not a bug. */
function isStateStoreUnavailable(exception: unknown): boolean {
  if (!(exception instanceof Error)) return false;
  const code = (exception as { code?: string }).code ?? (exception as { driverError?: { code?: string } }).driverError?.code;
  return (
    (code !== undefined && CONNECTION_CODES.has(code)) ||
    /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(exception.message)
  );
}

/** Every error leaves as JSON {status, message}; internals are logged, not shown. */
@Catch()
export class HttpExceptionFilter implements ExceptionFilter {
  private readonly logger = new Logger(HttpExceptionFilter.name);

  catch(exception: unknown, host: ArgumentsHost): void {
    const response = host.switchToHttp().getResponse<Response>();
    let status: number = HttpStatus.INTERNAL_SERVER_ERROR;
    let message = 'internal error';
    if (exception instanceof DomainError) {
      status = exception.status;
      message = exception.message;
      if (exception instanceof ServiceUnavailableError) {
        response.setHeader('Retry-After', String(exception.retryAfterSeconds));
      }
      if (status >= 500) this.logger.warn(`${exception.name}: ${exception.message}`);
    } else if (exception instanceof HttpException) {
      status = exception.getStatus();
      const body = exception.getResponse();
      if (typeof body === 'string') {
        message = body;
      } else {
        const fields = body as HttpErrorBody;
        message = Array.isArray(fields.message) ? fields.message.join('; ') : (fields.message ?? exception.message);
      }
    } else if (isStateStoreUnavailable(exception)) {
      status = HttpStatus.SERVICE_UNAVAILABLE;
      message = 'the state store (Postgres) is unavailable';
      response.setHeader('Retry-After', '2');
      this.logger.warn(`${message}: ${(exception as Error).message}`);
    } else {
      this.logger.error(exception instanceof Error ? (exception.stack ?? exception.message) : String(exception));
    }
    if (response.headersSent) return;
    response.status(status).json({ status, message });
  }
}
