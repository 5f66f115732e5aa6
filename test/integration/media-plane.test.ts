// MsrpMediaPlane over real TCP sockets on 127.0.0.1: one MsrpPeer plays the
// Controlling Function, another (or a raw socket) the served user's client.
// Each test has its own MsrpResources for the PF, so the counters it checks
// (BYE-B10) are the PF's alone. Waits are on events or on state, never sleeps.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { silentLogger } from "../../src/log/logger.js";
import { type MediaConfig, MsrpMediaPlane } from "../../src/media/msrp-media-plane.js";
import type {
  DeferredItem,
  DeferredSink,
  GroupSessionRef,
  RecordedMessage,
  RecordedSessionInfo,
  SessionRecorder,
} from "../../src/media/ports.js";
import type { MsrpConnection } from "../../src/msrp/connection.js";
import { newSessionId, newTransactionId } from "../../src/msrp/ids.js";
import { MsrpResources } from "../../src/msrp/resources.js";
import { createMsrpServer } from "../../src/msrp/server.js";
import { MsrpSession } from "../../src/msrp/session.js";
import { MsrpSessionTable } from "../../src/msrp/session-table.js";
import { parseMsrpPath, parseMsrpUri } from "../../src/msrp/uri.js";
import { COMPOSING_XML, GSO_XML, IMDN_XML, wrapCpim } from "../fixtures/cpim.js";
import { testMediaConfig, useCleanups } from "../harness/cleanups.js";
import { capturingLogger } from "../harness/log-capture.js";
import { MsrpPeer, type MsrpPeerOptions, RawMsrpSocket, sdpPath, sdpSetup } from "../harness/msrp-peer.js";
import { makeTestPki } from "../harness/tls.js";
import { waitFor } from "../harness/wait.js";

const logger = silentLogger();
const cleanups = useCleanups();
const T = { timeout: 20_000 };

/** In-memory DeferredSink; `hold` makes storeDeferred wait until release() / fail(). */
class FakeSink implements DeferredSink {
  readonly items: DeferredItem[] = [];
  readonly log: string[] = [];
  hold = false;
  private pending: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private waiters: (() => void)[] = [];

  storeDeferred(_session: GroupSessionRef, item: DeferredItem): Promise<void> {
    this.items.push(item);
    this.log.push(`store ${item.msrpMessageId}`);
    for (const w of this.waiters.splice(0)) w();
    if (!this.hold) return Promise.resolve();
    return new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
  }

  release(): void {
    for (const p of this.pending.splice(0)) {
      this.log.push("stored");
      p.resolve();
    }
  }

  fail(): void {
    for (const p of this.pending.splice(0)) p.reject(new Error("IMAP down and spool full"));
  }

  async waitForItems(n: number): Promise<DeferredItem[]> {
    while (this.items.length < n) await new Promise<void>((r) => this.waiters.push(r));
    return this.items.slice(0, n);
  }
}

class FakeRecorder implements SessionRecorder {
  readonly calls: { session: GroupSessionRef; info: RecordedSessionInfo; messages: readonly RecordedMessage[] }[] = [];
  async recordSession(session: GroupSessionRef, info: RecordedSessionInfo, messages: readonly RecordedMessage[]): Promise<void> {
    this.calls.push({ session, info, messages });
  }
}

let counter = 0;
function ref(): GroupSessionRef {
  counter++;
  return {
    sessionKey: `call-${counter}-${newSessionId()}@cf.example.net`,
    servedUser: "tel:+16135551200",
    conversationId: `conv-${counter}`,
    contributionId: `contrib-${counter}`,
    focus: "sip:focus@cf.example.net",
  };
}

interface Setup {
  plane: MsrpMediaPlane;
  resources: MsrpResources;
  sink: FakeSink;
  recorder: FakeRecorder;
  cf: MsrpPeer;
  client: MsrpPeer;
  session: GroupSessionRef;
  clientPath: string;
}

async function startPlane(config: Partial<MediaConfig> = {}) {
  const resources = new MsrpResources();
  const sink = new FakeSink();
  const recorder = new FakeRecorder();
  const plane = new MsrpMediaPlane({ config: testMediaConfig(config), deferredSink: sink, recorder, logger, resources });
  await plane.start();
  cleanups.push(() => plane.close());
  return { plane, resources, sink, recorder };
}

async function peer(options: MsrpPeerOptions = {}): Promise<MsrpPeer> {
  const p = await MsrpPeer.start(options);
  cleanups.push(() => p.close());
  return p;
}

/**
 * Anchors a session the way the SIP side drives it: the CF's offer (actpass),
 * the client's answer with `clientSetup`, the CF's answer back. `connectClient`
 * false: the client answers a=setup:active but never connects.
 */
async function anchored(
  opts: { clientSetup?: "active" | "passive"; connectClient?: boolean; allowOfflineStorage?: boolean; config?: Partial<MediaConfig> } = {},
): Promise<Setup> {
  const { clientSetup = "active", connectClient = true, allowOfflineStorage = false } = opts;
  const base = await startPlane(opts.config);
  const cf = await peer();
  const client = await peer();
  const session = ref();
  const offer = await base.plane.anchorOffer({ session, offerSdp: cf.sdp("actpass"), allowOfflineStorage });
  // RFC 6135: the PF answers the CF's actpass with active and connects to the CF.
  assert.equal(offer.cfLeg.setup, "active");
  assert.equal(sdpSetup(offer.clientOfferSdp), "actpass");
  await cf.open(offer.cfLeg.path, "passive");
  const clientPath = sdpPath(offer.clientOfferSdp);
  if (clientSetup === "passive") await client.open(clientPath, "passive");
  const cfAnswer = base.plane.anchorAnswer(session.sessionKey, client.sdp(clientSetup));
  assert.equal(sdpPath(cfAnswer), offer.cfLeg.path);
  assert.equal(sdpSetup(cfAnswer), "active");
  if (clientSetup === "active" && connectClient) await client.open(clientPath, "active");
  await cf.bound();
  if (connectClient) {
    await client.bound();
    await waitFor(() => base.plane.legs(session.sessionKey)?.client === "up", 5000, 5, "client leg up");
  }
  await waitFor(() => base.plane.legs(session.sessionKey)?.cf === "up", 5000, 5, "CF leg up");
  return { ...base, cf, client, session, clientPath };
}

test("media plane relay: CF messages reach the client unchanged and in order, chunked ones too (client a=setup:active)", T, async () => {
  const { cf, client } = await anchored({ clientSetup: "active" });
  const bodies = Array.from({ length: 60 }, (_, i) => wrapCpim(i < 30 && i % 10 === 3 ? `big ${i} ${"x".repeat(5000)}` : `hello ${i}`));
  // One after another, then a burst of single-chunk messages started in order without waiting (chunks of
  // concurrent messages may interleave, RFC 4975 7.1.1, and a message's order is that of its last chunk).
  for (const b of bodies.slice(0, 30)) assert.equal((await cf.send(b, "message/cpim")).code, 200);
  const burst = await Promise.all(bodies.slice(30).map((b) => cf.send(b, "message/cpim")));
  assert.deepEqual(
    burst.map((r) => r.code),
    burst.map(() => 200),
  );
  const got = await client.waitForMessages(bodies.length);
  assert.deepEqual(
    got.map((m) => m.body.toString()),
    bodies,
  );
  assert.ok(
    got.some((m) => m.chunks > 1),
    "some messages arrived in several chunks",
  );
  assert.ok(got.every((m) => m.contentType === "message/cpim"));
});

