// Ownership leases by served-user slot (src/session/redis/slot-leases.ts) on a
// real redis-server (test/harness/redis.ts, stopped by PID): one holder at a
// time, a TTL, a fencing token that grows with every grant.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { Keyspace } from "../../src/session/redis/keyspace.js";
import { SlotLeases, slotOf } from "../../src/session/redis/slot-leases.js";
import { type RedisInstance, startRedis } from "../harness/redis.js";

let redis: RedisInstance;
let connection: Redis;
let prefixes = 0;

before(async () => {
  redis = await startRedis();
  connection = new Redis(redis.url, { maxRetriesPerRequest: 1 });
});

after(async () => {
  connection?.disconnect();
  await redis?.stop();
});

function pair(ttlMs: number) {
  const keyspace = new Keyspace(`lease${prefixes++}:`);
  const leases = (holder: string) => new SlotLeases({ redis: connection, keyspace, holder, slots: 64, ttlMs });
  return { keyspace, a: leases("sidecar-a"), b: leases("sidecar-b") };
}

test("a served user's slot: the same for every form of the user (tel: ≡ sip:…;user=phone), spread over the slots", () => {
  assert.equal(slotOf("tel:+16135551200", 64), slotOf("sip:+16135551200@ims.example.net;user=phone", 64));
  assert.equal(slotOf("sip:alice@EXAMPLE.net", 64), slotOf("sip:alice@example.net", 64));
  const used = new Set(Array.from({ length: 1000 }, (_, i) => slotOf(`sip:user${i}@example.net`, 64)));
  assert.ok(used.size > 56, `1000 users over ${used.size} of 64 slots`);
  for (const s of used) assert.ok(Number.isInteger(s) && s >= 0 && s < 64);
  assert.throws(() => new SlotLeases({ redis: connection, keyspace: new Keyspace(), holder: "two words", slots: 4, ttlMs: 100 }));
});

test("one holder at a time; renewal keeps it, release frees it at once; each grant has a larger fencing token", async () => {
  const { keyspace, a, b } = pair(10_000);
  const first = await a.acquire(7);
  assert.ok(first);
  assert.equal(await b.acquire(7), undefined, "held by A");
  assert.deepEqual(await a.acquire(7), first, "A asking again extends the same lease");
  assert.equal(await a.renew(first), true);
  const pttl = await connection.pttl(keyspace.lease(7));
  assert.ok(pttl > 9000 && pttl <= 10_000, `TTL ${pttl}`);
  assert.ok(await b.acquire(8), "another slot is free");
  await a.release(first);
  const second = await b.acquire(7);
  assert.ok(second && second.token > first.token);
  assert.equal(await a.renew(first), false, "A's lease is gone");
  await a.release(first); // a stale release does not free B's lease
  assert.equal(await a.acquire(7), undefined);
});

test("a lease not renewed lapses after its TTL: another sidecar gets the slot with a larger token, the old holder's renewal fails", async () => {
  // TTL well above a loaded machine's timer slack
  const { a, b } = pair(600);
  const la = await a.acquire(3);
  assert.ok(la);
  await sleep(300);
  assert.equal(await a.renew(la), true, "renewed within the TTL");
  await sleep(400);
  assert.equal(await b.acquire(3), undefined, "still A's: the renewal moved the expiry");
  await sleep(900);
  const lb = await b.acquire(3);
  assert.ok(lb && lb.token === la.token + 1);
  assert.equal(await a.renew(la), false);
});
