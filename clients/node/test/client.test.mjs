// The client against a real worker: tests/acceptance/test_node_client.py builds the client,
// starts `arq worker.Settings` on its own database (tests/conftest.py's 30 users, ids 1-31) and
// queue, and runs `node --test` with REDIS_URL and QUEUE_NAME pointing at them.

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";

import {
  ARGUMENT_SCHEMAS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DuplicateJob,
  FLOWS,
  InvalidJobArguments,
  JobClient,
  JobFailed,
  RedisUnavailable,
  ResultNotFound,
  UnknownJob,
  WorkerError,
  newJobId,
  renderFlow,
} from "pgpool-worker-client";

const REDIS_URL = process.env.REDIS_URL;
const QUEUE_NAME = process.env.QUEUE_NAME;
if (!REDIS_URL || !QUEUE_NAME) {
  throw new Error("set REDIS_URL and QUEUE_NAME (tests/acceptance/test_node_client.py does)");
}
const WAIT = { timeoutMs: 60_000 };

let client; // on the worker's queue
let idle; // on a queue no worker reads: jobs stay queued
const idleQueue = `${QUEUE_NAME}:idle`;

before(async () => {
  client = await JobClient.connect({ url: REDIS_URL, queueName: QUEUE_NAME });
  idle = await JobClient.connect({ url: REDIS_URL, queueName: idleQueue });
});

after(async () => {
  const keys = await idle.redis.zrange(idleQueue, 0, -1);
  await idle.redis.del(idleQueue, `${idleQueue}:wake`, ...keys.map((id) => `arq:job:${id}`));
  const flow = ["priority", "due", "lane-head:false", "lane-head:true", "blocked:l:false"];
  await idle.redis.del(...flow.map((key) => `${idleQueue}:flow:${key}`)); // the flow tests' keys
  await client.close();
  await idle.close();
});

describe("enqueue and result", () => {
  test("a typed method enqueues get_user; its result is the user", async () => {
    const job = await client.getUser({ user_id: 1 });
    const user = await job.result(WAIT);
    assert.equal(user.id, 1);
    assert.equal(user.email, "User1@Example.com");
    assert.equal(typeof user.is_active, "boolean");
    assert.ok(!Number.isNaN(Date.parse(user.created_at)));
    assert.equal(await job.status(), "complete");
    assert.deepEqual(await client.result(job.id), user); // by id, as another process would
  });

  test("a user that does not exist is null", async () => {
    const job = await client.enqueue("get_user", { user_id: 999_999 });
    assert.equal(await job.result(WAIT), null);
  });

  test("other jobs: count_users and search_users with their defaults", async () => {
    const count = await (await client.countUsers({})).result(WAIT);
    assert.equal(count.count, 31);
    const found = await (await client.searchUsers({ prefix: "user1" })).result(WAIT);
    assert.ok(found.users.length > 0);
    assert.ok(found.users.every((u) => u.email.toLowerCase().startsWith("user1")));
  });

  test("a Date argument goes as ISO-8601 text", async () => {
    const page = await client.listUsers({ created_to: new Date(), limit: 5 });
    const result = await page.result(WAIT);
    assert.equal(result.users.length, 5);
  });
});

describe("duplicates", () => {
  test("an id that is queued, then one with a kept result, is refused", async () => {
    const jobId = newJobId();
    const job = await client.getUser({ user_id: 2 }, { jobId });
    await assert.rejects(client.getUser({ user_id: 3 }, { jobId }), DuplicateJob);
    await job.result(WAIT);
    await assert.rejects(client.getUser({ user_id: 3 }, { jobId }), (error) => {
      assert.ok(error instanceof DuplicateJob);
      assert.equal(error.jobId, jobId);
      return true;
    });
    assert.equal((await job.result(WAIT)).id, 2); // the first job's result, untouched
  });
});

