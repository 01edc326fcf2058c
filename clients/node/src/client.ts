// JobClient: enqueue jobs on the worker's queue in arq's Redis layout (docs/wire-format.md), with
// the Python client's rules: arguments checked against the job's schema, duplicate ids refused
// by the same Lua script, the wake push in the same round trip, results read back typed.

import { randomUUID } from "node:crypto";
import { Redis, type ChainableCommander, type ClientContext, type Result } from "ioredis";

import {
  DuplicateJob,
  InvalidJobArguments,
  InvalidRedisUrl,
  JobFailed,
  RedisUnavailable,
  ResultNotFound,
  ResultTimeout,
  UnknownJob,
  WorkerError,
  maskUrl,
} from "./errors.js";
import {
  Job,
  type EnqueueManyOptions,
  type EnqueueOptions,
  type JobReader,
  type JobStatus,
  type ResultOptions,
} from "./job.js";
import { renderFlow, type PayloadFlow } from "./flow.js";
import {
  ARGUMENT_SCHEMAS,
  FLOWS,
  JOB_NAMES,
  TypedJobs,
  type JobArguments,
  type JobName,
  type JobResults,
} from "./jobs.js";
import { traceContextOf, type TraceContext } from "./trace.js";
import { checkArguments, toWire } from "./validate.js";
import {
  BLOCKED_SCORE,
  ENQUEUE_MANY_SCRIPT,
  ENQUEUE_SCRIPT,
  EXPIRES_EXTRA_MS,
  IN_PROGRESS_PREFIX,
  JOB_PREFIX,
  RESULT_PREFIX,
  WAKE_SUFFIX,
} from "./wire.js";

declare module "ioredis" {
  interface RedisCommander<Context extends ClientContext = { type: "default" }> {
    pgwEnqueue(
      jobKey: string,
      resultKey: string,
      queue: string,
      payload: string,
      expiresMs: string,
      score: string,
      jobId: string,
      priority: string,
      fair: string,
      now: string,
    ): Result<number, Context>;
    pgwEnqueueMany(queue: string, ...args: string[]): Result<number[], Context>;
  }
}

/** The connect timeout unless told otherwise: a client fails fast, it never hangs. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
export const DEFAULT_URL = "redis://127.0.0.1:6379/0";
export const DEFAULT_QUEUE = "arq:queue";

/** Where and how to connect. */
export interface ConnectOptions {
  /** Default: REDIS_URL, else redis://127.0.0.1:6379/0 (`rediss://` for TLS). */
  url?: string;
  /** The worker's QUEUE_NAME. Default: QUEUE_NAME, else arq:queue. */
  queueName?: string;
  /** Give up connecting (RedisUnavailable) after this many ms. Default 5000. */
  connectTimeoutMs?: number;
}

/** Enqueue jobs on the worker's queue: `const client = await JobClient.connect()`; then
 * `client.getUser({ user_id: 42 })` (a typed method per job) or `client.enqueue("get_user", ...)`;
 * `await client.close()` at the end. */
export class JobClient extends TypedJobs implements JobReader {
  private constructor(
    readonly redis: Redis,
    readonly queueName: string,
  ) {
    super();
  }

