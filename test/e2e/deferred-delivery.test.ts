// Deferred delivery after registration (OMA CPM 8.3.2.9.1.2) end to end:
// SIPp plays the S-CSCF (third-party REGISTER) and the served user's client,
// an MSRP test peer plays the client's MSRP stack, Kamailio runs the example
// config, the sidecar runs as a process with its own SIP UA and MSRP delivery
// leg, Dovecot holds the deferred queue. The PF learnt the group session
// before (its session journal is written before the sidecar starts, as after
// a restart); the deferred data is stored in Dovecot by the test.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { defaults } from "../../src/config/config.js";
import { silentLogger } from "../../src/log/logger.js";
import type { GroupSessionRef } from "../../src/media/ports.js";
import type { MsrpRequest } from "../../src/msrp/frame.js";
import type { GroupSession } from "../../src/session/group-session.js";
import { JOURNAL_FILE } from "../../src/session/registry.js";
import { DeferredQueue } from "../../src/store/deferred-queue.js";
import type { Mailboxes } from "../../src/store/mailboxes.js";
import { groupSession } from "../fixtures/delivery.js";
import { triggerSipp } from "../harness/anchored-chat.js";
import { type KamailioInstance, startKamailio } from "../harness/kamailio.js";
import { MsrpPeer, sdpPath, sdpSetup } from "../harness/msrp-peer.js";
import { freePort } from "../harness/ports.js";
import { type SidecarInstance, startSidecar } from "../harness/sidecar.js";
import { header, type SippRun, type SipTraceMessage, startSipp } from "../harness/sipp.js";
import { useStoreEnv } from "../harness/store-env.js";
import { waitFor } from "../harness/wait.js";

const SERVED_USER = "sip:alice@example.net";
const DEFERRED_URI = "sip:deferred@pf.example.net";
const CPM_ICSI = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session";
const RETRY_MS = 400;
/** Each test: a hung MSRP wait fails it instead of the whole run. */
const T = { timeout: 60_000 };
const GSO_TYPE = "application/group-state-object+xml";
/** An interim GSO the CF sent while the client was away (a participant change, DD-11). */
const INTERIM_GSO =
  '<?xml version="1.0" encoding="UTF-8"?>\n<groupstate timestamp="2026-11-25T10:00:01Z" lastfocussessionid="sip:focus@cf.example.net" group-type="Closed"><participant name="Bob" comm-addr="tel:+16135551210"/></groupstate>';

const env = useStoreEnv("cpm-dd-e2e");

/** The CF's original SDP offer (what the PF keeps as sdpOffer; DD-6 resends it, a=sendrecv). */
const ORIGINAL_OFFER = [
  "v=0",
  "o=cf 2890844526 2890844526 IN IP4 192.0.2.1",
  "s=-",
  "c=IN IP4 192.0.2.1",
  "t=0 0",
  "m=message 7394 TCP/MSRP *",
  "a=accept-types:message/cpim application/im-iscomposing+xml",
  "a=accept-wrapped-types:text/plain message/imdn+xml",
  "a=path:msrp://192.0.2.1:7394/cf-original;tcp",
  "a=setup:actpass",
  "",
].join("\r\n");

function session(n: number): GroupSession {
  const now = Date.now();
  return groupSession({
    key: `dd-${n}-${randomUUID()}@cf`,
    conversationId: `conv-dd-${n}-${randomUUID()}`,
    contributionId: `contrib-dd-${n}-${randomUUID()}`,
    servedUser: SERVED_USER,
    sdpOffer: ORIGINAL_OFFER,
    state: "ended",
    createdAt: now,
    updatedAt: now,
  });
}

function cpim(text: string, n: number): Buffer {
  return Buffer.from(
    [
      "From: <sip:bob@example.net>",
      `To: <${SERVED_USER}>`,
      `DateTime: 2026-11-25T10:00:0${n}Z`,
      "NS: imdn <urn:ietf:params:imdn>",
      `imdn.Message-ID: dd-msg-${n}`,
      "",
      "Content-Type: text/plain;charset=UTF-8",
      "",
      text,
    ].join("\r\n"),
  );
}

function refOf(s: GroupSession): GroupSessionRef {
  return {
    sessionKey: s.key,
    servedUser: SERVED_USER,
    conversationId: s.conversationId,
    contributionId: s.contributionId,
    focus: s.focusUri,
  };
}

