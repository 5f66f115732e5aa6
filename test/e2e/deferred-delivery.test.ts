// Deferred delivery after registration (OMA CPM 8.3.2.9.1.2) end to end, from
// the wire, nothing seeded: SIPp plays the Controlling Function (its group
// chat INVITE, later its BYE), the served user's client (accepts, and later
// the delivery session), and the S-CSCF (third-party REGISTER); MSRP test
// peers play the CF's and the client's MSRP stacks; Kamailio runs the example
// config; the sidecar runs as a process (media plane, its own SIP UA and
// delivery leg) and is SIGKILLed and restarted where a case says so; Dovecot
// holds the GSOs and the deferred queue. Every case starts with the CF's
// INVITE: anchored -> the client's MSRP connection drops -> the CF's messages
// are deferred -> (the CF's BYE) -> the REGISTER -> the delivery.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { MsrpRequest } from "../../src/msrp/frame.js";
import { chatCpim } from "../fixtures/cpim.js";
import { DEVICE_INSTANCE, msrpMedia, triggerSipp } from "../harness/anchored-chat.js";
import { runCli } from "../harness/cli.js";
import {
  assertKeptInOrder,
  type Chat,
  DEFERRED_URI,
  DESCRIPTOR_FOLDER,
  DeferredChatRig,
  deferredFolder,
  descriptorsOf,
  GSO_TYPE,
  groupFolder,
  KEEPER_USER,
  OTHER_USER,
  SERVED_USER,
} from "../harness/deferred-chat.js";
import { deliveryAcrossCrash, SENT_TWICE_BOUND } from "../harness/delivery-takeover.js";
import { gsoXml } from "../harness/group-chat.js";
import type { MsrpPeer } from "../harness/msrp-peer.js";
import { sdpSetup } from "../harness/msrp-peer.js";
import { freePort } from "../harness/ports.js";
import { scrape, value } from "../harness/prometheus.js";
import { REPO_ROOT } from "../harness/sidecar.js";
import { first, header, type SippRun, type SipTraceMessage, startSipp } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

const CPM_ICSI = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session";
const RETRY_MS = 400;
/** Each test: a hung wait fails it instead of the whole run. */
const T = { timeout: 90_000 };

