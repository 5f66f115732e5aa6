// DeliveryEndpoint (deferred delivery, OMA CPM 8.3.2.9.1.2, DD-6) over real
// TCP sockets on 127.0.0.1: a standalone delivery listener plays the PF's MSRP
// listener, an MsrpPeer (test/harness/msrp-peer.ts) the served user's client.
// Each test gets its own MsrpResources for the PF, so the counters it checks
// are the PF's alone. Waits are on events or state; the only sleeps are the
// windows in which something must NOT happen.
import assert from "node:assert/strict";
import { once } from "node:events";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CpmError } from "../../src/errors/catalogue.js";
import { silentLogger } from "../../src/log/logger.js";
import {
  type ClientSendInfo,
  DeliveryEndpoint,
  type DeliveryEndpointEvents,
  type DeliveryListener,
  startDeliveryListener,
} from "../../src/media/delivery-endpoint.js";
import type { MediaConfig } from "../../src/media/msrp-media-plane.js";
import type { MsrpRequest } from "../../src/msrp/frame.js";
import { newSessionId, newTransactionId } from "../../src/msrp/ids.js";
import { MsrpResources } from "../../src/msrp/resources.js";
import { COMPOSING_XML, GSO_XML, IMDN_XML, wrapCpim } from "../fixtures/cpim.js";
import { testMediaConfig, useCleanups } from "../harness/cleanups.js";
import { MsrpPeer, RawMsrpSocket, sdpPath, sdpSetup } from "../harness/msrp-peer.js";
import { waitFor } from "../harness/wait.js";

const logger = silentLogger();
const cleanups = useCleanups();
const T = { timeout: 20_000 };

/** The original group session invitation's offer, as the CF sent it (msrps, its own path, a=setup:active). */
function originalSdp(direction = "sendrecv"): string {
  return [
    "v=0",
    "o=cf 2890844526 2890844527 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=message 7394 TCP/TLS/MSRP *",
    "a=accept-types:message/cpim application/im-iscomposing+xml",
    "a=accept-wrapped-types:text/plain message/imdn+xml application/group-state-object+xml",
    "a=max-size:131072",
    "a=path:msrps://192.0.2.10:7394/cfSession4711;tcp",
    "a=setup:active",
    `a=${direction}`,
    "",
  ].join("\r\n");
}

async function listener(over: Partial<MediaConfig> = {}): Promise<DeliveryListener & { resources: MsrpResources }> {
  const resources = new MsrpResources();
  const l = await startDeliveryListener({ config: testMediaConfig(over), resources, logger });
  cleanups.push(() => l.close());
  return Object.assign(l, { resources });
}

async function peer(): Promise<MsrpPeer> {
  const p = await MsrpPeer.start({ logger });
  cleanups.push(() => p.close());
  return p;
}

async function endpoint(l: DeliveryListener, original = originalSdp()) {
  const r = await DeliveryEndpoint.create({ sessionKey: `dd-${newSessionId()}@pf.example.net`, originalSdp: original, msrp: l.share });
  cleanups.push(() => r.endpoint.close("test over"));
  return r;
}

/** Resolves with the event's arguments, or rejects after `ms` naming it. */
async function event<K extends keyof DeliveryEndpointEvents>(ep: DeliveryEndpoint, name: K, ms = 5000): Promise<DeliveryEndpointEvents[K]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  try {
    return (await once(ep as never, name, { signal: ac.signal })) as DeliveryEndpointEvents[K];
  } catch {
    throw new Error(`no "${name}" within ${ms} ms`);
  } finally {
    clearTimeout(timer);
  }
}

/** An endpoint whose client answered with `clientSetup` and is bound ("up"). */
async function upSession(clientSetup: "active" | "passive", over: Partial<MediaConfig> = {}) {
  const l = await listener(over);
  const client = await peer();
  const { endpoint: ep, offerSdp } = await endpoint(l);
  const up = event(ep, "up");
  if (clientSetup === "passive") await client.open(sdpPath(offerSdp), "passive");
  ep.applyAnswer(client.sdp(clientSetup));
  if (clientSetup === "active") await client.open(sdpPath(offerSdp), "active");
  await up;
  assert.equal(ep.state, "up");
  return { l, client, ep, offerSdp };
}