test("media plane relay: IMDN and isComposing from the client reach the CF unchanged (client a=setup:passive)", T, async () => {
  const { cf, client } = await anchored({ clientSetup: "passive" });
  const imdn = wrapCpim(IMDN_XML, "message/imdn+xml", "notification");
  const composing = wrapCpim(COMPOSING_XML, "application/im-iscomposing+xml");
  const reply = wrapCpim("reply");
  assert.equal((await client.send(composing, "message/cpim")).code, 200);
  assert.equal((await client.send(imdn, "message/cpim")).code, 200);
  assert.equal((await cf.send(reply, "message/cpim")).code, 200);
  const atCf = await cf.waitForMessages(2);
  assert.deepEqual(
    atCf.map((m) => m.body.toString()),
    [composing, imdn],
  );
  assert.equal((await client.waitForMessages(1))[0]?.body.toString(), reply);
});

test(
  "media plane deferred: client leg gone -> messages, IMDNs, GSOs reach the DeferredSink in order; isComposing is answered and dropped",
  T,
  async () => {
    const { plane, cf, client, sink, session } = await anchored();
    client.dropConnections();
    await waitFor(() => plane.legs(session.sessionKey)?.client === "gone", 5000, 5, "client leg gone");
    const sent = [
      { body: wrapCpim("while you were away 1"), kind: "message" },
      { body: wrapCpim(COMPOSING_XML, "application/im-iscomposing+xml"), kind: "isComposing" },
      { body: wrapCpim(IMDN_XML, "message/imdn+xml", "notification"), kind: "imdn" },
      { body: GSO_XML, kind: "gso", contentType: "application/group-state-object+xml" },
      { body: wrapCpim(GSO_XML, "Application/Group-State-Object+xml"), kind: "gso" },
      { body: wrapCpim("while you were away 2"), kind: "message" },
    ];
    for (const s of sent) assert.equal((await cf.send(s.body, s.contentType ?? "message/cpim")).code, 200);
    const stored = await sink.waitForItems(5);
    const expected = sent.filter((s) => s.kind !== "isComposing");
    assert.deepEqual(
      stored.map((i) => [i.kind, Buffer.from(i.body).toString()]),
      expected.map((s) => [s.kind, s.body]),
    );
    assert.equal(sink.items.length, 5, "isComposing is not stored");
    assert.equal(stored[2]?.contentType, "application/group-state-object+xml");
  },
);

test(
  "media plane deferred: client never connects -> after clientLegTimeoutMs the CF's 200 comes only after the sink resolved",
  T,
  async () => {
    const { plane, cf, sink, session } = await anchored({ connectClient: false, config: { clientLegTimeoutMs: 300 } });
    sink.hold = true;
    const body = wrapCpim("stored before acknowledged");
    let cfCode: number | undefined;
    const sending = cf.send(body, "message/cpim").then((r) => {
      cfCode = r.code;
      sink.log.push("cf got 200");
    });
    const [item] = await sink.waitForItems(1);
    assert.equal(Buffer.from(item?.body ?? []).toString(), body);
    assert.equal(plane.legs(session.sessionKey)?.client, "gone");
    // A round trip on the same connection: a 200 the PF had already sent would be in by now.
    assert.equal(await cf.keepalive(), 200);
    assert.equal(cfCode, undefined, "the CF's SEND is not answered before the sink resolved");
    sink.release();
    await sending;
    assert.equal(cfCode, 200);
    assert.deepEqual(sink.log, [`store ${item?.msrpMessageId}`, "stored", "cf got 200"]);
    // The sink failing: the CF gets an error (403, CPM_ERR_MEDIA_DEFER_FAILED), not 200.
    const failing = cf.send(wrapCpim("cannot be stored"), "message/cpim");
    await sink.waitForItems(2);
    sink.fail();
    assert.equal((await failing).code, 403);
  },
);

test("media plane relay: both peers connect (a=setup:active), the client even before its answer reached the PF", T, async () => {
  const { plane } = await startPlane();
  const cf = await peer();
  const client = await peer();
  const session = ref();
  const offer = await plane.anchorOffer({ session, offerSdp: cf.sdp("active"), allowOfflineStorage: false });
  assert.equal(offer.cfLeg.setup, "passive", "RFC 6135: the answer to a=setup:active is passive");
  // The client answers and connects at once; its 2xx reaches the PF later (the race of RFC 6135 4.1).
  await client.open(sdpPath(offer.clientOfferSdp), "active");
  assert.equal(plane.legs(session.sessionKey)?.client, "pending", "bound, but the client's path is not known yet");
  const cfAnswer = plane.anchorAnswer(session.sessionKey, client.sdp("active"));
  assert.equal(sdpSetup(cfAnswer), "passive");
  await cf.open(sdpPath(cfAnswer), "active");
  await waitFor(
    () => plane.legs(session.sessionKey)?.client === "up" && plane.legs(session.sessionKey)?.cf === "up",
    5000,
    5,
    "both legs up",
  );
  const down = wrapCpim("down");
  const up = wrapCpim("up");
  assert.equal((await cf.send(down, "message/cpim")).code, 200);
  assert.equal((await client.send(up, "message/cpim")).code, 200);
  assert.equal((await client.waitForMessages(1))[0]?.body.toString(), down);
  assert.equal((await cf.waitForMessages(1))[0]?.body.toString(), up);
});

test("media plane security: no message body reaches the log, not even at debug level", T, async () => {
  const { logger: debugLogger, lines } = capturingLogger("debug");
  const resources = new MsrpResources();
  const sink = new FakeSink();
  const plane = new MsrpMediaPlane({
    config: testMediaConfig({ clientLegTimeoutMs: 200 }),
    deferredSink: sink,
    logger: debugLogger,
    resources,
  });
  await plane.start();
  cleanups.push(() => plane.close());
  const cf = await peer();
  const session = ref();
  const offer = await plane.anchorOffer({ session, offerSdp: cf.sdp("actpass"), allowOfflineStorage: true });
  await cf.open(offer.cfLeg.path, "passive");
  plane.anchorAnswer(session.sessionKey, (await peer()).sdp("active")); // that client never connects
  await cf.bound();
  const secret = "SECRET-BODY-7f3a9";
  assert.equal((await cf.send(wrapCpim(`deferred ${secret}`), "message/cpim")).code, 200);
  assert.equal(sink.items.length, 1);
  plane.release(session.sessionKey);
  await new Promise((resolve) => setImmediate(resolve));
  assert.ok(
    lines.some((l) => l.includes("MSRP session anchored")),
    "the capture works",
  );
  assert.ok(
    lines.some((l) => l.includes('"level":"debug"') && l.includes("deferred delivery")),
    "debug lines are written",
  );
  assert.ok(
    lines.some((l) => l.includes(session.sessionKey)),
    "Call-ID as a field",
  );
  assert.equal(lines.filter((l) => l.includes(secret)).length, 0);
});

test("BYE-B6: after refuseClientMedia the client's chat message and IMDN get MSRP 481 and never reach the CF", T, async () => {
  const { plane, cf, client, session } = await anchored();
  const before = wrapCpim("before the BYE");
  assert.equal((await client.send(before, "message/cpim")).code, 200);
  await cf.waitForMessages(1);
  plane.refuseClientMedia(session.sessionKey);
  assert.equal((await client.send(wrapCpim("race after the BYE"), "message/cpim")).code, 481);
  assert.equal((await client.send(wrapCpim(IMDN_XML, "message/imdn+xml", "notification"), "message/cpim")).code, 481);
  assert.equal(plane.stats().queued, 0, "nothing was queued for the CF");
  // The CF side still works, so anything relayed would have arrived before this.
  assert.equal((await cf.send(wrapCpim("from the CF"), "message/cpim")).code, 200);
  await client.waitForMessages(1);
  assert.equal(await cf.keepalive(), 200);
  assert.deepEqual(
    cf.received.map((m) => m.body.toString()),
    [before],
  );
});