describe("enqueueMany", () => {
  test("1,000 jobs in chunks: every one completes with its own result", async () => {
    const args = Array.from({ length: 1000 }, (_, i) => ({ user_id: (i % 31) + 1 }));
    const jobs = await client.enqueueMany("get_user", args, { chunk: 300 });
    assert.equal(jobs.length, 1000);
    assert.ok(jobs.every((job) => job !== null));
    const users = await Promise.all(jobs.map((job) => job.result({ timeoutMs: 120_000 })));
    users.forEach((user, i) => assert.equal(user.id, args[i].user_id));
  });

  test("a taken id is refused (null), the others are enqueued", async () => {
    const taken = await client.getUser({ user_id: 4 });
    const fresh = newJobId();
    const jobs = await client.enqueueMany("get_user", [{ user_id: 5 }, { user_id: 6 }], {
      jobIds: [fresh, taken.id],
    });
    assert.equal(jobs[0].id, fresh);
    assert.equal(jobs[1], null);
    assert.equal((await jobs[0].result(WAIT)).id, 5);
    assert.equal((await taken.result(WAIT)).id, 4);
  });

  test("one bad argument set enqueues nothing", async () => {
    const jobIds = [newJobId(), newJobId()];
    await assert.rejects(
      client.enqueueMany("get_user", [{ user_id: 1 }, { user_id: 0 }], { jobIds }),
      InvalidJobArguments,
    );
    assert.equal(await client.status(jobIds[0]), "not_found");
  });
});

describe("failures", () => {
  test("arguments the worker refuses: the result throws JobFailed with the error type", async () => {
    const job = await client.enqueue("get_user", { user_id: "7" }, { validate: false });
    await assert.rejects(job.result(WAIT), (error) => {
      assert.ok(error instanceof JobFailed);
      assert.equal(error.errorType, "InvalidJobArguments");
      assert.equal(error.jobId, job.id);
      assert.equal(error.functionName, "get_user");
      assert.match(error.errorMessage, /user_id/);
      return true;
    });
  });

  test("the client refuses the same arguments before sending anything", async () => {
    const jobId = newJobId();
    await assert.rejects(client.getUser({ user_id: "7" }, { jobId }), (error) => {
      assert.ok(error instanceof InvalidJobArguments);
      assert.match(error.message, /user_id: Input should be a valid integer/);
      assert.doesNotMatch(error.message, /"7"/); // the field, never the value
      return true;
    });
    assert.equal(await client.status(jobId), "not_found");
    const checks = [
      [{}, /user_id: Field required/],
      [{ user_id: 1, extra: 1 }, /extra: Extra inputs are not permitted/],
      [{ user_id: 1.5 }, /valid integer/],
      [{ user_id: true }, /valid integer/],
      [{ user_id: 0 }, /greater than 0/],
    ];
    for (const [args, message] of checks) {
      await assert.rejects(client.getUser(args), message);
    }
    await assert.rejects(client.searchUsers({ prefix: "a", field: "phone" }), /'email' or 'name'/);
    await assert.rejects(client.searchUsers({ prefix: "a\u0000" }), /NUL/);
    const noZone = { seen_before: "2025-01-31T12:00:00" };
    await assert.rejects(client.deactivateInactiveUsers(noZone), /timezone/);
  });

  test("an unknown job name is refused", async () => {
    await assert.rejects(client.enqueue("no_such_job", {}), UnknownJob);
  });

  test("a job id nobody enqueued: ResultNotFound", async () => {
    await assert.rejects(client.result(newJobId(), WAIT), ResultNotFound);
  });
});

describe("status and the wire", () => {
  test("not_found, queued, deferred, in_progress, complete", async () => {
    assert.equal(await client.status(newJobId()), "not_found");
    const queued = await idle.getUser({ user_id: 1 });
    assert.equal(await queued.status(), "queued");
    const deferred = await idle.getUser({ user_id: 1 }, { deferMs: 600_000 });
    assert.equal(await deferred.status(), "deferred");
    const later = await idle.getUser({ user_id: 1 }, { deferUntil: new Date(Date.now() + 6e5) });
    assert.equal(await later.status(), "deferred");
    // What a worker writes while it runs the job (docs/wire-format.md, Status):
    await idle.redis.set(`arq:in-progress:${queued.id}`, "1", "PX", 60_000);
    assert.equal(await queued.status(), "in_progress");
    await idle.redis.del(`arq:in-progress:${queued.id}`);
    const done = await client.getUser({ user_id: 1 });
    await done.result(WAIT);
    assert.equal(await done.status(), "complete");
  });

  test("the payload, its score and expiry, and the wake push (one element)", async () => {
    const before = Date.now();
    const job = await idle.getUser({ user_id: 42 });
    await idle.getUser({ user_id: 43 });
    const payload = JSON.parse(await idle.redis.get(`arq:job:${job.id}`));
    assert.deepEqual(Object.keys(payload).sort(), ["a", "et", "f", "k", "t"]);
    assert.equal(payload.t, null);
    assert.equal(payload.f, "get_user");
    assert.deepEqual(payload.a, []);
    assert.deepEqual(payload.k, { user_id: 42 });
    assert.ok(Number.isInteger(payload.et) && payload.et >= before);
    assert.equal(Number(await idle.redis.zscore(idleQueue, job.id)), payload.et);
    const ttl = await idle.redis.pttl(`arq:job:${job.id}`);
    assert.ok(ttl > 86_000_000 && ttl <= 86_400_000);
    assert.deepEqual(await idle.redis.lrange(`${idleQueue}:wake`, 0, -1), ["1"]);
  });
});