const GSO_TYPE = "application/group-state-object+xml";

test(
  "DD-6: the offer keeps the original media attributes, with the PF's c=/o=, port, path, a=setup:actpass and a=sendrecv",
  T,
  async () => {
    const l = await listener();
    const { endpoint: ep, offerSdp } = await endpoint(l, originalSdp("recvonly"));
    const lines = offerSdp.split("\r\n");
    for (const kept of [
      "a=accept-types:message/cpim application/im-iscomposing+xml",
      "a=accept-wrapped-types:text/plain message/imdn+xml application/group-state-object+xml",
      "a=max-size:131072",
    ]) {
      assert.ok(lines.includes(kept), `offer keeps ${kept}`);
    }
    assert.ok(lines.includes(`m=message ${l.share.port} TCP/MSRP *`), "m= names the PF's port over TCP/MSRP");
    assert.ok(lines.includes("c=IN IP4 127.0.0.1"));
    assert.match(offerSdp, /^o=cf 2890844526 2890844527 IN IP4 127\.0\.0\.1$/m);
    assert.doesNotMatch(offerSdp, /192\.0\.2\.10|cfSession4711/, "nothing of the CF's addressing is left");
    const path = sdpPath(offerSdp);
    assert.match(path, new RegExp(`^msrp://127\\.0\\.0\\.1:${l.share.port}/[A-Za-z0-9]{20};tcp$`));
    assert.equal(path, `msrp://127.0.0.1:${l.share.port}/${ep.localUri.sessionId};tcp`, "a=path is the endpoint's session");
    assert.equal(sdpSetup(offerSdp), "actpass");
    assert.equal(lines.filter((x) => x.startsWith("a=setup:")).length, 1);
    assert.ok(lines.includes("a=sendrecv"), "DD-6: a=sendrecv");
    assert.ok(!lines.includes("a=recvonly"));
    // Each delivery session has a path of its own.
    const second = await endpoint(l);
    assert.notEqual(sdpPath(second.offerSdp), path);
    assert.equal(l.share.table.size, 2, "both sessions wait in the listener's table");
  },
);

test("an unusable original offer or answer throws CPM_ERR_BAD_SDP and leaves nothing behind", T, async () => {
  const l = await listener();
  const isBadSdp = (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_BAD_SDP";
  await assert.rejects(
    DeliveryEndpoint.create({ sessionKey: "x", originalSdp: "v=0\r\nm=audio 4000 RTP/AVP 0\r\n", msrp: l.share }),
    isBadSdp,
  );
  await assert.rejects(
    DeliveryEndpoint.create({ sessionKey: "x", originalSdp: originalSdp().replace(/a=path:\S+/, "a=path:http://bad"), msrp: l.share }),
    isBadSdp,
  );
  assert.deepEqual(l.resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
  const client = await peer();
  const { endpoint: ep } = await endpoint(l);
  assert.throws(() => ep.applyAnswer(client.sdp("passive").replace(/a=path:.*\r\n/, "")), isBadSdp);
  assert.throws(() => ep.applyAnswer(client.sdp("passive").replace(/^m=message \d+/m, "m=message 0")), isBadSdp);
  assert.throws(() => ep.applyAnswer(client.sdp("holdconn")), isBadSdp);
  assert.equal(ep.state, "offered", "a bad answer changes nothing; a good one may still come");
});

test("client answers a=setup:passive: the PF connects, binds with an empty SEND (RFC 6135) and is up", T, async () => {
  const { l, client } = await upSession("passive");
  assert.equal(client.session?.state, "bound");
  assert.equal(l.share.pool.size, 1, "the PF opened the connection");
  assert.equal(l.resources.snapshot().openSockets, 1);
  assert.equal(client.received.length, 0, "the bind SEND carries no message");
});

test("client answers a=setup:active: the client connects to the PF's listener, binds, and the endpoint is up", T, async () => {
  const { l, client } = await upSession("active");
  assert.equal(client.session?.state, "bound");
  assert.equal(l.share.pool.size, 0, "the PF opened no connection");
  assert.equal(l.resources.snapshot().openSockets, 1);
});

test("an active client that connects before its 200 OK reaches the PF: up once the answer is applied", T, async () => {
  const l = await listener();
  const client = await peer();
  const { endpoint: ep, offerSdp } = await endpoint(l);
  let up = false;
  ep.on("up", () => {
    up = true;
  });
  await client.open(sdpPath(offerSdp), "active");
  await sleep(50);
  assert.equal(up, false, "no up before the answer (the client's path is not known yet)");
  const upEvent = event(ep, "up");
  ep.applyAnswer(client.sdp("active"));
  await upEvent;
  assert.equal(await ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("hi")) }), 200);
});

