// An enqueued job's handle, and the options of enqueue and result.

/** A job's state, as docs/wire-format.md's Status table reads it. */
export type JobStatus = "complete" | "in_progress" | "deferred" | "queued" | "not_found";

/** How to enqueue one job. */
export interface EnqueueOptions {
  /** The job's id, its uniqueness key (default: a random uuid4 hex): while a job with this id is
   * queued, running or has a kept result, enqueueing it again throws DuplicateJob. */
  jobId?: string;
  /** Start no sooner than this many milliseconds from now. */
  deferMs?: number;
  /** Start no sooner than this moment. */
  deferUntil?: Date;
  /** 0-9, higher first among due jobs (default: the job's declared priority, else 0). */
  priority?: number;
  /** false: send the arguments unchecked (the worker still validates them: a job that does not
   * fit ends with an InvalidJobArguments result). Default true. */
  validate?: boolean;
  /** The producer's W3C trace context (docs/wire-format.md, Trace context): a tracing worker runs
   * the job in a child span of this one. A version-00 header, `00-<32 hex trace id>-<16 hex span
   * id>-<2 hex flags>` in lowercase, ids not all zero; anything else throws WorkerError. Default:
   * the active span's, when `@opentelemetry/api` is installed and a span is active; null: none. */
  traceparent?: string | null;
  /** The W3C tracestate that goes with the traceparent (at most 512 printable ASCII characters). */
  tracestate?: string | null;
}

/** How to enqueue many jobs of one kind. */
export interface EnqueueManyOptions {
  /** One id per job (default: random ids). */
  jobIds?: readonly string[];
  /** Jobs per script call, each one round trip (default 1000). */
  chunk?: number;
  /** As in EnqueueOptions, for every one of them. */
  priority?: number;
  /** As in EnqueueOptions; default true. */
  validate?: boolean;
  /** As in EnqueueOptions, the same for every one of them. */
  traceparent?: string | null;
  /** As in EnqueueOptions. */
  tracestate?: string | null;
}

/** How to wait for a result. */
export interface ResultOptions {
  /** Give up after this many milliseconds with ResultTimeout (default 10,000). */
  timeoutMs?: number;
}

/** What reads a job's result and status (the client). */
export interface JobReader {
  result(jobId: string, options?: ResultOptions): Promise<unknown>;
  status(jobId: string): Promise<JobStatus>;
}

/** An enqueued job: its id, its status, and its typed result once it has finished. */
export class Job<R> {
  constructor(
    readonly id: string,
    readonly name: string,
    private readonly reader: JobReader,
  ) {}

  /** Wait for the result (JobFailed if the job failed, ResultTimeout, ResultNotFound). */
  async result(options?: ResultOptions): Promise<R> {
    return (await this.reader.result(this.id, options)) as R;
  }

  /** complete, in_progress, deferred, queued or not_found. */
  status(): Promise<JobStatus> {
    return this.reader.status(this.id);
  }
}
