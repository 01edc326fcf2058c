// The payload's trace context (docs/wire-format.md, Trace context): the traceparent and tracestate
// options, checked as W3C headers before anything is sent, and the active span's context taken
// from @opentelemetry/api (installed here as a dev dependency; an optional peer dependency of the
// client). tests/acceptance/test_node_tracing.py runs such jobs on a real tracing worker.

import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import { after, before, describe, test } from "node:test";

import { ROOT_CONTEXT, context, createTraceState, trace } from "@opentelemetry/api";
import { JobClient, WorkerError, checkTraceContext, newJobId } from "pgpool-worker-client";

const REDIS_URL = process.env.REDIS_URL;
const QUEUE_NAME = process.env.QUEUE_NAME;
if (!REDIS_URL || !QUEUE_NAME) {
  throw new Error("set REDIS_URL and QUEUE_NAME (tests/acceptance/test_node_client.py does)");
}
const TRACE_ID = "0af7651916cd43dd8448eb211c80319c";
const TRACEPARENT = `00-${TRACE_ID}-b7ad6b7169203331-01`;
const TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
const queue = `${QUEUE_NAME}:idle-trace`; // no worker reads it: jobs stay queued
let client;

before(async () => {
  client = await JobClient.connect({ url: REDIS_URL, queueName: queue });
});

after(async () => {
  const ids = await client.redis.zrange(queue, 0, -1);
  await client.redis.del(queue, `${queue}:wake`, ...ids.map((id) => `arq:job:${id}`));
  await client.close();
});

async function payload(job) {
  return JSON.parse(await client.redis.get(`arq:job:${job.id}`));
}

/** A context manager on AsyncLocalStorage (what an OpenTelemetry SDK registers). */
function asyncContextManager() {
  const storage = new AsyncLocalStorage();
  return {
    active: () => storage.getStore() ?? ROOT_CONTEXT,
    with: (ctx, fn, thisArg, ...args) => storage.run(ctx, () => fn.call(thisArg, ...args)),
    bind: (_ctx, target) => target,
    enable() {
      return this;
    },
    disable() {
      storage.disable();
      return this;
    },
  };
}

describe("trace context options", () => {
  test("enqueue: the traceparent and tracestate go into the payload as given", async () => {
    const job = await client.getUser(
      { user_id: 1 },
      { traceparent: TRACEPARENT, tracestate: TRACESTATE },
    );
    const written = await payload(job);
    assert.equal(written.traceparent, TRACEPARENT);
    assert.equal(written.tracestate, TRACESTATE);
    const plain = await payload(await client.getUser({ user_id: 1 }, { traceparent: TRACEPARENT }));
    assert.equal(plain.traceparent, TRACEPARENT);
    assert.ok(!("tracestate" in plain));
  });

  test("enqueueMany: every payload carries it", async () => {
    const jobs = await client.enqueueMany("get_user", [{ user_id: 1 }, { user_id: 2 }], {
      traceparent: TRACEPARENT,
      chunk: 1,
    });
    for (const job of jobs) {
      assert.equal((await payload(job)).traceparent, TRACEPARENT);
    }
  });

  test("without one (and no active span) the payload has no trace field", async () => {
    const written = await payload(await client.getUser({ user_id: 1 }));
    assert.deepEqual(Object.keys(written).sort(), ["a", "et", "f", "k", "t"]);
  });

  const bad = {
    uppercase: TRACEPARENT.toUpperCase(),
    "a zero trace id": `00-${"0".repeat(32)}-b7ad6b7169203331-01`,
    "a zero span id": `00-${TRACE_ID}-${"0".repeat(16)}-01`,
    "version ff": `ff-${TRACE_ID}-b7ad6b7169203331-01`,
    "a short trace id": `00-${TRACE_ID.slice(1)}-b7ad6b7169203331-01`,
    "an extra field": `${TRACEPARENT}-extra`,
    "a newline at the end": `${TRACEPARENT}\n`,
    "no string": 42,
    empty: "",
  };
  for (const [what, traceparent] of Object.entries(bad)) {
    test(`a bad traceparent (${what}) is refused before anything is sent`, async () => {
      const jobId = newJobId();
      await assert.rejects(client.getUser({ user_id: 1 }, { jobId, traceparent }), (error) => {
        assert.ok(error instanceof WorkerError);
        assert.match(error.message, /^traceparent must be a W3C traceparent: 00-<32 lowercase/);
        return true;
      });
      await assert.rejects(
        client.enqueueMany("get_user", [{ user_id: 1 }], { jobIds: [jobId], traceparent }),
        WorkerError,
      );
      assert.equal(await client.status(jobId), "not_found");
    });
  }

  test("a tracestate without a traceparent, or not printable ASCII, is refused", () => {
    assert.throws(() => checkTraceContext(undefined, TRACESTATE), /without a traceparent/);
    assert.throws(() => checkTraceContext(TRACEPARENT, "a=\n"), /printable ASCII/);
    assert.throws(() => checkTraceContext(TRACEPARENT, "a".repeat(513)), /at most 512/);
    assert.deepEqual(checkTraceContext(TRACEPARENT, ""), { traceparent: TRACEPARENT });
    assert.deepEqual(checkTraceContext(undefined, ""), {});
  });
});

describe("the active span (@opentelemetry/api)", () => {
  const spanId = "00f067aa0ba902b7";
  const manager = asyncContextManager();

  before(() => assert.ok(context.setGlobalContextManager(manager)));
  after(() => context.disable());

  function inSpan(fn) {
    const span = trace.wrapSpanContext({
      traceId: TRACE_ID,
      spanId,
      traceFlags: 1,
      traceState: createTraceState("vendor=abc"),
    });
    return context.with(trace.setSpan(context.active(), span), fn);
  }

  test("inside a span, enqueue and enqueueMany write its context", async () => {
    const [one, many] = await inSpan(async () => [
      await client.getUser({ user_id: 1 }),
      await client.enqueueMany("get_user", [{ user_id: 2 }]),
    ]);
    for (const job of [one, many[0]]) {
      const written = await payload(job);
      assert.equal(written.traceparent, `00-${TRACE_ID}-${spanId}-01`);
      assert.equal(written.tracestate, "vendor=abc");
    }
  });

  test("the options win over the span; traceparent: null writes none", async () => {
    const [given, none] = await inSpan(async () => [
      await client.getUser({ user_id: 1 }, { traceparent: TRACEPARENT }),
      await client.getUser({ user_id: 1 }, { traceparent: null }),
    ]);
    assert.equal((await payload(given)).traceparent, TRACEPARENT);
    assert.ok(!("tracestate" in (await payload(given))));
    assert.ok(!("traceparent" in (await payload(none))));
  });

  test("outside a span: no trace field", async () => {
    assert.ok(!("traceparent" in (await payload(await client.getUser({ user_id: 1 })))));
  });
});
