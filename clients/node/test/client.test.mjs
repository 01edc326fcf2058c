// The client against a real worker: tests/acceptance/test_node_client.py builds the client,
// starts `arq worker.Settings` on its own database (tests/conftest.py's 30 users, ids 1-31) and
// queue, and runs `node --test` with REDIS_URL and QUEUE_NAME pointing at them.

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";

import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DuplicateJob,
  InvalidJobArguments,
  JobClient,
  JobFailed,
  RedisUnavailable,
  ResultNotFound,
  UnknownJob,
  newJobId,
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