/** The S-CSCF's third-party REGISTER for the served user, the UE's REGISTER (with `contact`) in the body. */
async function register(k: KamailioInstance, contact: string) {
  const run = await startSipp({
    scenario: "scscf-third-party-register.xml",
    remote: k.address,
    keys: { served_user: SERVED_USER, expires: "600000", ue_contact: contact },
  });
  return run.done;
}

/** The INVITEs `client` received for group session `s` (a registration starts one delivery per session with data). */
async function invitesFor(client: SippRun, s: GroupSession): Promise<SipTraceMessage[]> {
  return (await client.messagesSoFar()).filter(
    (m) => m.direction === "received" && m.method === "INVITE" && header(m, "conversation-id") === s.conversationId,
  );
}

async function receivedInvite(client: SippRun): Promise<SipTraceMessage> {
  let invite: SipTraceMessage | undefined;
  await waitFor(
    async () => {
      invite = (await client.messagesSoFar()).find((m) => m.direction === "received" && m.method === "INVITE");
      return invite !== undefined;
    },
    8000,
    20,
    "the delivery INVITE at the client",
  );
  return invite as SipTraceMessage;
}

/** A client of the served user (SIPp `scenario`, answering with `peer`'s a=path and a=setup:active), up for group session `s`. */
interface Delivery {
  peer: MsrpPeer;
  client: SippRun;
  /** The delivery INVITE as the client got it. */
  invite: SipTraceMessage;
}

/**
 * Starts the MSRP peer and the client, sends the S-CSCF's REGISTER for it,
 * waits for the delivery INVITE of `s` and the client's 200, connects the
 * peer to the PF's delivery leg, runs `body`, then stops both.
 */
async function withDelivery(
  k: KamailioInstance,
  s: GroupSession,
  scenario: string,
  keys: Record<string, string>,
  body: (d: Delivery) => Promise<void>,
): Promise<void> {
  const peer = await MsrpPeer.start();
  const client = await startSipp({
    scenario,
    timeoutS: 30,
    keys: { client_msrp_port: String(new URL(peer.path.replace(/^msrp/, "http")).port), client_msrp_path: peer.path, ...keys },
    ...(scenario === "client-uas-msrp.xml" ? { extraArgs: ["-d", "50"] } : {}),
  });
  try {
    const reg = await register(k, `<sip:client@127.0.0.1:${client.port}>`);
    assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
    const invite = await receivedInvite(client);
    assert.equal(header(invite, "conversation-id"), s.conversationId);
    // the client connects (a=setup:active) once it has answered
    await waitFor(
      async () => (await client.messagesSoFar()).some((m) => m.direction === "sent" && m.status === 200),
      5000,
      20,
      "client 200",
    );
    await peer.open(sdpPath(invite.body), "active");
    await body({ peer, client, invite });
  } finally {
    await client.stop();
    await peer.close();
  }
}

/** Stores CPIM chat messages in `s`'s deferred queue, in order. */
async function storeTexts(queue: DeferredQueue, s: GroupSession, prefix: string, texts: string[]): Promise<void> {
  for (const [i, text] of texts.entries()) {
    await queue.storeDeferred(refOf(s), {
      kind: "message",
      contentType: "message/cpim",
      body: cpim(text, i + 1),
      msrpMessageId: `${prefix}-${i + 1}`,
      receivedAt: new Date(),
    });
  }
}