describe("deferred delivery after registration (8.3.2.9.1.2) from the wire: CF INVITE, client gone, CF messages kept, CF BYE, REGISTER, delivery", () => {
  let rig: DeferredChatRig;

  let metricsUrl = "";
  before(async () => {
    const metricsPort = await freePort();
    metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    rig = await DeferredChatRig.start({
      CPM_PF__METRICS__ENABLED: "true",
      CPM_PF__METRICS__PORT: String(metricsPort),
      CPM_PF__METRICS__BACKLOGINTERVALMS: "200",
      CPM_PF__PF__DRAINTIMEOUTMS: "1500",
      CPM_PF__DELIVERY__RETRYATTEMPTS: "1",
      CPM_PF__DELIVERY__RETRYINITIALMS: String(RETRY_MS),
      CPM_PF__DELIVERY__RETRYMAXMS: String(RETRY_MS),
      // a registration that found the store down: tried again every half second here
      CPM_PF__DELIVERY__STORERETRYMS: "500",
    });
  });
  after(async () => {
    await rig?.stop();
  });

  /** DD-10: the deferred items arrive in order, byte for byte, with their content types; then (DD-11) the latest participants. */
  async function assertDeliveredInOrder(ue: MsrpPeer, chat: Chat): Promise<void> {
    const got = await rig.received(ue, chat.sent.length + 1, chat);
    assert.deepEqual(
      got.slice(0, chat.sent.length).map((m) => [m.contentType, Buffer.from(m.body).toString("utf8")]),
      chat.sent.map((s) => [s.contentType, s.body.toString("utf8")]),
      "every deferred item, in the order the CF sent them",
    );
    const final = got[chat.sent.length] as { contentType: string; body: Uint8Array };
    assert.equal(final.contentType, GSO_TYPE, "DD-11: a GSO of the latest participants after the deferred items");
    assert.match(Buffer.from(final.body).toString("utf8"), /comm-addr="tel:\+16135551210"/);
  }

  const queueEmptied = (chat: Chat) =>
    waitFor(async () => (await rig.folder(deferredFolder(chat), chat.servedUser)).length === 0, 5000, 50, "deferred queue emptied");
  /** The delivery to a SIPp client: every kept message in order, then the GSO; the queue empty. `start`: what starts it (default the REGISTER). */
  const deliveredInOrder = (chat: Chat, start?: (contact: string) => Promise<void>) =>
    rig.deliveredTo(
      chat,
      "client-uas-msrp.xml",
      {},
      async ({ peer: ue }) => {
        await assertDeliveredInOrder(ue, chat);
        await queueEmptied(chat);
      },
      start,
    );
  const descriptors = async (chat: Chat) => descriptorsOf(await rig.folder(DESCRIPTOR_FOLDER, chat.servedUser), chat);

  test(
    "DD-1 DD-2 DD-3 DD-4 DD-5 DD-6 DD-7 DD-10 DD-11 DD-14 BYE-B4: the CF ends the group with 480 after the client left; on the next REGISTER every kept message is delivered in order, the queue is emptied; the client's BYE cause=200 answered; the metrics show the backlog, then one delivery emptied",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["first", "second", "third"], {
        byeHeaders: ['Reason: SIP;cause=480;text="Temporarily Unavailable"'],
        interimGso: true,
      });
      // BYE-B4: the GSO is stored; the group session stays known as inactive (re-startable)
      const gsos = await rig.folder(groupFolder(chat), chat.servedUser);
      assert.equal(gsos.length, 1);
      assert.match(gsoXml(gsos[0] as string), /lastfocussessionid="sip:focus@127\.0\.0\.1:\d+"/);
      await rig.lifecycleMoved(chat, "client-absent -> inactive");
      assert.equal((await descriptors(chat)).length, 1, "the queue describes itself: one session descriptor");
      // metrics: the backlog read from the store, the CF's SENDs counted on the wire
      const metric = async (name: string, labels: Record<string, string> = {}) => value((await scrape(metricsUrl)).samples, name, labels);
      await waitFor(
        async () => (await metric("cpmpf_deferred_items")) === chat.sent.length,
        5000,
        100,
        "cpmpf_deferred_items = the kept items",
      );
      await waitFor(async () => (await metric("cpmpf_deferred_oldest_age_seconds")) >= 1, 5000, 100, "the oldest item ages");
      assert.ok((await metric("cpmpf_msrp_requests_total", { direction: "in", method: "SEND" })) >= chat.sent.length);
      assert.equal(await metric("cpmpf_deliveries_total", { outcome: "emptied" }), 0);
      await rig.deliveredTo(
        chat,
        "client-dd-uas.xml",
        { bye_reason: 'SIP;cause=200;text="Call completed"' },
        async ({ peer: ue, client, invite }) => {
          // DD-2..DD-6 on the wire
          assert.equal(header(invite, "contribution-id"), chat.contributionId);
          assert.equal(header(invite, "referred-by"), '"Bob" <tel:+16135551210>', "DD-3: who invited the user");
          assert.equal(header(invite, "subject"), "Weekend trip", "DD-3: the group's subject");
          assert.equal(header(invite, "p-asserted-identity"), `<${DEFERRED_URI}>`);
          assert.equal(header(invite, "p-asserted-service"), CPM_ICSI);
          assert.match(
            header(invite, "accept-contact") ?? "",
            /g\.3gpp\.icsi-ref="urn%3Aurn-7%3A3gpp-service\.ims\.icsi\.oma\.cpm\.session"/,
          );
          assert.match(header(invite, "record-route") ?? "", /cpmpfdd/);
          assert.match(invite.body, /<entry uri="tel:\+16135551210"/, "DD-2: the participants of the CF's INVITE");
          assert.match(invite.body, /a=accept-wrapped-types:text\/plain message\/imdn\+xml/, "DD-6: the CF's original offer");
          assert.match(invite.body, /a=sendrecv/);
          assert.equal(sdpSetup(invite.body), "actpass");
          await assertDeliveredInOrder(ue, chat);
          await queueEmptied(chat);
          // DD-14: the client's BYE reaches the PF through Kamailio and is answered
          await triggerSipp(client.port, invite.headers.get("call-id")?.[0] ?? "");
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
          // the delivery is over with the queue empty: nothing is left to describe
          await waitFor(async () => (await descriptors(chat)).length === 0, 5000, 50, "the descriptor goes with the emptied queue");
          await waitFor(
            async () => (await metric("cpmpf_deliveries_total", { outcome: "emptied" })) === 1,
            5000,
            100,
            "one delivery emptied its queue",
          );
          assert.equal(await metric("cpmpf_delivery_drain_duration_seconds_count"), 1);
          await waitFor(async () => (await metric("cpmpf_deferred_items")) === 0, 5000, 100, "the backlog is empty again");
        },
      );
    },
  );

  test(
    "CLI: cpm-pf sessions list/show, queue list/show/deliver/purge, health and drain against the running sidecar and Dovecot: what they show is the record and the user's mailbox, deliver delivers every item in order, purge empties the queue",
    T,
    async () => {
      const cli = (...args: string[]) => runCli(["--target", rig.grpcTarget, "--json", ...args]);
      const chat = await rig.chatWhileAway(["via the CLI 1", "via the CLI 2"], { byeHeaders: ["Reason: SIP;cause=480"] });
      const ids = ["--user", chat.servedUser, "--conversation", chat.conversationId, "--contribution", chat.contributionId];
      const listed = (await cli("sessions", "list", "--user", chat.servedUser)) as { sessions: Record<string, unknown>[] };
      const mine = listed.sessions.find((s) => s.conversationId === chat.conversationId);
      assert.equal(mine?.lifecycle, "inactive");
      assert.equal(mine?.pendingDeferred, true);
      const shown = (await cli("sessions", "show", ...ids)) as { session: { dialogs: { callId: string }[]; focusUri: string } };
      assert.ok(shown.session.dialogs.some((d) => d.callId === chat.callId));
      assert.match(shown.session.focusUri, /^sip:focus@/);
      const queues = (await cli("queue", "list", "--user", chat.servedUser)) as { queues: { conversationId: string; count: number }[] };
      assert.equal(queues.queues.find((q) => q.conversationId === chat.conversationId)?.count, chat.sent.length);
      const items = (await cli("queue", "show", ...ids)) as { items: { kind: string; uid: number }[] };
      assert.equal(items.items.length, chat.sent.length);
      assert.ok(
        items.items.every((i, k) => i.kind === "message" && (k === 0 || i.uid > (items.items[k - 1]?.uid ?? 0))),
        "in UID order",
      );
      assert.deepEqual(await cli("health"), { status: "SERVING" });
      // deliver: as if the user registered at the SIPp client's contact
      await deliveredInOrder(chat, async (contact) => {
        const r = (await cli("queue", "deliver", "--user", chat.servedUser, "--contact", contact)) as { deliveries: number };
        assert.equal(r.deliveries, 1);
      });
      // purge: another chat's queue discarded, the record told
      const other = await rig.chatWhileAway(["to be purged"], { byeHeaders: ["Reason: SIP;cause=480"] });
      const otherIds = ["--user", other.servedUser, "--conversation", other.conversationId, "--contribution", other.contributionId];
      assert.deepEqual(await cli("queue", "purge", ...otherIds), { discarded: 1 });
      assert.equal((await rig.folder(deferredFolder(other), other.servedUser)).length, 0);
      const after = (await cli("sessions", "show", ...otherIds)) as { session: { pendingDeferred?: boolean } };
      assert.equal(after.session.pendingDeferred ?? false, false, "the record knows its queue is empty");
      // bad input: a clear error, exit code 1
      await assert.rejects(cli("queue", "deliver", "--user", chat.servedUser, "--contact", "not a uri"), /not a SIP URI/);
      await assert.rejects(
        cli("sessions", "show", "--user", chat.servedUser, "--conversation", "nope", "--contribution", "nope"),
        /NOT_FOUND|no such group session/,
      );
      // drain: the admin RPC stops the sidecar like SIGTERM
      const logs = await rig.exitAfter(() => cli("drain"));
      assert.ok(logs.some((l) => l.msg === "operator asked for the drain"));
      assert.ok(logs.some((l) => l.msg === "draining: no new sessions or deliveries"));
      assert.ok(
        logs.some((l) => l.msg === "message store closed"),
        "a clean exit",
      );
      await rig.restart();
    },
  );

  test(
    "drain: SIGTERM while a delivery is under way: no new sessions, the delivery goes on to its last item; nothing lost, nothing doubled (every item once, in order, the queue empty); the sidecar exits cleanly",
    T,
    async () => {
      const chat = await rig.chatWhileAway(
        Array.from({ length: 40 }, (_, i) => `kept ${i}`),
        { byeHeaders: ['Reason: SIP;cause=410;text="Gone"'] },
      );
      let logs: Record<string, unknown>[] = [];
      await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue }) => {
        await rig.received(ue, 1, chat);
        const stopped = rig.terminate();
        await assertDeliveredInOrder(ue, chat);
        logs = await stopped;
      });
      const said = (msg: string) => logs.some((l) => l.msg === msg);
      assert.ok(said("draining: no new sessions or deliveries"));
      assert.ok(
        said("drain: deliveries still running were ended, what they did not deliver stays queued") || said("drain: deliveries finished"),
        "the drain waited for the delivery",
      );
      assert.ok(
        said("message store closed"),
        `a clean exit: the store closed after the drain; last lines: ${JSON.stringify(logs.slice(-6).map((l) => l.msg))}`,
      );
      assert.equal(
        (await rig.folder(deferredFolder(chat), chat.servedUser)).length,
        0,
        "every delivered item left the queue: nothing doubled later",
      );
      await rig.restart();
    },
  );

  test(
    "DD-1 DD-10 BYE-B3: the CF terminates the group (410); the sidecar is SIGKILLed after the BYE and restarted; the REGISTER still gets every kept message, in order",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["before the end 1", "before the end 2"], { byeHeaders: ['Reason: SIP;cause=410;text="Gone"'] });
      assert.match(gsoXml((await rig.folder(groupFolder(chat), chat.servedUser))[0] ?? ""), /<status>removed<\/status>/);
      await rig.crashAndRestart();
      await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue, client }) => {
        await assertDeliveredInOrder(ue, chat);
        await queueEmptied(chat);
        // DD-13 does not apply (the group is gone for good): the delivery session ends once the client is done
        await client.stop();
      });
    },
  );

  test(
    "DD-1 DD-10 BYE-B4 BYE-B9: the client never answers the CF's BYE (480): the CF gets the PF's 200 OK, the record moves to inactive; the REGISTER gets every kept message in order",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["unanswered 1", "unanswered 2"], {
        byeHeaders: ["Reason: SIP;cause=480"],
        clientAnswersBye: false,
      });
      // the CF's BYE got the PF's own 200 OK once the client's time was up (not tm's 408)
      const trace = chat.trace ?? { cf: [], client: [] };
      assert.equal(first(trace.cf, { direction: "received", cseqMethod: "BYE" })?.status, 200);
      assert.equal(first(trace.client, { direction: "sent", cseqMethod: "BYE" }), undefined, "the client never answered");
      assert.equal((await rig.folder(groupFolder(chat), chat.servedUser)).length, 1, "BYE-B4: the GSO");
      await rig.lifecycleMoved(chat, "client-absent -> inactive");
      await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue }) => {
        await assertDeliveredInOrder(ue, chat);
        await queueEmptied(chat);
      });
    },
  );

  test(
    "DD-1 DD-10 BYE-B3 BYE-B5 BYE-B9: the client never answers the CF's BYE with cause 410, nor one with cause 503: the CF gets the PF's 200 OK each time, the records move to terminated and to inactive, each REGISTER gets every kept message in order",
    T,
    async () => {
      for (const [reason, transition, status] of [
        ['Reason: SIP;cause=410;text="Gone"', "client-absent -> terminated", /<status>removed<\/status>/],
        ['Reason: SIP;cause=503;text="Service Unavailable"', "client-absent -> inactive", /<participant /],
      ] as const) {
        const chat = await rig.chatWhileAway([`${transition} unanswered 1`, `${transition} unanswered 2`], {
          byeHeaders: [reason],
          clientAnswersBye: false,
        });
        const trace = chat.trace ?? { cf: [], client: [] };
        assert.equal(first(trace.cf, { direction: "received", cseqMethod: "BYE" })?.status, 200, `${reason}: the PF's 200 OK`);
        assert.equal(first(trace.client, { direction: "sent", cseqMethod: "BYE" }), undefined, "the client never answered");
        const gsos = await rig.folder(groupFolder(chat), chat.servedUser);
        assert.equal(gsos.length, 1, `${reason}: the GSO`);
        assert.match(gsoXml(gsos[0] ?? ""), status);
        await rig.lifecycleMoved(chat, transition);
        await deliveredInOrder(chat);
      }
    },
  );

  test(
    "DD-1 DD-10 (delivery.resumeInterrupted): the sidecar is SIGKILLed in the middle of a delivery of 400 messages and restarted; with no new REGISTER it starts the delivery again to the device's contact (the record said it was under way) and the device gets the rest, in order, behind what the record says it confirmed: 0 lost, only the unconfirmed tail again",
    T,
    async (t) => {
      const texts = Array.from({ length: 400 }, (_, i) => `across the crash ${i}`);
      const chat = await rig.chatWhileAway(texts, { byeHeaders: ["Reason: SIP;cause=480"] });
      const c = await deliveryAcrossCrash(rig, rig, chat, (clientGone) => rig.crashAndRestart(clientGone), undefined, "resumed");
      assert.ok(
        rig.loggedAll("deferred delivery resumed: the record says it was under way and nobody ran it").length > 0,
        "the restarted sidecar resumed the delivery by itself",
      );
      t.diagnostic(
        `${c.sent} deferred; ${c.before} before the SIGKILL, ${c.after} after the restart; lost ${c.lost}; twice ${c.twice}; reordered ${c.reordered}; left ${c.left}`,
      );
      assert.ok(c.before < texts.length, "killed mid-delivery");
      assert.equal(c.lost, 0, "nothing lost");
      assert.equal(c.reordered, 0, "each delivery in order, the second from where the record's position ends");
      assert.ok(c.twice < c.before, "what the device confirmed before the SIGKILL is not delivered again");
      assert.ok(c.gso, "DD-11: the GSO after the rest");
      assert.equal(c.left, 0, "the queue empty");
      // whether the restarted sidecar had confirmed items to mark depends on whether the SIGKILL came
      // between a confirmation's record write and its IMAP mark: the bound below holds either way
      t.diagnostic(
        `confirmed items marked after the restart: ${rig.loggedAll("items the device confirmed before a crash marked, not sent again").length > 0}`,
      );
      assert.ok(c.twice <= SENT_TWICE_BOUND, `sent twice ${c.twice}: at most ${SENT_TWICE_BOUND}`);
      assert.equal(c.twiceUnmarked, 0, "every copy carries its first copy's IMDN Message-ID: the client can drop it (RFC 5438 6.3)");
    },
  );

  test(
    "DD-1 DD-10: the sidecar is SIGKILLed mid-delivery and restarted; its resumed delivery rings the contact the device left (nothing answers there) and the device registers from another one: that INVITE is dropped and the rest goes to the new contact at once, not after the old INVITE times out; 0 lost, in order",
    T,
    async (t) => {
      const texts = Array.from({ length: 600 }, (_, i) => `moved after the crash ${i}`);
      const chat = await rig.chatWhileAway(texts, { byeHeaders: ["Reason: SIP;cause=480"] });
      const c = await deliveryAcrossCrash(rig, rig, chat, (clientGone) => rig.crashAndRestart(clientGone), undefined, "moves");
      t.diagnostic(
        `${c.sent} deferred; ${c.before} before the SIGKILL, ${c.after} at the new contact; lost ${c.lost}; twice ${c.twice}; reordered ${c.reordered}; left ${c.left}`,
      );
      assert.ok(
        rig.loggedAll("registered again at another contact during the delivery INVITE: that INVITE dropped, re-attempted there now")
          .length > 0,
        "the resumed INVITE was still under way when the device registered again",
      );
      assert.ok(c.before < texts.length, "killed mid-delivery");
      assert.equal(c.lost, 0, "nothing lost");
      assert.equal(c.reordered, 0, "each delivery in order");
      assert.ok(c.gso, "DD-11: the GSO after the rest");
      assert.equal(c.left, 0, "the queue empty");
      assert.ok(c.twice <= SENT_TWICE_BOUND, `sent twice ${c.twice}: at most ${SENT_TWICE_BOUND}`);
    },
  );

  test(
    "DD-1 DD-10 BYE-B5: the sidecar is SIGKILLed while the messages wait (before the CF's BYE 503) and restarted; the BYE is decided from the durable record; the REGISTER gets every message in order",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["kept across a crash 1", "kept across a crash 2", "kept across a crash 3"], {
        byeHeaders: ['Reason: SIP;cause=503;text="Service Unavailable"'],
        whileDeferred: async () => {
          await rig.crashAndRestart();
        },
      });
      await waitFor(async () => (await rig.folder(groupFolder(chat), chat.servedUser)).length === 1, 5000, 50, "BYE-B5: the GSO");
      await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue }) => {
        await assertDeliveredInOrder(ue, chat);
        await queueEmptied(chat);
      });
    },
  );

  test(
    "DD-1 DD-10 DD-2 DD-6: the sidecar's local state directory is lost (SIGKILL, state deleted) before the REGISTER: the record is rebuilt from the served user's mailbox (session descriptor + latest GSO) and every message is delivered in order",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["survives a lost disk 1", "survives a lost disk 2"], {
        byeHeaders: ["Reason: SIP;cause=480"],
      });
      await rig.crashAndRestart(() => rm(rig.stateDir, { recursive: true, force: true }));
      await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue, invite }) => {
        assert.match(invite.body, /<entry uri="tel:\+16135551210"/, "DD-2: the participants, from the store");
        assert.match(invite.body, /a=accept-wrapped-types:text\/plain message\/imdn\+xml/, "DD-6: the original offer, from the descriptor");
        await assertDeliveredInOrder(ue, chat);
        await queueEmptied(chat);
      });
      assert.ok(
        rig.sidecar
          .logLines()
          .some((l) => l.msg === "group session record rebuilt from the Message Store" && l.conversationId === chat.conversationId),
      );
    },
  );

  test(
    "DD-13 RJ-3 RJ-5: the client sends in the delivery session of an inactive group -> the PF re-starts the group session (8.2.2.7 INVITE to the focus, same Conversation-ID and Contribution-ID, the CPM feature tag, the PF's MSRP offer); the held message reaches the CF, live chat goes on both ways; the CF's later BYE ends the delivery session too",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["before the re-start"], { byeHeaders: ["Reason: SIP;cause=480"] });
      const focusPort = chat.cfSipPort as number;
      const cf = await rig.peer("CF");
      // the focus is back where the group's lastfocussessionid points (the CF's SIPp port)
      const focus = await rig.cfUas("dd-13-focus-rejoin.xml", focusPort, cf);
      try {
        await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue, client }) => {
          await rig.received(ue, chat.sent.length + 1, chat); // the deferred items, the GSO
          const held = chatCpim("back in the group", "imdn-back", SERVED_USER);
          assert.equal((await ue.send(held, "message/cpim")).code, 200);
          const inv = await rig.inviteAt(focus, "the re-start INVITE at the focus");
          assert.match(inv.text.split("\r\n")[0] ?? "", new RegExp(`^INVITE sip:focus@127\\.0\\.0\\.1:${focusPort} SIP/2\\.0`));
          assert.equal(header(inv, "conversation-id"), chat.conversationId);
          assert.equal(header(inv, "contribution-id"), chat.contributionId);
          assert.match(header(inv, "accept-contact") ?? "", /g\.3gpp\.icsi-ref="urn%3Aurn-7%3A3gpp-service\.ims\.icsi\.oma\.cpm\.session"/);
          assert.match(header(inv, "contact") ?? "", /g\.3gpp\.icsi-ref=/);
          assert.equal(header(inv, "p-asserted-identity"), `<${SERVED_USER}>`);
          await cf.open(msrpMedia(inv.body).path, "active");
          // the held message goes on, then live chat both ways
          const atCf = await rig.received(cf, 1, chat);
          assert.equal(Buffer.from(atCf[0]?.body ?? []).toString("utf8"), held.toString("utf8"));
          await rig.lifecycleMoved(chat, "inactive -> active");
          const live = chatCpim("welcome back", "imdn-welcome");
          assert.equal((await cf.send(live, "message/cpim")).code, 200);
          const atUe = await rig.received(ue, chat.sent.length + 2, chat);
          assert.equal(Buffer.from(atUe.at(-1)?.body ?? []).toString("utf8"), live.toString("utf8"));
          // 8.3.2.3: the CF ends the re-started session: the joined delivery session ends too
          await triggerSipp(focusPort, header(inv, "call-id") ?? "", 0);
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
          assert.ok(first(r.messages, { direction: "received", method: "BYE" }), "the delivery session got the PF's BYE");
        });
        const f = await focus.done;
        assert.equal(f.code, 0, `focus SIPp: ${f.errors}`);
      } finally {
        await focus.stop();
      }
    },
  );

  test(
    "DD-13 RJ-3 RJ-4: the focus refuses the re-start (404, the group is gone) -> the client gets a failure REPORT (403: not delivered downstream, never 481) for its SEND, the negative delivery IMDN it asked for, then BYE with the CF's cause and phrase",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["before the restart"], { byeHeaders: ["Reason: SIP;cause=480"] });
      // no conference factory configured in this rig: RJ-3 with the focus's code at once
      const focus = await rig.cfUas("rj-3-focus-refuses.xml", chat.cfSipPort as number);
      try {
        await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue, client }) => {
          await rig.received(ue, 2, chat); // the deferred message, then the GSO (DD-11)
          const reports: MsrpRequest[] = [];
          ue.session?.on("report", (r) => reports.push(r));
          const reply = chatCpim("a reply to the group", "imdn-reply", "tel:+16135551200", "positive-delivery, negative-delivery");
          assert.equal((await ue.send(reply, "message/cpim")).code, 200, "hop-by-hop 200");
          await waitFor(() => reports.length === 1, 8000, 10, "the failure REPORT");
          assert.equal(reports[0]?.status?.code, 403);
          // RFC 5438 7.2.1.1: "failed", about the client's message, from the group, to its sender
          const [imdn] = await rig.received(ue, 3, chat).then((got) => got.slice(2));
          const text = Buffer.from(imdn?.body ?? []).toString("utf8");
          assert.equal(imdn?.contentType, "message/cpim");
          assert.match(text, /^To: <tel:\+16135551200>\r$/m);
          assert.match(text, /Content-Type: message\/imdn\+xml/);
          assert.match(text, /<message-id>imdn-reply<\/message-id>/);
          assert.match(text, /<status><failed\/><\/status>/);
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
          const bye = r.messages.find((m) => m.direction === "received" && m.method === "BYE");
          assert.equal(header(bye as SipTraceMessage, "reason"), 'SIP;cause=404;text="Not Found"');
        });
        const f = await focus.done;
        assert.equal(f.code, 0, `focus SIPp: ${f.errors}`);
        assert.ok(first(f.messages, { direction: "received", method: "INVITE" }), "the re-start INVITE reached the focus");
      } finally {
        await focus.stop();
      }
    },
  );

  test(
    "DD-1 DD-10: the Message Store is down when the device registers -> the REGISTER is answered, nothing is delivered yet; once Dovecot is back the PF tries again by itself (delivery.storeRetryMs) and the device gets every kept message in order, without a new REGISTER",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["kept while the store goes down 1", "kept while the store goes down 2"], {
        byeHeaders: ["Reason: SIP;cause=480"],
      });
      const unreadable = () =>
        rig
          .loggedAll("registration: the served user's deferred queue is unreadable, nothing delivered")
          .filter((l) => l.retryInMs !== undefined);
      const before = unreadable().length;
      await deliveredInOrder(chat, async (contact) => {
        await rig.dovecot.kill();
        try {
          const reg = await rig.register(contact, chat.servedUser);
          assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
          await waitFor(() => unreadable().length > before, 5000, 20, "the registration found the store down");
        } finally {
          await rig.dovecot.restart();
        }
      });
      assert.ok(
        rig.loggedAll("registration tried again after the store was unreadable").some((l) => Number(l.deliveries) > 0),
        "the delivery came from the PF's own retry",
      );
    },
  );

  test("DD-8: the client declines (603) -> every deferred message of the group session is discarded, no retry", T, async () => {
    const chat = await rig.chatWhileAway(["declined"], { byeHeaders: ["Reason: SIP;cause=480"] });
    const client = await startSipp({ scenario: "dd-8-client-declines.xml", extraArgs: ["-m", "2"] });
    try {
      const reg = await rig.register(`<sip:client@127.0.0.1:${client.port}>`);
      assert.equal(reg.code, 0);
      await rig.receivedInvite(client, chat);
      await queueEmptied(chat);
      await new Promise((r) => setTimeout(r, RETRY_MS * 2));
      assert.equal((await rig.receivedInvites(client, chat)).length, 1, "no retry after 603");
    } finally {
      await client.stop();
    }
  });

  test(
    "DD-8 ii: the client declines (603) while the group is still active -> the deferred data is discarded, the focus gets the PF's BYE with Reason SIP;cause=200;text=\"Call completed\" on the group session's dialog, the client's old dialog ends too, the media is released, the record leaves",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["declined while the group goes on"], {
        whileDeferred: async (c) => {
          // -m 2: SIPp stays up after the 603 (its trace is read while it runs)
          const client = await startSipp({ scenario: "dd-8-client-declines.xml", extraArgs: ["-m", "2"] });
          try {
            const reg = await rig.register(`<sip:client@127.0.0.1:${client.port}>`, c.servedUser);
            assert.equal(reg.code, 0);
            await rig.receivedInvite(client, c);
            await queueEmptied(c);
          } finally {
            await client.stop();
          }
          await rig.lifecycleMoved(c, "client-absent -> left");
          // the focus answered the PF's BYE; its SIPp ends 50 ms after it: the harness's BYE trigger must come later
          await waitFor(() => rig.logged("BYE to the focus for the served user", c.callId) !== undefined, 5000, 20, "the focus's answer");
          await new Promise((r) => setTimeout(r, 200));
        },
      });
      const cf = chat.trace?.cf ?? [];
      const byeAtFocus = first(cf, { direction: "received", method: "BYE" });
      assert.ok(byeAtFocus, "the focus got a BYE");
      assert.equal(header(byeAtFocus, "reason"), 'SIP;cause=200;text="Call completed"');
      assert.equal(header(byeAtFocus, "call-id"), chat.callId, "on the group session's own dialog");
      assert.ok(first(cf, { direction: "sent", status: 200, cseqMethod: "BYE" }), "the focus answered it");
      assert.equal(cf.filter((m) => m.direction === "sent" && m.method === "BYE").length, 0, "the CF sent no BYE of its own");
      const byeAtClient = first(chat.trace?.client ?? [], { direction: "received", method: "BYE" });
      assert.equal(header(byeAtClient as SipTraceMessage, "reason"), 'SIP;cause=200;text="Call completed"');
      const released = rig.sidecar.logLines().find((l) => l.msg === "group session media released (DD-8 ii)" && l.callId === chat.callId);
      assert.ok(Number(released?.released) >= 1, `media released: ${JSON.stringify(released)}`);
      assert.equal((await rig.folder(deferredFolder(chat), chat.servedUser)).length, 0, "DD-8 i: the deferred data is discarded");
      // the delivery INVITE and both BYEs went through Kamailio as the UA's own
      assert.ok((await rig.kamailio.stat("cpm_pf_ua_requests")) >= 3);
    },
  );

  /** BYE-B7 BYE-B4: the CF ends the group (480); the joined delivery session (SIPp `client`) gets the PF's Reason. */
  async function cfEndsJoined(c: Chat, client: SippRun): Promise<void> {
    await triggerSipp(c.cfSipPort as number, c.callId, 0);
    const r = await client.done;
    assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
    const bye = first(r.messages, { direction: "received", method: "BYE" });
    assert.equal(header(bye as SipTraceMessage, "reason"), "SIP;cause=480", "the delivery session got the PF's Reason");
    // the CF's SIPp ends once its 200 OK came (the outcome report): the harness's own BYE trigger must come later
    await waitFor(() => rig.logged("BYE completed", c.callId) !== undefined, 5000, 20, "the CF's 200 OK");
    await new Promise((resolve) => setTimeout(resolve, 200));
  }

  test(
    "DD-12 RJ-5 DD-10: the client sends while its deferred items are still being delivered: its messages are held and go on to the CF in order once the delivery session is joined, none dropped",
    T,
    async (t) => {
      const texts = Array.from({ length: 300 }, (_, i) => `before the join ${i}`);
      await rig.chatWhileAway(texts, {
        whileDeferred: async (c) => {
          const cf = c.cf as MsrpPeer;
          await rig.deliveredTo(c, "dd-12-client-joins.xml", {}, async ({ peer: ue, client }) => {
            await waitFor(() => ue.received.length >= 1, 5000, 5, "the delivery has begun");
            const before = cf.received.length;
            const held = [1, 2, 3].map((i) => chatCpim(`sent during the delivery ${i}`, `imdn-held-${i}`));
            let deliveredWhenForwarded: number | undefined;
            cf.on("message", () => {
              if (deliveredWhenForwarded === undefined && cf.received.length > before) deliveredWhenForwarded = ue.received.length;
            });
            const sentAt = ue.received.length;
            const answers = await Promise.all(held.map((h) => ue.send(h, "message/cpim")));
            t.diagnostic(`sent with ${sentAt} of ${texts.length} deferred items delivered`);
            assert.ok(sentAt < texts.length, "sent while the deferred items were still coming");
            assert.deepEqual(
              answers.map((a) => a.code),
              [200, 200, 200],
              "each taken by the PF (the MSRP transaction's 200; a success REPORT waits for the CF)",
            );
            const atCf = await rig.received(cf, before + held.length, c);
            assert.ok(
              deliveredWhenForwarded !== undefined && deliveredWhenForwarded >= texts.length,
              `held until the deferred items were through (the client had ${deliveredWhenForwarded} when the first reached the CF)`,
            );
            await waitFor(
              () => rig.logged("delivery session joined with the on-going group session (DD-12)", c.callId) !== undefined,
              5000,
              20,
              "the join",
            );
            assert.deepEqual(
              atCf.slice(before).map((m) => Buffer.from(m.body).toString("utf8")),
              held.map((h) => h.toString("utf8")),
              "RJ-5: the held messages reached the CF, in order, none dropped",
            );
            await rig.received(ue, texts.length + 1, c);
            await queueEmptied(c);
            await cfEndsJoined(c, client);
          });
        },
        byeHeaders: ["Reason: SIP;cause=480"],
      });
    },
  );

  test(
    "DD-12 RJ-5 DD-10 BYE-B7: the group is still going on when the client registers: after the deferred items the delivery session is joined with it: a live message of the CF reaches the client, the client's message reaches the CF, the CF's session refresh is answered by the PF; the CF's BYE then ends the joined session too, with the PF's Reason",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["before the join 1", "before the join 2"], {
        whileDeferred: async (c) => {
          const cf = c.cf as MsrpPeer;
          await rig.deliveredTo(c, "dd-12-client-joins.xml", {}, async ({ peer: ue, client }) => {
            // DD-10 / DD-11: the deferred items in order, then the latest participants
            const got = await rig.received(ue, c.sent.length + 1, c);
            assert.deepEqual(
              got.slice(0, c.sent.length).map((m) => Buffer.from(m.body).toString("utf8")),
              c.sent.map((x) => x.body.toString("utf8")),
            );
            await waitFor(
              () => rig.logged("delivery session joined with the on-going group session (DD-12)", c.callId) !== undefined,
              5000,
              20,
              "the join",
            );
            await rig.lifecycleMoved(c, "client-absent -> active");
            // DD-12: live chat goes on, both ways, through the PF
            const live = chatCpim("live, after the join", "imdn-live");
            assert.equal((await cf.send(live, "message/cpim")).code, 200, "the joined client took the CF's live message");
            const atClient = await rig.received(ue, c.sent.length + 2, c);
            assert.equal(Buffer.from(atClient.at(-1)?.body ?? []).toString("utf8"), live.toString("utf8"));
            const before = cf.received.length;
            const reply = chatCpim("the client answers the group", "imdn-reply-live");
            assert.equal((await ue.send(reply, "message/cpim")).code, 200);
            const atCf = await rig.received(cf, before + 1, c);
            assert.equal(
              Buffer.from(atCf.at(-1)?.body ?? []).toString("utf8"),
              reply.toString("utf8"),
              "the client's message reached the CF",
            );
            await queueEmptied(c);
            // DD-12 RFC 4028: the CF refreshes its dialog while the client is joined (UPDATE, then re-INVITE): the
            // PF answers for the client's gone leg (its UA as Contact, its CF leg unchanged); the joined chat goes on
            const refreshes = await rig.cfInDialog(c, "dd-12-cf-session-refresh.xml");
            assert.equal(refreshes.length, 2, "the UPDATE and the re-INVITE answered 200");
            for (const answer of refreshes)
              assert.match(header(answer, "contact") ?? "", /^<sip:127\.0\.0\.1:\d+>$/, "the PF's UA answers");
            assert.equal(
              msrpMedia(refreshes[1]?.body ?? "").path,
              msrpMedia((c.cf200 as SipTraceMessage).body).path,
              "the PF's CF leg, unchanged",
            );
            const afterRefresh = chatCpim("live, after the refresh", "imdn-live-refresh");
            assert.equal((await cf.send(afterRefresh, "message/cpim")).code, 200);
            const refreshed = await rig.received(ue, c.sent.length + 3, c);
            assert.equal(
              Buffer.from(refreshed.at(-1)?.body ?? []).toString("utf8"),
              afterRefresh.toString("utf8"),
              "the joined client still gets the CF's messages",
            );
            // BYE-B7 BYE-B4: the CF ends the group (480): the joined delivery session is one of the user's dialogs too
            await cfEndsJoined(c, client);
          });
        },
        byeHeaders: ["Reason: SIP;cause=480"],
      });
      const atOldDialog = (chat.trace?.client ?? []).filter(
        (m) => m.direction === "received" && (m.method === "UPDATE" || header(m, "cseq") === "11 INVITE"),
      );
      assert.deepEqual(atOldDialog, [], "nothing of the refresh reached the client's original dialog");
    },
  );

  test(
    "RJ-5 8.2.2.3 DD-14: the joined client leaves with BYE cause=200 -> the focus gets the PF's BYE with that Reason on the group session's dialog, the record is left",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["before the client leaves"], {
        whileDeferred: async (c) => {
          await rig.deliveredTo(
            c,
            "client-dd-uas.xml",
            { bye_reason: 'SIP;cause=200;text="Call completed"' },
            async ({ peer: ue, client, invite }) => {
              await rig.received(ue, c.sent.length + 1, c);
              await rig.lifecycleMoved(c, "client-absent -> active");
              await triggerSipp(client.port, invite.headers.get("call-id")?.[0] ?? "");
              const r = await client.done;
              assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
            },
          );
          await rig.lifecycleMoved(c, "active -> left");
          // the focus's SIPp ends 50 ms after its 200: the harness's BYE trigger must come later
          await waitFor(() => rig.logged("BYE to the focus for the served user", c.callId) !== undefined, 5000, 20, "the focus's answer");
          await new Promise((r) => setTimeout(r, 200));
        },
      });
      const byeAtFocus = first(chat.trace?.cf ?? [], { direction: "received", method: "BYE" });
      assert.ok(byeAtFocus, "the focus got the PF's BYE");
      assert.equal(header(byeAtFocus, "reason"), 'SIP;cause=200;text="Call completed"');
      assert.equal(header(byeAtFocus, "call-id"), chat.callId);
    },
  );

  test(
    "DD-9: any other error (486 Busy Here) -> re-attempted after delivery.retryInitialMs, up to delivery.retryAttempts; the data is kept",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["kept"], { servedUser: KEEPER_USER, byeHeaders: ["Reason: SIP;cause=480"] });
      const client = await startSipp({ scenario: "client-uas-reject.xml", extraArgs: ["-m", "3"] });
      try {
        const reg = await rig.register(`<sip:client@127.0.0.1:${client.port}>`, chat.servedUser);
        assert.equal(reg.code, 0);
        let invites: SipTraceMessage[] = [];
        await waitFor(
          async () => {
            invites = await rig.receivedInvites(client, chat);
            return invites.length >= 2;
          },
          5000,
          20,
          "the re-attempt",
        );
        const gap = (invites[1] as SipTraceMessage).time - (invites[0] as SipTraceMessage).time;
        assert.ok(gap >= RETRY_MS - 20, `re-attempt after ${gap} ms (delivery.retryInitialMs ${RETRY_MS})`);
        await new Promise((r) => setTimeout(r, RETRY_MS * 2));
        assert.equal((await rig.receivedInvites(client, chat)).length, 2, "delivery.retryAttempts=1: one re-attempt only");
        assert.equal((await rig.folder(deferredFolder(chat), chat.servedUser)).length, 1, "data kept for the next registration");
      } finally {
        await client.stop();
      }
    },
  );

  test(
    "DD-1 DD-10: two served users in the same group chat: each user's messages are kept in that user's own mailbox, and each registration delivers exactly that user's",
    T,
    async () => {
      const first = await rig.chatWhileAway(["for the first user 1", "for the first user 2"], { byeHeaders: ["Reason: SIP;cause=480"] });
      const other = await rig.chatWhileAway(["for alice only"], {
        servedUser: OTHER_USER,
        conversationId: first.conversationId,
        contributionId: first.contributionId,
        byeHeaders: ["Reason: SIP;cause=480"],
      });
      assert.equal(
        (await rig.folder(deferredFolder(first), first.servedUser)).length,
        2,
        "the first user's mailbox holds the first user's",
      );
      assert.equal((await rig.folder(deferredFolder(other), OTHER_USER)).length, 1, "the other user's mailbox holds the other's");
      await rig.deliveredTo(other, "client-uas-msrp.xml", {}, async ({ peer: ue }) => {
        await assertDeliveredInOrder(ue, other);
        await queueEmptied(other);
      });
      assert.equal(
        (await rig.folder(deferredFolder(first), first.servedUser)).length,
        2,
        "the other user's delivery took nothing of the first user's",
      );
      await rig.deliveredTo(first, "client-uas-msrp.xml", {}, async ({ peer: ue }) => {
        await assertDeliveredInOrder(ue, first);
        await queueEmptied(first);
      });
    },
  );

  test(
    "DD-1 trust: a forged third-party REGISTER for the served user from an address that is no S-CSCF gets 403: nothing delivered, nothing deleted",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["not for a forger"], { servedUser: KEEPER_USER, byeHeaders: ["Reason: SIP;cause=480"] });
      const client = await startSipp({ scenario: "dd-8-client-declines.xml", timeoutS: 10 });
      try {
        const reg = await rig.register(`<sip:client@127.0.0.1:${client.port}>`, chat.servedUser, true, {
          from: "127.0.0.2",
          scenario: "untrusted-third-party-register.xml",
        });
        assert.equal(reg.code, 0, `the forger got 403 (scenario fails on 200): ${reg.errors}`);
        await new Promise((r) => setTimeout(r, 1000));
        assert.equal((await rig.receivedInvites(client, chat)).length, 0, "no delivery INVITE");
        assert.equal((await rig.folder(deferredFolder(chat), chat.servedUser)).length, 1, "nothing deleted");
        assert.ok((await rig.kamailio.stat("cpm_pf_register_untrusted")) >= 1);
      } finally {
        await client.stop();
      }
    },
  );

  test(
    "DD-1: a third-party REGISTER for another user gets nothing of the served user's data delivered and deletes nothing",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["only for the served user"], {
        servedUser: KEEPER_USER,
        byeHeaders: ["Reason: SIP;cause=480"],
      });
      const client = await startSipp({ scenario: "dd-8-client-declines.xml", timeoutS: 10 });
      try {
        const reg = await rig.register(`<sip:client@127.0.0.1:${client.port}>`, "sip:mallory@example.net");
        assert.equal(reg.code, 0);
        await new Promise((r) => setTimeout(r, 1000));
        assert.equal((await rig.receivedInvites(client, chat)).length, 0, "no delivery INVITE to another user's device");
        assert.equal((await rig.folder(deferredFolder(chat), chat.servedUser)).length, 1, "nothing deleted");
      } finally {
        await client.stop();
      }
    },
  );
});

