// The client's errors: the Python client's classes and messages (worker/errors.py), one class each.

/** Base of every error this client throws; `name` is the class name. */
export class WorkerError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Arguments that do not fit the job's schema; the message names the field, never the value. */
export class InvalidJobArguments extends WorkerError {
  constructor(
    readonly job: string,
    readonly details: string,
  ) {
    super(
      `Invalid arguments for job '${job}': ${details}. Fix the arguments and enqueue the job again.`,
    );
  }
}

/** A job name the worker does not know. */
export class UnknownJob extends WorkerError {
  constructor(
    readonly job: string,
    known: readonly string[],
  ) {
    super(`Unknown job '${job}'. Known jobs: ${[...known].sort().join(", ")}.`);
  }
}

/** An enqueue refused because a job with this id is queued, running or has a kept result. */
export class DuplicateJob extends WorkerError {
  constructor(readonly jobId: string) {
    super(
      `A job with id '${jobId}' is already queued, running, or has a kept result; it was not ` +
        "enqueued again. Use another job id to run it anew.",
    );
  }
}

/** The job ran and failed: `errorType` is the worker's error class (`InvalidJobArguments`,
 * `TriesExhausted`, `CancelledError`, ...), `errorMessage` its message. */
export class JobFailed extends WorkerError {
  constructor(
    readonly jobId: string,
    readonly functionName: string,
    readonly errorType: string,
    readonly errorMessage: string,
  ) {
    super(`Job ${jobId} (${functionName}) failed: ${errorType}: ${errorMessage}`);
  }
}

/** No result within the time the caller gave. */
export class ResultTimeout extends WorkerError {
  constructor(
    readonly jobId: string,
    readonly timeoutMs: number,
    readonly queue: string,
  ) {
    super(
      `Job ${jobId} has no result after ${timeoutMs / 1000} s. Is a worker running on queue ` +
        `'${queue}'?`,
    );
  }
}

/** The job is not queued, not running and has no kept result (never enqueued, expired, or its
 * result already dropped after KEEP_RESULT). */
export class ResultNotFound extends WorkerError {
  constructor(
    readonly jobId: string,
    readonly queue: string,
  ) {
    super(`No job with id '${jobId}' is queued, running or has a kept result on queue '${queue}'.`);
  }
}

/** Redis did not answer within the connect timeout; `url` has its password masked. */
export class RedisUnavailable extends WorkerError {
  constructor(
    readonly url: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `Cannot connect to Redis at ${url}: ${reason}. Start Redis or fix REDIS_URL.`,
      options,
    );
  }
}

/** A Redis URL this client cannot use. */
export class InvalidRedisUrl extends WorkerError {
  constructor(readonly url: string) {
    super(
      `Invalid Redis URL ${url}: expected redis://[[user]:password@]host[:port][/db] or ` +
        "rediss://... (TLS).",
    );
  }
}

/** A URL with its password (and secret query parameters) replaced by `***`, as the worker masks
 * them (worker/core/masking.py); `<unparseable URL>` when it is not a URL at all. */
export function maskUrl(url: string): string {
  let parts: URL;
  try {
    parts = new URL(url);
  } catch {
    return "<unparseable URL>";
  }
  if (parts.password) {
    parts.password = "***";
  }
  for (const name of [...parts.searchParams.keys()]) {
    if (/pass(word|wd)?$|secret|token/i.test(name)) {
      parts.searchParams.set(name, "***");
    }
  }
  return parts.toString().replace(/%2A%2A%2A/g, "***");
}
