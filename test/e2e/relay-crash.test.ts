// Fault case (c), short form (test/harness/relay-crash.ts): an anchored MSRP
// relay whose sidecar is SIGKILLed mid-way, from the wire, with one sidecar
// and with 2 Kamailio × 2 sidecars on Redis. What the CF got a 200 for
// reached the client; with two sidecars the CF's BYE is decided by the other.
import assert from "node:assert/strict";
import { after, before, describe, type TestContext, test } from "node:test";
import { DeferredChatRig, groupFolder, SERVED_USER } from "../harness/deferred-chat.js";
import { type OwnerPair, startOwnerPair } from "../harness/delivery-takeover.js";
import { type RelayCounts, relayAcrossKill } from "../harness/relay-crash.js";
import { waitFor } from "../harness/wait.js";

const MESSAGES = 400;
const KILL_AT = 100;

function assertNothingAckedLost(t: TestContext, c: RelayCounts): void {
  t.diagnostic(
    `${c.sent} sent by the CF: ${c.acknowledged} acknowledged (200), ${c.unanswered} not (the kill); the client got ${c.delivered}; acknowledged and lost ${c.lost}`,
  );
  assert.ok(c.delivered >= KILL_AT && c.acknowledged < c.sent, "killed mid-way");
  assert.equal(c.lost, 0, "every SEND the CF got 200 for reached the client");
  assert.equal(c.doubled, 0, "nothing reached the client twice");
  assert.equal(c.reordered, 0, "in the CF's order, without a gap");
}

describe("scale-out fault case (c), short form: an anchored MSRP relay when the sidecar is SIGKILLed", () => {
  let rig: DeferredChatRig | undefined;
  before(async () => {
    rig = await DeferredChatRig.start({}, undefined, { failsafeJournal: true });
  });
  after(async () => {
    await rig?.stop();
  });

  test(`MEDIA-RELAY BYE-B5: the CF sends ${MESSAGES} messages through the anchored PF, the sidecar is SIGKILLed after the client got ${KILL_AT}: every SEND the CF got 200 for reached the client, in order, once; 0 acknowledged and lost; the CF's BYE (fail-safe, journaled) stores its GSO once the sidecar is back`, async (t) => {
    const r = rig as DeferredChatRig;
    const { run, call } = await relayAcrossKill(r, { messages: MESSAGES, killAt: KILL_AT, byeDecided: false });
    assertNothingAckedLost(t, run.counts);
    assert.ok(run.counts.failsafes > 0, "the CF's BYE met the dead sidecar: the fail-safe relayed it");
    // BYE-B5: Kamailio journaled the fail-safe BYE; the restarted sidecar replays it and stores its GSO
    await r.restart();
    await waitFor(async () => (await r.folder(groupFolder(call), SERVED_USER)).length === 1, 10_000, 50, "the replayed BYE's GSO");
  });
});

describe("scale-out fault case (c), short form: 2 Kamailio × 2 sidecars on Redis, the sidecar anchoring the relay SIGKILLed", () => {
  let pair: OwnerPair | undefined;
  before(async () => {
    pair = await startOwnerPair({ slots: 16, leaseTtlMs: 1500 });
  });
  after(async () => {
    await pair?.stop();
  });

  test("MEDIA-RELAY BYE-B4 BYE-B5: A anchors the relay and is SIGKILLed mid-way: 0 acknowledged and lost; the CF's BYE then goes through A's Kamailio to B, decided from the shared record within the deadline (no fail-safe), one GSO", async (t) => {
    const { a, b } = pair as OwnerPair;
    const { run, call, ended } = await relayAcrossKill(a, { messages: MESSAGES, killAt: KILL_AT, byeDecided: true });
    assertNothingAckedLost(t, run.counts);
    assert.equal(run.counts.failsafes, 0, "no fail-safe from the kill on: the other sidecar decided");
    const decided = await waitFor(() => b.logged("BYE decided", run.callId), 5000, 20, "B decided the BYE");
    assert.equal(decided.mode, "b2bua");
    assert.ok(ended, "the call ended cleanly: the CF's BYE got its 200 OK");
    await waitFor(async () => (await b.folder(groupFolder(call), SERVED_USER)).length === 1, 5000, 50, "BYE-B4: one GSO");
    await a.restart();
  });
});