/** The session recorded (8.5.2): the served user's <allow-offline-storage>, or the operator's media.recording. */
for (const [why, env] of [
  ["allow-offline-storage", { CPM_PF__PF__ALLOWOFFLINESTORAGE: "true" }],
  ["media.recording on", { CPM_PF__MEDIA__RECORDING: "true" }],
] as const) {
  describe(`deferred delivery with the session recorded (8.5.2: ${why})`, () => {
    let rig: DeferredChatRig;
    before(async () => {
      rig = await DeferredChatRig.start(env);
    });
    after(async () => {
      await rig?.stop();
    });

    test(
      "DD-10 BYE-B8: the delivered messages leave the deferred queue into the group session's folder, in order, where the user's other devices see them",
      T,
      async () => {
        const chat = await rig.chatWhileAway(["recorded 1", "recorded 2", "recorded 3"], { byeHeaders: ["Reason: SIP;cause=480"] });
        await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue }) => {
          await rig.received(ue, chat.sent.length + 1, chat);
          await waitFor(async () => (await rig.folder(deferredFolder(chat))).length === 0, 5000, 50, "deferred queue emptied");
        });
        const kept = await rig.folder(groupFolder(chat));
        const positions = ["recorded 1", "recorded 2", "recorded 3"].map((t) => kept.findIndex((o) => o.includes(t)));
        assert.ok(
          positions.every((p) => p >= 0),
          `every delivered message is in ${groupFolder(chat)} (${positions})`,
        );
        assert.deepEqual(
          [...positions].sort((a, b) => a - b),
          positions,
          "in order",
        );
        assert.ok(
          kept.some((o) => /^Content-Type:\s*application\/group-state-object\+xml/im.test(o)),
          "next to the GSO of the BYE (BYE-B4)",
        );
      },
    );
  });
}

