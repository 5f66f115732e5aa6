// Deferred delivery upon the client's re-join (OMA CPM 8.3.2.9.1.3, RJ-1..RJ-5)
// end to end, from the wire, nothing seeded: the CF (SIPp) invites the served
// user through Kamailio (media anchored), the client's MSRP connection
// drops, the CF's messages are kept; then the client re-joins the group
// itself (an INVITE to the focus URI, rj-1-client-rejoin.xml) before any
// register notification. Kamailio relays it to the PF's UA (ObserveSession's
// answer_by_pf), which answers with its own MSRP endpoint and delivers what
// the client missed in that session.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { chatCpim } from "../fixtures/cpim.js";
import { msrpMedia, triggerSipp } from "../harness/anchored-chat.js";
import {
  assertKeptInOrder,
  type Chat,
  DeferredChatRig,
  deferredFolder,
  focusOf,
  GSO_TYPE,
  OTHER_USER,
  SERVED_USER,
} from "../harness/deferred-chat.js";
import type { MsrpPeer } from "../harness/msrp-peer.js";
import { freePort } from "../harness/ports.js";
import { first, header, type SippRun, type SipTraceMessage, startSipp } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

const T = { timeout: 90_000 };

describe("deferred delivery upon the client's re-join (8.3.2.9.1.3) from the wire", () => {
  let rig: DeferredChatRig;
  before(async () => {
    rig = await DeferredChatRig.start({ CPM_PF__DELIVERY__RETRYATTEMPTS: "0" });
  });
  after(async () => {
    await rig?.stop();
  });

  /**
   * BYE-B7: the CF ends the group (480) while the client is in its re-join
   * session: resolves with the PF's BYE the client got, once the CF had its
   * 200 OK (the CF's SIPp ends then: nothing may trigger it after).
   */
  async function groupEndsByCf(c: Chat, client: SippRun): Promise<SipTraceMessage> {
    await triggerSipp(c.cfSipPort as number, c.callId, 0);
    const r = await client.done;
    assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
    const bye = first(r.messages, { direction: "received", method: "BYE" });
    assert.ok(bye, "the re-join session got the PF's BYE");
    await waitFor(() => rig.logged("BYE completed", c.callId) !== undefined, 5000, 20, "the CF's 200 OK");
    await new Promise((resolve) => setTimeout(resolve, 200));
    return bye;
  }

  const queueEmptied = (c: { conversationId: string; contributionId: string; servedUser: string }) =>
    waitFor(async () => (await rig.folder(deferredFolder(c), c.servedUser)).length === 0, 5000, 50, "deferred queue emptied");

  test(
    "RJ-1 RJ-2 RJ-5 BYE-B7: the client re-joins the still-active group before registering -> the PF answers the INVITE itself (Contact ;isfocus, its MSRP endpoint, nothing to the focus), delivers every kept message in order in that session, then joins it with the group: live chat both ways; the CF's BYE ends the re-join session with the PF's Reason",
    T,
    async () => {
      await rig.chatWhileAway(["missed 1", "missed 2", "missed 3"], {
        byeHeaders: ["Reason: SIP;cause=480"],
        whileDeferred: async (c) => {
          const cf = c.cf as MsrpPeer;
          await rig.rejoined(c, async ({ peer: ue, client, ok }) => {
            // RJ-1 on the wire: the PF's own answer, as the focus would give it
            assert.match(header(ok, "contact") ?? "", new RegExp(`^<${focusOf(c).replace(/[.]/g, "\\.")}>;isfocus`));
            assert.match(
              header(ok, "record-route") ?? "",
              /;cpmpfrj=/,
              "Kamailio stays in the dialog, the client's requests go to the PF's UA",
            );
            assert.notEqual(msrpMedia(ok.body).path, c.cf?.path, "the PF's MSRP endpoint, not the CF's");
            // RJ-2: every kept message, in order, in the re-join session
            const got = await rig.received(ue, c.sent.length, c);
            assertKeptInOrder(got, c);
            await queueEmptied(c);
            // RJ-5: joined with the group session towards the CF
            await rig.lifecycleMoved(c, "client-absent -> active");
            const live = chatCpim("live after the re-join", "imdn-rj-live");
            assert.equal((await cf.send(live, "message/cpim")).code, 200);
            const atUe = await rig.received(ue, c.sent.length + 1, c);
            assert.equal(Buffer.from(atUe.at(-1)?.body ?? []).toString("utf8"), live.toString("utf8"));
            const before = cf.received.length;
            const reply = chatCpim("the client is back", "imdn-rj-reply", SERVED_USER);
            assert.equal((await ue.send(reply, "message/cpim")).code, 200);
            const atCf = await rig.received(cf, before + 1, c);
            assert.equal(Buffer.from(atCf.at(-1)?.body ?? []).toString("utf8"), reply.toString("utf8"));
            // BYE-B7: the CF ends the group: the re-join session is one of the user's dialogs
            const bye = await groupEndsByCf(c, client);
            assert.equal(header(bye, "reason"), "SIP;cause=480", "the PF's Reason");
          });
        },
      });
    },
  );

  test(
    "RJ-1 RJ-2 RJ-3: the client re-joins an inactive group (the CF ended it with 480) -> the PF answers, re-starts the group at once (8.2.2.7 INVITE to the focus); the focus is gone (404): every kept message, then the last participants as a GSO, then BYE with the CF's cause",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["kept a", "kept b"], { byeHeaders: ["Reason: SIP;cause=480"] });
      await rig.lifecycleMoved(chat, "client-absent -> inactive");
      const focus = await startSipp({
        scenario: "rj-3-focus-refuses.xml",
        port: chat.cfSipPort as number,
        keys: { status: "404", reason: "Not Found" },
      });
      try {
        await rig.rejoined(chat, async ({ peer: ue, client }) => {
          const got = await rig.received(ue, chat.sent.length + 1, chat);
          assertKeptInOrder(got.slice(0, chat.sent.length), chat, "RJ-2: the kept messages first, in order");
          const gso = got[chat.sent.length];
          assert.equal(gso?.contentType, GSO_TYPE, "RJ-3: the last participant information as a GSO");
          assert.match(Buffer.from(gso?.body ?? []).toString("utf8"), /comm-addr="tel:\+16135551210"/);
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
          const bye = first(r.messages, { direction: "received", method: "BYE" });
          assert.equal(header(bye as SipTraceMessage, "reason"), 'SIP;cause=404;text="Not Found"', "RJ-3: the CF's cause");
        });
        const f = await focus.done;
        assert.equal(f.code, 0, `focus SIPp: ${f.errors}`);
        const restart = first(f.messages, { direction: "received", method: "INVITE" });
        assert.ok(restart, "RJ-3: the re-start INVITE reached the focus");
        assert.equal(header(restart, "contribution-id"), chat.contributionId);
        await queueEmptied(chat);
      } finally {
        await focus.stop();
      }
    },
  );

  test(
    "RJ-1 RJ-2: the sidecar is SIGKILLed while the messages wait and restarted (the anchored CF side is gone); the client's re-join still gets every kept message in order, then BYE cause=200 (it re-joins the focus itself: the PF holds no CF side to join it with)",
    T,
    async () => {
      await rig.chatWhileAway(["across a crash 1", "across a crash 2"], {
        byeHeaders: ["Reason: SIP;cause=480"],
        whileDeferred: async (c) => {
          await rig.crashAndRestart();
          await rig.rejoined(c, async ({ peer: ue, client }) => {
            const got = await rig.received(ue, c.sent.length, c);
            assertKeptInOrder(got, c);
            const r = await client.done;
            assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
            const bye = first(r.messages, { direction: "received", method: "BYE" });
            assert.equal(header(bye as SipTraceMessage, "reason"), 'SIP;cause=200;text="Call completed"');
          });
          await queueEmptied(c);
        },
      });
    },
  );

  test(
    "DD-12 RFC 4028: the CF refreshes the group session (UPDATE, then re-INVITE) while the client is away -> the PF answers both for the client (Session-Expires refresher=uac, Require timer, its own CF-leg SDP, its UA as Contact), an UPDATE with a lower CSeq after them gets 500 (RFC 3261 12.2.2), nothing reaches the dead client, the CF's media goes on being kept",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["before the refresh"], {
        byeHeaders: ["Reason: SIP;cause=480"],
        whileDeferred: async (c) => {
          const ok = c.cf200 as SipTraceMessage;
          const answers = await rig.cfInDialog(c, "dd-12-cf-session-refresh.xml");
          const [toUpdate, toInvite] = answers;
          assert.equal(header(toUpdate as SipTraceMessage, "session-expires"), "1800;refresher=uac");
          assert.equal(header(toUpdate as SipTraceMessage, "require"), "timer");
          assert.equal(msrpMedia((toInvite as SipTraceMessage).body).path, msrpMedia(ok.body).path, "the PF's CF leg, unchanged");
          assert.match(header(toInvite as SipTraceMessage, "contact") ?? "", /^<sip:127\.0\.0\.1:\d+>$/);
          assert.equal(await rig.kamailio.stat("cpm_pf_refreshes"), 2);
          // RFC 3261 12.2.2: an UPDATE with a CSeq below the re-INVITE's (kept in the record) is out of order (the scenario wants 500)
          await rig.cfInDialog(c, "dd-12-cf-update-out-of-order.xml");
          assert.ok(rig.loggedAll("session refresh refused").some((l) => l.status === 500 && l.callId === c.callId));
          // the group session goes on: the CF's next message is kept for the client
          const later = chatCpim("after the refresh", "imdn-after-refresh");
          assert.equal((await (c.cf as MsrpPeer).send(later, "message/cpim")).code, 200);
          await waitFor(async () => (await rig.folder(deferredFolder(c), c.servedUser)).length === 2, 5000, 50, "kept");
        },
      });
      const atClient = (chat.trace?.client ?? []).filter(
        (m) => m.direction === "received" && (m.method === "UPDATE" || header(m, "cseq") === "11 INVITE"),
      );
      assert.deepEqual(atClient, [], "nothing of the refresh reached the client");
    },
  );

  for (const [scenario, what, cseq] of [
    [
      "dd-12-cf-offerless-reinvite.xml",
      "an offerless re-INVITE (RFC 3261 14.2) -> the PF's 2xx offers its CF leg as it is, the CF's answer comes in the ACK",
      "12 INVITE",
    ],
    ["dd-12-cf-update-offer.xml", "an UPDATE with an offer (RFC 3311 5.2) -> the PF's 2xx answers with its CF leg as it is", "13 UPDATE"],
  ] as const) {
    test(
      `DD-12: the CF's ${what} while the client is away (same MSRP path and role); nothing reaches the client, the group goes on`,
      T,
      async () => {
        const chat = await rig.chatWhileAway([`before ${cseq}`], {
          byeHeaders: ["Reason: SIP;cause=480"],
          whileDeferred: async (c) => {
            const before = await rig.kamailio.stat("cpm_pf_refreshes");
            const [answer] = (await rig.cfInDialog(c, scenario)) as [SipTraceMessage];
            assert.equal(header(answer, "content-type"), "application/sdp", "SDP in the 2xx");
            assert.equal(msrpMedia(answer.body).path, msrpMedia((c.cf200 as SipTraceMessage).body).path, "the PF's CF leg, unchanged");
            assert.match(answer.body, /^a=setup:passive\r?$/m, "the connection role kept (the CF connected to the PF)");
            assert.match(header(answer, "contact") ?? "", /^<sip:127\.0\.0\.1:\d+>$/, "the PF's UA answers for the client");
            assert.equal(await rig.kamailio.stat("cpm_pf_refreshes"), before + 1);
            // the group session goes on: the CF's next message on the same MSRP session is kept for the client
            const later = chatCpim(`after ${cseq}`, `imdn-after-${cseq.replace(" ", "-")}`);
            assert.equal((await (c.cf as MsrpPeer).send(later, "message/cpim")).code, 200);
            await waitFor(async () => (await rig.folder(deferredFolder(c), c.servedUser)).length === 2, 5000, 50, "kept");
          },
        });
        const atClient = (chat.trace?.client ?? []).filter((m) => m.direction === "received" && header(m, "cseq") === cseq);
        assert.deepEqual(atClient, [], "nothing of it reached the client");
      },
    );
  }

  test(
    "RJ-1 DD-1: the re-join came first -> a register notification during the re-join session starts no second delivery of that group session (one claim: the data goes out once)",
    T,
    async () => {
      await rig.chatWhileAway(["once only"], {
        byeHeaders: ["Reason: SIP;cause=480"],
        whileDeferred: async (c) => {
          await rig.rejoined(c, async ({ peer: ue, client }) => {
            await rig.received(ue, c.sent.length, c);
            await rig.lifecycleMoved(c, "client-absent -> active");
            const before = rig.loggedAll("registration: deferred delivery started").length;
            const reg = await rig.register("<sip:client@127.0.0.1:9>", c.servedUser);
            assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
            await waitFor(() => rig.loggedAll("registration: deferred delivery started").length > before, 5000, 20, "the registration");
            await new Promise((resolve) => setTimeout(resolve, 300));
            // (the user's other groups with data of earlier cases may be delivered: not this one)
            const again = rig.loggedAll("delivery INVITE sent").filter((l) => l.conversationId === c.conversationId);
            assert.deepEqual(again, [], "no delivery of this group session started twice");
            assert.equal(ue.received.length, c.sent.length, "no duplicate in the re-join session");
            await groupEndsByCf(c, client);
          });
        },
      });
    },
  );

  test(
    "RJ-1 RJ-2 (the reverse race): the registration delivery's INVITE is still ringing when the client re-joins -> the re-join takes the delivery over, the ringing INVITE is CANCELled, every kept message arrives once, in the re-join session",
    T,
    async () => {
      // a served user of its own: the deliveries of the earlier cases' groups, still ringing a contact
      // the device left, would move to this REGISTER's contact too (DD-1) and ring this SIPp
      await rig.chatWhileAway(["race 1", "race 2"], {
        servedUser: OTHER_USER,
        byeHeaders: ["Reason: SIP;cause=480"],
        whileDeferred: async (c) => {
          const device = await startSipp({ scenario: "rj-1-client-rings.xml", timeoutS: 30 });
          try {
            const reg = await rig.register(`<sip:client@127.0.0.1:${device.port}>`, c.servedUser);
            assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
            await rig.receivedInvite(device, c);
            await rig.rejoined(c, async ({ peer: ue, client }) => {
              const got = await rig.received(ue, c.sent.length, c);
              assertKeptInOrder(got, c);
              const d = await device.done;
              assert.equal(d.code, 0, `device SIPp: ${d.errors}`);
              assert.ok(first(d.messages, { direction: "received", method: "CANCEL" }), "the registration delivery's INVITE was CANCELled");
              await rig.lifecycleMoved(c, "client-absent -> active");
              await new Promise((resolve) => setTimeout(resolve, 300));
              assert.equal(ue.received.length, c.sent.length, "each message once");
              await groupEndsByCf(c, client);
            });
          } finally {
            await device.stop();
          }
        },
      });
    },
  );

  test(
    "RJ-1 DD-1 (per device): the re-join of one device (its Contact +sip.instance) takes over nothing of another device's registration delivery: the other's ringing INVITE is not CANCELled, the re-joining device gets every kept message once, the queue keeps them for the other",
    T,
    async () => {
      const TABLET = "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";
      await rig.chatWhileAway(["per device 1", "per device 2"], {
        byeHeaders: ["Reason: SIP;cause=480"],
        whileDeferred: async (c) => {
          const tablet = await startSipp({ scenario: "rj-1-client-rings.xml", timeoutS: 30 });
          try {
            const reg = await rig.register(`<sip:client@127.0.0.1:${tablet.port}>`, c.servedUser, true, undefined, TABLET);
            assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
            await rig.receivedInvite(tablet, c);
            // the phone (DEVICE_INSTANCE) re-joins
            await rig.rejoined(c, async ({ peer: ue, client }) => {
              const got = await rig.received(ue, c.sent.length, c);
              assertKeptInOrder(got, c);
              await rig.lifecycleMoved(c, "client-absent -> active");
              await new Promise((resolve) => setTimeout(resolve, 300));
              assert.equal(ue.received.length, c.sent.length, "each message once");
              const seen = await tablet.messagesSoFar();
              assert.equal(
                first(seen, { direction: "received", method: "CANCEL" }),
                undefined,
                "the tablet's delivery INVITE goes on ringing",
              );
              assert.equal((await rig.folder(deferredFolder(c), c.servedUser)).length, c.sent.length, "kept for the tablet");
              await groupEndsByCf(c, client);
            });
          } finally {
            await tablet.stop();
          }
        },
      });
    },
  );
});

