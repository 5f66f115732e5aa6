// DD-1 per device (8.3.2.9.1.2 "for a CPM Client"), the pure parts: device
// keywords, members of a queue, what leaves it; per-device claims of both
// procedures (delivery-guard.ts, deferred-delivery.ts, rejoin-delivery.ts);
// DD-8 / DD-14 / DD-10 on one device's view.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  type DeferredDeliveryEvent,
  type RegisteredEvent,
  startDeferredDelivery,
  stepDeferredDelivery,
} from "../../../src/procedures/deferred-delivery.js";
import { itemsConfirmed, itemsRead, noConfirmedPrefix } from "../../../src/procedures/delivered-through.js";
import { deliveryKey } from "../../../src/procedures/delivery-guard.js";
import type { DeliveryAction } from "../../../src/procedures/delivery-session.js";
import {
  ANONYMOUS_KEYWORD,
  DEVICE_KEYWORD_PREFIX,
  deliveredThroughOf,
  deviceOf,
  type ItemMarks,
  MAX_SEEN_DEVICES,
  memberKeywords,
  retirable,
  SEEN_REFRESH_MS,
  withSeenDevice,
} from "../../../src/procedures/device-view.js";
import { stepLifecycle } from "../../../src/procedures/lifecycle.js";
import { answersRejoin, startRejoinDelivery, stepRejoinDelivery } from "../../../src/procedures/rejoin-delivery.js";
import type { GroupSession, SessionDialog } from "../../../src/session/group-session.js";
import { AT, groupSession, item, only, policy, SERVED_USER } from "../../fixtures/delivery.js";

const PHONE = "<urn:gsma:imei:35209900-176148-0>";
const TABLET = "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";
const phone = deviceOf(PHONE);
const tablet = deviceOf(TABLET);

const registered = (session: GroupSession, instanceId?: string): RegisteredEvent => ({
  type: "registered",
  servedUser: SERVED_USER,
  client: { contact: "<sip:client@10.0.0.5:5060>", ...(instanceId ? { instanceId } : {}) },
  pending: [{ conversationId: session.conversationId, contributionId: session.contributionId, count: 3, session }],
});

function dialog(callId: string, clientInstance: string): SessionDialog {
  return {
    callId,
    cfTag: "cf",
    clientTag: "ue",
    remoteTarget: "sip:focus@cf",
    routeSet: [],
    inviteCseq: 1,
    clientInstance,
    state: "terminated",
  };
}

const marks = (uid: number, keywords: string[], storedAt = 0): ItemMarks => ({
  handle: { ...item(uid).handle },
  keywords,
  storedAt,
});

test("DD-1: a device's keyword is an IMAP atom under Dovecot's mail_max_keyword_length, stable, and tells instances apart; none → the anonymous device", () => {
  assert.match(phone.keyword, /^CpmPfDev_[0-9a-f]{16}$/);
  assert.ok(phone.keyword.length <= 50);
  assert.equal(deviceOf(`"${PHONE}"`).keyword, phone.keyword, "quotes of +sip.instance do not name another device");
  assert.equal(deviceOf(` ${PHONE} `).keyword, phone.keyword);
  assert.notEqual(phone.keyword, tablet.keyword);
  assert.equal(deviceOf(undefined).keyword, ANONYMOUS_KEYWORD);
  assert.equal(deviceOf('""').keyword, ANONYMOUS_KEYWORD);
  assert.equal(deviceOf(undefined).instanceId, undefined);
  assert.ok(!phone.keyword.includes("35209900"), "no device identifier in the user's mailbox");
  fc.assert(
    fc.property(fc.string({ minLength: 1 }), (id) => {
      const k = deviceOf(id).keyword;
      return /^CpmPfDev_([0-9a-f]{16}|anonymous)$/.test(k) && k === deviceOf(id).keyword;
    }),
  );
});

test("DD-1: members of a queue = the record's dialogs' instances, the devices seen while data was pending (within the retention), and the device delivering; a dialog without an instance names none", () => {
  const now = 10_000_000;
  const session = groupSession({
    dialogs: [dialog("d1", PHONE), dialog("d2", "")],
    devices: [
      { keyword: tablet.keyword, at: now - 1000 },
      { keyword: "CpmPfDev_0000000000000000", at: now - 2 * 86_400_000 },
    ],
  });
  const members = memberKeywords(session, ANONYMOUS_KEYWORD, now, 86_400_000);
  assert.deepEqual(new Set(members), new Set([ANONYMOUS_KEYWORD, phone.keyword, tablet.keyword]));
  // retention 0: one delivery per user, the device delivering is the only member
  assert.deepEqual(memberKeywords(session, tablet.keyword, now, 0), [tablet.keyword]);
  assert.deepEqual(memberKeywords(undefined, tablet.keyword, now, 1000), [tablet.keyword]);
});

