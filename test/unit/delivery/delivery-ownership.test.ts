// DeliveryService with several sidecars (session.store "redis"): a
// registration starts the deferred delivery only at the holder of the served
// user's slot, after the fence check; elsewhere it wakes the holder. The
// slot ownership is a fake here (the Redis side: test/integration/slot-ownership.test.ts).
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import {
  type DeliveryLeg,
  type DeliveryOwnership,
  type DeliveryQueue,
  DeliveryService,
  type DeliveryUa,
  type OwnerLease,
} from "../../../src/delivery/service.js";
import { silentLogger } from "../../../src/log/logger.js";
import { ANONYMOUS_KEYWORD, deviceOf } from "../../../src/procedures/device-view.js";
import type { GroupSession } from "../../../src/session/group-session.js";
import { groupSession, policy, SERVED_USER } from "../../fixtures/delivery.js";
import { registerAndResponse, thirdPartyRegister } from "../../fixtures/registration.js";
import { capturedLog } from "../../fixtures/sip-ua.js";

type Owner = Awaited<ReturnType<DeliveryOwnership["owner"]>>;

const SESSION = groupSession({ lifecycle: "inactive", pendingDeferred: true });
const running: DeliveryService[] = [];

afterEach(() => {
  for (const s of running.splice(0)) s.close();
});

/**
 * A service whose queue holds two items of SESSION; `openLeg` calls count
 * the delivery INVITEs it prepares. `sent`: the legs open and the UA sends
 * each INVITE (its Request-URI pushed there), which is never answered;
 * `firstListMs`: the first reader of the queue is that late.
 */
function service(
  ownership?: DeliveryOwnership,
  log = silentLogger(),
  session = SESSION,
  opts: { sent?: string[]; firstListMs?: number } = {},
) {
  const { sent, firstListMs = 0 } = opts;
  const legs: string[] = [];
  /** The fence each record write of the device's membership carried. */
  const seenFences: (OwnerLease | undefined)[] = [];
  let lists = 0;
  const queue = {
    listSessions: async () => {
      if (lists++ === 0 && firstListMs > 0) await new Promise((r) => setTimeout(r, firstListMs));
      return [{ folder: "Deferred/x", conversationId: SESSION.conversationId, contributionId: SESSION.contributionId, count: 2, total: 2 }];
    },
  } as unknown as DeliveryQueue;
  const ua = {
    onRequest() {},
    onInvite() {},
    invite: (req: { requestUri: string }) => {
      sent?.push(req.requestUri);
      return { callId: `c${sent?.length}`, outcome: new Promise(() => {}), cancel() {} };
    },
  } as unknown as DeliveryUa;
  const leg = { on() {}, close() {} } as unknown as DeliveryLeg;
  const s = new DeliveryService({
    policy,
    servedUser: "",
    ua,
    openLeg: (key) => {
      legs.push(key);
      return sent ? Promise.resolve({ leg, offerSdp: "v=0\r\n" }) : new Promise(() => {});
    },
    answerLeg: () => new Promise(() => {}),
    queue,
    sessions: { get: () => session, findByIds: () => session, all: () => [session] },
    deviceSeen: async (_user, _conv, _contrib, _keyword, fence) => {
      seenFences.push(fence);
    },
    queueSettled: async () => {},
    log,
    ...(ownership ? { ownership } : {}),
  });
  running.push(s);
  return { s, legs, seenFences };
}

/** Ownership answering `owners` in turn, `confirms` for the fence checks; records the wake-ups. */
function fakeOwnership(owners: Owner[], confirms: boolean[] = [], received = 1) {
  const wakes: { slot: number; servedUser: string; contact: string; instanceId?: string }[] = [];
  const fenced: OwnerLease[] = [];
  const asked = { owner: 0 };
  const o: DeliveryOwnership = {
    self: "sidecar-a",
    owner: async () => {
      asked.owner++;
      const next = owners.shift();
      if (!next) throw new Error("owner() asked more often than the case expects");
      return next;
    },
    confirm: async (lease) => {
      fenced.push(lease);
      return confirms.shift() ?? true;
    },
    wake: async (slot, w) => {
      wakes.push({ slot, servedUser: w.servedUser, ...w.client });
      return received;
    },
    holds: () => true,
    onLost: () => {},
  };
  return { o, wakes, fenced, asked };
}

// the fixture's To: the served user the S-CSCF names
const REGISTERED = "sip:user1_public1@home1.net";
const register = (s: DeliveryService) => s.onRegistration({ raw: thirdPartyRegister({ body: registerAndResponse() }) });

test("DD-1 (one sidecar, the journal): no ownership asked, the registration starts the delivery", async () => {
  const { s, legs, seenFences } = service();
  const r = await register(s);
  assert.equal(r.deliveries, 1);
  await waitUntil(async () => legs.length > 0);
  assert.equal(legs.length, 1);
  assert.deepEqual(seenFences, [undefined], "no lease, no fence");
});

