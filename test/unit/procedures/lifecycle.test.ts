// The group session record's lifecycle (src/procedures/lifecycle.ts): every
// transition, and the retention policy that alone purges a record.
import assert from "node:assert/strict";
import { test } from "node:test";
import { lifecycleAfterBye, type RetentionPolicy, shouldPurge, stepLifecycle } from "../../../src/procedures/lifecycle.js";
import { type GroupSession, MAX_ENDED_DIALOGS, type SessionDialog } from "../../../src/session/group-session.js";
import { groupSession } from "../../fixtures/delivery.js";

const DAY = 24 * 3600 * 1000;
const NOW = 1_800_000_000_000;

function dialog(callId: string, state: SessionDialog["state"] = "confirmed"): SessionDialog {
  return {
    callId,
    cfTag: "cf-tag",
    clientTag: "ue-tag",
    remoteTarget: "sip:focus@cf",
    routeSet: [],
    inviteCseq: 1,
    clientInstance: "",
    state,
  };
}

const record = (extra: Partial<GroupSession> = {}): GroupSession => groupSession({ dialogs: [dialog("call-1@cf")], ...extra });

test("BYE-B3 BYE-B4 BYE-B5 BYE-B1 BYE-B2: the network BYE's cause class decides where the group session is left", () => {
  assert.equal(lifecycleAfterBye("terminated"), "terminated"); // 410: no long-lived re-start
  assert.equal(lifecycleAfterBye("inactivity"), "inactive"); // 480: may be re-started
  assert.equal(lifecycleAfterBye("network"), "inactive"); // other: SIP/IP core, may be re-started
  assert.equal(lifecycleAfterBye("participant-left"), "left"); // 200 / no Reason
});

test("BYE-B4 DD-1: a network BYE keeps the record (the group session outlives its dialog), marks the dialog terminated and keeps the cause", () => {
  const step = stepLifecycle(
    record({ lifecycle: "client-absent", pendingDeferred: true }),
    { type: "networkBye", callId: "call-1@cf", cause: "inactivity", reasonCause: 480 },
    NOW,
  );
  assert.ok(step.record, "not purged");
  assert.deepEqual(step.transition, { from: "client-absent", to: "inactive" });
  assert.equal(step.record.lifecycleAt, NOW);
  assert.equal(step.record.endCause, 480);
  assert.equal(step.record.pendingDeferred, true, "the deferred data is still pending");
  assert.equal(step.record.dialogs[0]?.state, "terminated");
});

test("BYE-B3: a 410 leaves the record terminated; the client's own BYE leaves it left", () => {
  const terminated = stepLifecycle(record(), { type: "networkBye", callId: "call-1@cf", cause: "terminated", reasonCause: 410 }, NOW);
  assert.deepEqual(terminated.transition, { from: "active", to: "terminated" });
  const left = stepLifecycle(record(), { type: "clientBye", callId: "call-1@cf" }, NOW);
  assert.deepEqual(left.transition, { from: "active", to: "left" });
});

test("DD-12 RJ-5: a delivery session joined with the on-going group session makes a client-absent record active again; elsewhere it changes nothing", () => {
  const step = stepLifecycle(record({ lifecycle: "client-absent", pendingDeferred: true }), { type: "clientJoined" }, NOW);
  assert.deepEqual(step.transition, { from: "client-absent", to: "active" });
  const inactive = stepLifecycle(record({ lifecycle: "inactive" }), { type: "clientJoined" }, NOW);
  assert.equal(inactive.transition, undefined);
  assert.equal(inactive.record?.lifecycle, "inactive");
});

test("DD-8 ii: the served user declined the delivery of a group still going on: the PF's BYE leaves the record left, its dialog terminated", () => {
  const step = stepLifecycle(record({ lifecycle: "client-absent", pendingDeferred: true }), { type: "userLeft", callId: "call-1@cf" }, NOW);
  assert.deepEqual(step.transition, { from: "client-absent", to: "left" });
  assert.equal(step.record?.dialogs[0]?.state, "terminated");
});