test("BYE-B10: release closes the session's sockets, timers, buffers and table entries (counted before and after)", T, async () => {
  const { plane, resources, sink, cf, client, session } = await anchored();
  const before = plane.stats();
  assert.equal(before.sessions, 1);
  const live = resources.snapshot();
  assert.equal(live.sessions, 2, "two MSRP sessions: CF leg and client leg");
  assert.equal(live.openSockets, 2, "two connections: to the CF and from the client");
  assert.equal((await cf.send(wrapCpim("one"), "message/cpim")).code, 200);
  // a message the sink holds: queued in the PF until stored
  client.dropConnections();
  await waitFor(() => plane.legs(session.sessionKey)?.client === "gone", 5000, 5, "client leg gone");
  sink.hold = true;
  const held = cf.send(wrapCpim("held"), "message/cpim").then(
    (r) => r.code,
    (err: Error) => err.message,
  );
  await sink.waitForItems(1);
  assert.equal(plane.stats().queued, 1);

  const released = plane.release(session.sessionKey);
  assert.ok(released >= 4, `released ${released}: CF session + its connection + queued message + table entry`);
  assert.equal(plane.release(session.sessionKey), 0, "a second release finds nothing");
  await waitFor(() => resources.snapshot().openSockets === 0, 5000, 5, "PF sockets closed");
  assert.deepEqual(resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
  assert.deepEqual(plane.stats(), { sessions: 0, queued: 0, recordedBytes: 0, acceptedConnections: 0, openedConnections: 0 });
  assert.equal(plane.legs(session.sessionKey), undefined);
  await waitFor(() => cf.session?.state === "closed", 5000, 5, "the CF saw its connection close");
  assert.match(String(await held), /connection closed/, "the held SEND never got a 200");
});

test("BYE-B10: release of an answered session with both legs up leaves no timer, socket or session", T, async () => {
  const { plane, resources, cf, client, session } = await anchored({ clientSetup: "passive", allowOfflineStorage: true });
  assert.equal((await cf.send(wrapCpim("recorded"), "message/cpim")).code, 200);
  await client.waitForMessages(1);
  assert.ok(plane.stats().recordedBytes > 0);
  const released = plane.release(session.sessionKey);
  assert.ok(released >= 6, `released ${released}: 2 sessions, 2 connections, 1 recorded message, 1 table entry`);
  await waitFor(() => resources.snapshot().openSockets === 0, 5000, 5, "PF sockets closed");
  assert.deepEqual(resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
  assert.deepEqual(plane.stats(), { sessions: 0, queued: 0, recordedBytes: 0, acceptedConnections: 0, openedConnections: 0 });
});

test(
  "RFC 4975 5.4 reuse, BYE-B10: the CF legs the PF connects share one connection to the CF, closed with the last released session",
  T,
  async () => {
    const { plane, resources } = await startPlane();
    // The CF: one listener, its sessions wait for the PF's bind (the CF offers a=setup:actpass, the PF answers active).
    const cfResources = new MsrpResources();
    const cfTable = new MsrpSessionTable();
    const cfAccepted: MsrpConnection[] = [];
    const cfServer = createMsrpServer({ table: cfTable, logger, resources: cfResources, onConnection: (c) => cfAccepted.push(c) });
    cfServer.listen(0, "127.0.0.1");
    await new Promise((r) => cfServer.once("listening", r));
    cleanups.push(async () => {
      cfTable.closeAll();
      await new Promise<void>((r) => cfServer.close(() => r()));
    });
    const cfPort = (cfServer.address() as { port: number }).port;
    const legs: { session: GroupSessionRef; cf: MsrpSession; client: MsrpPeer }[] = [];
    for (let i = 0; i < 2; i++) {
      const session = ref();
      const cfPath = `msrp://127.0.0.1:${cfPort}/${newSessionId()};tcp`;
      const client = await peer();
      const offerSdp = client.sdp("actpass").replace(/^a=path:.*$/m, `a=path:${cfPath}`);
      const offer = await plane.anchorOffer({ session, offerSdp, allowOfflineStorage: false });
      assert.equal(offer.cfLeg.setup, "active");
      const cf = new MsrpSession({
        localUri: parseMsrpUri(cfPath),
        remotePath: parseMsrpPath(offer.cfLeg.path),
        logger,
        resources: cfResources,
      });
      cfTable.add(cf);
      // Each client listens on its own port (a=setup:passive): one connection per client.
      await client.open(sdpPath(offer.clientOfferSdp), "passive");
      legs.push({ session, cf, client });
    }
    // Both answers at once: the second bind waits for the connection the first one is opening.
    for (const l of legs) plane.anchorAnswer(l.session.sessionKey, l.client.sdp("passive"));
    for (const l of legs) await waitFor(() => plane.legs(l.session.sessionKey)?.cf === "up", 5000, 5, "CF leg up");
    for (const l of legs) await waitFor(() => plane.legs(l.session.sessionKey)?.client === "up", 5000, 5, "client leg up");
    // The PF's leg is up once its bind SEND is written; the CF's session binds when that SEND arrives.
    for (const l of legs) await waitFor(() => l.cf.state === "bound", 5000, 5, "CF session bound");
    assert.equal(cfAccepted.length, 1, "the CF accepted one connection for both sessions");
    assert.equal(plane.stats().openedConnections, 3, "one to the CF, one per client");
    assert.equal(resources.snapshot().openSockets, 3);
    // To-Path routing on the shared connection: each CF session's message reaches its own client.
    const bodies = legs.map((_, i) => wrapCpim(`to ${i}`));
    for (const [i, l] of legs.entries())
      assert.equal((await l.cf.send({ body: Buffer.from(bodies[i] ?? ""), contentType: "message/cpim" })).code, 200);
    for (const [i, l] of legs.entries())
      assert.deepEqual(
        (await l.client.waitForMessages(1)).map((m) => m.body.toString()),
        [bodies[i]],
      );

    const [first, second] = legs as [(typeof legs)[0], (typeof legs)[0]];
    // 2 sessions + the client's connection + the table entry; the CF connection still carries the other session.
    assert.equal(plane.release(first.session.sessionKey), 4);
    await waitFor(() => resources.snapshot().openSockets === 2, 5000, 5, "the first client's socket closed");
    assert.equal(cfAccepted[0]?.closed, false);
    assert.equal((await second.cf.send({ body: Buffer.from(wrapCpim("still here")), contentType: "message/cpim" })).code, 200);
    await second.client.waitForMessages(2);
    // 2 sessions + both connections (the CF one with its last session) + the table entry.
    assert.equal(plane.release(second.session.sessionKey), 5);
    await waitFor(() => resources.snapshot().openSockets === 0, 5000, 5, "PF sockets closed");
    assert.deepEqual(resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
    assert.deepEqual(plane.stats(), { sessions: 0, queued: 0, recordedBytes: 0, acceptedConnections: 0, openedConnections: 0 });
    await waitFor(() => cfAccepted[0]?.closed === true, 5000, 5, "the CF saw the shared connection close");
  },
);

/** A raw connection to the PF's listener; `send` writes a SEND with `from` as From-Path and resolves with the response. */
async function rawSender(port: number) {
  const raw = await RawMsrpSocket.connect(port);
  cleanups.push(() => raw.destroy());
  const send = (toPath: string, from: string, text = "hijak") => {
    const tid = newTransactionId();
    raw.write(
      `MSRP ${tid} SEND\r\nTo-Path: ${toPath}\r\nFrom-Path: ${from}\r\nMessage-ID: ${newSessionId()}\r\nByte-Range: 1-${text.length}/${text.length}\r\nContent-Type: message/cpim\r\n\r\n${text}\r\n-------${tid}$\r\n`,
    );
    return raw.response(tid);
  };
  return { raw, send };
}

const foreignPath = () => `msrp://127.0.0.1:9/${newSessionId()};tcp`;

test(
  "media plane security: a To-Path naming no session of the connection gets 481 (506 when bound elsewhere, for the peer's own From-Path) and reaches no session",
  T,
  async () => {
    const { plane, cf, client, clientPath } = await anchored();
    const { send } = await rawSender(plane.address.port);
    assert.equal((await send(`msrp://127.0.0.1:${plane.address.port}/${newSessionId()};tcp`, foreignPath())).code, 481);
    // the client leg's session, bound to the client's connection, named by a second connection of the client's own path:
    // RFC 4975 10 "session already bound"
    assert.equal((await send(clientPath, client.path)).code, 506);
    assert.equal(await cf.keepalive(), 200);
    assert.equal(cf.received.length, 0);
    assert.equal(client.received.length, 0);
    assert.equal(plane.stats().queued, 0);
  },
);

test(
  "MSRP session binding (RFC 4975 5.4, 14): takeover of the client leg refused -> a foreign From-Path gets 403, its connection is closed, counted; the client's and the CF's messages still flow",
  T,
  async () => {
    const { plane, resources, cf, client, clientPath } = await anchored();
    const { raw, send } = await rawSender(plane.address.port);
    assert.equal((await send(clientPath, foreignPath(), "from the impostor")).code, 403);
    await raw.closed;
    assert.equal(resources.refusals.foreignSenders, 1);
    const down = wrapCpim("to the client");
    const up = wrapCpim("from the client");
    assert.equal((await cf.send(down, "message/cpim")).code, 200);
    assert.equal((await client.send(up, "message/cpim")).code, 200);
    assert.deepEqual(
      (await client.waitForMessages(1)).map((m) => m.body.toString()),
      [down],
    );
    assert.deepEqual(
      (await cf.waitForMessages(1)).map((m) => m.body.toString()),
      [up],
    );
    assert.equal(raw.requests.length, 0, "the impostor received nothing");
  },
);

test(
  "MSRP session binding (RFC 4975 5.4, 14): takeover of the CF leg refused -> a foreign From-Path gets 403 before and after the CF bound (a=setup:active); the CF's messages still flow",
  T,
  async () => {
    const { plane, resources } = await startPlane();
    const cf = await peer();
    const client = await peer();
    const session = ref();
    const offer = await plane.anchorOffer({ session, offerSdp: cf.sdp("active"), allowOfflineStorage: false });
    assert.equal(offer.cfLeg.setup, "passive");
    // before the CF connected: the CF leg is in the listener's table, unbound
    const early = await rawSender(plane.address.port);
    assert.equal((await early.send(offer.cfLeg.path, foreignPath())).code, 403);
    await early.raw.closed;
    const cfAnswer = plane.anchorAnswer(session.sessionKey, client.sdp("active"));
    await client.open(sdpPath(offer.clientOfferSdp), "active");
    await cf.open(sdpPath(cfAnswer), "active");
    await waitFor(
      () => plane.legs(session.sessionKey)?.cf === "up" && plane.legs(session.sessionKey)?.client === "up",
      5000,
      5,
      "both legs up",
    );
    // after: still 403 for a foreign sender (the CF's own path would get 506)
    const late = await rawSender(plane.address.port);
    assert.equal((await late.send(offer.cfLeg.path, foreignPath())).code, 403);
    await late.raw.closed;
    assert.equal(resources.refusals.foreignSenders, 2);
    const down = wrapCpim("from the CF");
    assert.equal((await cf.send(down, "message/cpim")).code, 200);
    assert.deepEqual(
      (await client.waitForMessages(1)).map((m) => m.body.toString()),
      [down],
    );
    assert.equal(cf.received.length, 0, "nothing of the impostors reached the CF");
  },
);

test(
  "MSRP session binding (RFC 4975 5.4, 14): a sender that bound the client leg before the client's answer arrived loses it when the answer names another path; the client then binds and relays",
  T,
  async () => {
    const { plane, resources } = await startPlane();
    const cf = await peer();
    const client = await peer();
    const session = ref();
    const offer = await plane.anchorOffer({ session, offerSdp: cf.sdp("actpass"), allowOfflineStorage: false });
    await cf.open(offer.cfLeg.path, "passive");
    const clientPath = sdpPath(offer.clientOfferSdp);
    // the race of RFC 6135 4.1: the path is not known yet, so the first sender binds on its word
    const { raw, send } = await rawSender(plane.address.port);
    const bind = newTransactionId();
    raw.write(`MSRP ${bind} SEND\r\nTo-Path: ${clientPath}\r\nFrom-Path: ${foreignPath()}\r\nMessage-ID: m${bind}\r\n-------${bind}$\r\n`);
    assert.equal((await raw.response(bind)).code, 200);
    // what it sends meanwhile waits for the answer, and is never relayed
    const injected = newTransactionId();
    const text = wrapCpim("injected before the answer");
    raw.write(
      `MSRP ${injected} SEND\r\nTo-Path: ${clientPath}\r\nFrom-Path: ${foreignPath()}\r\nMessage-ID: m${injected}\r\nByte-Range: 1-${text.length}/${text.length}\r\nContent-Type: message/cpim\r\n\r\n${text}\r\n-------${injected}$\r\n`,
    );
    // a round trip on the same connection: a 200 for the injected SEND would be in before this one
    const probe = newTransactionId();
    raw.write(
      `MSRP ${probe} SEND\r\nTo-Path: ${clientPath}\r\nFrom-Path: ${foreignPath()}\r\nMessage-ID: m${probe}\r\n-------${probe}$\r\n`,
    );
    assert.equal((await raw.response(probe)).code, 200);
    plane.anchorAnswer(session.sessionKey, client.sdp("active"));
    await raw.closed;
    assert.equal(resources.refusals.foreignSenders, 1);
    assert.equal(
      raw.responses.find((r) => r.transactionId === injected),
      undefined,
      "the injected SEND got no 200",
    );
    assert.notEqual(plane.legs(session.sessionKey)?.client, "up");
    await assert.rejects(send(clientPath, foreignPath()), /socket closed/);
    await client.open(clientPath, "active");
    await cf.bound();
    await waitFor(() => plane.legs(session.sessionKey)?.client === "up", 5000, 5, "client leg up");
    const down = wrapCpim("to the real client");
    assert.equal((await cf.send(down, "message/cpim")).code, 200);
    assert.deepEqual(
      (await client.waitForMessages(1)).map((m) => m.body.toString()),
      [down],
    );
    const up = wrapCpim("from the real client");
    assert.equal((await client.send(up, "message/cpim")).code, 200);
    assert.deepEqual(
      (await cf.waitForMessages(1)).map((m) => m.body.toString()),
      [up],
      "the injected message never reached the CF",
    );
  },
);

test(
  "MSRP session binding: a message the client sends before its answer reached the PF waits for the answer, then is relayed and answered 200",
  T,
  async () => {
    const { plane } = await startPlane();
    const cf = await peer();
    const client = await peer();
    const session = ref();
    const offer = await plane.anchorOffer({ session, offerSdp: cf.sdp("actpass"), allowOfflineStorage: false });
    await cf.open(offer.cfLeg.path, "passive");
    await client.open(sdpPath(offer.clientOfferSdp), "active");
    const early = wrapCpim("sent before the 2xx reached the PF");
    let code: number | undefined;
    const sending = client.send(early, "message/cpim").then((r) => {
      code = r.code;
    });
    assert.equal(await client.keepalive(), 200);
    assert.equal(code, undefined, "not answered while the client's path is unknown");
    plane.anchorAnswer(session.sessionKey, client.sdp("active"));
    await cf.bound();
    await sending;
    assert.equal(code, 200);
    assert.deepEqual(
      (await cf.waitForMessages(1)).map((m) => m.body.toString()),
      [early],
    );
  },
);

test("media plane security: a connection that never presents a valid session is closed after unauthenticatedTimeoutMs", T, async () => {
  const { plane } = await startPlane({ unauthenticatedTimeoutMs: 200 });
  const idle = await RawMsrpSocket.connect(plane.address.port);
  const wrong = await RawMsrpSocket.connect(plane.address.port);
  cleanups.push(() => idle.destroy());
  cleanups.push(() => wrong.destroy());
  const tid = newTransactionId();
  wrong.write(
    `MSRP ${tid} SEND\r\nTo-Path: msrp://127.0.0.1:${plane.address.port}/${newSessionId()};tcp\r\nFrom-Path: msrp://127.0.0.1:9/x1234;tcp\r\nMessage-ID: m1234\r\n-------${tid}$\r\n`,
  );
  assert.equal((await wrong.response(tid)).code, 481);
  await Promise.all([idle.closed, wrong.closed]);
  assert.equal(plane.stats().acceptedConnections, 0);
});

/**
 * A session whose client is a raw socket: it answered a=setup:active with its
 * own path `rawPath`, connected and bound with an empty SEND. `frame` writes
 * a SEND from that path to the PF's client leg.
 */
async function anchoredRawClient(config: Partial<MediaConfig> = {}, log = logger) {
  const resources = new MsrpResources();
  const sink = new FakeSink();
  const plane = new MsrpMediaPlane({ config: testMediaConfig(config), deferredSink: sink, logger: log, resources });
  await plane.start();
  cleanups.push(() => plane.close());
  const cf = await peer();
  const session = ref();
  const offer = await plane.anchorOffer({ session, offerSdp: cf.sdp("actpass"), allowOfflineStorage: false });
  await cf.open(offer.cfLeg.path, "passive");
  const rawPath = `msrp://127.0.0.1:9/${newSessionId()};tcp`;
  const answer = ["v=0", "o=raw 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0", "m=message 9 TCP/MSRP *"];
  answer.push("a=accept-types:message/cpim", `a=path:${rawPath}`, "a=setup:active", "");
  plane.anchorAnswer(session.sessionKey, answer.join("\r\n"));
  await cf.bound();

  const raw = await RawMsrpSocket.connect(plane.address.port);
  cleanups.push(() => raw.destroy());
  const pfClientPath = sdpPath(offer.clientOfferSdp);
  const frame = (tid: string, headers: string[], body?: string, fromPath = rawPath) =>
    [`MSRP ${tid} SEND`, `To-Path: ${pfClientPath}`, `From-Path: ${fromPath}`, `Message-ID: ${newSessionId()}`, ...headers].join("\r\n") +
    (body === undefined ? "\r\n" : `\r\n\r\n${body}\r\n`) +
    `-------${tid}$\r\n`;
  const bind = newTransactionId();
  raw.write(frame(bind, []));
  assert.equal((await raw.response(bind)).code, 200);
  await waitFor(() => plane.legs(session.sessionKey)?.client === "up", 5000, 5, "client leg up");
  return { plane, resources, sink, cf, session, raw, rawPath, pfClientPath, offer, frame };
}

test(
  "media plane limits: malformed and oversized frames from the client get 400 / 413, the session keeps relaying; garbage drops only the client leg and the CF's messages are then stored",
  T,
  async () => {
    const { plane, sink, cf, session, raw, frame } = await anchoredRawClient({ maxChunkBytes: 4096 });

    const bad = newTransactionId();
    raw.write(frame(bad, ["Byte-Range: banana", "Content-Type: message/cpim"], "hello"));
    assert.equal((await raw.response(bad)).code, 400);
    const big = newTransactionId();
    raw.write(frame(big, ["Byte-Range: 1-5000/5000", "Content-Type: message/cpim"], "y".repeat(5000)));
    assert.equal((await raw.response(big)).code, 413);
    const ok = newTransactionId();
    const text = wrapCpim("still here");
    raw.write(frame(ok, [`Byte-Range: 1-${Buffer.byteLength(text)}/${Buffer.byteLength(text)}`, "Content-Type: message/cpim"], text));
    assert.equal((await raw.response(ok)).code, 200);
    assert.equal((await cf.waitForMessages(1))[0]?.body.toString(), text);
    const toClient = wrapCpim("to the raw client");
    assert.equal((await cf.send(toClient, "message/cpim")).code, 200);
    assert.equal((await raw.waitForRequests(1))[0]?.body?.toString(), toClient);
    assert.equal(plane.legs(session.sessionKey)?.client, "up");

    // A start line that is no MSRP: framing is lost, the PF closes that connection only.
    raw.write("HELLO garbage\r\n\r\n");
    await raw.closed;
    await waitFor(() => plane.legs(session.sessionKey)?.client === "gone", 5000, 5, "client leg gone");
    const later = wrapCpim("stored after the garbage");
    assert.equal((await cf.send(later, "message/cpim")).code, 200);
    assert.deepEqual(
      sink.items.map((i) => Buffer.from(i.body).toString()),
      [later],
    );
    assert.equal(plane.legs(session.sessionKey)?.cf, "up");
  },
);

const cpimFrame = (frame: (tid: string, headers: string[], body?: string) => string, tid: string, text: string) =>
  frame(tid, [`Byte-Range: 1-${Buffer.byteLength(text)}/${Buffer.byteLength(text)}`, "Content-Type: message/cpim"], text);

test(
  "MSRP stall: a refused frame whose end-line never comes, then valid SENDs -> the connection is closed (warn line naming the peer, counted) after maxSkipBytes, never silently",
  T,
  async () => {
    const { logger: log, lines } = capturingLogger();
    const { plane, resources, sink, cf, session, raw, frame } = await anchoredRawClient({ maxSkipBytes: 8192 }, log);
    const bad = newTransactionId();
    // a header the parser refuses (400), and the frame's end-line never comes
    raw.write(frame(bad, ["Byte-Range: banana", "Content-Type: message/cpim"], "hello").replace(/-------\S+\r\n$/, ""));
    assert.equal((await raw.response(bad)).code, 400);
    const sent: string[] = [];
    for (let i = 0; !raw.isClosed && i < 200; i++) {
      const tid = newTransactionId();
      sent.push(tid);
      raw.write(cpimFrame(frame, tid, wrapCpim(`after the bad frame ${i}`)));
      await new Promise((r) => setImmediate(r));
    }
    await raw.closed;
    assert.ok(sent.length * 200 > 8192, "more than maxSkipBytes was sent before the close");
    assert.equal(raw.responses.filter((r) => sent.includes(r.transactionId)).length, 0, "what was skipped was not half-processed");
    assert.equal(resources.refusals.unparseableConnections, 1);
    const warn = lines.map((l) => JSON.parse(l)).find((l) => l.message === "unparseable MSRP input, closing");
    assert.equal(warn?.level, "warn");
    assert.equal(warn?.reason, "resync-lost");
    assert.match(String(warn?.msrpPeer), /^127\.0\.0\.1:\d+$/);
    // the CF's session goes on: its next message is kept for the client
    await waitFor(() => plane.legs(session.sessionKey)?.client === "gone", 5000, 5, "client leg gone");
    assert.equal((await cf.send(wrapCpim("kept"), "message/cpim")).code, 200);
    assert.equal(sink.items.length, 1);
  },
);

test("MSRP stall: a refused frame whose end-line comes within maxSkipBytes -> the SENDs after it are processed (resync)", T, async () => {
  const { resources, cf, raw, frame } = await anchoredRawClient({ maxSkipBytes: 8192 });
  const bad = newTransactionId();
  raw.write(frame(bad, ["Byte-Range: banana", "Content-Type: message/cpim"], "x".repeat(4000)));
  assert.equal((await raw.response(bad)).code, 400);
  const texts = [0, 1, 2].map((i) => wrapCpim(`resynced ${i}`));
  for (const t of texts) {
    const tid = newTransactionId();
    raw.write(cpimFrame(frame, tid, t));
    assert.equal((await raw.response(tid)).code, 200);
  }
  assert.deepEqual(
    (await cf.waitForMessages(3)).map((m) => m.body.toString()),
    texts,
  );
  assert.equal(resources.refusals.unparseableConnections, 0);
});

test(
  "media plane recording (BYE-B8 groundwork): relayed messages of both directions are kept and handed to the SessionRecorder",
  T,
  async () => {
    const { plane, recorder, cf, client, session } = await anchored({ allowOfflineStorage: true, config: { maxRecordedBytes: 600 } });
    const fromCf = wrapCpim("from the CF");
    const fromClient = wrapCpim("from the client");
    assert.equal((await cf.send(fromCf, "message/cpim")).code, 200);
    assert.equal((await client.send(fromClient, "message/cpim")).code, 200);
    assert.equal((await client.send(wrapCpim(COMPOSING_XML, "application/im-iscomposing+xml"), "message/cpim")).code, 200);
    // over maxRecordedBytes: relayed, not kept
    assert.equal((await cf.send(wrapCpim("z".repeat(700)), "message/cpim")).code, 200);
    await client.waitForMessages(2);
    assert.equal(await plane.recordSession(session.sessionKey, { participants: ["tel:+1"], subject: "s" }), true);
    const [call] = recorder.calls;
    assert.equal(call?.session.sessionKey, session.sessionKey);
    assert.deepEqual(call?.info.participants, ["tel:+1"]);
    assert.equal(call?.info.subject, "s");
    assert.deepEqual(
      call?.messages.map((m) => [m.direction, Buffer.from(m.body).toString()]),
      [
        ["from-network", fromCf],
        ["from-client", fromClient],
      ],
    );
  },
);

test("media plane recording: off without allow-offline-storage and media.recording", T, async () => {
  const { plane, recorder, session } = await anchored();
  assert.equal(await plane.recordSession(session.sessionKey), false);
  assert.equal(await plane.recordSession("no-such-session"), false);
  assert.equal(recorder.calls.length, 0);
});

test("media plane msrps: the legs run over TLS when media.tlsCertFile / tlsKeyFile are set", T, async () => {
  const pki = makeTestPki();
  cleanups.push(() => pki.remove());
  const { plane } = await startPlane({ tlsCertFile: pki.serverCert, tlsKeyFile: pki.serverKey, tlsCaFile: pki.caCert });
  const cf = await peer();
  const client = await peer({ tls: { ca: readFileSync(pki.caCert) } });
  const session = ref();
  const offer = await plane.anchorOffer({ session, offerSdp: cf.sdp("actpass"), allowOfflineStorage: false });
  assert.equal(offer.cfLeg.tls, true);
  assert.match(offer.cfLeg.path, /^msrps:\/\/127\.0\.0\.1:\d+\/\w+;tcp$/);
  assert.match(offer.clientOfferSdp, /m=message \d+ TCP\/TLS\/MSRP \*/);
  const clientPath = sdpPath(offer.clientOfferSdp);
  assert.match(clientPath, /^msrps:/);
  await cf.open(offer.cfLeg.path, "passive");
  plane.anchorAnswer(session.sessionKey, client.sdp("active"));
  await client.open(clientPath, "active"); // TLS, verified against the PF's certificate
  await cf.bound();
  await waitFor(() => plane.legs(session.sessionKey)?.client === "up", 5000, 5, "client leg up");
  const body = wrapCpim("over TLS");
  assert.equal((await cf.send(body, "message/cpim")).code, 200);
  assert.equal((await client.waitForMessages(1))[0]?.body.toString(), body);
});

test(
  "MEDIA-ANCHOR client-initiated: the client offers actpass, the CF answers passive -> the PF connects to both (RFC 6135); relay both ways in order; recorded with the focus from the 2xx",
  T,
  async () => {
    const { plane, recorder } = await startPlane({ recording: true });
    const cf = await peer();
    const client = await peer();
    const session = { ...ref(), focus: "sip:chat-factory@cf.example.net" };
    const offer = await plane.anchorOffer({ session, offerSdp: client.sdp("actpass"), offerer: "client", allowOfflineStorage: false });
    // the INVITE goes on to the CF with the PF's CF-facing leg, offered actpass
    assert.equal(sdpSetup(offer.clientOfferSdp), "actpass");
    const cfFacing = sdpPath(offer.clientOfferSdp);
    // the 2xx back to the client carries the PF's client-facing leg, answering the client's actpass
    assert.equal(offer.cfLeg.setup, "active");
    assert.notEqual(offer.cfLeg.path, cfFacing, "one MSRP session per leg");
    await client.open(offer.cfLeg.path, "passive");
    await cf.open(cfFacing, "passive");
    assert.deepEqual(plane.legs(session.sessionKey), { cf: "pending", client: "pending", devices: [{ key: "", state: "pending" }] });
    const toClient = plane.anchorAnswer(session.sessionKey, cf.sdp("passive"), { focus: "sip:focus-1@cf.example.net" });
    assert.equal(sdpPath(toClient), offer.cfLeg.path);
    assert.equal(sdpSetup(toClient), "active");
    await Promise.all([cf.bound(), client.bound()]);
    await waitFor(
      () => plane.legs(session.sessionKey)?.client === "up" && plane.legs(session.sessionKey)?.cf === "up",
      5000,
      5,
      "both legs up",
    );
    const ups = [1, 2, 3].map((i) => wrapCpim(`up ${i}`));
    const downs = [1, 2, 3].map((i) => wrapCpim(`down ${i}`));
    for (const b of ups) assert.equal((await client.send(b, "message/cpim")).code, 200);
    for (const b of downs) assert.equal((await cf.send(b, "message/cpim")).code, 200);
    assert.deepEqual(
      (await cf.waitForMessages(3)).map((m) => m.body.toString()),
      ups,
    );
    assert.deepEqual(
      (await client.waitForMessages(3)).map((m) => m.body.toString()),
      downs,
    );
    assert.equal(await plane.recordSession(session.sessionKey), true);
    assert.equal(recorder.calls[0]?.session.focus, "sip:focus-1@cf.example.net", "the focus the 2xx named");
    assert.deepEqual(
      recorder.calls[0]?.messages.map((m) => m.direction),
      ["from-client", "from-client", "from-client", "from-network", "from-network", "from-network"],
    );
  },
);

test(
  "MEDIA-ANCHOR DEFERRED BYE-B6 BYE-B10 client-initiated: client and CF connect (a=setup:active); the CF leg stays the network leg: deferred while the client is gone, client media refused, all released",
  T,
  async () => {
    const { plane, sink } = await startPlane();
    const cf = await peer();
    const client = await peer();
    const session = ref();
    const offer = await plane.anchorOffer({ session, offerSdp: client.sdp("active"), offerer: "client", allowOfflineStorage: false });
    assert.equal(offer.cfLeg.setup, "passive", "RFC 6135: the answer to the client's a=setup:active");
    // the client's path is known from its offer: it may connect as soon as it has the 2xx
    const toClient = plane.anchorAnswer(session.sessionKey, cf.sdp("active"));
    assert.equal(sdpSetup(toClient), "passive");
    await client.open(offer.cfLeg.path, "active");
    await cf.open(sdpPath(offer.clientOfferSdp), "active");
    await waitFor(
      () => plane.legs(session.sessionKey)?.client === "up" && plane.legs(session.sessionKey)?.cf === "up",
      5000,
      5,
      "both legs up",
    );
    const hello = wrapCpim("hello group");
    assert.equal((await client.send(hello, "message/cpim")).code, 200);
    assert.equal((await cf.waitForMessages(1))[0]?.body.toString(), hello);
    plane.refuseClientMedia(session.sessionKey);
    assert.equal((await client.send(wrapCpim("after the BYE"), "message/cpim")).code, 481, "BYE-B6");
    client.dropConnections();
    await waitFor(() => plane.legs(session.sessionKey)?.client === "gone", 5000, 5, "client leg gone");
    const later = wrapCpim("while you were away");
    assert.equal((await cf.send(later, "message/cpim")).code, 200);
    assert.deepEqual(
      (await sink.waitForItems(1)).map((i) => Buffer.from(i.body).toString()),
      [later],
    );
    assert.equal(cf.received.length, 1, "the refused message never reached the CF");
    assert.ok(plane.release(session.sessionKey) > 0);
    assert.equal(plane.stats().sessions, 0);
    await waitFor(() => plane.stats().acceptedConnections === 0, 5000, 5, "no connection left");
  },
);

// ---- BYE-B7: the CF's INVITE forked to several devices of the served user -----------------------

interface Device {
  key: string;
  setup: "active" | "passive";
  /** How the device's 2xx reaches the plane: "first" = anchorAnswer (the 2xx forwarded to the CF), else addDevice. */
  via: "first" | "further";
}

/**
 * A CF-initiated session forked to `devices`: every device got the PF's one
 * offer (same a=path, actpass); the answers reach the plane in the order given
 * (anchorAnswer with facts.deviceKey for "first", addDevice for the others).
 * Passive devices wait for the PF from before their answer, active ones
 * connect after it. Returns once the CF leg and every device leg are up.
 */
async function forked(devices: Device[], config: Partial<MediaConfig> = {}) {
  const base = await startPlane(config);
  const cf = await peer();
  const session = ref();
  const offer = await base.plane.anchorOffer({ session, offerSdp: cf.sdp("actpass"), allowOfflineStorage: false });
  await cf.open(offer.cfLeg.path, "passive");
  const clientPath = sdpPath(offer.clientOfferSdp);
  const peers = new Map<string, MsrpPeer>();
  for (const d of devices) {
    const p = await peer();
    peers.set(d.key, p);
    if (d.setup === "passive") await p.open(clientPath, "passive");
    if (d.via === "first") base.plane.anchorAnswer(session.sessionKey, p.sdp(d.setup), { deviceKey: d.key });
    else base.plane.addDevice(session.sessionKey, d.key, p.sdp(d.setup));
    if (d.setup === "active") await p.open(clientPath, "active");
  }
  await cf.bound();
  for (const p of peers.values()) await p.bound();
  await waitFor(() => base.plane.legs(session.sessionKey)?.cf === "up", 5000, 5, "CF leg up");
  await waitFor(
    () => base.plane.legs(session.sessionKey)?.devices.filter((d) => d.state === "up").length === devices.length,
    5000,
    5,
    "every device leg up",
  );
  const device = (key: string) => peers.get(key) as MsrpPeer;
  return { ...base, cf, session, clientPath, offer, device };
}

/** Sends `bodies` from `from`: one after another, then a burst started in order without waiting; every SEND gets 200. */
async function sendAll(from: MsrpPeer, bodies: string[]): Promise<void> {
  const half = Math.floor(bodies.length / 2);
  for (const b of bodies.slice(0, half)) assert.equal((await from.send(b, "message/cpim")).code, 200);
  const burst = await Promise.all(bodies.slice(half).map((b) => from.send(b, "message/cpim")));
  assert.deepEqual(
    burst.map((r) => r.code),
    burst.map(() => 200),
  );
}

const texts = (messages: { body: Buffer }[]) => messages.map((m) => m.body.toString());

test(
  "BYE-B7 forked INVITE: two active devices connect to the same PF URI with their own From-Paths; each gets its own leg, both get the CF's messages in the CF's order, each device's messages reach the CF",
  T,
  async () => {
    const { plane, cf, session, clientPath, device } = await forked([
      { key: "tag-a", setup: "active", via: "first" },
      { key: "tag-b", setup: "active", via: "further" },
    ]);
    const a = device("tag-a");
    const b = device("tag-b");
    assert.equal(a.session?.remotePath[0]?.sessionId, b.session?.remotePath[0]?.sessionId, "both name one PF session-id");
    assert.equal(sdpPath(a.sdp("active")) !== sdpPath(b.sdp("active")), true);
    assert.ok(clientPath.includes(a.session?.remotePath[0]?.sessionId ?? "?"));
    assert.deepEqual(plane.legs(session.sessionKey), {
      cf: "up",
      client: "up",
      devices: [
        { key: "tag-a", state: "up" },
        { key: "tag-b", state: "up" },
      ],
    });
    // chunked ones only where sent one after another: a burst's order is that of its last chunks (RFC 4975 7.1.1)
    const down = Array.from({ length: 40 }, (_, i) => wrapCpim(i < 20 && i % 5 === 3 ? `big ${i} ${"x".repeat(5000)}` : `down ${i}`));
    await sendAll(cf, down);
    assert.deepEqual(texts(await a.waitForMessages(down.length)), down);
    assert.deepEqual(texts(await b.waitForMessages(down.length)), down);
    assert.ok(
      a.received.some((m) => m.chunks > 1),
      "chunked messages too",
    );
    const fromA = wrapCpim("from device a");
    const fromB = wrapCpim("from device b");
    assert.equal((await a.send(fromA, "message/cpim")).code, 200);
    assert.equal((await b.send(fromB, "message/cpim")).code, 200);
    assert.deepEqual(texts(await cf.waitForMessages(2)), [fromA, fromB]);
    assert.equal(a.received.length, down.length, "a device does not get the other device's messages");
    assert.equal(b.received.length, down.length);
    assert.equal(plane.stats().queued, 0);
  },
);

test("BYE-B7 forked INVITE: a passive device next to an active one: the PF connects to the passive device's a=path", T, async () => {
  const { cf, device, plane, session } = await forked([
    { key: "tag-a", setup: "active", via: "first" },
    { key: "tag-b", setup: "passive", via: "further" },
    { key: "tag-c", setup: "active", via: "further" },
  ]);
  assert.deepEqual(
    plane.legs(session.sessionKey)?.devices.map((d) => d.key),
    ["tag-a", "tag-b", "tag-c"],
  );
  const down = Array.from({ length: 10 }, (_, i) => wrapCpim(`down ${i}`));
  await sendAll(cf, down);
  for (const key of ["tag-a", "tag-b", "tag-c"]) assert.deepEqual(texts(await device(key).waitForMessages(down.length)), down, key);
  const up = wrapCpim("from the passive device");
  assert.equal((await device("tag-b").send(up, "message/cpim")).code, 200);
  assert.deepEqual(texts(await cf.waitForMessages(1)), [up]);
});

test(
  "BYE-B7 forked INVITE: addDevice before anchorAnswer (the two reports race), a retransmitted 2xx changes nothing, a device that connected before its 2xx reached the PF keeps its connection",
  T,
  async () => {
    const { plane, resources } = await startPlane();
    const cf = await peer();
    const session = ref();
    const offer = await plane.anchorOffer({ session, offerSdp: cf.sdp("actpass"), allowOfflineStorage: false });
    await cf.open(offer.cfLeg.path, "passive");
    const clientPath = sdpPath(offer.clientOfferSdp);
    const a = await peer();
    const b = await peer();
    const c = await peer();
    // device c connects (a=setup:active) before any 2xx reached the PF, then its 2xx comes as a further one
    await c.open(clientPath, "active");
    plane.addDevice(session.sessionKey, "tag-c", c.sdp("active"));
    // device b's 2xx reaches the plane before the first device's, and twice
    plane.addDevice(session.sessionKey, "tag-b", b.sdp("active"));
    plane.addDevice(session.sessionKey, "tag-b", b.sdp("active"));
    await b.open(clientPath, "active");
    const sessionsBefore = resources.snapshot().sessions;
    plane.addDevice(session.sessionKey, "tag-b", b.sdp("passive"));
    assert.equal(resources.snapshot().sessions, sessionsBefore, "a retransmitted 2xx makes no leg");
    // the first device's 2xx, then its retransmission
    const cfAnswer = plane.anchorAnswer(session.sessionKey, a.sdp("active"), { deviceKey: "tag-a" });
    assert.equal(plane.anchorAnswer(session.sessionKey, a.sdp("active"), { deviceKey: "tag-a" }), cfAnswer);
    await a.open(clientPath, "active");
    await cf.bound();
    await waitFor(
      () => plane.legs(session.sessionKey)?.devices.filter((d) => d.state === "up").length === 3,
      5000,
      5,
      "three device legs up",
    );
    assert.deepEqual(
      plane
        .legs(session.sessionKey)
        ?.devices.map((d) => d.key)
        .sort(),
      ["tag-a", "tag-b", "tag-c"],
    );
    assert.equal(resources.refusals.foreignSenders, 0);
    const down = [1, 2, 3].map((i) => wrapCpim(`down ${i}`));
    await sendAll(cf, down);
    for (const d of [a, b, c]) assert.deepEqual(texts(await d.waitForMessages(3)), down);
    const up = [a, b, c].map((_, i) => wrapCpim(`up ${i}`));
    for (const [i, d] of [a, b, c].entries()) assert.equal((await d.send(up[i] as string, "message/cpim")).code, 200);
    assert.deepEqual(texts(await cf.waitForMessages(3)), up);
  },
);

test(
  "BYE-B7 forked INVITE: releaseDevice of one device keeps the other flowing; clientLegGone only once every device leg is gone; then the CF's messages are deferred",
  T,
  async () => {
    const { plane, cf, session, sink, device, resources } = await forked([
      { key: "tag-a", setup: "active", via: "first" },
      { key: "tag-b", setup: "passive", via: "further" },
    ]);
    const a = device("tag-a");
    const b = device("tag-b");
    const sessionsBefore = resources.snapshot().sessions;
    assert.ok(plane.releaseDevice(session.sessionKey, "tag-b") >= 2, "its session and its connection");
    assert.equal(plane.releaseDevice(session.sessionKey, "tag-b"), 0, "released once");
    assert.equal(plane.releaseDevice(session.sessionKey, "tag-unknown"), 0);
    assert.equal(plane.releaseDevice("no-such-session", "tag-a"), 0);
    assert.equal(resources.snapshot().sessions, sessionsBefore - 1);
    assert.deepEqual(plane.legs(session.sessionKey)?.devices, [{ key: "tag-a", state: "up" }], "a released device is no longer listed");
    assert.equal(plane.clientLegGone(session.sessionKey), false);
    const down = [1, 2, 3].map((i) => wrapCpim(`after b left ${i}`));
    await sendAll(cf, down);
    assert.deepEqual(texts(await a.waitForMessages(3)), down);
    const up = wrapCpim("a is still here");
    assert.equal((await a.send(up, "message/cpim")).code, 200);
    assert.deepEqual(texts(await cf.waitForMessages(1)), [up]);
    assert.equal(b.received.length, 0);
    assert.equal(sink.items.length, 0, "nothing deferred while a device leg is up");
    // the other device goes away too (its connection drops)
    a.dropConnections();
    await waitFor(() => plane.clientLegGone(session.sessionKey), 5000, 5, "every device leg gone");
    assert.equal(plane.legs(session.sessionKey)?.client, "gone");
    const kept = wrapCpim("kept for later");
    assert.equal((await cf.send(kept, "message/cpim")).code, 200);
    assert.deepEqual(
      sink.items.map((i) => Buffer.from(i.body).toString()),
      [kept],
    );
    assert.ok(plane.release(session.sessionKey) > 0);
    await waitFor(() => resources.snapshot().openSockets === 0, 5000, 5, "PF sockets closed");
    assert.deepEqual(resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
  },
);

test(
  "BYE-B7 forked INVITE: a connection with a From-Path no device answered with is refused 403 as before, and reaches no device and not the CF",
  T,
  async () => {
    const { plane, cf, clientPath, device, resources } = await forked([
      { key: "tag-a", setup: "active", via: "first" },
      { key: "tag-b", setup: "active", via: "further" },
    ]);
    const { raw, send } = await rawSender(plane.address.port);
    assert.equal((await send(clientPath, foreignPath(), "from a third party")).code, 403);
    await raw.closed;
    assert.equal(resources.refusals.foreignSenders, 1);
    // a device's own path on a second connection: its session is bound elsewhere (RFC 4975 10)
    const second = await rawSender(plane.address.port);
    assert.equal((await second.send(clientPath, device("tag-b").path)).code, 506);
    const down = wrapCpim("to both");
    assert.equal((await cf.send(down, "message/cpim")).code, 200);
    assert.deepEqual(texts(await device("tag-a").waitForMessages(1)), [down]);
    assert.deepEqual(texts(await device("tag-b").waitForMessages(1)), [down]);
    assert.equal(cf.received.length, 0);
    assert.equal(raw.requests.length, 0);
  },
);

test(
  "BYE-B7 forked INVITE: refuseClientMedia refuses every device (481), release frees every device leg; addDevice refuses unknown and client-initiated sessions and unusable SDP",
  T,
  async () => {
    const { plane, cf, session, device, resources } = await forked([
      { key: "tag-a", setup: "active", via: "first" },
      { key: "tag-b", setup: "passive", via: "further" },
    ]);
    assert.throws(() => plane.addDevice("no-such-session", "tag-x", device("tag-a").sdp("active")), { code: "CPM_ERR_MEDIA_NOT_ANCHORED" });
    assert.throws(() => plane.addDevice(session.sessionKey, "tag-x", "v=0\r\n"), { code: "CPM_ERR_BAD_SDP" });
    assert.throws(() => plane.addDevice(session.sessionKey, "tag-x", device("tag-a").sdp("holdconn")), { code: "CPM_ERR_BAD_SDP" });
    const clientInitiated = ref();
    const c = await peer();
    await plane.anchorOffer({ session: clientInitiated, offerSdp: c.sdp("actpass"), offerer: "client", allowOfflineStorage: false });
    assert.throws(() => plane.addDevice(clientInitiated.sessionKey, "tag-x", cf.sdp("active")), { code: "CPM_ERR_MEDIA_NOT_ANCHORED" });
    assert.equal(plane.release(clientInitiated.sessionKey) > 0, true);

    plane.refuseClientMedia(session.sessionKey);
    for (const key of ["tag-a", "tag-b"]) assert.equal((await device(key).send(wrapCpim(`late ${key}`), "message/cpim")).code, 481, key);
    assert.equal(cf.received.length, 0);
    assert.ok(plane.release(session.sessionKey) > 0);
    await waitFor(() => resources.snapshot().openSockets === 0, 5000, 5, "PF sockets closed");
    assert.deepEqual(resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
  },
);
