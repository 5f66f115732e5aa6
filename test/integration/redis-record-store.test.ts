// The group session records on a real redis-server (src/session/redis/):
// the record store contract shared with the journal, two sidecars on one
// Redis, compare-and-set, fencing, a Redis SIGKILL with AOF on, damaged
// values. One redis-server for the file (test/harness/redis.ts, stopped by
// PID); each case has a keyspace prefix of its own.
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { CpmError } from "../../src/errors/catalogue.js";
import { silentLogger } from "../../src/log/logger.js";
import type { RetentionPolicy } from "../../src/procedures/lifecycle.js";
import { recordIdOf } from "../../src/session/group-session.js";
import { Keyspace } from "../../src/session/redis/keyspace.js";
import { RedisRecordStore } from "../../src/session/redis/redis-record-store.js";
import { SlotLeases } from "../../src/session/redis/slot-leases.js";
import { WRITE_AHEAD_FILE, WriteAhead } from "../../src/session/redis/write-ahead.js";
import { asStored, dialog, idOf, POLICY, recordStoreContract, session } from "../fixtures/record-store-contract.js";
import { capturingLogger } from "../harness/log-capture.js";
import { type RedisInstance, startRedis } from "../harness/redis.js";

let redis: RedisInstance;
let admin: Redis;
const stores = new Set<RedisRecordStore>();
let prefixes = 0;

before(async () => {
  redis = await startRedis();
  admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
});

after(async () => {
  await Promise.allSettled([...stores].map((s) => s.close()));
  admin?.disconnect();
  await redis?.stop();
});

const freshKeyspace = () => new Keyspace(`t${prefixes++}:`);

/** A sidecar's record store on the test Redis, loaded. */
async function sidecar(
  keys: Keyspace,
  opts: { policy?: RetentionPolicy; log?: ReturnType<typeof silentLogger>; writer?: string; changeLogLength?: number } = {},
) {
  const s = new RedisRecordStore({
    url: redis.url,
    keyspace: keys,
    retention: opts.policy ?? POLICY,
    log: opts.log ?? silentLogger(),
    ...(opts.writer ? { writer: opts.writer } : {}),
    ...(opts.changeLogLength ? { changeLogLength: opts.changeLogLength } : {}),
  });
  stores.add(s);
  await s.load();
  return s;
}

async function closed(s: RedisRecordStore): Promise<void> {
  await s.close();
  stores.delete(s);
}

