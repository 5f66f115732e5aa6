// Scale-out, deferred delivery upon the client's re-join (RJ-1, session.store
// "redis"): two sidecars on one Redis and one Dovecot, each behind its own
// Kamailio (test/harness/delivery-takeover.ts startOwnerPair). The served
// user's slot is B's (a registration through B took it); the CF's group
// session is anchored by A and the client's MSRP connection drops there, so
// A keeps the CF's messages. The client re-joins through A's Kamailio: A's
// ObserveSession names B's UA (ua_address), Kamailio relays the INVITE there
// and B, whose claims order every delivery of the user, delivers. Then B is
// SIGKILLed; once its lease lapsed the next re-join through A is A's own,
// and A, holding the CF side, joins the client with the group (RJ-5).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { chatCpim } from "../fixtures/cpim.js";
import { triggerSipp } from "../harness/anchored-chat.js";
import { type Chat, type DeferredChatRig, deferredFolder, SERVED_USER } from "../harness/deferred-chat.js";
import { type OwnerPair, startOwnerPair } from "../harness/delivery-takeover.js";
import type { MsrpPeer } from "../harness/msrp-peer.js";
import { first, header, type SipTraceMessage } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

const T = { timeout: 120_000 };
const SLOTS = 16;
const LEASE_TTL_MS = 1500;

describe("scale-out RJ-1: two sidecars on one Redis: a client's re-join is answered by the holder of the served user's slot, whichever sidecar Kamailio asked", () => {
  let pair: OwnerPair | undefined;
  let a: DeferredChatRig;
  let b: DeferredChatRig;

  before(async () => {
    pair = await startOwnerPair({ slots: SLOTS, leaseTtlMs: LEASE_TTL_MS });
    ({ a, b } = pair);
  });
  after(async () => {
    await pair?.stop();
  });

  const ownerName = (rig: DeferredChatRig) => String(rig.sidecar.logLines().find((l) => l.msg === "sidecar ready")?.owner);
  const rejoinsStarted = (rig: DeferredChatRig, c: Chat) =>
    rig
      .loggedAll("re-join: deferred delivery started in the client's own session (RJ-1)")
      .filter((l) => l.conversationId === c.conversationId);
  const text = (m: { body: Uint8Array }) => Buffer.from(m.body).toString("utf8");

  /**
   * The re-join through `via`'s Kamailio: what the client's MSRP peer got
   * (`n` items) and the PF's 200 OK. `joins`: the answering sidecar holds the
   * group's CF side, so the client is joined with it (RJ-5) and the CF's BYE
   * ends it; else the PF's BYE follows the pending items (the client re-joins
   * the focus itself).
   */
  async function rejoinVia(via: DeferredChatRig, c: Chat, n: number, joins: boolean) {
    let got: string[] = [];
    let ok: SipTraceMessage | undefined;
    await via.rejoined(c, async ({ peer, client, ok: answer }) => {
      ok = answer;
      got = (await via.received(peer, n, c)).map(text);
      if (joins) {
        await via.lifecycleMoved(c, "client-absent -> active");
        const live = chatCpim("live after the re-join", "imdn-rj-owner-live");
        assert.equal((await (c.cf as MsrpPeer).send(live, "message/cpim")).code, 200);
        assert.equal(text((await via.received(peer, n + 1, c)).at(-1) as { body: Uint8Array }), live.toString("utf8"), "RJ-5: joined");
        await triggerSipp(c.cfSipPort as number, c.callId, 0);
      }
      const r = await client.done;
      assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
      const bye = first(r.messages, { direction: "received", method: "BYE" });
      const reason = joins ? "SIP;cause=480" : 'SIP;cause=200;text="Call completed"';
      assert.equal(header(bye as SipTraceMessage, "reason"), reason);
      // the CF's SIPp ends with the PF's 200 OK to its BYE: nothing may trigger it after
      if (joins) await waitFor(() => via.logged("BYE completed", c.callId) !== undefined, 5000, 20, "the CF's 200 OK");
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(peer.received.length, joins ? n + 1 : n, "nothing else");
    });
    return { got: got.slice(0, n), ok: ok as SipTraceMessage };
  }

  test(
    "RJ-1 RJ-2 scale-out: the re-join reaches A, the slot is B's -> ObserveSession names B's UA, Kamailio relays it there (the Record-Route keeps it), B delivers every kept message once, in order, A starts nothing; B SIGKILLed, its lease lapsed -> the next re-join through A is A's (it holds the CF side: joined, RJ-5), with only what came since",
    T,
    async () => {
      // nothing pending yet: B takes the served user's slot
      assert.equal((await b.register("<sip:earlier@127.0.0.1:9>", SERVED_USER)).code, 0);
      await waitFor(() => b.sidecar.logLines().some((l) => l.msg === "slot lease taken"), 5000, 20, "B holds the slot");
      const later = ["after the kill 1", "after the kill 2"].map((t, i) => chatCpim(t, `imdn-rj-owner-later-${i}`));
      await a.chatWhileAway(["routed 1", "routed 2", "routed 3"], {
        byeHeaders: ["Reason: SIP;cause=480"],
        whileDeferred: async (c) => {
          const first1 = await rejoinVia(a, c, c.sent.length, false);
          assert.deepEqual(
            first1.got,
            c.sent.map((s) => s.body.toString("utf8")),
            "RJ-2: every kept message, in order",
          );
          assert.match(header(first1.ok, "record-route") ?? "", /;cpmpfua=/, "the UA B is recorded for the dialog's requests");
          const routed = a
            .loggedAll("re-join routed to the holder of the served user's slot")
            .filter((l) => l.conversationId === c.conversationId);
          assert.equal(routed.length, 1);
          assert.equal(routed[0]?.owner, ownerName(b), "A named the slot's holder");
          assert.equal(rejoinsStarted(b, c).length, 1, "B delivered");
          assert.equal(rejoinsStarted(a, c).length, 0, "A started no delivery of its own");
          await waitFor(async () => (await a.folder(deferredFolder(c), c.servedUser)).length === 0, 5000, 50, "queue emptied");

          // the CF goes on; B dies; its lease lapses; the next re-join through A is A's
          for (const body of later) assert.equal((await (c.cf as MsrpPeer).send(body, "message/cpim")).code, 200);
          await b.sidecar.kill("SIGKILL");
          await new Promise((resolve) => setTimeout(resolve, LEASE_TTL_MS + 300));
          const second = await rejoinVia(a, c, later.length, true);
          assert.deepEqual(
            second.got,
            later.map((x) => x.toString("utf8")),
            "only what came since the first re-join, in order: nothing twice",
          );
          assert.doesNotMatch(header(second.ok, "record-route") ?? "", /;cpmpfua=/, "A's own UA (CPM_PF_UA_ADDRESS)");
          assert.equal(rejoinsStarted(a, c).length, 1, "A took the slot over and delivered");
        },
      });
    },
  );
});