describe('deferred delivery with delivery.contact "pf": the delivery INVITE names the PF\'s own UA as its Contact', () => {
  let rig: DeferredChatRig;
  before(async () => {
    rig = await DeferredChatRig.start({ CPM_PF__DELIVERY__CONTACT: "pf" });
  });
  after(async () => {
    await rig?.stop();
  });

  test(
    "DD-3 DD-10 DD-14 (delivery.contact \"pf\"): the delivery INVITE's Contact is the PF's UA (the CPM ICSI, no ;isfocus), From still the focus; every kept message in order; the client's BYE to that Contact reaches the PF and is answered; the queue is emptied",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["to the PF's contact 1", "to the PF's contact 2"], { byeHeaders: ["Reason: SIP;cause=480"] });
      await rig.deliveredTo(
        chat,
        "client-dd-uas.xml",
        { bye_reason: 'SIP;cause=200;text="Call completed"' },
        async ({ peer, client, invite }) => {
          assert.equal(
            header(invite, "contact"),
            `<sip:127.0.0.1:${rig.uaPort}>;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"`,
          );
          assert.match(
            header(invite, "from") ?? "",
            /^<sip:focus@127\.0\.0\.1:\d+>;tag=/,
            "DD-3: From names the focus as the invitation did",
          );
          assert.match(header(invite, "record-route") ?? "", /cpmpfdd/);
          const got = await rig.received(peer, chat.sent.length, chat);
          assertKeptInOrder(got, chat);
          await waitFor(
            async () => (await rig.folder(deferredFolder(chat), chat.servedUser)).length === 0,
            5000,
            50,
            "deferred queue emptied",
          );
          // DD-14: the client's BYE targets the PF's Contact through the route set; the PF's UA answers it
          await triggerSipp(client.port, header(invite, "call-id") ?? "");
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp (its BYE answered 200 by the PF's UA): ${r.errors}`);
        },
      );
    },
  );
});