test("RJ-1: a group re-joined again and again keeps only its newest ended dialogs (MAX_ENDED_DIALOGS) and every live one: the record does not grow", () => {
  let s = record({ lifecycle: "inactive", dialogs: [dialog("call-0@cf", "terminated")] });
  for (let i = 1; i <= 3 * MAX_ENDED_DIALOGS; i++) {
    s = stepLifecycle(s, { type: "invited", dialog: dialog(`rejoin-${i}@ue`, "early") }, NOW + i).record as GroupSession;
    s = stepLifecycle(s, { type: "networkBye", callId: `rejoin-${i}@ue`, cause: "inactivity", reasonCause: 480 }, NOW + i)
      .record as GroupSession;
  }
  s = stepLifecycle(s, { type: "invited", dialog: dialog("live@ue", "early") }, NOW + 100).record as GroupSession;
  const ended = s.dialogs.filter((d) => d.state === "terminated").map((d) => d.callId);
  assert.equal(ended.length, MAX_ENDED_DIALOGS);
  assert.deepEqual(
    ended,
    Array.from({ length: MAX_ENDED_DIALOGS }, (_, k) => `rejoin-${2 * MAX_ENDED_DIALOGS + 1 + k}@ue`),
    "the newest ended ones, in order",
  );
  assert.equal(s.dialogs.at(-1)?.callId, "live@ue");
  assert.equal(s.key, "live@ue");
});

test("DD-10 DD-12: the first deferred item makes an active record client-absent with data pending; later items change nothing", () => {
  const first = stepLifecycle(record(), { type: "deferred" }, NOW);
  assert.deepEqual(first.transition, { from: "active", to: "client-absent" });
  assert.equal(first.record?.pendingDeferred, true);
  const again = stepLifecycle(first.record as GroupSession, { type: "deferred" }, NOW + 1);
  assert.equal(again.transition, undefined);
  assert.equal(again.record, first.record, "no new record: nothing to persist");
});

test("RJ-1: a new dialog (re-join / re-start INVITE) of a known group makes it active again, keeps the older dialogs and the pending data", () => {
  const inactive = record({ lifecycle: "inactive", endCause: 480, pendingDeferred: true, dialogs: [dialog("call-1@cf", "terminated")] });
  const step = stepLifecycle(inactive, { type: "invited", dialog: dialog("rejoin@ue", "early") }, NOW);
  assert.deepEqual(step.transition, { from: "inactive", to: "active" });
  assert.equal(step.record?.key, "rejoin@ue", "the new dialog is the current one");
  assert.deepEqual(
    step.record?.dialogs.map((d) => d.callId),
    ["call-1@cf", "rejoin@ue"],
  );
  assert.equal(step.record?.pendingDeferred, true);
  assert.equal(step.record?.endCause, undefined);
});

test("an INVITE that never became a session removes its record; a failed re-join leaves the known group where it was (inactive)", () => {
  const fresh = record({ dialogs: [dialog("new@cf", "early")], key: "new@cf" });
  assert.equal(stepLifecycle(fresh, { type: "inviteFailed", callId: "new@cf", status: 486 }, NOW).record, undefined);
  const rejoin = stepLifecycle(
    record({ lifecycle: "active", dialogs: [dialog("call-1@cf", "terminated"), dialog("rejoin@ue", "early")], key: "rejoin@ue" }),
    { type: "inviteFailed", callId: "rejoin@ue", status: 404 },
    NOW,
  );
  assert.ok(rejoin.record);
  assert.deepEqual(rejoin.transition, { from: "active", to: "inactive" });
  assert.deepEqual(
    rejoin.record.dialogs.map((d) => d.callId),
    ["call-1@cf"],
  );
  const pending = record({ dialogs: [dialog("new@cf", "early")], pendingDeferred: true });
  assert.ok(stepLifecycle(pending, { type: "inviteFailed", callId: "new@cf", status: 486 }, NOW).record, "pending data keeps the record");
});

test("DD-8 DD-10 DD-14: the delivery emptied the queue -> nothing pending, lifecycle unchanged", () => {
  const step = stepLifecycle(record({ lifecycle: "inactive", pendingDeferred: true }), { type: "queueSettled" }, NOW);
  assert.equal(step.record?.pendingDeferred, false);
  assert.equal(step.record?.lifecycle, "inactive");
  assert.equal(step.transition, undefined);
});

test("retention: pending data is never purged; ended records after retentionMs; re-startable groups after inactiveRetentionMs of silence", () => {
  const policy: RetentionPolicy = { retentionMs: 30 * DAY, inactiveRetentionMs: 400 * DAY };
  const at = (lifecycle: GroupSession["lifecycle"], ageDays: number, pendingDeferred = false) =>
    record({ lifecycle, lifecycleAt: NOW - ageDays * DAY, updatedAt: NOW - ageDays * DAY, pendingDeferred });
  assert.equal(shouldPurge(at("terminated", 31), NOW, policy), true);
  assert.equal(shouldPurge(at("left", 29), NOW, policy), false);
  assert.equal(shouldPurge(at("terminated", 1000, true), NOW, policy), false, "pending: never");
  assert.equal(shouldPurge(at("inactive", 90), NOW, policy), false, "a long-lived group quiet for months comes back");
  assert.equal(shouldPurge(at("inactive", 401), NOW, policy), true);
  assert.equal(shouldPurge(at("client-absent", 401, true), NOW, policy), false);
});