test("DD-1 bad input: a third-party REGISTER that carries no REGISTER of the device (no contact): a warning naming the user, the delivery addressed to the public identity, nothing lost", async () => {
  const { log, lines } = capturedLog();
  const { s, legs } = service(undefined, log);
  const r = await s.onRegistration({ raw: thirdPartyRegister() });
  assert.equal(r.deliveries, 1);
  await waitUntil(async () => legs.length > 0);
  assert.equal(legs.length, 1);
  const warn = lines.find((l) => l.level === "warn" && String(l.message).startsWith("registration names no live contact"));
  assert.equal(warn?.servedUser, REGISTERED);
  assert.ok(
    lines.some(
      (l) =>
        l.message === "registration without +sip.instance: delivered as the user's anonymous device" && l.contact === `<${REGISTERED}>`,
    ),
  );
});

test("scale-out DD-1: the holder of the served user's slot delivers after the fence check; the answer names it", async () => {
  const lease = { slot: 3, token: 7 };
  const f = fakeOwnership([{ self: true, lease }]);
  const { s, legs, seenFences } = service(f.o);
  const r = await register(s);
  assert.equal(r.deliveries, 1);
  await waitUntil(async () => legs.length > 0);
  assert.equal(legs.length, 1);
  assert.deepEqual(f.fenced, [lease], "the fence was checked before the claim");
  assert.deepEqual(seenFences, [lease], "the record write of the device's membership carries the lease");
  assert.ok(r.notes.includes("deferred delivery by this sidecar sidecar-a (slot 3, lease 7)"), r.notes.join("; "));
  assert.equal(f.wakes.length, 0);
});

test("scale-out DD-1: another live sidecar holds the slot: the registration is published to it (served user, contact, +sip.instance), nothing starts here, the answer names the owner", async () => {
  const f = fakeOwnership([{ self: false, slot: 3, holder: "sidecar-b", lapsesInMs: 5000 }]);
  const { s, legs } = service(f.o);
  const r = await register(s);
  assert.equal(r.deliveries, 0);
  assert.equal(legs.length, 0);
  assert.equal(f.wakes.length, 1);
  assert.equal(f.wakes[0]?.slot, 3);
  assert.equal(f.wakes[0]?.servedUser, REGISTERED);
  assert.match(f.wakes[0]?.contact ?? "", /^<sip:/);
  assert.ok(f.wakes[0]?.instanceId, "the device's +sip.instance goes with it");
  assert.deepEqual(r.notes, ["deferred delivery by sidecar sidecar-b (owner of slot 3)"]);
});

test("scale-out DD-1: a newer lease was granted while the queue was read: the old token fails the fence, nothing is claimed, the new holder is woken", async () => {
  const f = fakeOwnership(
    [
      { self: true, lease: { slot: 3, token: 7 } },
      { self: false, slot: 3, holder: "sidecar-b", lapsesInMs: 5000 },
    ],
    [false],
  );
  const { s, legs } = service(f.o);
  const r = await register(s);
  assert.equal(r.deliveries, 0);
  assert.equal(legs.length, 0, "no delivery under the superseded token");
  assert.equal(f.wakes.length, 1);
  assert.deepEqual(r.notes, ["deferred delivery by sidecar sidecar-b (owner of slot 3)"]);
});

test("scale-out DD-1: a wake-up for a slot another sidecar holds now is not acted on (and not passed on)", async () => {
  const f = fakeOwnership([{ self: false, slot: 3, holder: "sidecar-c", lapsesInMs: 5000 }]);
  const { s, legs } = service(f.o);
  s.woken({ servedUser: SERVED_USER, client: { contact: "<sip:ue@127.0.0.1>" }, from: "sidecar-b" });
  await waitUntil(async () => f.asked.owner === 1);
  await new Promise((r) => setImmediate(r));
  assert.equal(legs.length, 0);
  assert.equal(f.wakes.length, 0);
});

test("scale-out DD-1: a wake-up nobody received (the holder died, its lease still running): retried once the lease lapsed, then this sidecar takes the slot and delivers", async () => {
  const f = fakeOwnership(
    [
      { self: false, slot: 3, holder: "sidecar-dead", lapsesInMs: 10 },
      { self: true, lease: { slot: 3, token: 8 } },
    ],
    [],
    0,
  );
  const { s, legs } = service(f.o);
  const r = await register(s);
  assert.equal(r.deliveries, 0);
  assert.match(r.notes[0] ?? "", /did not get the wake-up: retried when its lease lapses/);
  await waitUntil(async () => legs.length === 1);
  assert.deepEqual(f.fenced, [{ slot: 3, token: 8 }]);
  assert.equal(f.wakes.length, 1, "one wake-up, no second one");
});

async function waitUntil(cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("condition not met");
}

