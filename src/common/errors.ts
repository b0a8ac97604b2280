/** Domain errors; the HTTP filter maps each to its status code. Messages are safe to show to clients. */
export class DomainError extends Error {
  readonly status: number = 500;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export class NotFoundError extends DomainError {
  override readonly status = 404;
}

export class InvalidRequestError extends DomainError {
  override readonly status = 400;
}

export class ConflictError extends DomainError {
  override readonly status = 409;
}

/** Nothing can be had right now; the client should retry after retryAfterSeconds. */
export class ServiceUnavailableError extends DomainError {
  override readonly status = 503;
  constructor(
    message: string,
    readonly retryAfterSeconds = 5,
  ) {
    super(message);
  }
}

/** A limit (count, ports, host memory or CPU) refuses a new instance. */
export class CapacityError extends ServiceUnavailableError {}

/** The container engine failed; the message says which call. */
export class EngineError extends DomainError {
  override readonly status = 500;
}