describe("deferred delivery after registration (8.3.2.9.1.2) through Kamailio, with the PF's SIP UA and MSRP delivery leg", () => {
  const sessions = [session(1), session(2), session(3), { ...session(4), state: "active" as const }, session(5)];
  let stateDir: string;
  let kamailio: KamailioInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let store: Mailboxes;
  let queue: DeferredQueue;

  before(async () => {
    stateDir = await mkdtemp(join(tmpdir(), "cpm-dd-state-"));
    await writeFile(join(stateDir, JOURNAL_FILE), sessions.map((s) => `${JSON.stringify({ op: "put", s })}\n`).join(""));
    const grpcPort = await freePort();
    const uaPort = await freePort();
    kamailio = await startKamailio({
      grpcTarget: `127.0.0.1:${grpcPort}`,
      deadlineMs: 1000,
      defines: [`CPM_PF_UA_ADDRESS="sip:127.0.0.1:${uaPort}"`],
    });
    const d = env.dovecot;
    sidecar = await startSidecar({
      CPM_PF__GRPC__PORT: String(grpcPort),
      CPM_PF__STORE__HOST: d.host,
      CPM_PF__STORE__PORT: String(d.port),
      CPM_PF__STORE__USER: d.user,
      CPM_PF__STORE__PASSWORD: d.password,
      CPM_PF__SESSION__STATEDIR: stateDir,
      CPM_PF__MEDIA__ENABLED: "true",
      CPM_PF__MEDIA__HOST: "127.0.0.1",
      CPM_PF__MEDIA__PORT: "0",
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
    });
    store = await env.startMailboxes(await env.storeConfig());
    queue = new DeferredQueue(defaults.store, store, silentLogger());
  });
  after(async () => {
    await kamailio?.stop();
    await sidecar?.stop();
    await rm(stateDir, { recursive: true, force: true });
  });

  test(
    "DD-1 DD-2 DD-3 DD-4 DD-5 DD-6 DD-7 DD-10 DD-11 DD-14: registration -> delivery INVITE through Kamailio, MSRP up, the deferred messages and interim GSO in order, then a GSO of the latest participants, queue emptied; the client's BYE cause=200 answered",
    T,
    async () => {
      const s = sessions[0] as GroupSession;
      const texts = ["first", "second", "third"];
      const interim = Buffer.from(INTERIM_GSO);
      const stored: { kind: "message" | "gso"; contentType: string; body: Buffer }[] = [
        { kind: "message", contentType: "message/cpim", body: cpim("first", 0) },
        { kind: "gso", contentType: GSO_TYPE, body: interim },
        { kind: "message", contentType: "message/cpim", body: cpim("second", 1) },
        { kind: "message", contentType: "message/cpim", body: cpim("third", 2) },
      ];
      for (const [i, item] of stored.entries()) {
        await queue.storeDeferred(refOf(s), { ...item, msrpMessageId: `dd1-${i}`, receivedAt: new Date() });
      }
      await withDelivery(
        kamailio as KamailioInstance,
        s,
        "client-dd-uas.xml",
        { bye_reason: 'SIP;cause=200;text="Call completed"' },
        async ({ peer, client, invite }) => {
          // DD-2..DD-5 on the wire
          assert.equal(header(invite, "contribution-id"), s.contributionId);
          assert.equal(header(invite, "p-asserted-identity"), `<${DEFERRED_URI}>`);
          assert.equal(header(invite, "p-asserted-service"), CPM_ICSI);
          assert.match(
            header(invite, "accept-contact") ?? "",
            /g\.3gpp\.icsi-ref="urn%3Aurn-7%3A3gpp-service\.ims\.icsi\.oma\.cpm\.session"/,
          );
          assert.match(header(invite, "contact") ?? "", /isfocus/);
          assert.match(header(invite, "record-route") ?? "", /cpmpfdd/);
          assert.match(invite.body, /<entry uri="tel:\+16135551210"/);
          // DD-6: the original offer's media, a=sendrecv, the PF's own delivery leg
          assert.match(invite.body, /a=accept-wrapped-types:text\/plain message\/imdn\+xml/);
          assert.match(invite.body, /a=sendrecv/);
          assert.doesNotMatch(sdpPath(invite.body), /cf-original/);
          assert.equal(sdpSetup(invite.body), "actpass");
          // DD-10 / DD-11: in order, byte-exact, with their content types; then the latest participants as a GSO
          const got = await peer.waitForMessages(5);
          assert.deepEqual(
            got.slice(0, 4).map((m) => [m.contentType, Buffer.from(m.body)]),
            stored.map((i) => [i.contentType, i.body]),
          );
          assert.deepEqual(
            [0, 2, 3].map((i) =>
              Buffer.from((got[i] as { body: Uint8Array }).body)
                .toString("utf8")
                .split("\r\n")
                .pop(),
            ),
            texts,
          );
          const final = got[4] as { contentType: string; body: Uint8Array };
          assert.equal(final.contentType, GSO_TYPE);
          assert.match(
            Buffer.from(final.body).toString("utf8"),
            new RegExp(`lastfocussessionid="${s.focusUri.replace(/[.;]/g, "\\$&")}"[\\s\\S]*comm-addr="tel:\\+16135551210"`),
          );
          await waitFor(async () => (await queue.read(refOf(s))).length === 0, 5000, 50, "queue emptied after delivery");
          // DD-14: the client's BYE reaches the PF through Kamailio and is answered
          await triggerSipp(client.port, invite.headers.get("call-id")?.[0] ?? "");
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
        },
      );
    },
  );

  test(
    "DD-10 DD-12: a group session still active -> after the deferred messages the delivery session ends with BYE cause=200 (joining the on-going conference is not wired: the client re-joins it itself)",
    T,
    async () => {
      const s = sessions[3] as GroupSession;
      await storeTexts(queue, s, "dd12", ["active 1", "active 2"]);
      await withDelivery(kamailio as KamailioInstance, s, "client-uas-msrp.xml", {}, async ({ peer, client }) => {
        const got = await peer.waitForMessages(3);
        assert.deepEqual(
          got.slice(0, 2).map((m) => Buffer.from(m.body)),
          [cpim("active 1", 1), cpim("active 2", 2)],
        );
        assert.equal(got[2]?.contentType, GSO_TYPE, "DD-11: the latest participants before the session ends");
        const r = await client.done;
        assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
        const bye = r.messages.find((m) => m.direction === "received" && m.method === "BYE");
        assert.match(header(bye as SipTraceMessage, "reason") ?? "", /^SIP;cause=200;text="Call completed"$/);
        assert.equal((await queue.read(refOf(s))).length, 0, "delivered items left the queue");
      });
    },
  );

  test(
    "DD-13 RJ-4: the client sends in the delivery session of an ended group session -> the restart is not wired and answered as failed: a failure REPORT for its SEND, BYE cause=503",
    T,
    async () => {
      const s = sessions[4] as GroupSession;
      await storeTexts(queue, s, "dd13", ["before the restart"]);
      await withDelivery(kamailio as KamailioInstance, s, "client-uas-msrp.xml", {}, async ({ peer, client }) => {
        await peer.waitForMessages(2); // the deferred message, then the GSO (DD-11)
        const reports: MsrpRequest[] = [];
        peer.session?.on("report", (r) => reports.push(r));
        const sent = await peer.send(cpim("a reply to the group", 9), "message/cpim");
        assert.equal(sent.code, 200, "hop-by-hop 200");
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
    const s = sessions[1] as GroupSession;
    await storeTexts(queue, s, "dd8", ["declined"]);
    const client = await startSipp({ scenario: "client-uas-decline.xml", extraArgs: ["-m", "2"] });
    try {
      const reg = await register(kamailio as KamailioInstance, `<sip:client@127.0.0.1:${client.port}>`);
      assert.equal(reg.code, 0);
      await receivedInvite(client);
      await waitFor(async () => (await queue.read(refOf(s))).length === 0, 5000, 50, "deferred data discarded");
      await new Promise((r) => setTimeout(r, RETRY_MS * 2));
      assert.equal((await invitesFor(client, s)).length, 1, "no retry after 603");
    } finally {
      await client.stop();
    }
  });

  test(
    "DD-9: any other error (486 Busy Here) -> re-attempted after delivery.retryInitialMs, up to delivery.retryAttempts; the data is kept",
    T,
    async () => {
      const s = sessions[2] as GroupSession;
      await storeTexts(queue, s, "dd9", ["kept"]);
      const client = await startSipp({ scenario: "client-uas-reject.xml", extraArgs: ["-m", "3"] });
      try {
        const reg = await register(kamailio as KamailioInstance, `<sip:client@127.0.0.1:${client.port}>`);
        assert.equal(reg.code, 0);
        let invites: SipTraceMessage[] = [];
        await waitFor(
          async () => {
            invites = await invitesFor(client, s);
            return invites.length >= 2;
          },
          5000,
          20,
          "the re-attempt",
        );
        const gap = (invites[1] as SipTraceMessage).time - (invites[0] as SipTraceMessage).time;
        assert.ok(gap >= RETRY_MS - 20, `re-attempt after ${gap} ms (delivery.retryInitialMs ${RETRY_MS})`);
        await new Promise((r) => setTimeout(r, RETRY_MS * 2));
        assert.equal((await invitesFor(client, s)).length, 2, "delivery.retryAttempts=1: one re-attempt only");
        assert.equal((await queue.read(refOf(s))).length, 1, "data kept for the next registration");
      } finally {
        await client.stop();
      }
    },
  );
});