describe("the PF's requests for the served user routed the IMS way (TS 24.229 5.7.3: the S-CSCF's originating processing)", () => {
  let rig: DeferredChatRig;
  let scscfPort: number;
  before(async () => {
    // the S-CSCF (a SIPp) stands where delivery.originatingRoute points; it answers for the focus behind it
    scscfPort = await freePort();
    rig = await DeferredChatRig.start({
      CPM_PF__DELIVERY__RETRYATTEMPTS: "0",
      CPM_PF__DELIVERY__ORIGINATINGROUTE: `sip:127.0.0.1:${scscfPort}`,
    });
  });
  after(async () => {
    await rig?.stop();
  });

  test(
    "RJ-1 RJ-3 TS 24.229 5.7.3: the re-start INVITE of a re-joined inactive group goes through the S-CSCF with Route ;orig, addressed to the focus; its refusal reaches the client as RJ-3's BYE",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["via the S-CSCF"], { byeHeaders: ["Reason: SIP;cause=480"] });
      await rig.lifecycleMoved(chat, "client-absent -> inactive");
      const scscf = await startSipp({ scenario: "rj-3-focus-refuses.xml", port: scscfPort, keys: {} });
      try {
        await rig.rejoined(chat, async ({ peer: ue, client }) => {
          await rig.received(ue, chat.sent.length + 1, chat);
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
          const bye = first(r.messages, { direction: "received", method: "BYE" });
          assert.equal(header(bye as SipTraceMessage, "reason"), 'SIP;cause=404;text="Not Found"');
        });
        const f = await scscf.done;
        assert.equal(f.code, 0, `S-CSCF SIPp: ${f.errors}`);
        const restart = first(f.messages, { direction: "received", method: "INVITE" });
        assert.ok(restart, "the re-start INVITE reached the S-CSCF");
        assert.equal(restart.text.split("\r\n")[0], `INVITE ${focusOf(chat)} SIP/2.0`, "addressed to the focus");
        const routes = (restart.headers.get("route") ?? []).flatMap((v) => v.split(","));
        assert.deepEqual(
          routes.map((r) => r.trim()),
          [`<sip:127.0.0.1:${scscfPort};lr;orig>`],
        );
        assert.equal(header(restart, "p-asserted-identity"), `<${SERVED_USER}>`);
      } finally {
        await scscf.stop();
      }
    },
  );
});