describe("flow control (docs/wire-format.md, Flow control)", () => {
  const PRIORITY_SPAN = 2 ** 41;
  const BLOCKED_SCORE = 2 ** 50;
  const heavy = { concurrency: [{ name: "heavy-db", key: "", max: 20 }] };

  test("the registry's declarations are generated; count_users carries its flow", async () => {
    assert.deepEqual(FLOWS.count_users.concurrency, [{ name: "heavy-db", max: 20, key: null }]);
    assert.equal(FLOWS.get_user, null);
    const job = await idle.countUsers({ active: true });
    const payload = JSON.parse(await idle.redis.get(`arq:job:${job.id}`));
    assert.deepEqual(payload.flow, heavy);
    assert.equal(Number(await idle.redis.zscore(idleQueue, job.id)), payload.et);
    assert.equal(await idle.redis.zscore(`${idleQueue}:flow:priority`, job.id), null);
    const plain = await idle.getUser({ user_id: 1 });
    assert.ok(!("flow" in JSON.parse(await idle.redis.get(`arq:job:${plain.id}`))));
  });

  test("a priority job goes in the priority set, with its priority in the flow", async () => {
    const job = await idle.countUsers({}, { priority: 7 });
    const payload = JSON.parse(await idle.redis.get(`arq:job:${job.id}`));
    assert.deepEqual(payload.flow, { ...heavy, priority: 7 });
    const score = Number(await idle.redis.zscore(`${idleQueue}:flow:priority`, job.id));
    assert.equal(score, 2 * PRIORITY_SPAN + payload.et);
    const many = await idle.enqueueMany("get_user", [{ user_id: 1 }, { user_id: 2 }], {
      priority: 9,
    });
    for (const one of many) {
      const flow = JSON.parse(await idle.redis.get(`arq:job:${one.id}`)).flow;
      assert.deepEqual(flow, { priority: 9 });
      assert.notEqual(await idle.redis.zscore(`${idleQueue}:flow:priority`, one.id), null);
    }
  });

  test("a priority job runs on the worker", async () => {
    const job = await client.countUsers({}, { priority: 9 });
    assert.equal((await job.result(WAIT)).count, 31);
  });

  test("a bad priority is refused before anything is sent", async () => {
    const jobId = newJobId();
    for (const priority of [10, -1, 1.5, "3"]) {
      await assert.rejects(idle.countUsers({}, { jobId, priority }), (error) => {
        assert.ok(error instanceof WorkerError);
        assert.match(error.message, /priority must be an integer from 0 to 9/);
        return true;
      });
    }
    await assert.rejects(idle.enqueueMany("get_user", [{ user_id: 1 }], { priority: 12 }));
    assert.equal(await idle.status(jobId), "not_found");
  });

  test("a fairness job goes in its tenant's lane while the tenant has a job queued", async () => {
    // No registry job declares a fairness key: count_users declares one (its `active`) here.
    const declared = FLOWS.count_users;
    FLOWS.count_users = { ...declared, fair: "active" };
    try {
      const first = await idle.countUsers({ active: false });
      const second = await idle.countUsers({ active: false });
      const other = await idle.countUsers({ active: true });
      const flow = JSON.parse(await idle.redis.get(`arq:job:${second.id}`)).flow;
      assert.deepEqual(flow, { ...heavy, fair: "false" }); // a boolean key: JSON's text
      assert.equal(await idle.redis.get(`${idleQueue}:flow:lane-head:false`), first.id);
      assert.equal(Number(await idle.redis.zscore(idleQueue, second.id)), BLOCKED_SCORE);
      const lane = await idle.redis.zrange(`${idleQueue}:flow:blocked:l:false`, 0, -1);
      assert.deepEqual(lane, [second.id]);
      assert.ok(Number(await idle.redis.zscore(idleQueue, other.id)) < BLOCKED_SCORE);
      assert.equal(await idle.redis.get(`${idleQueue}:flow:lane-head:true`), other.id);
      assert.equal(await idle.status(second.id), "queued");
    } finally {
      FLOWS.count_users = declared;
    }
  });

  test("renderFlow: keys from the arguments, rates, fairness, defaults, limits", () => {
    const declaration = {
      concurrency: [
        { name: "per-user", max: 1, key: "user_id" },
        { name: "all", max: 5, key: null },
      ],
      rates: [{ name: "partner-api", limit: 14, per: 0.0025, burst: 2, key: "field" }],
      fair: "tenant",
      priority: 3,
    };
    const schema = {
      properties: {
        user_id: { type: "integer" },
        tenant: { anyOf: [{ type: "string" }, { type: "null" }], default: null },
        field: { enum: ["email", "name"], type: "string", default: "email" },
        at: { type: "string", format: "date-time" },
      },
    };
    const args = { user_id: 7, tenant: "t".repeat(199) + "\u{1F600}x" };
    assert.deepEqual(renderFlow(declaration, args, undefined, schema), {
      concurrency: [
        { name: "per-user", key: "7", max: 1 },
        { name: "all", key: "", max: 5 },
      ],
      rate: [{ name: "partner-api", key: "email", limit: 14, per_ms: 2, burst: 2 }],
      fair: "t".repeat(199) + "\u{1F600}", // 200 characters (code points)
      priority: 3,
    });
    const noTenant = renderFlow(declaration, { user_id: 7, tenant: null }, 0, schema);
    assert.ok(!("fair" in noTenant) && !("priority" in noTenant));
    const flag = { ...declaration, concurrency: [{ name: "flag", max: 1, key: "tenant" }] };
    assert.equal(renderFlow(flag, { tenant: true }, null, schema).concurrency[0].key, "true");
    assert.throws(() => renderFlow(flag, { tenant: { a: 1 } }, null, schema), WorkerError);
    assert.deepEqual(renderFlow(null, {}, undefined, ARGUMENT_SCHEMAS.get_user), {});
    assert.deepEqual(renderFlow(null, {}, 4), { priority: 4 });
    assert.throws(() => renderFlow(declaration, {}, 10, schema), WorkerError);
  });
});

