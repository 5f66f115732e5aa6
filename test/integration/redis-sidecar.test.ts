// main.ts picks the record store by session.store: the real sidecar on a
// real redis-server (both started here, stopped by PID) reads the records
// another sidecar left there; one whose Redis does not answer does not start.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { silentLogger } from "../../src/log/logger.js";
import { RedisRecordStore } from "../../src/session/redis/redis-record-store.js";
import { POLICY, session } from "../fixtures/record-store-contract.js";
import { freePort } from "../harness/ports.js";
import { type RedisInstance, startRedis } from "../harness/redis.js";
import { startSidecar } from "../harness/sidecar.js";

let redis: RedisInstance;

before(async () => {
  redis = await startRedis();
});

after(async () => {
  await redis?.stop();
});

test('session.store "redis": the sidecar starts on the records in Redis (none in its state directory)', async () => {
  const other = new RedisRecordStore({ url: redis.url, retention: POLICY, log: silentLogger() });
  await other.load();
  await other.put(session("left-by-another-sidecar"));
  await other.put({ ...session("ended"), lifecycle: "inactive", lifecycleAt: Date.now() });
  await other.close();
  const sidecar = await startSidecar({ CPM_PF__SESSION__STORE: "redis", CPM_PF__SESSION__REDISURL: redis.url });
  try {
    const ready = sidecar.logLines().find((l) => l.msg === "sidecar ready");
    assert.deepEqual([ready?.sessionStore, ready?.sessionsRestored], ["redis", 2]);
  } finally {
    await sidecar.stop();
  }
});

test('session.store "redis" with no Redis answering: start-up fails, naming the record store', async () => {
  const port = await freePort();
  await assert.rejects(
    // (the harness polls a sidecar that exited until its readiness timeout)
    startSidecar({ CPM_PF__SESSION__STORE: "redis", CPM_PF__SESSION__REDISURL: `redis://127.0.0.1:${port}` }, { readyTimeoutMs: 2000 }),
    /sidecar exited early \(1\)[\s\S]*CPM_ERR_RECORD_STORE_UNAVAILABLE/,
  );
});