/** Polls until `ok` holds (a change notice has to travel to the other sidecar). */
async function eventually(what: string, ok: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${what}`);
    await sleep(5);
  }
}

recordStoreContract("redis", async (policy = POLICY) => {
  const keys = freshKeyspace();
  let store = await sidecar(keys, { policy });
  return {
    store,
    async reopen() {
      await closed(store);
      store = await sidecar(keys, { policy });
      return store;
    },
  };
});

test("the keyspace: one hash per record, the Call-ID index, the served user's pending set, the retention zset, the change log", async () => {
  const keys = freshKeyspace();
  const a = await sidecar(keys);
  const s = {
    ...session("k1"),
    dialogs: [dialog("k1"), dialog("k0", "terminated")],
    lifecycle: "client-absent" as const,
    pendingDeferred: true,
  };
  await a.put(s);
  const id = recordIdOf(s);
  const hash = await admin.hgetall(keys.record(id));
  assert.deepEqual(asStored(JSON.parse(hash.v as string)), asStored(s));
  assert.deepEqual([hash.rev, hash.by, hash.calls], ["1", a.writer, "k1\nk0"]);
  assert.deepEqual(await admin.hmget(keys.callIds, "k1", "k0"), [id, id]);
  assert.deepEqual(await admin.smembers(keys.pending("tel:+16135551200")), [id]);
  assert.equal(await admin.zscore(keys.retention, id), "inf", "pending data: never purged");
  await a.put({ ...s, key: "k2", dialogs: [dialog("k2")], pendingDeferred: false, lifecycle: "inactive", updatedAt: 1000 });
  assert.deepEqual(await admin.hmget(keys.callIds, "k1", "k0", "k2"), [null, null, id], "dropped dialogs leave the index");
  assert.deepEqual(await admin.smembers(keys.pending("tel:+16135551200")), []);
  assert.equal(Number(await admin.zscore(keys.retention, id)), 1000 + POLICY.inactiveRetentionMs);
  await a.purge(id);
  assert.deepEqual(await admin.keys(`${keys.prefix}*`), [keys.changeLog], "a purge leaves nothing behind but the change log");
  const log = (await admin.xrange(keys.changeLog, "-", "+")).map(([, fields]) => fields);
  assert.deepEqual(
    log,
    [`1 ${a.writer} ${id}`, `2 ${a.writer} ${id}`, `0 ${a.writer} ${id}`].map((n) => ["n", n]),
    "each change in the change log",
  );
});

test("two sidecars on one Redis: each sees the other's writes and purges (change notices), by Call-ID and by the record's IDs", async () => {
  const keys = freshKeyspace();
  const a = await sidecar(keys);
  const b = await sidecar(keys);
  const s = { ...session("call-1"), dialogs: [dialog("call-1")] };
  await a.put(s);
  await eventually("B sees A's record", () => b.get("call-1")?.key === "call-1");
  // B re-joins the group (new dialog of the same record): A finds it by the new Call-ID
  const seen = b.get("call-1");
  assert.ok(seen);
  await b.put({ ...seen, key: "call-2", dialogs: [...seen.dialogs, dialog("call-2")], subject: "from B" });
  await eventually("A sees B's update", () => a.get("call-2")?.subject === "from B");
  assert.equal(a.findByIds(s.servedUser, s.conversationId, s.contributionId)?.key, "call-2");
  assert.equal(a.get("call-1"), a.get("call-2"));
  // an ended group's record too (kept as its JSON in the mirror)
  const ended = a.get("call-2");
  assert.ok(ended);
  await a.put({ ...ended, lifecycle: "left", lifecycleAt: Date.now() });
  await eventually("B sees it ended", () => b.get("call-2")?.lifecycle === "left");
  assert.deepEqual(b.counts().byLifecycle.left, 1);
  await b.purge(recordIdOf(s));
  await eventually("A sees B's purge", () => a.get("call-1") === undefined && a.size === 0);
  // a third sidecar started now reads what is there
  await a.put(session("late"));
  const c = await sidecar(keys);
  assert.equal(c.get("late")?.key, "late");
});

test("compare-and-set: a sidecar writing from a record another sidecar changed since gets CPM_ERR_RECORD_STALE; nothing is written and its reads show the newer record", async () => {
  const keys = freshKeyspace();
  const { logger, lines } = capturingLogger("warn");
  const a = await sidecar(keys, { writer: "sidecar-a" });
  const b = await sidecar(keys, { writer: "sidecar-b", log: logger });
  await a.put(session("g"));
  await eventually("B has the record", () => b.get("g") !== undefined);
  const bRead = b.get("g");
  assert.ok(bRead);
  const aRead = a.get("g");
  assert.ok(aRead);
  await a.put({ ...aRead, subject: "A's change" });
  // B decides from what it read before A's change arrived
  await assert.rejects(
    b.put({ ...bRead, subject: "B's stale change" }),
    (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_RECORD_STALE" && err.grpcStatus === 10,
  );
  const stored = await admin.hmget(keys.record(idOf("g")), "v", "rev", "by");
  assert.deepEqual([JSON.parse(stored[0] as string).subject, stored[1], stored[2]], ["A's change", "2", "sidecar-a"]);
  assert.equal(b.get("g")?.subject, "A's change", "B's mirror read the record again");
  assert.ok(
    lines.some((l) => l.includes("CPM_ERR_RECORD_STALE")),
    "logged",
  );
  // from the newer record B's write goes through
  const fresh = b.get("g");
  assert.ok(fresh);
  await b.put({ ...fresh, subject: "B after A" });
  await eventually("A sees it", () => a.get("g")?.subject === "B after A");
  // one sidecar's writes in a row from the same read are not a conflict (its events on a record run one at a time)
  const base = a.get("g");
  assert.ok(base);
  await a.put({ ...base, participants: [] });
  await a.put({ ...base, subject: "second write from the same read" });
  await eventually("B sees A's second write", () => b.get("g")?.subject === "second write from the same read");
});

test("fencing: a write under a lease that moved on is refused (CPM_ERR_RECORD_FENCED); the new holder's goes through", async () => {
  const keys = freshKeyspace();
  const a = await sidecar(keys, { writer: "sidecar-a" });
  const b = await sidecar(keys, { writer: "sidecar-b" });
  const leasesOf = (s: RedisRecordStore) =>
    new SlotLeases({ redis: s.connection, keyspace: keys, holder: s.writer, slots: 16, ttlMs: 500 });
  const la = leasesOf(a);
  const lb = leasesOf(b);
  const s = session("owned");
  const slot = la.slotOf(s.servedUser);
  const leaseA = await la.acquire(slot);
  assert.ok(leaseA);
  await a.put(s, leaseA);
  assert.equal(await lb.acquire(slot), undefined, "held by A");
  // A stalls past its TTL (a GC pause, a frozen VM); B takes the slot over
  await sleep(700);
  const leaseB = await lb.acquire(slot);
  assert.ok(leaseB && leaseB.token > leaseA.token);
  await eventually("B has the record", () => b.get("owned") !== undefined);
  const fromB = b.get("owned");
  assert.ok(fromB);
  await b.put({ ...fromB, subject: "B owns it" }, leaseB);
  await eventually("A's mirror has B's write", () => a.get("owned")?.subject === "B owns it");
  const fromA = a.get("owned");
  assert.ok(fromA);
  // A wakes up and writes from a fresh read: compare-and-set would let it through, the fence does not
  await assert.rejects(
    a.put({ ...fromA, subject: "A after its lease lapsed" }, leaseA),
    (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_RECORD_FENCED",
  );
  assert.equal(JSON.parse((await admin.hget(keys.record(idOf("owned")), "v")) as string).subject, "B owns it");
  assert.equal(a.get("owned")?.subject, "B owns it", "A's mirror read Redis's record again");
  assert.equal(await la.renew(leaseA), false, "A learns it lost the slot");
});

test("bad input: a damaged record value in Redis is logged and skipped at load and on a change notice, never a crash; the rest reads", async () => {
  const keys = freshKeyspace();
  const { logger, lines } = capturingLogger("warn");
  const a = await sidecar(keys);
  await a.put(session("fine"));
  await admin.hset(keys.record(idOf("torn")), "v", '{"key":"torn","partic', "rev", "1");
  await admin.hset(keys.record(idOf("not-a-record")), "v", JSON.stringify({ hello: "world" }), "rev", "1");
  await admin.hset(keys.record(idOf("elsewhere")), "v", JSON.stringify(session("other-id")), "rev", "1");
  await admin.hset(keys.record(idOf("bad-rev")), "v", JSON.stringify(session("bad-rev")), "rev", "x");
  await admin.set(keys.record(idOf("wrong-type")), "a string, not a hash");
  const b = await sidecar(keys, { log: logger });
  assert.equal(b.size, 1);
  assert.equal(b.get("fine")?.key, "fine");
  for (const id of ["torn", "not-a-record", "elsewhere", "bad-rev", "wrong-type"]) {
    assert.ok(
      lines.some((l) => l.includes("session record unreadable from Redis") && l.includes(JSON.stringify(idOf(id)).slice(1, -1))),
      `${id} logged`,
    );
  }
  // a damaged write by someone else, then its notice, and a notice that is not one
  const before = lines.length;
  await admin.hset(keys.record(idOf("fine")), "v", "garbage", "rev", "9");
  await admin.publish(keys.changes, `1-0 9 someone ${idOf("fine")}`);
  for (const notice of ["nonsense", `x-1 9 someone ${idOf("fine")}`, "1-0 9 someone"]) await admin.publish(keys.changes, notice);
  await eventually("each logged", () => lines.slice(before).length >= 4);
  assert.equal(lines.slice(before).filter((l) => l.includes("session record change notice skipped")).length, 3);
  assert.ok(lines.slice(before).some((l) => l.includes("session record unreadable from Redis")));
  assert.equal(b.get("fine")?.key, "fine", "the last good version stays");
  await b.put(session("after"));
  assert.equal(b.get("after")?.key, "after", "the store goes on");
});

test("Redis SIGKILL and restart (AOF, appendfsync always): nothing put() resolved is lost; the sidecar's store reconnects and writes again; its change subscription catches up from the change log Redis kept, without reading every record", async () => {
  const keys = freshKeyspace();
  const { logger, lines } = capturingLogger("info");
  const a = await sidecar(keys, { log: logger });
  const resolved = new Map<string, number>();
  let failed = 0;
  let stop = false;
  // four writers in a loop: each record's version number counts up
  const writer = async (w: number) => {
    for (let v = 0; !stop; v++) {
      const key = `w${w}-r${v % 25}`;
      const s = { ...session(key), conferenceVersion: v };
      try {
        await a.put(s);
        resolved.set(key, Math.max(resolved.get(key) ?? -1, v));
      } catch (err) {
        assert.ok(err instanceof CpmError && err.code === "CPM_ERR_RECORD_STORE_UNAVAILABLE", String(err));
        failed++;
        await sleep(20);
      }
    }
  };
  const writers = [0, 1, 2, 3].map(writer);
  await eventually("writes under way", () => resolved.size >= 60, 5000);
  await redis.kill();
  const atKill = new Map(resolved);
  await sleep(300);
  await redis.restart();
  await eventually("writes go through again", () => [...resolved].some(([k, v]) => v > (atKill.get(k) ?? -1) + 2), 10_000);
  stop = true;
  await Promise.all(writers);
  await a.flush();
  // a sidecar started now reads every resolved write (at least that version: later ones may have landed too)
  const b = await sidecar(keys);
  const lost = [...resolved].filter(([key, v]) => (b.get(key)?.conferenceVersion ?? -1) < v);
  assert.deepEqual(lost, [], `resolved writes missing after the restart (${failed} puts failed during the outage)`);
  assert.ok(
    lines.some((l) => l.includes("Redis unreachable")),
    "the outage is logged",
  );
  await eventually("the catch-up", () => lines.some((l) => l.includes("caught up from the change log after a reconnect")), 5000);
  assert.ok(!lines.some((l) => l.includes("read again in full")), "no full read");
});

/** A sidecar's record store holding its writes in `dir` while Redis is away (session.redisWriteAhead), loaded. */
async function withWriteAhead(keys: Keyspace, dir: string, log = silentLogger()) {
  const s = new RedisRecordStore({
    url: redis.url,
    keyspace: keys,
    retention: POLICY,
    log,
    writeAhead: new WriteAhead(join(dir, WRITE_AHEAD_FILE), log),
  });
  stores.add(s);
  await s.load();
  return s;
}

test("session.redisWriteAhead: with Redis SIGKILLed every put() resolves (held on local disk); once Redis is back the held writes are in Redis, the file is emptied, and a sidecar started then reads every resolved write", async () => {
  const keys = freshKeyspace();
  const dir = await mkdtemp(join(tmpdir(), "cpm-wal-"));
  const { logger, lines } = capturingLogger("info");
  const a = await withWriteAhead(keys, dir, logger);
  const resolved = new Map<string, number>();
  let failed = 0;
  let duringOutage = 0;
  let down = false;
  let stop = false;
  const writer = async (w: number) => {
    for (let v = 0; !stop; v++) {
      const key = `h${w}-r${v % 25}`;
      try {
        await a.put({ ...session(key), conferenceVersion: v });
        resolved.set(key, Math.max(resolved.get(key) ?? -1, v));
        if (down) duringOutage++;
      } catch {
        failed++;
      }
      await sleep(2);
    }
  };
  try {
    const writers = [0, 1, 2, 3].map(writer);
    await eventually("writes under way", () => resolved.size >= 60, 5000);
    await redis.kill();
    down = true;
    await eventually("writes resolve while Redis is down", () => duringOutage >= 100, 5000);
    assert.ok(a.heldWrites > 0, "the held records are counted (cpmpf_record_writes_held)");
    down = false;
    await redis.restart();
    await eventually(
      "the held writes replayed",
      () => lines.some((l) => l.includes("held session record writes replayed to Redis")),
      10_000,
    );
    stop = true;
    await Promise.all(writers);
    await a.flush();
    await eventually("nothing held", () => statSync(join(dir, WRITE_AHEAD_FILE)).size === 0, 5000);
    assert.equal(failed, 0, "no put() failed: the outage's writes were held");
    assert.equal(a.heldWrites, 0);
    assert.ok(
      lines.some((l) => l.includes("record writes held locally until it answers")),
      "the hold is logged",
    );
    const b = await sidecar(keys);
    const lost = [...resolved].filter(([key, v]) => (b.get(key)?.conferenceVersion ?? -1) < v);
    assert.deepEqual(lost, [], "every resolved write is in Redis");
    // the writer goes on on top of the replayed records (their revisions followed the replay)
    for (const key of ["h0-r1", "h1-r2"]) {
      const now = a.getById(idOf(key));
      assert.ok(now, key);
      await a.put({ ...now, subject: "after" });
    }
    await eventually("the writes after the replay reach the other sidecar", () => b.getById(idOf("h1-r2"))?.subject === "after");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("session.redisWriteAhead: a write under way when Redis's connection drops is held once; its own failure arriving later does not put it back over a newer held write of the same record", async () => {
  const keys = freshKeyspace();
  const dir = await mkdtemp(join(tmpdir(), "cpm-wal-"));
  try {
    const a = await withWriteAhead(keys, dir);
    const names = Array.from({ length: 60 }, (_, i) => `late-${i}`);
    for (const key of names) await a.put({ ...session(key), conferenceVersion: 0 });
    await a.flush();
    // version 1 of every record under way at once, Redis killed under them
    const ones = names.map((key) => a.put({ ...session(key), conferenceVersion: 1 }));
    await redis.kill();
    await Promise.all(ones);
    // version 2, held behind them
    for (const key of names) await a.put({ ...session(key), conferenceVersion: 2 });
    // ioredis fails the commands it carried only after its reconnect attempt: let that happen while Redis is down
    await sleep(1500);
    await redis.restart();
    await eventually("nothing held", () => a.heldWrites === 0 && statSync(join(dir, WRITE_AHEAD_FILE)).size === 0, 10_000);
    const b = await sidecar(keys);
    const behind = names.filter((key) => b.get(key)?.conferenceVersion !== 2);
    assert.deepEqual(behind, [], "every record at its last version in Redis");
    assert.deepEqual(
      names.filter((key) => a.get(key)?.conferenceVersion !== 2),
      [],
      "and in the sidecar's mirror",
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("session.redisWriteAhead across a sidecar restart: writes held while Redis was down are replayed by the next start; where another sidecar wrote the record since, the later record (updatedAt) stays", async () => {
  const keys = freshKeyspace();
  const dir = await mkdtemp(join(tmpdir(), "cpm-wal-"));
  try {
    const a = await withWriteAhead(keys, dir);
    const t0 = Date.now();
    for (const key of ["kept", "newer-elsewhere", "older-elsewhere"]) await a.put(session(key, ["tel:+1"], t0));
    await a.flush();
    await redis.kill();
    // the outage: the sidecar's writes are held; then it stops (SIGTERM or crash alike: the file has them)
    for (const key of ["kept", "newer-elsewhere", "older-elsewhere", "created-while-down"])
      await a.put(session(key, ["tel:+1", "tel:+2"], t0 + 10));
    await closed(a);
    assert.ok(statSync(join(dir, WRITE_AHEAD_FILE)).size > 0, "the held writes are on disk");
    await redis.restart();
    // another sidecar writes two of the records before the first one is back: one later, one earlier than the held write
    const other = await sidecar(keys);
    const newer = other.getById(idOf("newer-elsewhere"));
    const older = other.getById(idOf("older-elsewhere"));
    assert.ok(newer && older);
    await other.put({ ...newer, subject: "theirs", updatedAt: t0 + 20 });
    await other.put({ ...older, subject: "theirs", updatedAt: t0 + 5 });
    await other.flush();
    const { logger, lines } = capturingLogger("info");
    const back = await withWriteAhead(keys, dir, logger);
    await eventually("the held writes replayed", () => lines.some((l) => l.includes("held session record writes replayed to Redis")), 5000);
    const check = await sidecar(keys);
    assert.equal(check.getById(idOf("kept"))?.participants.length, 2, "the held write reached Redis");
    assert.equal(check.getById(idOf("created-while-down"))?.participants.length, 2, "a record created while Redis was down");
    assert.equal(check.getById(idOf("newer-elsewhere"))?.subject, "theirs", "the other sidecar's later write stays");
    assert.equal(check.getById(idOf("older-elsewhere"))?.participants.length, 2, "the held write replaces an earlier one");
    assert.notEqual(check.getById(idOf("older-elsewhere"))?.subject, "theirs");
    assert.equal(back.getById(idOf("newer-elsewhere"))?.subject, "theirs", "the mirror follows Redis where Redis's stayed");
    await eventually("nothing held", () => statSync(join(dir, WRITE_AHEAD_FILE)).size === 0, 5000);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/**
 * Cuts `store`'s change subscription and keeps it from coming back (Redis
 * asks new connections for a password; the connections already open stay
 * authenticated) while `meanwhile` runs, then lets it back.
 */
async function withSubscriptionDown(store: RedisRecordStore, meanwhile: () => Promise<void>): Promise<void> {
  const clients = String(await admin.call("CLIENT", "LIST", "TYPE", "pubsub"));
  const line = clients.split("\n").find((l) => l.includes(`name=cpmpf-changes:${store.writer} `));
  const id = /\bid=(\d+)/.exec(line ?? "")?.[1];
  assert.ok(id, "the store's subscriber connection is listed");
  await admin.config("SET", "requirepass", "change-log-test");
  try {
    await admin.client("KILL", "ID", id);
    await meanwhile();
  } finally {
    await admin.config("SET", "requirepass", "");
  }
}

test("session.redisChangeLog: a sidecar whose change subscription dropped reads, once it is back, only the changes it missed (from the change log), not every record; a damaged log entry is logged and skipped", async () => {
  const keys = freshKeyspace();
  const { logger, lines } = capturingLogger("info");
  const a = await sidecar(keys, { log: logger });
  const b = await sidecar(keys);
  for (let i = 0; i < 200; i++) await b.put(session(`cl-${i}`));
  await eventually("A has B's records", () => a.size === 200);
  await withSubscriptionDown(a, async () => {
    for (let i = 0; i < 5; i++) {
      const r = b.getById(idOf(`cl-${i}`));
      assert.ok(r);
      await b.put({ ...r, subject: "while A was away" });
    }
    await b.purge(idOf("cl-7"));
    await b.put(session("cl-new"));
    // bad input in the log: an entry without the change field, one that is not a change
    await admin.xadd(keys.changeLog, "*", "x", "garbage");
    await admin.xadd(keys.changeLog, "*", "n", "nonsense");
  });
  await eventually("A has the changes it missed", () => a.getById(idOf("cl-4"))?.subject === "while A was away", 10_000);
  await eventually("the purge", () => a.getById(idOf("cl-7")) === undefined);
  assert.ok(a.getById(idOf("cl-new")), "a record created meanwhile");
  const caughtUp = lines.filter((l) => l.includes("session records caught up from the change log after a reconnect"));
  assert.equal(caughtUp.length, 1, lines.join("\n"));
  assert.match(
    caughtUp[0] as string,
    /"changes":9\b/,
    "the 5 writes, the purge, the new record and the 2 bad entries, nothing before them",
  );
  assert.equal(lines.filter((l) => l.includes("session record change log entry skipped")).length, 2, "each bad entry logged and skipped");
  assert.ok(!lines.some((l) => l.includes("read again in full")), "no full read");
  // and it goes on taking B's changes live
  await b.put(session("cl-after"));
  await eventually("a change after the catch-up", () => a.getById(idOf("cl-after")) !== undefined);
});

test("session.redisChangeLog: a gap longer than the change log (trimmed past the last change read) or a change log that is gone or begun afresh (Redis lost its data) is bridged by reading every record again", async () => {
  const keys = freshKeyspace();
  const { logger, lines } = capturingLogger("info");
  const a = await sidecar(keys, { log: logger, changeLogLength: 10 });
  const b = await sidecar(keys, { changeLogLength: 10 });
  await b.put(session("tr-first"));
  await eventually("A has B's record", () => a.getById(idOf("tr-first")) !== undefined);
  // MAXLEN ~ trims whole stream nodes (100 entries each by default): 400 changes outrun 10
  await withSubscriptionDown(a, async () => {
    for (let i = 0; i < 400; i++) await b.put(session(`tr-${i}`));
  });
  await eventually("A has every record", () => a.size === 401, 10_000);
  assert.ok(
    lines.some((l) => l.includes("read again in full") && l.includes("no longer holds the last change read")),
    lines.join("\n"),
  );
  // the change log gone: every record read again, and one deleted meanwhile leaves the mirror
  await withSubscriptionDown(a, async () => {
    await admin.del(keys.changeLog, keys.record(idOf("tr-3")));
  });
  await eventually("the record deleted behind the log's back left A's mirror", () => a.getById(idOf("tr-3")) === undefined, 10_000);
  assert.ok(lines.some((l) => l.includes("read again in full") && l.includes("the change log is gone")));
  // a change taken in live, then Redis loses its data and a change log is begun afresh meanwhile: it does not hold that change
  await b.put(session("tr-live"));
  await eventually("a live change", () => a.getById(idOf("tr-live")) !== undefined);
  const mark = lines.length;
  await withSubscriptionDown(a, async () => {
    await admin.del(keys.changeLog, keys.record(idOf("tr-5")));
    await b.put(session("tr-fresh"));
  });
  await eventually("read in full again", () => a.getById(idOf("tr-5")) === undefined && a.getById(idOf("tr-fresh")) !== undefined, 10_000);
  assert.ok(
    lines.slice(mark).some((l) => l.includes("read again in full") && l.includes("begun afresh")),
    lines.slice(mark).join("\n"),
  );
});
