import { ArgumentsHost, Catch, ExceptionFilter, HttpException, HttpStatus, Logger } from '@nestjs/common';
import { Response } from 'express';
import { DomainError, ServiceUnavailableError } from './errors';

interface HttpErrorBody {
  message?: string | string[];
  error?: string;
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
    } else {
      this.logger.error(exception instanceof Error ? (exception.stack ?? exception.message) : String(exception));
    }
    if (response.headersSent) return;
    response.status(status).json({ status, message });
  }
}
