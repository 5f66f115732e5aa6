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
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { MsrpRequest } from "../../src/msrp/frame.js";
import { chatCpim } from "../fixtures/cpim.js";
import { anchoredChatCall, msrpMedia, triggerSipp } from "../harness/anchored-chat.js";
import { type DovecotInstance, startDovecot } from "../harness/dovecot.js";
import { folderMessages, gsoXml, storeEnv } from "../harness/group-chat.js";
import { type KamailioInstance, startKamailio } from "../harness/kamailio.js";
import { MsrpPeer, sdpPath, sdpSetup } from "../harness/msrp-peer.js";
import { freePort } from "../harness/ports.js";
import { type SidecarInstance, startSidecar } from "../harness/sidecar.js";
import { header, type SippRun, type SipTraceMessage, startSipp } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

/** The served user as the CF's INVITE names it (To of test/scenarios/cf-invite-msrp.xml). */
const SERVED_USER = "tel:+16135551200";
const DEFERRED_URI = "sip:deferred@pf.example.net";
const CPM_ICSI = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session";
const GSO_TYPE = "application/group-state-object+xml";
const RETRY_MS = 400;
/** Each test: a hung wait fails it instead of the whole run. */
const T = { timeout: 90_000 };
/** An interim GSO the CF sends while the client is away (a participant change, DD-11). */
const INTERIM_GSO =
  '<?xml version="1.0" encoding="UTF-8"?>\n<groupstate timestamp="2026-11-25T10:00:01Z" lastfocussessionid="sip:focus@cf.example.net" group-type="Closed"><participant name="Bob" comm-addr="tel:+16135551210"/></groupstate>';

/** What the CF sent while the client was away, in order. */
interface Sent {
  contentType: string;
  body: Buffer;
}

interface Chat {
  callId: string;
  conversationId: string;
  contributionId: string;
  sent: Sent[];
}