describe("fail-fast connect", () => {
  const slack = 10_000; // the machine is shared and loaded: generous, but bounded

  test("the default timeout is at most 5 s", () => {
    assert.ok(DEFAULT_CONNECT_TIMEOUT_MS <= 5000);
  });

  test("a closed port: RedisUnavailable naming the URL, its password masked", async () => {
    const port = await closedPort();
    const url = `redis://:s3cret@127.0.0.1:${port}/13`;
    const started = Date.now();
    await assert.rejects(JobClient.connect({ url, connectTimeoutMs: 2000 }), (error) => {
      assert.ok(error instanceof RedisUnavailable);
      assert.ok(error.message.includes(`redis://:***@127.0.0.1:${port}/13`), error.message);
      assert.ok(!error.message.includes("s3cret"), error.message);
      return true;
    });
    assert.ok(Date.now() - started < 2000 + slack);
  });

  test("a server that never answers: RedisUnavailable after the timeout", async () => {
    const sockets = [];
    const silent = net.createServer((socket) => sockets.push(socket));
    await new Promise((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address();
    const started = Date.now();
    try {
      await assert.rejects(
        JobClient.connect({ url: `redis://:s3cret@127.0.0.1:${port}/0`, connectTimeoutMs: 1000 }),
        (error) => {
          assert.ok(error instanceof RedisUnavailable);
          assert.match(error.message, /within 1000 ms/);
          assert.ok(!error.message.includes("s3cret"), error.message);
          return true;
        },
      );
      assert.ok(Date.now() - started < 1000 + slack);
    } finally {
      sockets.forEach((socket) => socket.destroy());
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});

async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}
