// The producer's half of tracing (docs/wire-format.md, Trace context): the W3C `traceparent` and
// `tracestate` a payload carries, which a tracing worker's run of the job continues. Given as the
// enqueue options of the same names, or else taken from the active span of `@opentelemetry/api`
// when the application has it installed (an optional peer dependency, imported on first use).

import { WorkerError } from "./errors.js";

/** The W3C trace context of a payload: its `traceparent` and, with it, its `tracestate`. */
export interface TraceContext {
  traceparent?: string;
  tracestate?: string;
}

/** A version-00 traceparent: `00-<trace id>-<parent span id>-<flags>`, lowercase hex. */
export const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
/** A tracestate: at most 512 printable ASCII characters (W3C's limit). */
export const TRACESTATE = /^[\x20-\x7e]{0,512}$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

/** The trace fields to write (none, or a traceparent and maybe a tracestate), after checking
 * them: a traceparent that is not a valid version-00 W3C header (all-zero ids included), or a
 * tracestate without one, throws WorkerError naming the option (never its value). An empty
 * tracestate is none. */
export function checkTraceContext(traceparent: unknown, tracestate: unknown): TraceContext {
  const state = tracestate === "" || tracestate === null ? undefined : tracestate; // none
  if (traceparent === undefined || traceparent === null) {
    if (state !== undefined) {
      throw new WorkerError("tracestate is given without a traceparent");
    }
    return {};
  }
  if (
    typeof traceparent !== "string" ||
    !TRACEPARENT.test(traceparent) ||
    traceparent.slice(3, 35) === ZERO_TRACE ||
    traceparent.slice(36, 52) === ZERO_SPAN
  ) {
    throw new WorkerError(
      "traceparent must be a W3C traceparent: 00-<32 lowercase hex trace id, not all zero>-" +
        "<16 lowercase hex parent span id, not all zero>-<2 lowercase hex flags>",
    );
  }
  if (state === undefined) {
    return { traceparent };
  }
  if (typeof state !== "string" || !TRACESTATE.test(state)) {
    throw new WorkerError("tracestate must be at most 512 printable ASCII characters");
  }
  return { traceparent, tracestate: state };
}

/** The part of `@opentelemetry/api` this client reads. */
interface OtelApi {
  context: { active(): unknown };
  trace: {
    getSpanContext(context: unknown):
      | { traceId: string; spanId: string; traceFlags: number; traceState?: { serialize(): string } }
      | undefined;
    isSpanContextValid(spanContext: object): boolean;
  };
}

let otel: Promise<OtelApi | null> | undefined;

/** `@opentelemetry/api`, imported once; null when it is not installed. */
function loadOtel(): Promise<OtelApi | null> {
  otel ??= import("@opentelemetry/api").then(
    (api) => api as unknown as OtelApi,
    () => null,
  );
  return otel;
}

/** The trace context of the span active now (`@opentelemetry/api`'s context), or {} when the
 * package is missing or no valid span is active. */
export async function activeTraceContext(): Promise<TraceContext> {
  const api = await loadOtel();
  if (api === null) {
    return {};
  }
  const span = api.trace.getSpanContext(api.context.active());
  if (span === undefined || !api.trace.isSpanContextValid(span)) {
    return {};
  }
  const flags = (span.traceFlags & 0xff).toString(16).padStart(2, "0");
  const traceparent = `00-${span.traceId}-${span.spanId}-${flags}`.toLowerCase();
  if (!TRACEPARENT.test(traceparent)) {
    return {};
  }
  const tracestate = span.traceState?.serialize();
  return tracestate && TRACESTATE.test(tracestate) ? { traceparent, tracestate } : { traceparent };
}

/** The options' trace context if they give one (checked; `traceparent: null` is none, not even
 * the active span's), else the active span's. */
export async function traceContextOf(options: {
  traceparent?: string | null;
  tracestate?: string | null;
}): Promise<TraceContext> {
  if (options.traceparent !== undefined || options.tracestate !== undefined) {
    return checkTraceContext(options.traceparent, options.tracestate);
  }
  return activeTraceContext();
}
