// The group session record store's latency: the local journal against Redis
// (AOF with an fsync per write, and once a second), same records, same run.
// put: awaited one after another (a decision waits for its record's write);
// get by Call-ID: what every decision reads (synchronous, from memory in both
// engines); for Redis also how long a write takes to reach a second sidecar's
// mirror (change notice, then its read of the record). One Redis round trip
// per put (EVALSHA), none per get.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildConfig } from "../src/config/config.js";
import { silentLogger } from "../src/log/logger.js";
import type { GroupSession } from "../src/session/group-session.js";
import type { SessionStore } from "../src/session/record-store.js";
import { Keyspace } from "../src/session/redis/keyspace.js";
import { RedisRecordStore } from "../src/session/redis/redis-record-store.js";
import { SessionRegistry } from "../src/session/registry.js";
import { type RedisInstance, startRedis } from "../test/harness/redis.js";
import { inactiveRecord } from "./delivery-bench.js";
import { percentile } from "./stats.js";

export interface Latency {
  p50: number;
  p99: number;
  perSecond: number;
}

export interface EngineRun {
  engine: string;
  put: Latency;
  get: Latency;
  /** Redis only: a put resolved on one sidecar until a second one's get() returns it (µs). */
  visible?: Latency;
}

export interface RecordStoreBench {
  records: number;
  users: number;
  recordBytes: number;
  runs: EngineRun[];
}

function latency(samplesUs: number[], elapsedMs: number): Latency {
  const s = [...samplesUs].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), perSecond: (s.length * 1000) / elapsedMs };
}

/** `n` records (a live group becomes inactive: the record the BYE path writes) spread over `users` served users. */
function layout(n: number, users: number): GroupSession[] {
  return Array.from({ length: n }, (_, i) =>
    inactiveRecord(i, `tel:+1613${String(5_000_000 + (i % users))}`, `conv-${i}-${"a".repeat(24)}`, `contrib-${i}`),
  );
}

async function measure(store: SessionStore, records: GroupSession[]): Promise<{ put: Latency; get: Latency }> {
  // warm-up: code paths, connection, scripts loaded
  for (const r of records.slice(0, 50)) await store.put({ ...r, key: `warm-${r.key}`, dialogs: [] });
  const putUs: number[] = [];
  let t0 = performance.now();
  for (const r of records) {
    const t = performance.now();
    await store.put(r);
    putUs.push((performance.now() - t) * 1000);
  }
  const put = latency(putUs, performance.now() - t0);
  const getUs: number[] = [];
  t0 = performance.now();
  for (let round = 0; round < 5; round++) {
    for (const r of records) {
      const t = performance.now();
      if (store.get(r.key) === undefined) throw new Error(`record ${r.key} not found`);
      getUs.push((performance.now() - t) * 1000);
    }
  }
  return { put, get: latency(getUs, performance.now() - t0) };
}

async function redisRun(redis: RedisInstance, engine: string, records: GroupSession[]): Promise<EngineRun> {
  const cfg = buildConfig({});
  const keyspace = new Keyspace("bench:");
  const open = async () => {
    const s = new RedisRecordStore({ url: redis.url, keyspace, retention: cfg.session, log: silentLogger() });
    await s.load();
    return s;
  };
  const a = await open();
  const b = await open();
  try {
    const { put, get } = await measure(a, records);
    // visibility on the second sidecar: one write at a time, polled on the event loop's turns
    const seenUs: number[] = [];
    const t0 = performance.now();
    for (const r of records.slice(0, Math.min(records.length, 1000))) {
      const subject = `seen ${r.key}`;
      await a.put({ ...r, subject });
      const t = performance.now();
      while (b.get(r.key)?.subject !== subject) await new Promise((done) => setImmediate(done));
      seenUs.push((performance.now() - t) * 1000);
    }
    return { engine, put, get, visible: latency(seenUs, performance.now() - t0) };
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

export async function benchRecordStore(n: number, users: number): Promise<RecordStoreBench> {
  const records = layout(n, users);
  const cfg = buildConfig({});
  const runs: EngineRun[] = [];
  const dir = await mkdtemp(join(tmpdir(), "cpm-pf-records-bench-"));
  try {
    const journal = new SessionRegistry(dir, cfg.session, silentLogger());
    await journal.load();
    runs.push({ engine: "journal (append, page cache, no fsync)", ...(await measure(journal, records)) });
    await journal.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  for (const appendfsync of ["always", "everysec"] as const) {
    const redis = await startRedis({ appendfsync });
    try {
      runs.push(await redisRun(redis, `Redis 7.0, AOF appendfsync ${appendfsync}`, records));
    } finally {
      await redis.stop();
    }
  }
  return { records: n, users, recordBytes: JSON.stringify(records[0]).length, runs };
}
