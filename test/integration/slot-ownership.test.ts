// Served-user slot ownership (src/session/redis/ownership.ts) between two
// in-process sidecars on a real redis-server (test/harness/redis.ts, stopped
// by PID): a slot taken when first needed, renewed past its TTL, released on
// drain; a registration at the other sidecar published to the holder
// (wake:<slot>); a dead holder's lease lapses and the slot goes to the other
// with a newer fencing token, the old token failing the fence.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";
import { CpmError } from "../../src/errors/catalogue.js";
import { silentLogger } from "../../src/log/logger.js";
import { Keyspace } from "../../src/session/redis/keyspace.js";
import { SlotOwnership, type Wake } from "../../src/session/redis/ownership.js";
import { SlotLeases } from "../../src/session/redis/slot-leases.js";
import { type RedisInstance, startRedis } from "../harness/redis.js";
import { waitFor } from "../harness/wait.js";

const USER = "tel:+16135551200";
const CLIENT = { contact: "<sip:client@127.0.0.1:5099>", instanceId: '"<urn:gsma:imei:35209900-176148-1>"' };

let redis: RedisInstance;
let connection: Redis;
let prefixes = 0;
const started: SlotOwnership[] = [];

before(async () => {
  redis = await startRedis();
  connection = new Redis(redis.url, { maxRetriesPerRequest: 1 });
});

after(async () => {
  for (const o of started) await o.release().catch(() => {});
  connection?.disconnect();
  await redis?.stop();
});

async function sidecar(keyspace: Keyspace, holder: string, ttlMs: number, slots = 64) {
  const wakes: Wake[] = [];
  const o = new SlotOwnership({ url: redis.url, redis: connection, keyspace, holder, slots, ttlMs, log: silentLogger() });
  await o.start((w) => wakes.push(w));
  started.push(o);
  return { o, wakes };
}

test("scale-out DD-1: the first sidecar needing a served user's slot takes it; the other sees the live holder; renewals keep it past its TTL; release hands it over with a newer token", async () => {
  const keyspace = new Keyspace(`own${prefixes++}:`);
  const a = await sidecar(keyspace, "sidecar-a", 600);
  const b = await sidecar(keyspace, "sidecar-b", 600);
  const first = await a.o.owner(USER);
  assert.ok(first.self, "nobody held the slot: A takes it");
  const slot = a.o.slotOf(USER);
  assert.deepEqual(a.o.heldSlots, [slot]);
  const seen = await b.o.owner(USER);
  assert.ok(!seen.self);
  assert.equal(seen.holder, "sidecar-a");
  assert.equal(seen.slot, slot);
  // four renewals seen (the TTL extended each time): more than the TTL has gone by since the grant
  let renewals = 0;
  let last = await connection.pttl(keyspace.lease(slot));
  await waitFor(
    async () => {
      const now = await connection.pttl(keyspace.lease(slot));
      if (now > last) renewals++;
      last = now;
      return renewals >= 4;
    },
    10_000,
    20,
    "four renewals of A's lease",
  );
  const still = await b.o.owner(USER);
  assert.ok(!still.self && still.holder === "sidecar-a", "renewed: A still holds the slot");
  assert.ok(await a.o.confirm(first.lease), "A's token is the slot's newest");
  await a.o.release();
  assert.equal(await connection.exists(keyspace.lease(slot)), 0, "released at once, not left to lapse");
  const taken = await b.o.owner(USER);
  assert.ok(taken.self);
  assert.ok(taken.lease.token > first.lease.token, "a newer fencing token");
  assert.equal(await a.o.confirm(first.lease), false, "A's old token fails the fence");
});