describe("deferred delivery routed the IMS way: through the S-CSCF, the operator's relay hook, a charging vector", () => {
  let rig: DeferredChatRig;
  let dir: string;
  let scscfPort: number;

  before(async () => {
    // an operator's configuration: the example one with its own relay hook
    dir = await mkdtemp(join(tmpdir(), "cpm-operator-"));
    const cfg = join(dir, "operator.cfg");
    await writeFile(
      cfg,
      [
        "#!KAMAILIO",
        "#!define CPM_PF_CUSTOM_HOOK_RELAY",
        `include_file "${join(REPO_ROOT, "kamailio", "kamailio.cfg")}"`,
        'route[CPM_PF_HOOK_RELAY] { append_hf("X-Operator-Hook: $rm\\r\\n"); return; }',
        "",
      ].join("\n"),
    );
    // the S-CSCF stands in for the client's side: the client's SIPp listens where the S-CSCF's Route points
    scscfPort = await freePort();
    rig = await DeferredChatRig.start({ CPM_PF__DELIVERY__TERMINATINGROUTE: `sip:127.0.0.1:${scscfPort}` }, undefined, {
      kamailioCfg: cfg,
    });
  });
  after(async () => {
    await rig?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test(
    "DD-3 TS 24.229 5.7.3 RFC 7315 RFC 3841: with delivery.terminatingRoute the delivery INVITE goes to the S-CSCF (pre-loaded Route) for the public identity and the registered device (Accept-Contact +sip.instance), with the PF's own ICID, through the operator's route[CPM_PF_HOOK_RELAY]; every message is delivered",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["routed the IMS way"], { byeHeaders: ["Reason: SIP;cause=480"] });
      await rig.deliveredTo(
        chat,
        "client-uas-msrp.xml",
        {},
        async ({ peer: ue, invite }) => {
          assert.equal(invite.text.split("\r\n")[0], `INVITE ${SERVED_USER} SIP/2.0`, "addressed to the public identity");
          const routes = (invite.headers.get("route") ?? []).flatMap((v) => v.split(","));
          assert.equal(routes.length, 1, `Route ${JSON.stringify(routes)}`);
          assert.match(routes[0] as string, new RegExp(`<sip:127\\.0\\.0\\.1:${scscfPort};lr>`));
          assert.match(header(invite, "p-charging-vector") ?? "", /^icid-value=[0-9a-f]{24}$/);
          assert.equal(header(invite, "x-operator-hook"), "INVITE", "the operator's hook ran for the PF's own INVITE");
          // RFC 3841: the S-CSCF picks the device that registered by its +sip.instance
          assert.ok(
            (invite.headers.get("accept-contact") ?? []).includes(`*;+sip.instance="${DEVICE_INSTANCE}";require;explicit`),
            `Accept-Contact ${JSON.stringify(invite.headers.get("accept-contact"))}`,
          );
          const got = await rig.received(ue, chat.sent.length, chat);
          assertKeptInOrder(got, chat);
        },
        undefined,
        "udp",
        scscfPort,
      );
      assert.ok((await rig.kamailio.stat("cpm_pf_ua_requests")) >= 1);
    },
  );
});

