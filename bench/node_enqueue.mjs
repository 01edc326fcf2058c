// The bench's TypeScript-client measurement (bench/producers.py runs it with node): N get_user jobs
// enqueued with JobClient.enqueueMany (1,000 per round trip) on REDIS_URL / QUEUE_NAME, timed from
// the call to its return (connect and node's start-up excluded). Prints {"jobs", "seconds",
// "added"} as JSON. Usage: node bench/node_enqueue.mjs N ID_PREFIX MAX_USER_ID
import { JobClient } from "../clients/node/dist/index.js";

const [count, prefix, maxUserId] = process.argv.slice(2);
const n = Number(count);
const top = Number(maxUserId);
const args = Array.from({ length: n }, (_, i) => ({ user_id: 1 + ((i * 7919) % top) }));
const jobIds = args.map((_, i) => `${prefix}${i}`);

const client = await JobClient.connect();
try {
  const t0 = process.hrtime.bigint();
  const jobs = await client.enqueueMany("get_user", args, { jobIds });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const added = jobs.filter((job) => job !== null).length;
  console.log(JSON.stringify({ jobs: n, seconds, added }));
} finally {
  await client.close();
}