/** A raw connection to the listener writing one SEND from `from` to `toPath`; resolves with its response. */
async function foreignSend(port: number, toPath: string, from = `msrp://127.0.0.1:9/${newSessionId()};tcp`, text = "") {
  const raw = await RawMsrpSocket.connect(port);
  cleanups.push(() => raw.destroy());
  const tid = newTransactionId();
  const body = text === "" ? "" : `Byte-Range: 1-${text.length}/${text.length}\r\nContent-Type: message/cpim\r\n\r\n${text}\r\n`;
  raw.write(`MSRP ${tid} SEND\r\nTo-Path: ${toPath}\r\nFrom-Path: ${from}\r\nMessage-ID: m${tid}\r\n${body}-------${tid}$\r\n`);
  return { raw, response: await raw.response(tid) };
}

for (const clientSetup of ["active", "passive"] as const) {
  test(
    `MSRP session binding (RFC 4975 5.4, 14): takeover of a delivery session refused (client a=setup:${clientSetup}) -> a foreign From-Path gets 403, its connection is closed, counted; delivery and the client's SENDs still flow`,
    T,
    async () => {
      const { l, client, ep, offerSdp } = await upSession(clientSetup);
      const seen: ClientSendInfo[] = [];
      ep.on("clientSend", (info) => seen.push(info));
      const { raw, response } = await foreignSend(l.share.port, sdpPath(offerSdp), undefined, "from the impostor");
      assert.equal(response.code, 403);
      await raw.closed;
      assert.equal(l.resources.refusals.foreignSenders, 1);
      assert.equal(ep.state, "up");
      const item = wrapCpim("deferred for the client");
      assert.equal(await ep.send({ contentType: "message/cpim", body: Buffer.from(item) }), 200);
      assert.deepEqual(
        (await client.waitForMessages(1)).map((m) => m.body.toString()),
        [item],
      );
      assert.equal((await client.send(wrapCpim("from the client"), "message/cpim")).code, 200);
      await waitFor(() => seen.length === 1, 5000, 5, "the client's SEND");
      assert.equal(raw.requests.length, 0, "the impostor received nothing");
    },
  );
}

test(
  "MSRP session binding (RFC 4975 5.4, 14): a sender that bound a delivery session before the client's 200 OK loses it when the answer names another path; the client then binds",
  T,
  async () => {
    const l = await listener();
    const client = await peer();
    const { endpoint: ep, offerSdp } = await endpoint(l);
    const { raw, response } = await foreignSend(l.share.port, sdpPath(offerSdp));
    assert.equal(response.code, 200, "the path is not known yet: the first sender binds on its word");
    const upEvent = event(ep, "up");
    ep.applyAnswer(client.sdp("active"));
    await raw.closed;
    assert.equal(l.resources.refusals.foreignSenders, 1);
    assert.equal(ep.state, "answered");
    await client.open(sdpPath(offerSdp), "active");
    await upEvent;
    const item = wrapCpim("to the real client");
    assert.equal(await ep.send({ contentType: "message/cpim", body: Buffer.from(item) }), 200);
    assert.deepEqual(
      (await client.waitForMessages(1)).map((m) => m.body.toString()),
      [item],
    );
  },
);