describe("deferred delivery per device (DD-1 'for a CPM Client'): each of the served user's devices (+sip.instance) gets what it missed", () => {
  /** The device in the chat (the record knows it from its 2xx Contact), registering after the phone. */
  const TABLET = "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";
  /** The phone (DEVICE_INSTANCE): not in the chat, it registers first. */
  const PHONE = DEVICE_INSTANCE;
  const BYE_200 = { bye_reason: 'SIP;cause=200;text="Call completed"' };
  let rig: DeferredChatRig;
  before(async () => {
    rig = await DeferredChatRig.start({ CPM_PF__DELIVERY__RETRYATTEMPTS: "0" });
  });
  after(async () => {
    await rig?.stop();
  });

  const kept = async (chat: Chat) => (await rig.folder(deferredFolder(chat), chat.servedUser)).length;
  /** The REGISTER of `instance` at `contact`, answered 200. */
  const registers = (chat: Chat, instance: string) => async (contact: string) => {
    const reg = await rig.register(contact, chat.servedUser, true, undefined, instance);
    assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
  };
  /** The deliveries the sidecar started for the REGISTER of `contact` (its log line). */
  const startedFor = (contact: string) =>
    rig.loggedAll("registration: deferred delivery started").filter((l) => l.contact === contact || String(l.contact).startsWith(contact));
  /** DD-10: every kept item in order, then (DD-11) the GSO of the latest participants. */
  async function inOrder(ue: MsrpPeer, chat: Chat): Promise<void> {
    const got = await rig.received(ue, chat.sent.length + 1, chat);
    assertKeptInOrder(got.slice(0, chat.sent.length), chat, "every deferred item, in the order the CF sent them");
    assert.equal(got[chat.sent.length]?.contentType, GSO_TYPE);
  }
  /** The device at `contact` registers again: no delivery INVITE within a second, and the sidecar started none. */
  async function registersForNothing(chat: Chat, instance: string): Promise<void> {
    const client = await startSipp({ scenario: "dd-8-client-declines.xml", timeoutS: 10 });
    try {
      const contact = `<sip:client@127.0.0.1:${client.port}>`;
      await registers(chat, instance)(contact);
      await waitFor(() => startedFor(contact).length > 0, 5000, 20, "the sidecar handled the REGISTER");
      assert.equal(startedFor(contact)[0]?.deliveries, 0, "no delivery started for a device that has it all");
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal((await rig.receivedInvites(client, chat)).length, 0, "no delivery INVITE");
    } finally {
      await client.stop();
    }
  }

  test(
    "DD-1 DD-10 DD-14 BYE-B7: two devices of the served user (two REGISTERs, two +sip.instance, two SIPp clients, two MSRP peers) each get every kept message in order; the queue is empty only after the second; the first device registering again gets nothing again",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["to every device 1", "to every device 2", "to every device 3"], {
        byeHeaders: ['Reason: SIP;cause=480;text="Temporarily Unavailable"'],
        clientInstance: TABLET,
      });
      await rig.lifecycleMoved(chat, "client-absent -> inactive");
      // the phone registers first: everything, in order, in its own delivery session
      await rig.deliveredTo(
        chat,
        "client-dd-uas.xml",
        BYE_200,
        async ({ peer, client, invite }) => {
          await inOrder(peer, chat);
          // DD-14 for the phone: its view only; the tablet (the record's dialog) has not got them
          await triggerSipp(client.port, header(invite, "call-id") ?? "");
          const r = await client.done;
          assert.equal(r.code, 0, `phone SIPp: ${r.errors}`);
        },
        registers(chat, PHONE),
      );
      await waitFor(
        () => rig.loggedAll("delivery leg closed").some((l) => l.conversationId === chat.conversationId),
        5000,
        20,
        "the phone's delivery is over",
      );
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await kept(chat), chat.sent.length, "kept for the tablet");
      // the phone again (a refresh, or a new registration): it has everything, nothing starts
      await registersForNothing(chat, PHONE);
      assert.equal(await kept(chat), chat.sent.length);
      // the tablet: everything again, in order; then the queue is empty
      await rig.deliveredTo(
        chat,
        "client-dd-uas.xml",
        BYE_200,
        async ({ peer, client, invite }) => {
          await inOrder(peer, chat);
          await waitFor(async () => (await kept(chat)) === 0, 5000, 50, "the queue emptied by the second device");
          await triggerSipp(client.port, header(invite, "call-id") ?? "");
          const r = await client.done;
          assert.equal(r.code, 0, `tablet SIPp: ${r.errors}`);
        },
        registers(chat, TABLET),
      );
      // a third REGISTER of the first device: nothing again
      await registersForNothing(chat, PHONE);
    },
  );

  test(
    "DD-12 BYE-B7: two devices of the served user join the on-going group session, each in its own delivery session: the CF's live message reaches both, each one's reaches the CF; the phone's BYE leaves only the phone (nothing to the focus), the tablet goes on; the CF's BYE ends the tablet's session with the PF's Reason",
    T,
    async () => {
      const JOINED = "delivery session joined with the on-going group session (DD-12)";
      await rig.chatWhileAway(["joined by two 1", "joined by two 2"], {
        clientInstance: TABLET,
        byeHeaders: ["Reason: SIP;cause=480"],
        whileDeferred: async (c) => {
          const cf = c.cf as MsrpPeer;
          const joined = () => rig.loggedAll(JOINED).filter((l) => l.conversationId === c.conversationId).length;
          await rig.deliveredTo(
            c,
            "client-dd-uas.xml",
            BYE_200,
            async ({ peer: phone, client: phoneSipp, invite: phoneInvite }) => {
              await inOrder(phone, c);
              await waitFor(() => joined() === 1, 5000, 20, "the phone joined");
              await rig.deliveredTo(
                c,
                "client-uas-msrp.xml",
                {},
                async ({ peer: tablet, client: tabletSipp }) => {
                  await inOrder(tablet, c);
                  await waitFor(() => joined() === 2, 5000, 20, "the tablet joined");
                  const live = chatCpim("live, to both devices", "imdn-live-both");
                  assert.equal((await cf.send(live, "message/cpim")).code, 200);
                  const text = (m: { body: Uint8Array } | undefined) => Buffer.from(m?.body ?? []).toString("utf8");
                  assert.equal(text((await rig.received(phone, c.sent.length + 2, c)).at(-1)), live.toString("utf8"), "the phone got it");
                  assert.equal(text((await rig.received(tablet, c.sent.length + 2, c)).at(-1)), live.toString("utf8"), "the tablet got it");
                  for (const [device, peer] of [
                    ["phone", phone],
                    ["tablet", tablet],
                  ] as const) {
                    const before = cf.received.length;
                    const mine = chatCpim(`from the ${device}`, `imdn-from-${device}`);
                    assert.equal((await peer.send(mine, "message/cpim")).code, 200);
                    assert.equal(
                      text((await rig.received(cf, before + 1, c)).at(-1)),
                      mine.toString("utf8"),
                      `the ${device}'s message reached the CF`,
                    );
                  }
                  // the phone leaves: its BYE ends its own delivery session only
                  await triggerSipp(phoneSipp.port, header(phoneInvite, "call-id") ?? "");
                  const phoneDone = await phoneSipp.done;
                  assert.equal(phoneDone.code, 0, `phone SIPp: ${phoneDone.errors}`);
                  await waitFor(
                    () =>
                      rig.logged("joined delivery session left the group session; the user's other devices stay (BYE-B7)", c.callId) !==
                      undefined,
                    5000,
                    20,
                    "the phone left",
                  );
                  assert.equal(rig.logged("BYE to the focus for the served user", c.callId), undefined, "nothing to the focus");
                  const later = chatCpim("live, after the phone left", "imdn-live-tablet");
                  assert.equal((await cf.send(later, "message/cpim")).code, 200, "the tablet took it");
                  assert.equal(text((await rig.received(tablet, c.sent.length + 3, c)).at(-1)), later.toString("utf8"));
                  assert.equal(phone.received.length, c.sent.length + 2, "nothing more to the phone");
                  // BYE-B7: the CF ends the group (480): the tablet's joined session ends with the PF's Reason
                  await triggerSipp(c.cfSipPort as number, c.callId, 0);
                  const r = await tabletSipp.done;
                  assert.equal(r.code, 0, `tablet SIPp: ${r.errors}`);
                  assert.equal(
                    header(first(r.messages, { direction: "received", method: "BYE" }) as SipTraceMessage, "reason"),
                    "SIP;cause=480",
                  );
                  await waitFor(() => rig.logged("BYE completed", c.callId) !== undefined, 5000, 20, "the CF's 200 OK");
                  await new Promise((resolve) => setTimeout(resolve, 200));
                },
                registers(c, TABLET),
              );
            },
            registers(c, PHONE),
          );
        },
      });
    },
  );

  test(
    "DD-1 DD-10: two devices registering at once get one delivery each, in parallel, each in order, no duplicate; the same device's REGISTER during its delivery starts nothing",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["both at once 1", "both at once 2", "both at once 3", "both at once 4"], {
        byeHeaders: ["Reason: SIP;cause=480"],
        clientInstance: TABLET,
      });
      await rig.lifecycleMoved(chat, "client-absent -> inactive");
      const deliveredTo = (instance: string) =>
        rig.deliveredTo(
          chat,
          "client-dd-uas.xml",
          BYE_200,
          async ({ peer, client, invite }) => {
            await inOrder(peer, chat);
            if (instance === PHONE) {
              // the phone's refresh REGISTER while its delivery session is up: nothing new
              await registersForNothing(chat, PHONE);
            }
            await new Promise((r) => setTimeout(r, 300));
            assert.equal(peer.received.length, chat.sent.length + 1, "each item once to this device");
            await triggerSipp(client.port, header(invite, "call-id") ?? "");
            const r = await client.done;
            assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
          },
          registers(chat, instance),
        );
      await Promise.all([deliveredTo(PHONE), deliveredTo(TABLET)]);
      await waitFor(async () => (await kept(chat)) === 0, 5000, 50, "the queue emptied once both devices have it");
    },
  );
});

