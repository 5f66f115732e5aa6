// SDP anchoring, sidecar side: ObserveSession's anchor_media,
// AnchorMedia / ReportMediaAnswer through the ParticipatingFunction (and over
// gRPC for the error trailers Kamailio reads), and the BYE-B6/B8/B10 seams.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { ServiceError } from "@grpc/grpc-js";
import { buildConfig, type Config } from "../../../src/config/config.js";
import { CpmError } from "../../../src/errors/catalogue.js";
import { PfClient } from "../../../src/grpc/client.js";
import { type RunningServer, startGrpcServer } from "../../../src/grpc/server.js";
import { silentLogger } from "../../../src/log/logger.js";
import { type MediaPlane, NoMediaPlane } from "../../../src/media/media-plane.js";
import { PromMetrics } from "../../../src/metrics/metrics.js";
import { MsrpResources } from "../../../src/msrp/resources.js";
import { ParticipatingFunction } from "../../../src/pf/participating-function.js";
import { SessionRegistry } from "../../../src/session/registry.js";
import { envelope, storesEverything, useTempDir } from "../../fixtures/pf.js";
import { bye, focusAnswer, inviteFromClient, inviteFromFocus, SDP_OFFER } from "../../fixtures/sip.js";
import { capturedLog } from "../../fixtures/sip-ua.js";
import { StubMediaPlane } from "../../fixtures/stub-media-plane.js";
import { parseExposition, value } from "../../harness/prometheus.js";

const store = storesEverything;

const tempDir = useTempDir("cpm-pf-media-");

let n = 0;
async function pfWith(media: MediaPlane, opts: { anchorMedia?: boolean; mode?: "b2bua" | "proxy"; allowOfflineStorage?: boolean } = {}) {
  const cfg: Config = buildConfig({ pf: { mode: opts.mode ?? "b2bua", allowOfflineStorage: opts.allowOfflineStorage ?? false } });
  const sessions = new SessionRegistry(join(tempDir(), `s${n++}`), cfg.session, silentLogger());
  await sessions.load();
  return new ParticipatingFunction(cfg, sessions, store, media, silentLogger(), { anchorMedia: opts.anchorMedia ?? true });
}

const env = envelope;

function clientAnswer(callId: string, sdp: string): Buffer {
  return Buffer.from(
    [
      "SIP/2.0 200 OK",
      "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1",
      "From: <sip:focus@cf.example.net>;tag=cf-tag",
      "To: <tel:+16135551200>;tag=client-tag",
      `Call-ID: ${callId}`,
      "CSeq: 1 INVITE",
      "Contact: <sip:client@127.0.0.1:5080>",
      "Content-Type: application/sdp",
      `Content-Length: ${Buffer.byteLength(sdp)}`,
      "",
      sdp,
    ].join("\r\n"),
  );
}

const CLIENT_SDP = SDP_OFFER.replace("a=path:msrp://127.0.0.1:7394/s1;tcp", "a=path:msrp://127.0.0.1:7395/ue1;tcp").replace(
  "a=sendrecv",
  "a=setup:active\r\na=sendrecv",
);

describe("SDP anchoring: ObserveSession anchor_media", () => {
  test("MEDIA-ANCHOR: the focus' INVITE, PF as B2BUA, media on -> anchor", async () => {
    const pf = await pfWith(new StubMediaPlane());
    assert.equal((await pf.observe(env(inviteFromFocus({ callId: "a1" })))).anchorMedia, true);
  });
  test("MEDIA-ANCHOR: media.enabled=false, or the PF is a proxy -> no anchoring", async () => {
    assert.equal((await (await pfWith(new NoMediaPlane(), { anchorMedia: false })).observe(env(inviteFromFocus()))).anchorMedia, false);
    assert.equal((await (await pfWith(new StubMediaPlane(), { mode: "proxy" })).observe(env(inviteFromFocus()))).anchorMedia, false);
  });
  test("MEDIA-ANCHOR: a NOTIFY or a non-CPM INVITE is never anchored", async () => {
    const pf = await pfWith(new StubMediaPlane());
    const plain = Buffer.from(
      inviteFromFocus()
        .toString("latin1")
        .replace(/^(Conversation|Contribution)-ID:.*\r\n/gm, ""),
      "latin1",
    );
    assert.equal((await pf.observe(env(plain))).anchorMedia, false);
  });
});