test("DD-1: an item leaves the queue once every member device has it, or once older than deviceRetentionMs and one device has it; never by age when no device has it", () => {
  const members = [phone.keyword, tablet.keyword];
  const now = 1_000_000;
  const r = retirable(
    [
      marks(1, [phone.keyword, tablet.keyword.toUpperCase()], now), // both (keywords compare case-insensitively)
      marks(2, [phone.keyword], now), // the tablet has not got it
      marks(3, [phone.keyword], now - 5000), // aged out
      marks(4, [], now - 5000), // nobody got it: kept whatever its age
      marks(5, ["$Forwarded"], now - 5000),
    ],
    members,
    now,
    5000,
  );
  assert.deepEqual(
    r.retire.map((h) => h.uid),
    [1, 3],
  );
  assert.equal(r.kept, 3);
  assert.equal(r.unmarked, 0);
  // retention 0: the first device's mark retires it (the behaviour of one delivery per user)
  assert.deepEqual(
    retirable([marks(2, [phone.keyword], now)], [phone.keyword], now, 0).retire.map((h) => h.uid),
    [2],
  );
});

test("DD-1: an item whose mark the store did not keep (no new keyword allowed) leaves, as with one delivery per user, and is counted", () => {
  const r = retirable([marks(1, []), marks(2, [phone.keyword])], [phone.keyword, tablet.keyword], 0, 1000, phone.keyword);
  assert.deepEqual(
    r.retire.map((h) => h.uid),
    [1],
  );
  assert.equal(r.unmarked, 1);
  assert.equal(r.kept, 1);
});

test("DD-1: property: nothing is retired that a member lacks unless it aged out; everything every member has is retired", () => {
  const kw = fc.constantFrom(phone.keyword, tablet.keyword, ANONYMOUS_KEYWORD);
  fc.assert(
    fc.property(
      fc.array(fc.record({ kws: fc.uniqueArray(kw, { maxLength: 3 }), age: fc.nat(10_000) }), { maxLength: 20 }),
      fc.uniqueArray(kw, { minLength: 1, maxLength: 3 }),
      fc.nat(10_000),
      (items, members, retention) => {
        const now = 100_000;
        const list = items.map((it, i) => marks(i + 1, it.kws, now - it.age));
        const out = new Set(retirable(list, members, now, retention).retire.map((h) => h.uid));
        return items.every((it, i) => {
          const all = members.every((m) => it.kws.includes(m));
          const aged = it.kws.length > 0 && it.age >= retention;
          return out.has(i + 1) === (all || aged);
        });
      },
    ),
  );
});

test("DD-1: the record learns the devices seen while data is pending (newest kept, refreshed in place) and forgets them when the queue settles", () => {
  const pending = groupSession({ pendingDeferred: true, lifecycle: "inactive" });
  const a = stepLifecycle(pending, { type: "deviceSeen", keyword: phone.keyword }, 100).record as GroupSession;
  const b = stepLifecycle(a, { type: "deviceSeen", keyword: tablet.keyword }, 200).record as GroupSession;
  // a refresh within SEEN_REFRESH_MS writes nothing; later, the device moves to the newest
  assert.equal(stepLifecycle(b, { type: "deviceSeen", keyword: phone.keyword }, 300).record, b);
  const c = stepLifecycle(b, { type: "deviceSeen", keyword: phone.keyword }, 100 + SEEN_REFRESH_MS).record as GroupSession;
  assert.deepEqual(c.devices, [
    { keyword: tablet.keyword, at: 200 },
    { keyword: phone.keyword, at: 100 + SEEN_REFRESH_MS },
  ]);
  assert.equal(stepLifecycle(c, { type: "queueSettled" }, 400).record?.devices, undefined);
  const idle = groupSession({ pendingDeferred: false });
  assert.equal(stepLifecycle(idle, { type: "deviceSeen", keyword: phone.keyword }, 100).record, idle, "no data pending: no member");
  let many: ReturnType<typeof withSeenDevice> = [];
  for (let i = 0; i < MAX_SEEN_DEVICES + 5; i++) many = withSeenDevice(many, `${DEVICE_KEYWORD_PREFIX}${i}`, i);
  assert.equal(many.length, MAX_SEEN_DEVICES);
  assert.equal(many[0]?.keyword, `${DEVICE_KEYWORD_PREFIX}5`);
});

