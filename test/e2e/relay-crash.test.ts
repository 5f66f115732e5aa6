// Fault case (c), short form (test/harness/relay-crash.ts): an anchored MSRP
// relay whose sidecar is SIGKILLed mid-way, from the wire, with one sidecar
// and with 2 Kamailio × 2 sidecars on Redis. What the CF got a 200 for
// reached the client; with two sidecars the CF's BYE is decided by the other.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, type TestContext, test } from "node:test";
import { chatCpim } from "../fixtures/cpim.js";
import { anchoredChatCall, DEVICE_INSTANCE, msrpMedia, triggerSipp } from "../harness/anchored-chat.js";
import { DeferredChatRig, groupFolder, lastLine, SERVED_USER } from "../harness/deferred-chat.js";
import { type OwnerPair, startOwnerPair } from "../harness/delivery-takeover.js";
import { type RelayCounts, relayAcrossKill } from "../harness/relay-crash.js";
import { first, header, type SipTraceMessage, startSipp } from "../harness/sipp.js";
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

/**
 * The anchored media after a SIGKILL, by the re-join path (8.2.2.7): a group
 * chat anchored through `r`, a message relayed, `crash()` (it returns the rig
 * whose sidecar is alive now: `r` restarted, or the other of a pair); the
 * client re-joins the focus through `r`'s Kamailio with the group's IDs (the
 * CF's SIPp takes it out of call, cf-ooc-rejoin.xml): the live sidecar
 * anchors the new session, chat goes both ways through it, the focus's BYE
 * cause=480 of it reaches the client with the PF's Reason and its GSO is
 * stored. The first dialog ends with the CF's BYE.
 */
async function mediaBackByRejoin(r: DeferredChatRig, crash: () => Promise<DeferredChatRig>): Promise<void> {
  const ids = { conversationId: `conv-${randomUUID()}`, contributionId: `contrib-${randomUUID()}` };
  const cfPeer = await r.peer("CF");
  const uePeer = await r.peer("client");
  const focusPeer = await r.peer("focus (re-join)");
  const uePeer2 = await r.peer("client (re-join)");
  await anchoredChatCall(r.kamailio, {
    ...ids,
    servedUser: SERVED_USER,
    cfMsrpPath: cfPeer.path,
    cfSetup: "active",
    clientMsrpPath: uePeer.path,
    byeHeaders: ["Reason: SIP;cause=480"],
    timeoutS: 60,
    focusOutOfCall: {
      scenario: "cf-ooc-rejoin.xml",
      keys: {
        rejoin_msrp_port: String(new URL(focusPeer.path.replace(/^msrp/, "http")).port),
        rejoin_msrp_path: focusPeer.path,
      },
    },
    during: async ({ callId, clientInvite, cf200, cfSipPort, cfMessages }) => {
      await waitFor(() => r.logged("media answer anchored", callId), 5000, 20, "ReportMediaAnswer");
      await uePeer.open(msrpMedia(clientInvite.body).path, "active");
      await cfPeer.open(msrpMedia(cf200.body).path, "active");
      assert.equal((await cfPeer.send(chatCpim("before the crash", "imdn-rj-crash-1"), "message/cpim")).code, 200);
      await r.received(uePeer, 1, ids);
      const anchoring = await crash();
      // the client's MSRP connection died with the sidecar: it re-joins the group at the focus
      const client = await startSipp({
        scenario: "rj-1-client-rejoin.xml",
        remote: r.kamailio.address,
        timeoutS: 30,
        keys: {
          served_user: SERVED_USER,
          focus_uri: `sip:focus@127.0.0.1:${cfSipPort}`,
          conversation_id: ids.conversationId,
          contribution_id: ids.contributionId,
          client_msrp_port: String(new URL(uePeer2.path.replace(/^msrp/, "http")).port),
          client_msrp_path: uePeer2.path,
          instance: DEVICE_INSTANCE,
        },
      });
      try {
        const ok = await waitFor(
          async () => first(await client.messagesSoFar(), { direction: "received", status: 200, cseqMethod: "INVITE" }),
          8000,
          20,
          "the focus's 200 OK to the re-join",
        );
        const rejoinCallId = header(ok, "call-id") ?? "";
        const atFocus = await waitFor(
          async () =>
            (await cfMessages()).find((m) => m.direction === "received" && m.method === "INVITE" && header(m, "call-id") !== callId),
          5000,
          20,
          "the re-join INVITE at the focus",
        );
        assert.equal(header(atFocus, "conversation-id"), ids.conversationId);
        await waitFor(() => anchoring.logged("media answer anchored", rejoinCallId), 5000, 20, "a live sidecar anchored the re-join");
        assert.notEqual(msrpMedia(atFocus.body).path, msrpMedia(cf200.body).path, "the focus got a new MSRP leg of the PF");
        await uePeer2.open(msrpMedia(ok.body).path, "active");
        await focusPeer.open(msrpMedia(atFocus.body).path, "active");
        // live chat both ways through the live sidecar
        assert.equal((await focusPeer.send(chatCpim("after the re-join", "imdn-rj-crash-2"), "message/cpim")).code, 200);
        assert.equal(lastLine((await anchoring.received(uePeer2, 1, ids))[0] as { body: Uint8Array }), "after the re-join");
        assert.equal((await uePeer2.send(chatCpim("the client is back", "imdn-rj-crash-3"), "message/cpim")).code, 200);
        assert.equal(lastLine((await anchoring.received(focusPeer, 1, ids))[0] as { body: Uint8Array }), "the client is back");
        // BYE-B4: the focus ends the re-joined session with 480: the client gets the PF's BYE, the GSO is stored
        await triggerSipp(cfSipPort, rejoinCallId, 0);
        const done = await client.done;
        assert.equal(done.code, 0, `re-joining client SIPp: ${done.errors}`);
        const bye = first(done.messages, { direction: "received", method: "BYE" });
        assert.match(header(bye as SipTraceMessage, "reason") ?? "", /^SIP;cause=480/);
        await waitFor(
          async () => (await anchoring.folder(groupFolder(ids), SERVED_USER)).length >= 1,
          10_000,
          50,
          "the GSO of the focus's BYE",
        );
      } finally {
        await client.stop();
      }
    },
  });
}

describe("after a SIGKILL the anchored media comes back by the re-join path (8.2.2.7)", () => {
  let rig: DeferredChatRig | undefined;
  let pair: OwnerPair | undefined;
  before(async () => {
    rig = await DeferredChatRig.start();
    pair = await startOwnerPair({ slots: 16, leaseTtlMs: 1500 });
  });
  after(async () => {
    await rig?.stop();
    await pair?.stop();
  });

  test("MEDIA-RELAY BYE-B4: the sidecar anchoring a group chat is SIGKILLed and restarted (both MSRP legs die with it); the client re-joins the focus with the group's IDs -> the restarted sidecar anchors the new session: live chat both ways through it; the focus's BYE cause=480 of it reaches the client with the PF's Reason, its GSO is stored", async () => {
    const r = rig as DeferredChatRig;
    await mediaBackByRejoin(r, async () => {
      await r.crashAndRestart();
      return r;
    });
  });

  test("scale-out MEDIA-RELAY BYE-B4: 2 Kamailio × 2 sidecars on Redis: A anchors the group chat and is SIGKILLed (stays down); the client's re-join through A's Kamailio -> B anchors the new session from the shared record: live chat both ways through B; the focus's BYE of it is decided by B, its GSO stored", async () => {
    const { a, b } = pair as OwnerPair;
    await mediaBackByRejoin(a, async () => {
      await a.sidecar.kill("SIGKILL");
      return b;
    });
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