describe("SDP anchoring: AnchorMedia / ReportMediaAnswer", () => {
  test("MEDIA-ANCHOR: the multipart INVITE keeps its resource-list; its SDP part points at the PF", async () => {
    const media = new StubMediaPlane({ port: 41000 });
    const pf = await pfWith(media);
    const invite = inviteFromFocus({ callId: "a2", conversationId: "conv-a2" });
    await pf.observe(env(invite));
    const r = await pf.anchorMedia(env(invite));
    assert.equal(r.sessionKey, "a2");
    assert.equal(r.clientContentType, "multipart/mixed;boundary=cpm-boundary");
    const body = r.clientBody.toString("utf8");
    assert.match(body, /^--cpm-boundary\r\nContent-Type: application\/sdp\r\n\r\nv=0\r\n/);
    assert.match(body, /\r\na=path:msrp:\/\/127\.0\.0\.1:41001\/stub-client-leg;tcp\r\n/);
    assert.match(body, /\r\na=accept-wrapped-types:text\/plain message\/imdn\+xml\r\n/);
    assert.match(body, /<entry uri="tel:\+16135551211" cp:copyControl="to"\/>/);
    assert.match(body, /--cpm-boundary--\r\n$/);
    assert.doesNotMatch(body, /:7394\/s1/, "the CF's path does not go to the client");
    assert.deepEqual(r.cfLeg, {
      host: "127.0.0.1",
      port: 41000,
      path: "msrp://127.0.0.1:41000/stub-cf-leg;tcp",
      setup: "passive",
      tls: false,
    });
    // (the fixture offer has no a=setup: the offerer is active, RFC 6135 4.1)
    const ref = media.offers[0]?.session;
    assert.equal(ref?.conversationId, "conv-a2");
    assert.equal(ref?.contributionId, "contrib-1");
    assert.equal(ref?.focus, "sip:focus-7f3a@cf.example.net;transport=udp");
    assert.equal(ref?.servedUser, "tel:+16135551200");
    assert.equal(media.offers[0]?.offerSdp, SDP_OFFER);
  });

  test("MEDIA-ANCHOR: AnchorMedia observes the INVITE itself when ObserveSession did not run", async () => {
    const pf = await pfWith(new StubMediaPlane());
    const r = await pf.anchorMedia(env(inviteFromFocus({ callId: "a3" })));
    assert.equal(r.sessionKey, "a3");
  });

  test("BYE-B8: the served user's <allow-offline-storage> (pf.allowOfflineStorage) reaches the media plane, which records on it", async () => {
    for (const allow of [false, true]) {
      const media = new StubMediaPlane();
      const pf = await pfWith(media, { allowOfflineStorage: allow });
      await pf.anchorMedia(env(inviteFromFocus({ callId: `aos-${allow}` })));
      assert.equal(media.offers[0]?.allowOfflineStorage, allow);
    }
  });

  test("MEDIA-ANCHOR: no SDP -> CPM_ERR_BAD_SDP; media off -> CPM_ERR_MEDIA_DISABLED (typed, not a plain Error)", async () => {
    const pf = await pfWith(new StubMediaPlane());
    const noSdp = Buffer.from(
      inviteFromFocus({ callId: "a4" }).toString("latin1").replace("Content-Type: application/sdp", "Content-Type: text/plain"),
      "latin1",
    );
    await assert.rejects(
      pf.anchorMedia(env(noSdp)),
      (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_BAD_SDP" && e.sipStatus === 488,
    );
    const off = await pfWith(new NoMediaPlane(), { anchorMedia: false });
    await assert.rejects(
      off.anchorMedia(env(inviteFromFocus())),
      (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_MEDIA_DISABLED",
    );
    await assert.rejects(new NoMediaPlane().anchorOffer(), (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_MEDIA_DISABLED");
  });

  test("BYE-B7: a further device's 2xx with no executor for its dialog (no SIP UA) is an error: logged with the action's kind, counted, exported as cpmpf_unexecuted_actions_total", async () => {
    const media = new StubMediaPlane();
    const { log, lines } = capturedLog();
    const cfg: Config = buildConfig({ pf: { mode: "b2bua" } });
    const sessions = new SessionRegistry(join(tempDir(), `s${n++}`), cfg.session, silentLogger());
    await sessions.load();
    const pf = new ParticipatingFunction(cfg, sessions, store, media, log, { anchorMedia: true });
    await pf.anchorMedia(env(inviteFromFocus({ callId: "fx1" })));
    assert.equal(await pf.mediaAnswer("fx1", env(clientAnswer("fx1", CLIENT_SDP))), true);
    const second = Buffer.from(clientAnswer("fx1", CLIENT_SDP).toString("latin1").replace("tag=client-tag", "tag=tablet-tag"), "latin1");
    await pf.mediaAnswer("fx1", env(second), { forked: true });
    assert.deepEqual([...pf.unexecutedActions], [["ackDevice", 1]]);
    assert.ok(lines.some((l) => l.level === "error" && l.message === "action with no executor" && l.action === "ackDevice"));
    const prom = new PromMetrics({ version: "t" });
    prom.setSampler(() => ({
      recordsByLifecycle: {},
      anchoredSessions: 0,
      msrpConnections: { accepted: 0, opened: 0 },
      msrpTraffic: new MsrpResources().traffic,
      spoolDepth: 0,
      recordWritesHeld: 0,
      failsafeReplays: { replayed: 0, quarantined: 0, retried: 0 },
      deferredSessions: 0,
      unexecutedActions: [{ component: "pf", counts: pf.unexecutedActions }],
    }));
    const scrape = parseExposition(await prom.registry.metrics());
    assert.equal(value(scrape, "cpmpf_unexecuted_actions_total", { component: "pf", action: "ackDevice" }), 1);
  });

  test("MEDIA-ANCHOR: the client's 2xx answer reaches MediaPlane.anchorAnswer with its SDP", async () => {
    const media = new StubMediaPlane();
    const pf = await pfWith(media);
    await pf.anchorMedia(env(inviteFromFocus({ callId: "a5" })));
    assert.equal(await pf.mediaAnswer("a5", env(clientAnswer("a5", CLIENT_SDP))), true);
    const call = media.calls.find((c) => c.op === "anchorAnswer");
    assert.equal(call?.sessionKey, "a5");
    assert.equal(call?.sdp, CLIENT_SDP);
  });
});

describe("media plane: BYE-B6 / BYE-B8 / BYE-B10 seams in the PF", () => {
  test("BYE-B6: a network BYE in B2BUA mode refuses the client's media; BYE-B8 BYE-B10: the client's 200 records, then releases", async () => {
    const media = new StubMediaPlane();
    const pf = await pfWith(media);
    await pf.observe(env(inviteFromFocus({ callId: "b1" })));
    await pf.anchorMedia(env(inviteFromFocus({ callId: "b1" })));
    const d = await pf.handleBye(env(bye(["Reason: SIP;cause=200"], { callId: "b1" })));
    assert.equal(d.mode, "b2bua");
    assert.deepEqual(
      media.calls.filter((c) => c.sessionKey === "b1").map((c) => c.op),
      ["anchorOffer", "refuseClientMedia"],
    );
    assert.equal(await pf.byeOutcome("b1", 200), true);
    assert.deepEqual(
      media.calls.filter((c) => c.sessionKey === "b1").map((c) => c.op),
      ["anchorOffer", "refuseClientMedia", "recordSession", "release"],
    );
  });

  test("BYE-B10: media is released even when recording fails; no recording without a 2xx (BYE-B8)", async () => {
    const media = new StubMediaPlane();
    media.recordSession = async () => {
      throw new Error("store exploded");
    };
    const pf = await pfWith(media);
    await pf.observe(env(inviteFromFocus({ callId: "b2" })));
    assert.equal(await pf.byeOutcome("b2", 200), true);
    assert.ok(media.calls.some((c) => c.op === "release" && c.sessionKey === "b2"));
    await pf.observe(env(inviteFromFocus({ callId: "b3" })));
    await pf.byeOutcome("b3", 0);
    assert.deepEqual(
      media.calls.filter((c) => c.sessionKey === "b3").map((c) => c.op),
      ["release"],
    );
  });
});

describe("SDP anchoring: an anchored INVITE without a session", () => {
  test("BYE-B10: a non-2xx final answer (or none) releases the media of the INVITE and forgets the session; a 2xx does not", async () => {
    const media = new StubMediaPlane();
    const pf = await pfWith(media);
    await pf.anchorMedia(env(inviteFromFocus({ callId: "i1" })));
    assert.equal(await pf.inviteOutcome("i1", 200), false);
    assert.equal(await pf.inviteOutcome("i1", 486), true);
    assert.deepEqual(
      media.calls.filter((c) => c.sessionKey === "i1").map((c) => c.op),
      ["anchorOffer", "release"],
    );
    const d = await pf.handleBye(env(bye([], { callId: "i1" })));
    assert.equal(d.mode, "proxy", "the session is forgotten: unknownSessionMode applies");
  });
});

describe("SDP anchoring: client-initiated group chat (the served user's client INVITEs the CF)", () => {
  test("MEDIA-ANCHOR: the client's initial INVITE of a CPM session, PF as B2BUA, media on -> anchor; proxy, media off, re-INVITE or non-CPM -> no", async () => {
    assert.equal((await (await pfWith(new StubMediaPlane())).observe(env(inviteFromClient({ callId: "c1" })))).anchorMedia, true);
    assert.equal((await (await pfWith(new StubMediaPlane(), { mode: "proxy" })).observe(env(inviteFromClient()))).anchorMedia, false);
    assert.equal((await (await pfWith(new NoMediaPlane(), { anchorMedia: false })).observe(env(inviteFromClient()))).anchorMedia, false);
    const pf = await pfWith(new StubMediaPlane());
    assert.equal((await pf.observe(env(inviteFromClient({ callId: "c2", toTag: "cf-tag" })))).anchorMedia, false, "in-dialog");
    const plain = Buffer.from(
      inviteFromClient()
        .toString("latin1")
        .replace(/^(Conversation|Contribution)-ID:.*\r\n/gm, ""),
      "latin1",
    );
    assert.equal((await pf.observe(env(plain))).anchorMedia, false);
  });

  test("MEDIA-ANCHOR: AnchorMedia with the client's offer: offerer client, the CF gets the PF's CF-facing leg offered actpass, the client's 2xx the client-facing leg", async () => {
    const media = new StubMediaPlane({ port: 42000 });
    const pf = await pfWith(media);
    const invite = inviteFromClient({ callId: "c3", conversationId: "conv-c3" });
    await pf.observe(env(invite));
    const r = await pf.anchorMedia(env(invite));
    assert.equal(media.offers[0]?.offerer, "client");
    const body = r.clientBody.toString("utf8");
    assert.match(body, /\r\na=path:msrp:\/\/127\.0\.0\.1:42000\/stub-cf-leg;tcp\r\n/, "towards the CF: the CF-facing leg");
    assert.match(body, /\r\na=setup:actpass\r\n/);
    assert.match(body, /<entry uri="tel:\+16135551211" cp:copyControl="to"\/>/, "the resource-list goes on");
    assert.doesNotMatch(body, /:7394\/s1/, "the client's path does not go to the CF");
    assert.deepEqual(r.cfLeg, {
      host: "127.0.0.1",
      port: 42001,
      path: "msrp://127.0.0.1:42001/stub-client-leg;tcp",
      setup: "active",
      tls: false,
    });
    const ref = media.offers[0]?.session;
    assert.equal(ref?.servedUser, "tel:+16135551200");
    assert.equal(ref?.conversationId, "conv-c3");
    assert.equal(ref?.focus, "sip:chat-factory@cf.example.net", "the conference factory until the 2xx names the focus");
    // the focus' INVITE is still anchored as before
    await pf.anchorMedia(env(inviteFromFocus({ callId: "c3f" })));
    assert.equal(media.offers[1]?.offerer, "network");
  });

  test("MEDIA-ANCHOR BYE-B6 BYE-B8 BYE-B10: the CF's 2xx reaches anchorAnswer with the focus; a later BYE from the CF is network, one from the client is client", async () => {
    const media = new StubMediaPlane();
    const pf = await pfWith(media);
    await pf.observe(env(inviteFromClient({ callId: "c4" })));
    await pf.anchorMedia(env(inviteFromClient({ callId: "c4" })));
    // ReportMediaAnswer may come before the 2xx's ObserveSession: it learns the focus and the CF's tag too
    assert.equal(await pf.mediaAnswer("c4", env(focusAnswer({ callId: "c4", cfTag: "cf-c4" }))), true);
    const answer = media.calls.find((c) => c.op === "anchorAnswer");
    assert.equal(answer?.focus, "sip:focus-c1@cf.example.net");
    assert.match(answer?.sdp ?? "", /a=setup:passive/);
    // the 2xx's ObserveSession afterwards changes nothing
    assert.equal((await pf.observe(env(focusAnswer({ callId: "c4", cfTag: "cf-c4" })))).updated, false);
    const fromClient = await pf.handleBye(env(bye([], { callId: "c4", fromTag: "client-tag" })));
    assert.equal(fromClient.side, "client");
    const d = await pf.handleBye(env(bye(["Reason: SIP;cause=200"], { callId: "c4", fromTag: "cf-c4" })));
    assert.equal(d.side, "network");
    assert.equal(d.mode, "b2bua");
    assert.equal(await pf.byeOutcome("c4", 200), true);
    assert.deepEqual(
      media.calls.filter((c) => c.sessionKey === "c4").map((c) => c.op),
      ["anchorOffer", "anchorAnswer", "refuseClientMedia", "recordSession", "release"],
    );
  });

  test("MEDIA-ANCHOR: the 2xx's ObserveSession alone (before ReportMediaAnswer) also makes the CF's BYE a network BYE", async () => {
    const pf = await pfWith(new StubMediaPlane());
    await pf.anchorMedia(env(inviteFromClient({ callId: "c5" })));
    assert.equal((await pf.observe(env(focusAnswer({ callId: "c5", cfTag: "cf-c5" })))).updated, true);
    await pf.mediaAnswer("c5", env(focusAnswer({ callId: "c5", cfTag: "cf-c5" })));
    const d = await pf.handleBye(env(bye([], { callId: "c5", fromTag: "cf-c5" })));
    assert.equal(d.side, "network");
    assert.equal(d.mode, "b2bua");
  });
});

describe("SDP anchoring over gRPC: what the Kamailio bridge reads", () => {
  let server: RunningServer;
  let client: PfClient;
  before(async () => {
    const pf = await pfWith(new StubMediaPlane({ mode: "bad-sdp" }));
    server = await startGrpcServer(pf, { host: "127.0.0.1", port: 0 }, silentLogger());
    client = new PfClient(`127.0.0.1:${server.port}`);
  });
  after(async () => {
    client.close();
    await server.shutdown();
  });

  test("MEDIA-ANCHOR: ObserveSession answers anchor_media", async () => {
    const r = await client.observeSession({ message: { raw: inviteFromFocus({ callId: "g1" }), source: "x" } });
    assert.equal(r.anchorMedia, true);
  });

  test("MEDIA-ANCHOR: CPM_ERR_BAD_SDP -> INVALID_ARGUMENT with trailers cpm-error-code and cpm-sip-status: 488", async () => {
    await assert.rejects(client.anchorMedia({ invite: { raw: inviteFromFocus({ callId: "g2" }), source: "x" } }), (e: ServiceError) => {
      assert.equal(e.code, 3);
      assert.deepEqual(e.metadata.get("cpm-sip-status"), ["488"]);
      assert.deepEqual(e.metadata.get("cpm-error-code"), ["CPM_ERR_BAD_SDP"]);
      return true;
    });
  });
});