test("DD-1 DD-10: two devices registering get one delivery each, in parallel, each its own claim and its own view of the queue (reads skip what that device has)", () => {
  const session = groupSession({ lifecycle: "inactive", pendingDeferred: true });
  const first = startDeferredDelivery(registered(session, PHONE), new Map(), policy);
  const second = startDeferredDelivery(registered(session, TABLET), first.claims, policy);
  assert.equal(first.deliveries.length, 1);
  assert.equal(second.deliveries.length, 1, "the second device is not blocked by the first one's delivery");
  assert.deepEqual(
    [...second.claims.keys()],
    [deliveryKey(SERVED_USER, session.key, phone.keyword), deliveryKey(SERVED_USER, session.key, tablet.keyword)],
  );
  for (const [d, dev] of [
    [first.deliveries[0], phone],
    [second.deliveries[0], tablet],
  ] as const) {
    assert.ok(d);
    const up = stepDeferredDelivery(
      stepDeferredDelivery(d.state, { type: "inviteResponse", status: 200 }, policy).state,
      { type: "msrpUp" },
      policy,
    );
    const [readAction] = only(up.actions, "readDeferred");
    assert.equal(readAction?.queue.device, dev.keyword, "the read is that device's view");
    // DD-10: in order, for this device
    const r = stepDeferredDelivery(up.state, { type: "itemsRead", items: [item(3), item(1), item(2)], at: AT }, policy);
    assert.deepEqual(
      only(r.actions, "deliverInOrder")[0]?.items.map((i) => i.handle.uid),
      [1, 2, 3],
    );
  }
});

test("DD-1: the same device re-registering during its delivery starts nothing; an instance-less registration is one anonymous device", () => {
  const session = groupSession({ lifecycle: "inactive", pendingDeferred: true });
  const first = startDeferredDelivery(registered(session, PHONE), new Map(), policy);
  const again = startDeferredDelivery(registered(session, `"${PHONE}"`), first.claims, policy);
  assert.equal(again.deliveries.length, 0);
  assert.ok(again.notes.some((n) => n.includes("not delivered again to this device")));
  const anon = startDeferredDelivery(registered(session), first.claims, policy);
  assert.equal(anon.deliveries.length, 1);
  assert.equal(anon.deliveries[0]?.state.delivery.device, ANONYMOUS_KEYWORD);
  const anonAgain = startDeferredDelivery(registered(session), anon.claims, policy);
  assert.equal(anonAgain.deliveries.length, 0, "every instance-less registration is the same device");
});

const discards = (actions: readonly DeliveryAction[]) => only(actions, "discardDeferred").map((a) => a.queue.device);

test("DD-8: a 603 from one device discards that device's view only (its marks), not the other devices' data", () => {
  const session = groupSession({ lifecycle: "inactive", pendingDeferred: true });
  const d = startDeferredDelivery(registered(session, TABLET), new Map(), policy).deliveries[0];
  assert.ok(d);
  const r = stepDeferredDelivery(d.state, { type: "inviteResponse", status: 603 }, policy);
  assert.deepEqual(discards(r.actions), [tablet.keyword]);
  assert.equal(r.claim, undefined);
});

test("DD-14: the client's BYE cause=200 during the delivery discards the rest for that device only", () => {
  const session = groupSession({ lifecycle: "inactive", pendingDeferred: true });
  const d = startDeferredDelivery(registered(session, PHONE), new Map(), policy).deliveries[0];
  assert.ok(d);
  let s = d.state;
  const events: DeferredDeliveryEvent[] = [
    { type: "inviteResponse", status: 200 },
    { type: "msrpUp" },
    { type: "itemsRead", items: [item(1)], at: AT },
  ];
  for (const ev of events) {
    s = stepDeferredDelivery(s, ev, policy).state;
  }
  const bye = stepDeferredDelivery(s, { type: "clientBye", reasons: ['SIP;cause=200;text="Call completed"'] }, policy);
  assert.deepEqual(discards(bye.actions), [phone.keyword]);
});

test("RJ-1 DD-1: a re-join takes over the registration delivery of the same device only (its Contact +sip.instance); another device's delivery goes on", () => {
  const session = groupSession({ lifecycle: "client-absent", pendingDeferred: true });
  const regs = startDeferredDelivery(registered(session, PHONE), new Map(), policy);
  const both = startDeferredDelivery(registered(session, TABLET), regs.claims, policy).claims;
  assert.equal(answersRejoin(SERVED_USER, session, both, true, PHONE), true);
  const rj = startRejoinDelivery(
    { type: "rejoinInvite", servedUser: SERVED_USER, clientCallId: "rj@ue", session, instanceId: PHONE },
    both,
    policy,
  );
  assert.deepEqual(only(rj.actions, "supersedeRegistrationDelivery"), [
    { kind: "supersedeRegistrationDelivery", key: deliveryKey(SERVED_USER, session.key, phone.keyword) },
  ]);
  assert.equal(rj.claims.get(deliveryKey(SERVED_USER, session.key, phone.keyword))?.owner, "rejoin");
  assert.equal(
    rj.claims.get(deliveryKey(SERVED_USER, session.key, tablet.keyword))?.owner,
    "registration",
    "the tablet's delivery is untouched",
  );
  // a second re-join of the same device is a plain one; another device's re-join is its own
  assert.equal(answersRejoin(SERVED_USER, session, rj.claims, true, PHONE), false);
  assert.equal(answersRejoin(SERVED_USER, session, rj.claims, true, undefined), true);
  // the re-join's view of the queue is the phone's
  assert.ok(rj.state);
  const up = stepRejoinDelivery(rj.state, { type: "msrpUp" }, policy);
  assert.equal(only(up.actions, "readDeferred")[0]?.queue.device, phone.keyword);
});