/** The client holds its answer to the first message until `release()`. */
function holdFirst(session: NonNullable<MsrpPeer["session"]>): () => void {
  let release!: () => void;
  const held = new Promise<number>((resolve) => {
    release = () => resolve(200);
  });
  let first = true;
  session.on("message", (_m, hold) => {
    if (!first) return;
    first = false;
    hold(held);
  });
  return release;
}

test(
  "DD-10: 5 sends arrive in call order, byte-exact with their content types, pipelined: they go out while the first is unanswered (media.deliveryWindow)",
  T,
  async () => {
    const { client, ep } = await upSession("passive");
    const session = client.session;
    assert.ok(session);
    const release = holdFirst(session);
    const binary = Buffer.alloc(5000);
    for (let i = 0; i < binary.length; i++) binary[i] = (i * 7 + 3) & 0xff; // every byte value, CRLFs and NULs included
    const items = [
      { contentType: "message/cpim", body: Buffer.from(wrapCpim("first ✓ ünïcødé")) },
      { contentType: GSO_TYPE, body: Buffer.from(GSO_XML) },
      { contentType: "message/cpim", body: Buffer.from(wrapCpim("x".repeat(6000))) }, // 3+ chunks of 2048
      { contentType: "application/octet-stream", body: binary },
      { contentType: "message/cpim", body: Buffer.from(wrapCpim(IMDN_XML, "message/imdn+xml", "notification")) },
    ];
    const sends = items.map((item) => ep.send(item)); // all queued at once
    await client.waitForMessages(5);
    release();
    assert.deepEqual(await Promise.all(sends), [200, 200, 200, 200, 200]);
    const got = await client.waitForMessages(5);
    assert.deepEqual(
      got.map((m) => m.contentType),
      items.map((i) => i.contentType),
    );
    got.forEach((m, i) => {
      assert.ok(m.body.equals(items[i]?.body as Buffer), `message ${i} byte-exact`);
    });
    assert.ok((got[2]?.chunks ?? 0) > 1 && (got[3]?.chunks ?? 0) > 1, "large items were chunked (media.chunkSize)");
  },
);

test("DD-10: media.deliveryWindow=1: each send goes out only after the previous one was answered", T, async () => {
  const { client, ep } = await upSession("passive", { deliveryWindow: 1 });
  const session = client.session;
  assert.ok(session);
  const release = holdFirst(session);
  const sends = [1, 2, 3].map((i) => ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim(`m${i}`)) }));
  await client.waitForMessages(1);
  await sleep(200);
  assert.equal(client.received.length, 1, "nothing else goes out while the first message is unanswered");
  release();
  assert.deepEqual(await Promise.all(sends), [200, 200, 200]);
  assert.deepEqual(
    (await client.waitForMessages(3)).map((m) => m.body.toString("utf8").split("\r\n").pop()),
    ["m1", "m2", "m3"],
  );
});

test("a client answering 415 to one SEND: that send resolves 415, the next ones still go", T, async () => {
  const { client, ep } = await upSession("active");
  client.session?.on("message", (m, hold) => {
    if (m.contentType === GSO_TYPE) hold(Promise.resolve(415));
  });
  const codes = await Promise.all([
    ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("one")) }),
    ep.send({ contentType: GSO_TYPE, body: Buffer.from(GSO_XML) }),
    ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("three")) }),
    ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("four")) }),
  ]);
  assert.deepEqual(codes, [200, 415, 200, 200]);
  const got = await client.waitForMessages(4);
  assert.ok(got[3]?.body.toString().endsWith("four"));
  assert.equal(ep.state, "up");
});

test(
  "a client that never answers: the send resolves 408 after media.transactionTimeoutMs (RFC 4975 7.1.1), the next one still goes",
  T,
  async () => {
    const { client, ep } = await upSession("passive", { transactionTimeoutMs: 300 });
    client.session?.on("message", (m, hold) => {
      if (m.body.toString().endsWith("black hole")) hold(new Promise<number>(() => {}));
    });
    const started = Date.now();
    assert.equal(await ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("black hole")) }), 408);
    assert.ok(Date.now() - started >= 250, "408 only after the transaction timeout");
    assert.equal(await ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("after")) }), 200);
  },
);