  /** Connect within `connectTimeoutMs`, else throw RedisUnavailable naming the URL (masked). */
  static async connect(options: ConnectOptions = {}): Promise<JobClient> {
    const url = options.url ?? process.env.REDIS_URL ?? DEFAULT_URL;
    const queueName = options.queueName ?? process.env.QUEUE_NAME ?? DEFAULT_QUEUE;
    const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const shown = maskUrl(url);
    if (!/^rediss?:$/.test(safeProtocol(url))) {
      throw new InvalidRedisUrl(shown);
    }
    let ready = false;
    let lastError: Error | undefined;
    const redis = new Redis(url, {
      lazyConnect: true,
      connectTimeout: timeoutMs,
      maxRetriesPerRequest: 3,
      // No retries while connecting (fail fast); once connected, reconnect with a backoff.
      retryStrategy: (times) => (ready ? Math.min(times * 100, 2000) : null),
    });
    redis.on("error", (error: Error) => {
      lastError = error; // kept for the message; ioredis would print unhandled ones
    });
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      await Promise.race([redis.connect(), expired]);
      ready = true;
    } catch (error) {
      redis.disconnect();
      const reason = lastError?.message ?? (error as Error).message;
      throw new RedisUnavailable(shown, reason, { cause: lastError ?? error });
    } finally {
      clearTimeout(timer);
    }
    redis.defineCommand("pgwEnqueue", { numberOfKeys: 3, lua: ENQUEUE_SCRIPT });
    redis.defineCommand("pgwEnqueueMany", { numberOfKeys: 1, lua: ENQUEUE_MANY_SCRIPT });
    return new JobClient(redis, queueName);
  }

  /** Close the connection. */
  async close(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }

  /** Check the arguments against the job's schema, then enqueue it; returns its handle. Throws
   * UnknownJob, InvalidJobArguments (nothing sent), WorkerError (a bad option) or DuplicateJob. */
  async enqueue<N extends JobName>(
    name: N,
    args: JobArguments[N],
    options: EnqueueOptions = {},
  ): Promise<Job<JobResults[N]>> {
    const { kwargs, flow } = this.wireArguments(name, args, options.validate, options.priority);
    const jobId = options.jobId ?? newJobId();
    checkJobId(jobId);
    const defer = deferMs(options);
    const trace = await traceContextOf(options);
    const enqueued = Date.now();
    const payload = JSON.stringify(payloadOf(name, kwargs, flow, enqueued, trace));
    const pipe = this.redis.pipeline();
    pipe.pgwEnqueue(
      JOB_PREFIX + jobId,
      RESULT_PREFIX + jobId,
      this.queueName,
      payload,
      String(defer + EXPIRES_EXTRA_MS),
      String(enqueued + defer),
      jobId,
      String(flow.priority ?? 0),
      flow.fair ?? "",
      String(enqueued),
    );
    this.wake(pipe);
    const [added] = await execute(pipe);
    if (added !== 1) {
      throw new DuplicateJob(jobId);
    }
    return new Job(jobId, name, this);
  }

  /** Enqueue many jobs of one kind, `chunk` per script call (one round trip each). Every
   * argument set is checked before anything is sent, so bad input enqueues nothing. A job whose
   * id is taken is refused as by `enqueue`: its entry in the answer is null. */
  async enqueueMany<N extends JobName>(
    name: N,
    argsList: Iterable<JobArguments[N]>,
    options: EnqueueManyOptions = {},
  ): Promise<(Job<JobResults[N]> | null)[]> {
    const all = [...argsList].map((args) =>
      this.wireArguments(name, args, options.validate, options.priority),
    );
    const ids = options.jobIds ? [...options.jobIds] : all.map(() => newJobId());
    if (ids.length !== all.length) {
      throw new WorkerError(`${ids.length} job ids for ${all.length} jobs`);
    }
    ids.forEach(checkJobId);
    const chunk = options.chunk ?? 1000;
    if (!Number.isInteger(chunk) || chunk < 1) {
      throw new WorkerError("chunk must be a positive integer");
    }
    const trace = await traceContextOf(options);
    const jobs: (Job<JobResults[N]> | null)[] = [];
    for (let start = 0; start < all.length; start += chunk) {
      const enqueued = Date.now();
      const argv: string[] = [];
      for (let i = start; i < Math.min(start + chunk, all.length); i++) {
        const { kwargs, flow } = all[i]!;
        const payload = JSON.stringify(payloadOf(name, kwargs, flow, enqueued, trace));
        argv.push(ids[i]!, payload, String(flow.priority ?? 0), flow.fair ?? "");
      }
      const pipe = this.redis.pipeline();
      // Stride 4: per job its id, payload, priority and fairness key (the script's ARGV[3]).
      pipe.pgwEnqueueMany(this.queueName, String(EXPIRES_EXTRA_MS), String(enqueued), "4", ...argv);
      this.wake(pipe);
      const [added] = await execute(pipe);
      (added as number[]).forEach((ok, j) => {
        jobs.push(ok === 1 ? new Job(ids[start + j]!, name, this) : null);
      });
    }
    return jobs;
  }

  /** A handle on a job enqueued earlier (by anyone), to read its status and result. */
  job<R = unknown>(jobId: string): Job<R> {
    return new Job<R>(jobId, "", this);
  }

  /** Wait up to `timeoutMs` (default 10 s) for the job's result; JobFailed if it failed,
   * ResultNotFound if no such job exists, ResultTimeout if it has not finished in time. */
  async result(jobId: string, options: ResultOptions = {}): Promise<unknown> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    let poll = 20;
    for (;;) {
      const stored = await this.redis.get(RESULT_PREFIX + jobId);
      if (stored !== null) {
        return outcome(jobId, stored);
      }
      if ((await this.status(jobId)) === "not_found") {
        throw new ResultNotFound(jobId, this.queueName);
      }
      if (Date.now() >= deadline) {
        throw new ResultTimeout(jobId, timeoutMs, this.queueName);
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(poll, deadline - Date.now())));
      poll = Math.min(poll * 1.5, 500);
    }
  }

  /** complete, in_progress, deferred, queued or not_found (docs/wire-format.md, Status). */
  async status(jobId: string): Promise<JobStatus> {
    const pipe = this.redis.pipeline();
    pipe.exists(RESULT_PREFIX + jobId);
    pipe.exists(IN_PROGRESS_PREFIX + jobId);
    pipe.zscore(this.queueName, jobId);
    const [done, running, score] = await execute(pipe);
    if (done === 1) return "complete";
    if (running === 1) return "in_progress";
    if (score === null || score === undefined) return "not_found";
    if (Number(score) === BLOCKED_SCORE) return "queued"; // waiting on a flow-control gate
    return Number(score) > Date.now() ? "deferred" : "queued";
  }

  /** The arguments as they go on the wire and the job's "flow" rendered from them (its declared
   * limits, fairness key and priority, `priority` overriding the declared one). */
  private wireArguments(
    name: string,
    args: unknown,
    validate = true,
    priority?: number,
  ): { kwargs: unknown; flow: PayloadFlow } {
    const schema = (ARGUMENT_SCHEMAS as Record<string, (typeof ARGUMENT_SCHEMAS)[JobName]>)[name];
    if (schema === undefined) {
      throw new UnknownJob(name, JOB_NAMES);
    }
    let kwargs: unknown;
    if (validate) {
      const { value, problems } = checkArguments(schema, args ?? {});
      if (problems.length > 0) {
        throw new InvalidJobArguments(name, problems.join("; "));
      }
      kwargs = value;
    } else {
      kwargs = toWire(args);
    }
    const declared = (FLOWS as Record<string, (typeof FLOWS)[JobName]>)[name] ?? null;
    const values = typeof kwargs === "object" && kwargs !== null ? kwargs : {};
    const flow = renderFlow(declared, values as Record<string, unknown>, priority, schema);
    return { kwargs, flow };
  }

  private wake(pipe: ChainableCommander): void {
    const key = this.queueName + WAKE_SUFFIX;
    pipe.lpush(key, "1");
    pipe.ltrim(key, 0, 0);
  }
}