test("DD-10: the record keeps how far each device confirmed (never back, a new UIDVALIDITY starts over); a refresh of the device keeps it; it goes when the queue settles", () => {
  const pending = groupSession({ pendingDeferred: true, lifecycle: "inactive" });
  const seen = stepLifecycle(pending, { type: "deviceSeen", keyword: phone.keyword }, 100).record as GroupSession;
  const at = (s: GroupSession, uidValidity: string, uid: number, now = 200) =>
    stepLifecycle(s, { type: "deviceDelivered", keyword: phone.keyword, through: { uidValidity, uid } }, now).record as GroupSession;
  const a = at(seen, "7", 40);
  assert.deepEqual(deliveredThroughOf(a.devices, phone.keyword), { uidValidity: "7", uid: 40 });
  assert.equal(deliveredThroughOf(a.devices, tablet.keyword), undefined, "another device's position is its own");
  assert.equal(at(a, "7", 32), a, "an older position (a write that came late) changes nothing");
  assert.equal(deliveredThroughOf(at(a, "8", 3).devices, phone.keyword)?.uid, 3, "a new UIDVALIDITY: the old UIDs name nothing");
  assert.equal(deliveredThroughOf(a.devices, phone.keyword, "8"), undefined, "asked for another UIDVALIDITY: nothing");
  const refreshed = stepLifecycle(a, { type: "deviceSeen", keyword: phone.keyword }, 100 + SEEN_REFRESH_MS).record as GroupSession;
  assert.equal(deliveredThroughOf(refreshed.devices, phone.keyword)?.uid, 40, "seen again: the position stays");
  assert.equal(stepLifecycle(a, { type: "queueSettled" }, 300).record?.devices, undefined);
  const idle = groupSession({ pendingDeferred: false });
  assert.equal(at(idle, "7", 40), idle, "no data pending: nothing to remember");
  // a device the record had not seen yet (its deviceSeen write failed) is added with its position
  assert.equal(deliveredThroughOf(at(pending, "7", 5).devices, phone.keyword)?.uid, 5);
});

test("DD-10: the confirmed prefix moves past confirmed items only while none is out below them; an item never confirmed (unreadable, failed) stops it", () => {
  const h = (uid: number, uidValidity = "7") => ({ uidValidity, uid });
  let p = itemsRead(noConfirmedPrefix, [h(3), h(5), h(8), h(9)]);
  let r = itemsConfirmed(p, [h(5), h(8)]);
  assert.equal(r.moved, undefined, "3 is still out");
  r = itemsConfirmed(r.prefix, [h(3)]);
  assert.deepEqual(r.moved, { uidValidity: "7", uid: 8 });
  p = itemsRead(r.prefix, [h(12), h(9)]);
  assert.deepEqual(p.open, [9, 12], "read twice or out of order: once, in UID order");
  assert.equal(itemsConfirmed(p, [h(12), h(9, "6")]).moved, undefined, "another UIDVALIDITY's item confirms nothing here");
  assert.deepEqual(itemsConfirmed(p, [h(12), h(9)]).moved, { uidValidity: "7", uid: 12 });
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 500 }), { minLength: 1, maxLength: 60 }), fc.array(fc.nat()), (uids, picks) => {
      const sorted = [...uids].sort((a, b) => a - b);
      let q = itemsRead(
        noConfirmedPrefix,
        uids.map((u) => h(u)),
      );
      const done = new Set<number>();
      for (const i of picks) {
        const uid = sorted[i % sorted.length] as number;
        done.add(uid);
        q = itemsConfirmed(q, [h(uid)]).prefix;
        // through: the longest run of confirmed items from the lowest UID read
        let expect = 0;
        for (const u of sorted) {
          if (!done.has(u)) break;
          expect = u;
        }
        assert.equal(q.through, expect);
      }
    }),
  );
});