test("scale-out RJ-1: a re-join of a group with data pending: this sidecar holds the slot -> its own UA answers; another does -> that holder's UA; a holder with no UA published, or an unknown owner -> the focus gets it", async () => {
  const lease = { slot: 3, token: 7 };
  const other = { self: false as const, slot: 3, holder: "sidecar-b", lapsesInMs: 5000 };
  const f = fakeOwnership([{ self: true, lease }, { ...other, ua: "sip:127.0.0.1:6097" }, other]);
  const { s } = service(f.o);
  assert.deepEqual(await s.rejoinTarget(SESSION), {}, "here");
  assert.deepEqual(await s.rejoinTarget(SESSION), { ua: "sip:127.0.0.1:6097" }, "routed to the holder");
  assert.equal(await s.rejoinTarget(SESSION), undefined, "the holder's UA is unknown");
  assert.equal(await s.rejoinTarget(SESSION), undefined, "owner() failed (Redis down): not answered");
  assert.equal(f.asked.owner, 4);
});

test("scale-out RJ-1: a re-join of a group with nothing to deliver (terminated) is not routed to the slot's holder", async () => {
  const f = fakeOwnership([{ self: false, slot: 3, holder: "sidecar-b", lapsesInMs: 5000, ua: "sip:127.0.0.1:6097" }]);
  const { s } = service(f.o);
  assert.equal(await s.rejoinTarget(groupSession({ lifecycle: "terminated" })), undefined);
});

/** SESSION as a SIGKILL leaves it: a registration's delivery to the anonymous device at CONTACT under way. */
const CONTACT = "<sip:ue@10.0.0.7:5060>";
const INTERRUPTED = { ...SESSION, devices: [{ keyword: ANONYMOUS_KEYWORD, at: 1, delivering: { contact: CONTACT, since: 1 } }] };

test("DD-1 DD-10 (delivery.resumeInterrupted): a record saying a delivery was under way starts it again to that contact, with no REGISTER; a record saying none starts nothing", async () => {
  const { s, legs } = service(undefined, silentLogger(), INTERRUPTED);
  assert.equal(await s.resumeInterrupted(), 1);
  await waitUntil(async () => legs.length > 0);
  assert.equal(legs.length, 1, "the delivery INVITE is prepared");
  assert.equal(await s.resumeInterrupted(), 0, "running now: not started twice");
  const idle = service();
  assert.equal(await idle.s.resumeInterrupted(), 0);
  assert.equal(idle.legs.length, 0);
});

test("DD-1 bad input: a record whose interrupted delivery names no usable contact: a warning naming the user, nothing started, nothing touched", async () => {
  const { log, lines } = capturedLog();
  const broken = {
    ...SESSION,
    devices: [{ keyword: ANONYMOUS_KEYWORD, at: 1, delivering: { contact: 7, since: 1 } }],
  } as unknown as GroupSession;
  const { s, legs } = service(undefined, log, broken);
  assert.equal(await s.resumeInterrupted(), 0);
  assert.equal(legs.length, 0);
  const warn = lines.find((l) => l.message === "interrupted delivery in the record is unusable: not resumed");
  assert.equal(warn?.servedUser, SESSION.servedUser);
});

test("scale-out DD-1 DD-10: an interrupted delivery whose slot a live sidecar holds is left to it (nobody woken); once the slot is granted here (the holder's lease lapsed) it is resumed under the new lease", async () => {
  const held = fakeOwnership([{ self: false, slot: 3, holder: "sidecar-b", lapsesInMs: 900 }]);
  const there = service(held.o, silentLogger(), INTERRUPTED);
  assert.equal(await there.s.resumeInterrupted(), 0);
  assert.equal(there.legs.length, 0);
  assert.equal(held.wakes.length, 0, "a scan wakes nobody");
  const lease = { slot: 3, token: 9 };
  const lapsed = fakeOwnership([{ self: true, lease }]);
  const here = service(lapsed.o, silentLogger(), INTERRUPTED);
  assert.equal(await here.s.resumeInterrupted(), 1);
  await waitUntil(async () => here.legs.length > 0);
  assert.equal(here.legs.length, 1);
  assert.deepEqual(lapsed.fenced, [lease], "claimed under the lease");
});

test("DD-1 DD-10: a resumed delivery is no registration: the device's REGISTER from another contact claimed the delivery first, the scan that resumes the record's older contact leaves it alone", async () => {
  const { log, lines } = capturedLog();
  // the fixture's device (its +sip.instance), its delivery interrupted at the contact it left
  const instanceId = "<urn:gsma:imei:35209900-176148-0>";
  const delivering = { contact: CONTACT, instanceId, since: 1 };
  const left = { ...SESSION, servedUser: REGISTERED, devices: [{ keyword: deviceOf(instanceId).keyword, at: 1, delivering }] };
  // the scan begins first (no delivery running yet) and reads the queue late: the REGISTER's delivery claims the group session before it
  const sent: string[] = [];
  const { s } = service(undefined, log, left, { sent, firstListMs: 20 });
  const resumed = s.resumeInterrupted();
  await register(s);
  assert.equal(await resumed, 0, "nothing resumed beside the running delivery");
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(sent, ["sip:[5555::aaa:bbb:ccc:ddd]:1357;comp=sigcomp"], "one delivery INVITE, to the contact just registered");
  assert.equal(
    lines.filter((l) => String(l.message).startsWith("registered again")).length,
    0,
    "the delivery not moved to the record's contact",
  );
});