describe("deferred delivery after registration (8.3.2.9.1.2) from the wire: CF INVITE, client gone, CF messages kept, CF BYE, REGISTER, delivery", () => {
  let dovecot: DovecotInstance;
  let kamailio: KamailioInstance;
  let sidecar: SidecarInstance;
  let dir: string;
  let sidecarEnv: Record<string, string>;
  const peers: MsrpPeer[] = [];

  /** The sidecar on the same ports, state and spool directories: a restart changes nothing a user sees. */
  async function startPf(): Promise<SidecarInstance> {
    sidecar = await startSidecar(sidecarEnv);
    return sidecar;
  }

  /** SIGKILL the sidecar and start it again. */
  async function crashAndRestart(): Promise<void> {
    const crashed = sidecar;
    await crashed.kill("SIGKILL");
    await crashed.stop();
    await startPf();
  }

  before(async () => {
    dovecot = await startDovecot();
    dir = await mkdtemp(join(tmpdir(), "cpm-dd-e2e-"));
    const grpcPort = await freePort();
    const uaPort = await freePort();
    const mediaPort = await freePort();
    kamailio = await startKamailio({
      grpcTarget: `127.0.0.1:${grpcPort}`,
      deadlineMs: 1000,
      defines: [`CPM_PF_UA_ADDRESS="sip:127.0.0.1:${uaPort}"`],
    });
    sidecarEnv = {
      ...storeEnv(dovecot, "b2bua"),
      CPM_PF__GRPC__PORT: String(grpcPort),
      CPM_PF__SESSION__STATEDIR: join(dir, "state"),
      CPM_PF__STORE__SPOOLDIR: join(dir, "spool"),
      CPM_PF__MEDIA__ENABLED: "true",
      CPM_PF__MEDIA__HOST: "127.0.0.1",
      CPM_PF__MEDIA__PORT: String(mediaPort),
      CPM_PF__DELIVERY__DEFERREDMSGMGMTURI: DEFERRED_URI,
      CPM_PF__DELIVERY__RETRYATTEMPTS: "1",
      CPM_PF__DELIVERY__RETRYINITIALMS: String(RETRY_MS),
      CPM_PF__DELIVERY__RETRYMAXMS: String(RETRY_MS),
      CPM_PF__DELIVERY__SENDINTERIMGSOS: "true",
      CPM_PF__SIP__HOST: "127.0.0.1",
      CPM_PF__SIP__PORT: String(uaPort),
      CPM_PF__SIP__PROXYHOST: "127.0.0.1",
      CPM_PF__SIP__PROXYPORT: String(kamailio.sipPort),
      CPM_PF__PF__SERVEDUSER: SERVED_USER,
    };
    await startPf();
  });
  after(async () => {
    for (const p of peers) await p.close().catch(() => {});
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function peer(): Promise<MsrpPeer> {
    const p = await MsrpPeer.start();
    peers.push(p);
    return p;
  }

  const deferredFolder = (c: Pick<Chat, "conversationId" | "contributionId">) => `Deferred/${c.conversationId}/${c.contributionId}`;
  const groupFolder = (c: Pick<Chat, "conversationId" | "contributionId">) => `Default/${c.conversationId}/${c.contributionId}`;

  /**
   * The CF invites the served user (media anchored at the PF), both MSRP legs
   * connect, the client's connection drops, the CF sends `texts` (and an
   * interim GSO after the first) which the PF keeps; `whileDeferred` runs
   * then, with the CF dialog still up; then the CF's BYE with `byeHeaders`.
   */
  async function chatWhileAway(
    texts: string[],
    opts: { byeHeaders?: string[]; whileDeferred?: (chat: Chat) => Promise<void>; interimGso?: boolean } = {},
  ): Promise<Chat> {
    const cf = await peer();
    const ue = await peer();
    const sent: Sent[] = [];
    let chat: Chat | undefined;
    await anchoredChatCall(kamailio, {
      cfMsrpPath: cf.path,
      cfSetup: "active",
      clientMsrpPath: ue.path,
      byeHeaders: opts.byeHeaders ?? [],
      timeoutS: 60,
      during: async ({ callId, conversationId, contributionId, clientInvite, cf200 }) => {
        await waitFor(() => logged("media answer anchored", callId), 5000, 20, "ReportMediaAnswer");
        await ue.open(msrpMedia(clientInvite.body).path, "active");
        await cf.open(msrpMedia(cf200.body).path, "active");
        ue.dropConnections();
        await waitFor(() => logged("MSRP leg gone", callId), 5000, 20, "client leg gone");
        for (const [i, t] of texts.entries()) {
          sent.push({ contentType: "message/cpim", body: chatCpim(t, `imdn-${contributionId}-${i}`) });
          if (i === 0 && opts.interimGso) sent.push({ contentType: GSO_TYPE, body: Buffer.from(INTERIM_GSO) });
        }
        for (const s of sent) assert.equal((await cf.send(s.body, s.contentType)).code, 200, "the CF's SEND is answered once stored");
        const kept = await folderMessages(dovecot, deferredFolder({ conversationId, contributionId }));
        assert.equal(kept.length, sent.length, "every message the CF sent is in the deferred queue");
        chat = { callId, conversationId, contributionId, sent };
        if (opts.whileDeferred) await opts.whileDeferred(chat);
      },
    });
    assert.ok(chat);
    return chat;
  }

  function logged(msg: string, callId: string): Record<string, unknown> | undefined {
    return sidecar.logLines().find((l) => l.msg === msg && l.callId === callId);
  }

  /** The S-CSCF's third-party REGISTER for `servedUser`, the UE's REGISTER (with `contact`) in the body. */
  async function register(contact: string, servedUser = SERVED_USER) {
    const run = await startSipp({
      scenario: "scscf-third-party-register.xml",
      remote: kamailio.address,
      keys: { served_user: servedUser, expires: "600000", ue_contact: contact },
    });
    return run.done;
  }

  async function receivedInvites(client: SippRun, chat: Chat): Promise<SipTraceMessage[]> {
    return (await client.messagesSoFar()).filter(
      (m) => m.direction === "received" && m.method === "INVITE" && header(m, "conversation-id") === chat.conversationId,
    );
  }

  async function receivedInvite(client: SippRun, chat: Chat): Promise<SipTraceMessage> {
    let invite: SipTraceMessage | undefined;
    await waitFor(
      async () => {
        invite = (await receivedInvites(client, chat))[0];
        return invite !== undefined;
      },
      8000,
      20,
      "the delivery INVITE at the client",
    );
    return invite as SipTraceMessage;
  }

  /**
   * The served user's device registers again: a SIPp client (`scenario`) and
   * an MSRP peer for it; the REGISTER; the delivery INVITE for `chat` and the
   * client's 200; the peer connects to the PF's delivery leg; `body` runs.
   */
  async function deliveredTo(
    chat: Chat,
    scenario: string,
    keys: Record<string, string>,
    body: (d: { peer: MsrpPeer; client: SippRun; invite: SipTraceMessage }) => Promise<void>,
  ): Promise<void> {
    const ue = await peer();
    const client = await startSipp({
      scenario,
      timeoutS: 30,
      keys: { client_msrp_port: String(new URL(ue.path.replace(/^msrp/, "http")).port), client_msrp_path: ue.path, ...keys },
      ...(scenario === "client-uas-msrp.xml" ? { extraArgs: ["-d", "50"] } : {}),
    });
    try {
      const reg = await register(`<sip:client@127.0.0.1:${client.port}>`);
      assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
      const invite = await receivedInvite(client, chat);
      await waitFor(
        async () => (await client.messagesSoFar()).some((m) => m.direction === "sent" && m.status === 200),
        5000,
        20,
        "client 200",
      );
      await ue.open(sdpPath(invite.body), "active");
      await body({ peer: ue, client, invite });
    } finally {
      await client.stop();
    }
  }

  /** DD-10: the deferred items arrive in order, byte for byte, with their content types; then (DD-11) the latest participants. */
  async function assertDeliveredInOrder(ue: MsrpPeer, chat: Chat): Promise<void> {
    const got = await ue.waitForMessages(chat.sent.length + 1);
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
    waitFor(async () => (await folderMessages(dovecot, deferredFolder(chat))).length === 0, 5000, 50, "deferred queue emptied");

  test(
    "DD-1 DD-2 DD-3 DD-4 DD-5 DD-6 DD-7 DD-10 DD-11 DD-14 BYE-B4: the CF ends the group with 480 after the client left; on the next REGISTER every kept message is delivered in order, the queue is emptied; the client's BYE cause=200 answered",
    T,
    async () => {
      const chat = await chatWhileAway(["first", "second", "third"], {
        byeHeaders: ['Reason: SIP;cause=480;text="Temporarily Unavailable"'],
        interimGso: true,
      });
      // BYE-B4: the GSO is stored; the group session stays known as inactive (re-startable)
      const gsos = await folderMessages(dovecot, groupFolder(chat));
      assert.equal(gsos.length, 1);
      assert.match(gsoXml(gsos[0] as string), /lastfocussessionid="sip:focus@127\.0\.0\.1:\d+"/);
      await waitFor(
        () =>
          sidecar
            .logLines()
            .some((l) => l.msg === "group session lifecycle" && l.callId === chat.callId && l.transition === "client-absent -> inactive"),
        5000,
        20,
        "the lifecycle transition in the log",
      );
      await deliveredTo(
        chat,
        "client-dd-uas.xml",
        { bye_reason: 'SIP;cause=200;text="Call completed"' },
        async ({ peer: ue, client, invite }) => {
          // DD-2..DD-6 on the wire
          assert.equal(header(invite, "contribution-id"), chat.contributionId);
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
        },
      );
    },
  );

  test(
    "DD-1 DD-10 BYE-B3: the CF terminates the group (410); the sidecar is SIGKILLed after the BYE and restarted; the REGISTER still gets every kept message, in order",
    T,
    async () => {
      const chat = await chatWhileAway(["before the end 1", "before the end 2"], { byeHeaders: ['Reason: SIP;cause=410;text="Gone"'] });
      assert.match(gsoXml((await folderMessages(dovecot, groupFolder(chat)))[0] ?? ""), /<status>removed<\/status>/);
      await crashAndRestart();
      await deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue, client }) => {
        await assertDeliveredInOrder(ue, chat);
        await queueEmptied(chat);
        // DD-13 does not apply (the group is gone for good): the delivery session ends once the client is done
        await client.stop();
      });
    },
  );

  test(
    "DD-1 DD-10 BYE-B5: the sidecar is SIGKILLed while the messages wait (before the CF's BYE 503) and restarted; the BYE is decided from the durable record; the REGISTER gets every message in order",
    T,
    async () => {
      const chat = await chatWhileAway(["kept across a crash 1", "kept across a crash 2", "kept across a crash 3"], {
        byeHeaders: ['Reason: SIP;cause=503;text="Service Unavailable"'],
        whileDeferred: async () => {
          await crashAndRestart();
          // Kamailio's channels reconnect by themselves (backoff ≤ 1 s): give them the time before the BYE
          await new Promise((r) => setTimeout(r, 2500));
        },
      });
      await waitFor(async () => (await folderMessages(dovecot, groupFolder(chat))).length === 1, 5000, 50, "BYE-B5: the GSO");
      await deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue }) => {
        await assertDeliveredInOrder(ue, chat);
        await queueEmptied(chat);
      });
    },
  );

  test(
    "DD-10 DD-12: the group is still active (the CF dialog is up, only the client left): a REGISTER delivers what was kept; the delivery session then ends with BYE cause=200 (the client re-joins the conference itself)",
    T,
    async () => {
      await chatWhileAway(["active 1", "active 2"], {
        whileDeferred: async (chat) => {
          await deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue, client }) => {
            await assertDeliveredInOrder(ue, chat);
            const r = await client.done;
            assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
            const bye = r.messages.find((m) => m.direction === "received" && m.method === "BYE");
            assert.match(header(bye as SipTraceMessage, "reason") ?? "", /^SIP;cause=200;text="Call completed"$/);
            await queueEmptied(chat);
          });
        },
      });
    },
  );

  test(
    "DD-13 RJ-4: the client sends in the delivery session of an inactive group -> the restart is not wired and answered as failed: a failure REPORT for its SEND, BYE cause=503",
    T,
    async () => {
      const chat = await chatWhileAway(["before the restart"], { byeHeaders: ["Reason: SIP;cause=480"] });
      await deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue, client }) => {
        await ue.waitForMessages(2); // the deferred message, then the GSO (DD-11)
        const reports: MsrpRequest[] = [];
        ue.session?.on("report", (r) => reports.push(r));
        assert.equal((await ue.send(chatCpim("a reply to the group", "imdn-reply"), "message/cpim")).code, 200, "hop-by-hop 200");
        await waitFor(() => reports.length === 1, 5000, 10, "the failure REPORT");
        assert.equal(reports[0]?.status?.code, 481);
        const r = await client.done;
        assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
        const bye = r.messages.find((m) => m.direction === "received" && m.method === "BYE");
        assert.match(header(bye as SipTraceMessage, "reason") ?? "", /^SIP;cause=503/);
      });
    },
  );

  test("DD-8: the client declines (603) -> every deferred message of the group session is discarded, no retry", T, async () => {
    const chat = await chatWhileAway(["declined"], { byeHeaders: ["Reason: SIP;cause=480"] });
    const client = await startSipp({ scenario: "client-uas-decline.xml", extraArgs: ["-m", "2"] });
    try {
      const reg = await register(`<sip:client@127.0.0.1:${client.port}>`);
      assert.equal(reg.code, 0);
      await receivedInvite(client, chat);
      await queueEmptied(chat);
      await new Promise((r) => setTimeout(r, RETRY_MS * 2));
      assert.equal((await receivedInvites(client, chat)).length, 1, "no retry after 603");
    } finally {
      await client.stop();
    }
  });

  test(
    "DD-9: any other error (486 Busy Here) -> re-attempted after delivery.retryInitialMs, up to delivery.retryAttempts; the data is kept",
    T,
    async () => {
      const chat = await chatWhileAway(["kept"], { byeHeaders: ["Reason: SIP;cause=480"] });
      const client = await startSipp({ scenario: "client-uas-reject.xml", extraArgs: ["-m", "3"] });
      try {
        const reg = await register(`<sip:client@127.0.0.1:${client.port}>`);
        assert.equal(reg.code, 0);
        let invites: SipTraceMessage[] = [];
        await waitFor(
          async () => {
            invites = await receivedInvites(client, chat);
            return invites.length >= 2;
          },
          5000,
          20,
          "the re-attempt",
        );
        const gap = (invites[1] as SipTraceMessage).time - (invites[0] as SipTraceMessage).time;
        assert.ok(gap >= RETRY_MS - 20, `re-attempt after ${gap} ms (delivery.retryInitialMs ${RETRY_MS})`);
        await new Promise((r) => setTimeout(r, RETRY_MS * 2));
        assert.equal((await receivedInvites(client, chat)).length, 2, "delivery.retryAttempts=1: one re-attempt only");
        assert.equal((await folderMessages(dovecot, deferredFolder(chat))).length, 1, "data kept for the next registration");
      } finally {
        await client.stop();
      }
    },
  );

  test(
    "DD-1: a third-party REGISTER for another user gets nothing of the served user's data delivered and deletes nothing",
    T,
    async () => {
      const chat = await chatWhileAway(["only for the served user"], { byeHeaders: ["Reason: SIP;cause=480"] });
      const client = await startSipp({ scenario: "client-uas-decline.xml", timeoutS: 10 });
      try {
        const reg = await register(`<sip:client@127.0.0.1:${client.port}>`, "sip:mallory@example.net");
        assert.equal(reg.code, 0);
        await new Promise((r) => setTimeout(r, 1000));
        assert.equal((await receivedInvites(client, chat)).length, 0, "no delivery INVITE to another user's device");
        assert.equal((await folderMessages(dovecot, deferredFolder(chat))).length, 1, "nothing deleted");
      } finally {
        await client.stop();
      }
    },
  );
});