test("client SENDs a chat message, an IMDN and isComposing: clientSend with their kinds, and the client gets 200s", T, async () => {
  const { client, ep } = await upSession("active");
  const seen: ClientSendInfo[] = [];
  ep.on("clientSend", (info) => seen.push(info));
  const chat = wrapCpim("hello from the client");
  const imdn = wrapCpim(IMDN_XML, "message/imdn+xml", "notification");
  assert.equal((await client.send(chat, "message/cpim")).code, 200);
  assert.equal((await client.send(imdn, "message/cpim")).code, 200);
  assert.equal((await client.send(COMPOSING_XML, "application/im-iscomposing+xml")).code, 200);
  const noReport = await client.session?.send({
    body: Buffer.from(wrapCpim("fire and forget")),
    contentType: "message/cpim",
    failureReport: "no",
  });
  assert.equal(noReport?.code, 200);
  await waitFor(() => seen.length === 4, 5000, 5, "4 clientSend events");
  assert.deepEqual(
    seen.map((s) => s.kind),
    ["message", "imdn", "isComposing", "message"],
  );
  assert.deepEqual(
    seen.map((s) => s.failureReport),
    ["yes", "yes", "yes", "no"],
  );
  assert.equal(seen[0]?.body.toString(), chat);
  assert.equal(seen[1]?.body.toString(), imdn);
  assert.equal(seen[2]?.contentType, "application/im-iscomposing+xml");
  assert.ok(seen.every((s) => /^[A-Za-z0-9]{4,32}$/.test(s.msrpMessageId)));
  // A listener that throws breaks neither the session nor the client's 200.
  ep.on("clientSend", () => {
    throw new Error("listener bug");
  });
  assert.equal((await client.send(chat, "message/cpim")).code, 200);
  assert.equal(ep.state, "up");
});

test(
  "RJ-4: failureReport() sends the client a REPORT (RFC 4975 7.1.2) for its SEND, with the status; none for Failure-Report: no or an unknown message",
  T,
  async () => {
    const { client, ep } = await upSession("active");
    const seen: ClientSendInfo[] = [];
    ep.on("clientSend", (info) => seen.push(info));
    const reports: MsrpRequest[] = [];
    client.session?.on("report", (r) => reports.push(r));
    assert.equal((await client.send(wrapCpim("to the group"), "message/cpim")).code, 200);
    const quiet = await client.session?.send({
      body: Buffer.from(wrapCpim("no report")),
      contentType: "message/cpim",
      failureReport: "no",
    });
    assert.equal(quiet?.code, 200);
    await waitFor(() => seen.length === 2, 5000, 5, "2 clientSend events");
    const [wanted, unwanted] = seen as [ClientSendInfo, ClientSendInfo];
    assert.equal(ep.failureReport(wanted.msrpMessageId, 481), true);
    assert.equal(ep.failureReport(unwanted.msrpMessageId, 481), false, "Failure-Report: no");
    assert.equal(ep.failureReport("never-sent", 481), false);
    await waitFor(() => reports.length === 1, 5000, 5, "the REPORT at the client");
    assert.equal(reports[0]?.messageId, wanted.msrpMessageId);
    assert.equal(reports[0]?.status?.namespace, "000");
    assert.equal(reports[0]?.status?.code, 481);
  },
);

test("the client closes the connection: closed, later sends resolve 481, nothing left open", T, async () => {
  const { l, client, ep } = await upSession("active");
  const closed: string[] = [];
  ep.on("closed", (r) => closed.push(r));
  const gone = event(ep, "closed");
  client.dropConnections();
  await gone;
  assert.equal(ep.state, "closed");
  assert.equal(await ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("too late")) }), 481);
  ep.close("after the fact");
  assert.equal(closed.length, 1, "closed exactly once");
  await waitFor(() => l.resources.snapshot().openSockets === 0, 5000, 5, "PF sockets closed");
  assert.deepEqual(l.resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
  assert.equal(l.share.table.size, 0);
});