/** A job's payload: arq's fields and, when the job has any, its "flow" and its trace context
 * (docs/wire-format.md). */
function payloadOf(
  name: string,
  kwargs: unknown,
  flow: PayloadFlow,
  enqueued: number,
  trace: TraceContext,
): object {
  const payload = { t: null, f: name, a: [], k: kwargs, et: enqueued };
  const flowed = Object.keys(flow).length > 0 ? { ...payload, flow } : payload;
  return trace.traceparent === undefined ? flowed : { ...flowed, ...trace };
}

/** A random job id: a uuid4 in hex, as the Python client makes them. */
export function newJobId(): string {
  return randomUUID().replace(/-/g, "");
}

function checkJobId(jobId: unknown): void {
  if (typeof jobId !== "string" || jobId.length === 0) {
    throw new WorkerError("a job id must be a non-empty string");
  }
}

function deferMs(options: EnqueueOptions): number {
  const { deferMs: by, deferUntil: until } = options;
  if (by !== undefined && until !== undefined) {
    throw new WorkerError("use either deferMs or deferUntil, not both");
  }
  if (until !== undefined) {
    if (!(until instanceof Date) || Number.isNaN(until.getTime())) {
      throw new WorkerError("deferUntil must be a valid Date");
    }
    return Math.max(until.getTime() - Date.now(), 0);
  }
  if (by !== undefined && (!Number.isFinite(by) || by < 0)) {
    throw new WorkerError("deferMs must be a number of milliseconds, 0 or more");
  }
  return Math.round(by ?? 0);
}

async function execute(pipe: ChainableCommander): Promise<unknown[]> {
  const replies = (await pipe.exec()) ?? [];
  return replies.map(([error, reply]) => {
    if (error) {
      throw error;
    }
    return reply;
  });
}

/** A stored result: its value on success, else JobFailed with the worker's error type. */
function outcome(jobId: string, stored: string): unknown {
  const result = JSON.parse(stored) as { s?: boolean; r?: unknown; f?: string };
  if (result.s === true) {
    return result.r ?? null;
  }
  const failure = (result.r ?? {}) as { error?: unknown; message?: unknown };
  const errorType = typeof failure.error === "string" ? failure.error : "Error";
  const message = typeof failure.message === "string" ? failure.message : String(result.r);
  throw new JobFailed(jobId, String(result.f ?? ""), errorType, message);
}

function safeProtocol(url: string): string {
  try {
    return new URL(url).protocol;
  } catch {
    return "";
  }
}