test("scale-out DD-1: a registration at the sidecar that does not hold the slot is published on wake:<slot>; the holder gets the served user, the contact and +sip.instance", async () => {
  const keyspace = new Keyspace(`own${prefixes++}:`);
  const a = await sidecar(keyspace, "sidecar-a", 5000);
  const b = await sidecar(keyspace, "sidecar-b", 5000);
  const other = "sip:alice@example.net";
  assert.ok((await a.o.owner(USER)).self);
  const seen = await b.o.owner(USER);
  assert.ok(!seen.self);
  assert.equal(await b.o.wake(seen.slot, { servedUser: USER, client: CLIENT }), 1, "one receiver: the holder");
  await waitFor(() => a.wakes.length === 1, 5000, 10, "A's wake-up");
  assert.deepEqual(a.wakes[0], { servedUser: USER, client: CLIENT, from: "sidecar-b" });
  assert.equal(b.wakes.length, 0, "the sender does not get its own wake-up");
  // a wake-up on a slot whose user hashes elsewhere is not acted on (a forged or misrouted one)
  if (a.o.slotOf(other) !== seen.slot) {
    await b.o.wake(seen.slot, { servedUser: other, client: CLIENT });
    await b.o.wake(seen.slot, { servedUser: USER, client: { contact: "<sip:second@127.0.0.1>" } });
    await waitFor(() => a.wakes.length === 2, 5000, 10, "A's second wake-up");
    assert.equal(a.wakes[1]?.client.contact, "<sip:second@127.0.0.1>", "the misrouted one skipped, the next taken");
  }
  // after a drain nobody receives the slot's wake-ups
  await a.o.stopWakes();
  assert.equal(await b.o.wake(seen.slot, { servedUser: USER, client: CLIENT }), 0);
});

test("scale-out DD-1: a dead holder (no renewals, not subscribed): a wake-up reaches nobody; once its lease lapsed the other takes the slot with a newer token and the dead one's token fails the fence", async () => {
  const keyspace = new Keyspace(`own${prefixes++}:`);
  // the dead sidecar's lease as it left it: granted, never renewed, nobody listening
  const dead = new SlotLeases({ redis: connection, keyspace, holder: "sidecar-dead", slots: 64, ttlMs: 800 });
  const b = await sidecar(keyspace, "sidecar-b", 5000);
  const slot = b.o.slotOf(USER);
  const old = await dead.acquire(slot);
  assert.ok(old);
  const seen = await b.o.owner(USER);
  assert.ok(!seen.self && seen.holder === "sidecar-dead");
  assert.ok(seen.lapsesInMs > 0 && seen.lapsesInMs <= 800);
  assert.equal(await b.o.wake(slot, { servedUser: USER, client: CLIENT }), 0, "nobody listening");
  await waitFor(async () => (await connection.exists(keyspace.lease(slot))) === 0, 5000, 20, "the dead holder's lease lapses");
  const taken = await b.o.owner(USER);
  assert.ok(taken.self);
  assert.ok(taken.lease.token > old.token);
  assert.equal(await dead.renew(old), false, "the dead holder's token is superseded");
  assert.equal(await b.o.confirm(taken.lease), true);
});

test("scale-out: sidecars hashing into different slot counts: the second does not start (CPM_ERR_CONFIG names session.slots)", async () => {
  const keyspace = new Keyspace(`own${prefixes++}:`);
  await sidecar(keyspace, "sidecar-a", 5000, 64);
  const b = new SlotOwnership({
    url: redis.url,
    redis: connection,
    keyspace,
    holder: "sidecar-b",
    slots: 128,
    ttlMs: 5000,
    log: silentLogger(),
  });
  await assert.rejects(
    b.start(() => {}),
    (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_CONFIG" && /session\.slots/.test(err.message),
  );
  await b.release();
});

test("scale-out RJ-1: each sidecar publishes its SIP UA with its leases; another sidecar learns the holder's UA with the holder (a re-join is routed there); released on drain", async () => {
  const keyspace = new Keyspace(`own${prefixes++}:`);
  const mk = async (holder: string, uaAddress: string) => {
    const o = new SlotOwnership({
      url: redis.url,
      redis: connection,
      keyspace,
      holder,
      slots: 64,
      ttlMs: 600,
      uaAddress,
      log: silentLogger(),
    });
    await o.start(() => {});
    started.push(o);
    return o;
  };
  const a = await mk("ua-a", "sip:127.0.0.1:5097");
  const b = await mk("ua-b", "sip:127.0.0.1:6097;transport=tcp");
  assert.ok((await a.owner(USER)).self);
  const seen = await b.owner(USER);
  assert.ok(!seen.self);
  assert.equal(seen.ua, "sip:127.0.0.1:5097", "the holder's UA");
  // outlives a lease (set again at each renewal round), not a dead sidecar by long
  await new Promise((resolve) => setTimeout(resolve, 900));
  assert.equal(await connection.get(keyspace.ua("ua-a")), "sip:127.0.0.1:5097");
  const ttl = await connection.pttl(keyspace.ua("ua-a"));
  assert.ok(ttl > 0 && ttl <= 1800, `a TTL of three leases at most (${ttl} ms)`);
  await a.release();
  assert.equal(await connection.exists(keyspace.ua("ua-a")), 0, "gone with the drain");
});