test("a client that answers but never connects: closed after media.clientLegTimeoutMs, queued sends get 481", T, async () => {
  const l = await listener({ clientLegTimeoutMs: 200 });
  const client = await peer();
  const { endpoint: ep } = await endpoint(l);
  const gone = event(ep, "closed");
  ep.applyAnswer(client.sdp("active"));
  const pending = ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("never")) });
  const [reason] = await gone;
  assert.match(reason, /no MSRP connection within 200 ms/);
  assert.equal(await pending, 481);
  assert.deepEqual(l.resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
  assert.equal(l.share.table.size, 0);
});

test("close() frees the session, its connection, timer and table entry; idempotent; an in-flight send resolves 481", T, async () => {
  const { l, client, ep } = await upSession("passive");
  const live = l.resources.snapshot();
  assert.equal(live.openSockets, 1);
  assert.equal(live.sessions, 1);
  assert.equal(l.share.table.size, 1);
  client.session?.on("message", (_m, hold) => hold(new Promise<number>(() => {})));
  const inFlight = ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("in flight")) });
  const queued = ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("queued")) });
  await client.waitForMessages(1);
  const closed: string[] = [];
  ep.on("closed", (r) => closed.push(r));
  ep.close("delivery done");
  ep.close("again");
  assert.deepEqual(closed, ["delivery done"]);
  assert.deepEqual(await Promise.all([inFlight, queued]), [481, 481]);
  assert.equal(ep.state, "closed");
  await waitFor(() => l.resources.snapshot().openSockets === 0, 5000, 5, "PF sockets closed");
  assert.deepEqual(l.resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
  assert.equal(l.share.table.size, 0);
  assert.equal(l.share.pool.size, 0);
  ep.applyAnswer(client.sdp("passive")); // after close: ignored, no throw
  await waitFor(() => client.session?.state === "closed", 5000, 5, "the client's session saw the connection close");
});

test("close() before the answer: the waiting session leaves the listener's table", T, async () => {
  const l = await listener();
  const { endpoint: ep } = await endpoint(l);
  assert.equal(l.resources.snapshot().sessions, 1);
  ep.close("INVITE failed");
  assert.equal(l.share.table.size, 0);
  assert.deepEqual(l.resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
});

test(
  "RJ-1: answering the client's own offer (its re-join): actpass -> the PF answers passive and the client connects; passive -> the PF connects and binds; the answer keeps the offer's media attributes with the PF's path",
  T,
  async () => {
    const l = await listener();
    for (const offered of ["actpass", "passive"] as const) {
      const client = await peer();
      const { endpoint: ep, answerSdp } = await DeliveryEndpoint.answer({
        sessionKey: `rj-${newSessionId()}@pf.example.net`,
        offerSdp: client.sdp(offered),
        msrp: l.share,
      });
      cleanups.push(() => ep.close("test over"));
      const up = event(ep, "up");
      const pfPath = sdpPath(answerSdp);
      assert.equal(pfPath, `msrp://127.0.0.1:${l.share.port}/${ep.localUri.sessionId};tcp`);
      assert.match(answerSdp, /^a=accept-wrapped-types:text\/plain message\/imdn\+xml application\/im-iscomposing\+xml$/m);
      assert.match(answerSdp, /^a=sendrecv$/m);
      if (offered === "actpass") {
        assert.equal(sdpSetup(answerSdp), "passive");
        await client.open(pfPath, "active");
      } else {
        assert.equal(sdpSetup(answerSdp), "active");
        await client.open(pfPath, "passive");
      }
      await up;
      assert.equal(ep.state, "up");
      assert.equal(await ep.send({ contentType: "message/cpim", body: Buffer.from(wrapCpim("missed")) }), 200, offered);
      assert.equal(client.received.length, 1);
    }
    const isBadSdp = (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_BAD_SDP";
    const client = await peer();
    await assert.rejects(DeliveryEndpoint.answer({ sessionKey: "x", offerSdp: client.sdp("holdconn"), msrp: l.share }), isBadSdp);
    await assert.rejects(
      DeliveryEndpoint.answer({ sessionKey: "x", offerSdp: "v=0\r\nm=audio 4000 RTP/AVP 0\r\n", msrp: l.share }),
      isBadSdp,
    );
  },
);