describe("DD-1 DD-9: a registration of the device is the delivery's trigger, also while a re-attempt waits", () => {
  /** Far beyond the test's own time: a delivery that comes did not come from the DD-9 timer. */
  const LONG_RETRY_MS = 120_000;
  let rig: DeferredChatRig;
  before(async () => {
    rig = await DeferredChatRig.start({
      CPM_PF__DELIVERY__RETRYATTEMPTS: "3",
      CPM_PF__DELIVERY__RETRYINITIALMS: String(LONG_RETRY_MS),
      CPM_PF__DELIVERY__RETRYMAXMS: String(LONG_RETRY_MS),
    });
  });
  after(async () => {
    await rig?.stop();
  });

  test(
    "DD-1 DD-9 DD-10: the device is busy (486) and registers again, at another contact, while the re-attempt waits for delivery.retryInitialMs: the delivery goes there at once, every kept message in order",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["while busy 1", "while busy 2", "while busy 3"], { byeHeaders: ["Reason: SIP;cause=480"] });
      const busy = await startSipp({ scenario: "client-uas-reject.xml", extraArgs: ["-m", "1"] });
      try {
        assert.equal((await rig.register(`<sip:client@127.0.0.1:${busy.port}>`, chat.servedUser)).code, 0);
        // the first attempt refused (the client SIPp exits after its one call), the re-attempt waiting
        await waitFor(() => rig.loggedAll("486: retry 1 of 3").length > 0, 5000, 20, "the re-attempt scheduled");
      } finally {
        await busy.stop();
      }
      await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue }) => {
        const got = await rig.received(ue, chat.sent.length + 1, chat);
        assertKeptInOrder(got.slice(0, chat.sent.length), chat, "every kept message, in order, at the contact just registered");
        assert.equal(got[chat.sent.length]?.contentType, GSO_TYPE);
      });
      assert.ok(rig.loggedAll("registered again while a retry waited: re-attempted now").length > 0);
    },
  );
});
