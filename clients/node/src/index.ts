// pgpool-worker-client: enqueue jobs on the pgpool worker's queue from Node.js.

export {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_QUEUE,
  DEFAULT_URL,
  JobClient,
  newJobId,
  type ConnectOptions,
} from "./client.js";
export {
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
export {
  Job,
  type EnqueueManyOptions,
  type EnqueueOptions,
  type JobStatus,
  type ResultOptions,
} from "./job.js";
export {
  MAX_KEY,
  MAX_PRIORITY,
  checkPriority,
  renderFlow,
  type ConcurrencyDeclaration,
  type FlowDeclaration,
  type PayloadFlow,
  type RateDeclaration,
} from "./flow.js";
export * from "./jobs.js";
export {
  TRACEPARENT,
  TRACESTATE,
  activeTraceContext,
  checkTraceContext,
  type TraceContext,
} from "./trace.js";
export { checkArguments, type JsonSchema } from "./validate.js";