test("DD-13 RJ-3: a re-start via the conference factory gives the record the new focus (the GSOs' lastfocussessionid from now on); a re-join keeps it", () => {
  const inactive = record({ lifecycle: "inactive", endCause: 480 });
  const viaFactory = stepLifecycle(inactive, { type: "invited", dialog: dialog("restart@pf"), focusUri: "sip:focus-new@cf" }, NOW);
  assert.equal(viaFactory.record?.focusUri, "sip:focus-new@cf");
  assert.equal(viaFactory.record?.key, "restart@pf");
  assert.equal(viaFactory.record?.lifecycle, "active");
  const rejoin = stepLifecycle(inactive, { type: "invited", dialog: dialog("rejoin@pf") }, NOW);
  assert.equal(rejoin.record?.focusUri, inactive.focusUri);
});

test("DD-1 DD-10: a registration's delivery to a device is kept in the record while it runs (deliveryBegan .. deliveryEnded), beside what the device confirmed; the queue settling clears it", () => {
  const pending = record({ lifecycle: "inactive", pendingDeferred: true });
  const began = stepLifecycle(
    pending,
    { type: "deliveryBegan", keyword: "CpmPfDev_a", contact: "<sip:ue@10.0.0.1:5060>", instanceId: "urn:uuid:a" },
    NOW,
  );
  assert.deepEqual(began.record?.devices?.[0]?.delivering, { contact: "<sip:ue@10.0.0.1:5060>", instanceId: "urn:uuid:a", since: NOW });
  const through = { uidValidity: "7", uid: 40 };
  const confirmed = stepLifecycle(began.record as GroupSession, { type: "deviceDelivered", keyword: "CpmPfDev_a", through }, NOW + 1);
  const seenAgain = stepLifecycle(confirmed.record as GroupSession, { type: "deviceSeen", keyword: "CpmPfDev_a" }, NOW + 2 * 60_000);
  const dev = seenAgain.record?.devices?.[0];
  assert.deepEqual(dev?.deliveredThrough, through);
  assert.equal(dev?.delivering?.contact, "<sip:ue@10.0.0.1:5060>", "a refresh REGISTER keeps the delivery under way");
  const ended = stepLifecycle(seenAgain.record as GroupSession, { type: "deliveryEnded", keyword: "CpmPfDev_a" }, NOW + 3);
  assert.equal(ended.record?.devices?.[0]?.delivering, undefined);
  assert.deepEqual(ended.record?.devices?.[0]?.deliveredThrough, through, "the confirmed position stays");
  const again = stepLifecycle(ended.record as GroupSession, { type: "deliveryEnded", keyword: "CpmPfDev_a" }, NOW + 4);
  assert.equal(again.record, ended.record, "an end with none under way writes nothing");
  const settled = stepLifecycle(began.record as GroupSession, { type: "queueSettled" }, NOW + 5);
  assert.equal(settled.record?.devices, undefined, "nothing pending: nothing to resume");
  const none = stepLifecycle(record(), { type: "deliveryBegan", keyword: "CpmPfDev_a", contact: "<sip:ue@10.0.0.1>" }, NOW);
  assert.equal(none.record?.devices, undefined, "no data pending: nothing to resume");
});

test("DD-12 RFC 3261 12.2.2: the record keeps the highest CSeq of the CF's requests the PF answered for the client (never lower, nor the INVITE's)", () => {
  const r = record();
  const inviteCseq = r.dialogs[0]?.inviteCseq ?? 0;
  const up = stepLifecycle(r, { type: "cfRequest", callId: "call-1@cf", cseq: inviteCseq + 5 }, NOW);
  assert.equal(up.record?.dialogs[0]?.cfCseq, inviteCseq + 5);
  const lower = stepLifecycle(up.record as GroupSession, { type: "cfRequest", callId: "call-1@cf", cseq: inviteCseq + 2 }, NOW);
  assert.equal(lower.record, up.record, "a lower one writes nothing");
  assert.equal(stepLifecycle(r, { type: "cfRequest", callId: "other@cf", cseq: 99 }, NOW).record, r, "another dialog's: nothing");
});
