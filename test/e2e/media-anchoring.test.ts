// Media plane "SDP anchoring", end to end: Kamailio (kamailio/kamailio.cfg with
// the cpm-pf plugin) hands the CF's INVITE to AnchorMedia, replaces its body
// with the sidecar's, rewrites the client's 2xx SDP towards the CF with the
// CF-facing leg kept on the transaction (no sidecar call in a SIP worker),
// and reports the client's answer (ReportMediaAnswer) in the background.
// SIPp plays the CF (cf-invite-msrp.xml) and the client (client-uas-msrp.xml);
// the assertions read what went over the wire.
//
// Part 1 runs the sidecar with a stub media plane (test/harness/
// stub-media-sidecar.ts): the SIP side, the 488 and the fail-safe.
// Part 2 runs the real sidecar (media.enabled, MsrpMediaPlane, DeferredQueue,
// the 8.5.2 recorder) with a real Dovecot; MSRP test peers (test/harness/
// msrp-peer.ts) play the CF and the client over loopback TCP.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { defaults } from "../../src/config/config.js";
import { newSessionId, newTransactionId } from "../../src/msrp/ids.js";
import { chatCpim, imdnCpim } from "../fixtures/cpim.js";
import { anchoredChatCall, clientInitiatedChatCall, msrpMedia } from "../harness/anchored-chat.js";
import { type DovecotInstance, startDovecot } from "../harness/dovecot.js";
import { folderMessages, sharedDeferredFolder, storeEnv } from "../harness/group-chat.js";
import { type KamailioInstance, startKamailio } from "../harness/kamailio.js";
import { MsrpPeer, RawMsrpSocket } from "../harness/msrp-peer.js";
import { freePort } from "../harness/ports.js";
import { type SidecarInstance, startSidecar } from "../harness/sidecar.js";
import { startSipp } from "../harness/sipp.js";
import { STUB_MEDIA_SIDECAR } from "../harness/stub-media-sidecar.js";
import { waitFor } from "../harness/wait.js";

const FUNCTIONAL_DEADLINE_MS = 1000;
const STUB_PORT = 40000;

function stubLines(sc: SidecarInstance, op: string, callId: string) {
  return sc.logLines().filter((l) => l.msg === "stub media" && l.op === op && l.callId === callId);
}

/**
 * Dovecot, the sidecar with the stub media plane (`env`: STUB_MEDIA_*) and
 * Kamailio, started before the enclosing describe's tests and stopped after.
 */
function stubMediaStack(env: Record<string, string>, deadlineMs = FUNCTIONAL_DEADLINE_MS) {
  const stack: { dovecot?: DovecotInstance; sidecar?: SidecarInstance; kamailio?: KamailioInstance } = {};
  before(async () => {
    stack.dovecot = await startDovecot();
    stack.sidecar = await startSidecar({ ...storeEnv(stack.dovecot, "b2bua"), ...env }, { entry: STUB_MEDIA_SIDECAR });
    stack.kamailio = await startKamailio({ grpcTarget: stack.sidecar.target, deadlineMs });
  });
  after(async () => {
    await stack.kamailio?.stop();
    await stack.sidecar?.stop();
    await stack.dovecot?.stop();
  });
  return {
    get kamailio() {
      return stack.kamailio as KamailioInstance;
    },
    get sidecar() {
      return stack.sidecar as SidecarInstance;
    },
  };
}

describe("SDP anchoring through Kamailio (stub media plane)", () => {
  const stack = stubMediaStack({ STUB_MEDIA_MODE: "ok", STUB_MEDIA_PORT: String(STUB_PORT) });

  test("SHAPE-1 MEDIA-ANCHOR: the client gets the sidecar's SDP, the CF gets the CF-facing leg, the client's answer reaches the sidecar", async () => {
    const k = stack.kamailio;
    const sc = stack.sidecar;
    const [cfMsrpPort, clientMsrpPort] = [await freePort(), await freePort()];
    const call = await anchoredChatCall(k, {
      cfMsrpPath: `msrp://127.0.0.1:${cfMsrpPort}/cf1;tcp`,
      clientMsrpPath: `msrp://127.0.0.1:${clientMsrpPort}/ue1;tcp`,
      during: async ({ callId }) => {
        await waitFor(() => stubLines(sc, "anchorAnswer", callId).length > 0, 5000, 20, "ReportMediaAnswer in the sidecar");
      },
    });
    // INVITE towards the client: multipart kept, SDP part anchored on the sidecar's client-facing leg
    assert.match(call.clientInvite.headers.get("content-type")?.[0] ?? "", /^multipart\/mixed;\s*boundary=cpm-boundary-1/);
    assert.match(call.clientInvite.body, /<entry uri="tel:\+16135551211"/, "resource-list part kept");
    const toClient = msrpMedia(call.clientInvite.body);
    assert.equal(toClient.port, STUB_PORT + 1);
    assert.equal(toClient.path, `msrp://127.0.0.1:${STUB_PORT + 1}/stub-client-leg;tcp`);
    assert.equal(toClient.setup, "actpass");
    assert.equal(toClient.acceptTypes, "message/cpim application/im-iscomposing+xml");
    assert.equal(toClient.acceptWrapped, "text/plain message/imdn+xml", "message/imdn+xml kept");
    assert.doesNotMatch(call.clientInvite.body, new RegExp(`:${cfMsrpPort}/`), "the CF's path does not reach the client");
    // 200 OK towards the CF: the CF-facing leg, the client's accept-types
    assert.deepEqual(call.cf200.headers.get("content-type"), ["application/sdp"], "one Content-Type after set_body");
    const toCf = msrpMedia(call.cf200.body);
    assert.equal(toCf.port, STUB_PORT);
    assert.equal(toCf.path, `msrp://127.0.0.1:${STUB_PORT}/stub-cf-leg;tcp`);
    assert.equal(toCf.setup, "active", "RFC 6135: answer to actpass");
    assert.deepEqual(toCf.c, ["c=IN IP4 127.0.0.1"]);
    assert.equal(toCf.acceptWrapped, "text/plain message/imdn+xml");
    assert.doesNotMatch(call.cf200.body, new RegExp(`:${clientMsrpPort}/`), "the client's path does not reach the CF");
    assert.equal(
      Number(call.cf200.headers.get("content-length")?.[0]),
      // the trace parser drops the SDP's final CRLF
      Buffer.byteLength(`${call.cf200.body.replace(/\n/g, "\r\n")}\r\n`),
      "Content-Length of the rewritten 200 OK",
    );
    // the sidecar saw the CF's offer and the client's own answer
    const offer = stubLines(sc, "anchorOffer", call.callId);
    assert.equal(offer.length, 1);
    const answer = stubLines(sc, "anchorAnswer", call.callId);
    assert.equal(answer.length, 1, "reported once");
    assert.equal(msrpMedia(String(answer[0]?.sdp)).path, `msrp://127.0.0.1:${clientMsrpPort}/ue1;tcp`);
    // BYE-B6 seam: HandleBye told the media plane; BYE-B8/B10 seams after the client's 200
    await waitFor(() => stubLines(sc, "release", call.callId).length > 0, 3000, 20, "release after the client's 200 OK");
    assert.equal(stubLines(sc, "refuseClientMedia", call.callId).length, 1, "BYE-B6: refuseClientMedia on the network BYE");
    assert.equal(stubLines(sc, "recordSession", call.callId).length, 1, "BYE-B8: recordSession on the client's 200 OK");
    assert.equal(await k.stat("cpm_pf_anchored"), 1);
    assert.equal(await k.stat("cpm_pf_anchor_failsafe"), 0);
    assert.doesNotMatch(k.logs(), /\b(ERROR|CRITICAL|ALERT|BUG):/);
  });
});

describe("SDP anchoring: an anchored INVITE the client declines (stub media plane)", () => {
  const stack = stubMediaStack({ STUB_MEDIA_MODE: "ok" });

  test("MEDIA-ANCHOR BYE-B10: a 486 from the client reaches the CF and the media allocated for the INVITE is released", async () => {
    const k = stack.kamailio;
    const sc = stack.sidecar;
    const client = await startSipp({ scenario: "client-uas-reject.xml", timeoutS: 5 });
    try {
      const cf = await startSipp({
        scenario: "cf-invite-msrp.xml",
        remote: k.address,
        timeoutS: 5,
        keys: {
          client_port: String(client.port),
          conversation_id: "conv-declined",
          contribution_id: "contrib-declined",
          cf_msrp_port: "7394",
          cf_msrp_path: "msrp://127.0.0.1:7394/cf1;tcp",
          cf_setup: "actpass",
          bye_headers: "",
          served_user: "tel:+16135551200",
          more_participants: "",
        },
      });
      const callId = `1-${cf.pid}@127.0.0.1`;
      const r = await cf.done;
      const got = r.messages.filter((m) => m.direction === "received" && m.status !== undefined).map((m) => m.status);
      assert.ok(got.includes(486), `CF got ${JSON.stringify(got)}`);
      await waitFor(() => stubLines(sc, "release", callId).length > 0, 3000, 20, "ReportInviteOutcome -> release");
      assert.equal(stubLines(sc, "anchorAnswer", callId).length, 0);
      assert.equal(await k.stat("cpm_pf_anchored"), 1);
    } finally {
      await client.stop();
    }
  });
});

describe("SDP anchoring: an offer the sidecar cannot anchor (CPM_ERR_BAD_SDP) -> 488", () => {
  const stack = stubMediaStack({ STUB_MEDIA_MODE: "bad-sdp" });

  test("MEDIA-ANCHOR: CPM_ERR_BAD_SDP (gRPC trailer cpm-sip-status 488) -> the CF gets 488, the client nothing", async () => {
    const k = stack.kamailio;
    const client = await startSipp({
      scenario: "client-uas-msrp.xml",
      keys: { client_msrp_port: "9", client_msrp_path: "msrp://127.0.0.1:9/ue1;tcp", contact_params: "" },
      timeoutS: 3,
    });
    try {
      const cf = await startSipp({
        scenario: "cf-invite-msrp.xml",
        remote: k.address,
        timeoutS: 5,
        keys: {
          client_port: String(client.port),
          conversation_id: "c1",
          contribution_id: "c2",
          cf_msrp_port: "7394",
          cf_msrp_path: "msrp://127.0.0.1:7394/cf1;tcp",
          cf_setup: "actpass",
          bye_headers: "",
          served_user: "tel:+16135551200",
          more_participants: "",
        },
      });
      const r = await cf.done;
      const got = r.messages.filter((m) => m.direction === "received" && m.status !== undefined).map((m) => m.status);
      assert.ok(got.includes(488), `CF got ${JSON.stringify(got)}\n${r.output}`);
      const cl = await client.stop();
      assert.equal(cl.messages.filter((m) => m.method === "INVITE").length, 0, "the INVITE never reached the client");
      assert.equal(await k.stat("cpm_pf_anchor_rejected"), 1);
    } finally {
      await client.stop();
    }
  });
});

describe("SDP anchoring fail-safe: AnchorMedia misses its deadline -> relayed un-anchored", () => {
  const stack = stubMediaStack({ STUB_MEDIA_MODE: "slow", STUB_MEDIA_DELAY_MS: "1500" }, 300);

  test("MEDIA-ANCHOR fail-safe: the client gets the CF's own SDP, the CF the client's, counted in cpm_pf_anchor_failsafe", async () => {
    const k = stack.kamailio;
    const [cfMsrpPort, clientMsrpPort] = [await freePort(), await freePort()];
    const call = await anchoredChatCall(k, {
      cfMsrpPath: `msrp://127.0.0.1:${cfMsrpPort}/cf1;tcp`,
      clientMsrpPath: `msrp://127.0.0.1:${clientMsrpPort}/ue1;tcp`,
    });
    assert.equal(msrpMedia(call.clientInvite.body).path, `msrp://127.0.0.1:${cfMsrpPort}/cf1;tcp`);
    assert.equal(msrpMedia(call.cf200.body).path, `msrp://127.0.0.1:${clientMsrpPort}/ue1;tcp`);
    assert.equal(await k.stat("cpm_pf_anchor_failsafe"), 1);
    assert.equal(await k.stat("cpm_pf_anchored"), 0);
  });
});

/** TCP connections in state ESTABLISHED whose local port is `port` (the sidecar's MSRP listener), from /proc/net/tcp. */
async function establishedOn(port: number): Promise<number> {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const table = await readFile("/proc/net/tcp", "utf8");
  return table
    .split("\n")
    .slice(1)
    .filter((line) => {
      const f = line.trim().split(/\s+/);
      return f[1]?.endsWith(`:${hex}`) && f[3] === "01";
    }).length;
}

function logged(sc: SidecarInstance, msg: string, callId: string): Record<string, unknown> | undefined {
  return sc.logLines().find((l) => l.msg === msg && l.callId === callId);
}

const text = (b: Buffer) => b.toString("utf8");

/** A SEND frame written by hand (RFC 4975 7.1): start line, header lines as given, optional body, end-line with `$`. */
function sendFrame(tid: string, headers: string[], body?: Buffer | string, endLine = `-------${tid}$`): Buffer {
  const head = Buffer.from([`MSRP ${tid} SEND`, ...headers].join("\r\n"));
  if (body === undefined) return Buffer.concat([head, Buffer.from(`\r\n${endLine}\r\n`)]);
  return Buffer.concat([head, Buffer.from("\r\n\r\n"), Buffer.from(body), Buffer.from(`\r\n${endLine}\r\n`)]);
}

/** The body of a stored RFC 5322 object (after the header block). */
const objectBody = (source: string) => source.slice(source.indexOf("\r\n\r\n") + 4);

describe("media plane MSRP through the anchored PF (real sidecar media plane, Dovecot, MSRP peers)", () => {
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;
  let mediaPort = 0;
  const peers: MsrpPeer[] = [];
  const raws: RawMsrpSocket[] = [];
  const byeCompleted = (sc: SidecarInstance, callId: string) =>
    waitFor(() => logged(sc, "BYE completed", callId), 5000, 20, "BYE completed");
  // BYE-B10: no MSRP connection left at the sidecar's listener
  const noMsrpConnectionLeft = () =>
    waitFor(async () => (await establishedOn(mediaPort)) === 0, 3000, 20, "no MSRP connection left at the sidecar");

  before(async () => {
    dovecot = await startDovecot();
    mediaPort = await freePort();
    sidecar = await startSidecar({
      ...storeEnv(dovecot, "b2bua"),
      CPM_PF__MEDIA__ENABLED: "true",
      CPM_PF__MEDIA__HOST: "127.0.0.1",
      CPM_PF__MEDIA__PORT: String(mediaPort),
      CPM_PF__MEDIA__RECORDING: "true",
      CPM_PF__LOG__LEVEL: "debug",
    });
    kamailio = await startKamailio({ grpcTarget: sidecar.target, deadlineMs: FUNCTIONAL_DEADLINE_MS });
  });
  after(async () => {
    for (const p of peers) await p.close().catch(() => {});
    for (const r of raws) r.destroy();
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
  });

  async function peer(): Promise<MsrpPeer> {
    const p = await MsrpPeer.start();
    peers.push(p);
    return p;
  }

  /** A client on its own bare TCP connection to the sidecar's MSRP listener (hand-written frames, malformed ones included). */
  async function rawClient(): Promise<RawMsrpSocket> {
    const r = await RawMsrpSocket.connect(mediaPort);
    raws.push(r);
    return r;
  }

  test("MEDIA-ANCHOR MEDIA-RELAY DEFERRED BYE-B8 BYE-B10: CF messages reach the client in order, go to the deferred folder in order while the client is gone, the session is recorded and its media released", async (t) => {
    const k = kamailio as KamailioInstance;
    const sc = sidecar as SidecarInstance;
    const d = dovecot as DovecotInstance;
    const cf = await peer();
    const ue = await peer();
    assert.equal(await establishedOn(mediaPort), 0, "no MSRP connection before the session");
    let relayed: string[] = [];
    const call = await anchoredChatCall(k, {
      cfMsrpPath: cf.path,
      cfSetup: "active",
      clientMsrpPath: ue.path,
      during: async ({ callId, conversationId, contributionId, clientInvite, cf200 }) => {
        // on the wire: both legs point at the sidecar's MSRP listener
        const toClient = msrpMedia(clientInvite.body);
        const toCf = msrpMedia(cf200.body);
        assert.equal(toClient.port, mediaPort);
        assert.match(toClient.path, new RegExp(`^msrp://127\\.0\\.0\\.1:${mediaPort}/[^/]+;tcp$`));
        assert.equal(toClient.setup, "actpass");
        assert.equal(toClient.acceptWrapped, "text/plain message/imdn+xml");
        assert.equal(toCf.port, mediaPort);
        assert.match(toCf.path, new RegExp(`^msrp://127\\.0\\.0\\.1:${mediaPort}/[^/]+;tcp$`));
        assert.notEqual(toCf.path, toClient.path, "one MSRP session per leg");
        assert.equal(toCf.setup, "passive", "RFC 6135: the CF offered active");
        assert.equal(toCf.acceptWrapped, "text/plain message/imdn+xml");
        await waitFor(() => logged(sc, "media answer anchored", callId), 5000, 20, "ReportMediaAnswer");
        // the client connects (a=setup:active), so does the CF
        await ue.open(toClient.path, "active");
        await cf.open(toCf.path, "active");
        assert.equal(await establishedOn(mediaPort), 2, "two MSRP connections at the sidecar");

        // relay: CF -> client in order (pipelined), client -> CF
        const bodies = [1, 2, 3, 4, 5].map((i) => chatCpim(`relay ${i}`, `imdn-r${i}`));
        const sends = await Promise.all(bodies.map((b) => cf.send(b, "message/cpim")));
        assert.deepEqual(
          sends.map((r) => r.code),
          [200, 200, 200, 200, 200],
        );
        const got = await ue.waitForMessages(5);
        assert.deepEqual(
          got.map((m) => text(m.body)),
          bodies.map(text),
          "CF messages reach the client unchanged and in order",
        );
        const imdn = imdnCpim("imdn-r1", "imdn-c1", "tel:+16135551200");
        assert.equal((await ue.send(imdn, "message/cpim")).code, 200);
        assert.equal(text((await cf.waitForMessages(1))[0]?.body as Buffer), text(imdn), "the client's IMDN reaches the CF");
        relayed = bodies.map(text);

        // deferred: the client leg goes away; what the CF sends now is stored, in order
        ue.dropConnections();
        await waitFor(() => sc.logLines().some((l) => l.msg === "MSRP leg gone" && l.callId === callId), 5000, 20, "client leg gone");
        const later = [1, 2, 3].map((i) => chatCpim(`deferred ${i}`, `imdn-d${i}`));
        const stored = await Promise.all(later.map((b) => cf.send(b, "message/cpim")));
        assert.deepEqual(
          stored.map((r) => r.code),
          [200, 200, 200],
          "the CF's SENDs are acknowledged once stored",
        );
        const folder = sharedDeferredFolder("tel:+16135551200", conversationId, contributionId);
        const objects = await folderMessages(d, folder);
        t.diagnostic(`deferred folder ${folder}: ${objects.length} objects`);
        assert.equal(objects.length, 3);
        objects.forEach((o, i) => {
          assert.ok(o.includes(`deferred ${i + 1}`), `deferred object ${i + 1} in arrival order:\n${o.slice(0, 600)}`);
        });
        assert.equal(ue.received.length, 5, "nothing more reached the gone client");
      },
    });
    // BYE-B8: the session is recorded on the client's 200 OK (media.recording=true)
    await byeCompleted(sc, call.callId);
    assert.ok(logged(sc, "CPM session recorded", call.callId), "CPM session recorded");
    const recordFolder = `Default/${call.conversationId}/${call.contributionId}`;
    const recorded = await folderMessages(d, recordFolder);
    t.diagnostic(`recorded in ${recordFolder}: ${recorded.length} objects`);
    assert.ok(
      recorded.some((o) => /^Content-Type:\s*application\/x-cpm-session/im.test(o)),
      "one session-info object (Application/X-CPM-Session)",
    );
    const positions = relayed.map((b) => recorded.findIndex((o) => o.includes(b.split("\r\n\r\n").pop() as string)));
    assert.ok(
      positions.every((p) => p >= 0),
      `every relayed CF message is recorded (${positions})`,
    );
    assert.deepEqual(
      [...positions].sort((a, b) => a - b),
      positions,
      "recorded in order",
    );
    // BYE-B10: media released: no MSRP connection left at the sidecar
    assert.ok(logged(sc, "MSRP media released", call.callId), "MSRP media released");
    const completed = logged(sc, "BYE completed", call.callId);
    assert.ok(Number(completed?.mediaReleased) > 0, `released ${completed?.mediaReleased}`);
    await noMsrpConnectionLeft();
    assert.equal(await k.stat("cpm_pf_anchor_failsafe"), 0);
    assert.equal(await k.stat("cpm_pf_failsafe"), 0);
    assert.doesNotMatch(k.logs(), /\b(ERROR|CRITICAL|ALERT|BUG):/);
    assert.equal(sc.logLines().filter((l) => l.level === "error").length, 0, "no error in the sidecar log");
  });

  test("BYE-B10 client-side BYE: the served user's client leaves an anchored group chat; its BYE goes to the CF unchanged, the CF's 200 OK is reported and the media released at once, not by the outcome watchdog", async () => {
    const k = kamailio as KamailioInstance;
    const sc = sidecar as SidecarInstance;
    const cf = await peer();
    const ue = await peer();
    const call = await anchoredChatCall(k, {
      cfMsrpPath: cf.path,
      cfSetup: "active",
      clientMsrpPath: ue.path,
      byeFrom: "client",
      during: async ({ callId, clientInvite, cf200 }) => {
        await waitFor(() => logged(sc, "media answer anchored", callId), 5000, 20, "ReportMediaAnswer");
        await ue.open(msrpMedia(clientInvite.body).path, "active");
        await cf.open(msrpMedia(cf200.body).path, "active");
        const b = chatCpim("before the client leaves", "imdn-l1");
        assert.equal((await cf.send(b, "message/cpim")).code, 200);
        assert.equal(text((await ue.waitForMessages(1))[0]?.body as Buffer), text(b));
      },
    });
    const decided = await waitFor(() => logged(sc, "BYE decided", call.callId), 5000, 20, "BYE decided");
    assert.deepEqual(
      [decided.side, decided.mode],
      ["client", "proxy"],
      "8.2.2.3: the client's own BYE is relayed, not decided as a network BYE",
    );
    assert.ok(
      call.cf.messages.some((m) => m.direction === "received" && m.method === "BYE"),
      "the CF got the client's BYE",
    );
    // BYE-B10: released on the report of the CF's 200, well before pf.byeOutcomeTimeoutMs
    const completed = await waitFor(() => logged(sc, "BYE completed", call.callId), 5000, 20, "BYE completed");
    assert.equal(completed.statusCode, 200);
    assert.ok(Number(completed.mediaReleased) > 0, `released ${completed.mediaReleased}`);
    await noMsrpConnectionLeft();
    assert.equal(logged(sc, "BYE outcome never reported: media released", call.callId), undefined);
    assert.equal(await k.stat("cpm_pf_failsafe"), 0);
  });

  test("MEDIA-ANCHOR MEDIA-RELAY: the CF offers a=setup:actpass -> the PF answers active and connects to the CF (RFC 6135); messages flow both ways", async () => {
    const k = kamailio as KamailioInstance;
    const sc = sidecar as SidecarInstance;
    const cf = await peer();
    const ue = await peer();
    let cfPathSeen = "";
    const call = await anchoredChatCall(k, {
      cfMsrpPath: cf.path,
      cfSetup: "actpass",
      clientMsrpPath: ue.path,
      during: async ({ clientInvite, cf200 }) => {
        assert.equal(msrpMedia(cf200.body).setup, "active", "the PF connects to the CF");
        assert.equal(msrpMedia(cf200.body).path, cfPathSeen, "the path AnchorMedia returned is the one the CF got");
        await ue.open(msrpMedia(clientInvite.body).path, "active");
        await cf.bound();
        const b = chatCpim("actpass relay", "imdn-a1");
        assert.equal((await cf.send(b, "message/cpim")).code, 200);
        assert.equal(text((await ue.waitForMessages(1))[0]?.body as Buffer), text(b));
        const back = chatCpim("client to CF", "imdn-a2", "tel:+16135551200");
        assert.equal((await ue.send(back, "message/cpim")).code, 200);
        assert.equal(text((await cf.waitForMessages(1))[0]?.body as Buffer), text(back));
      },
      // the CF's passive session must wait for the PF before the client answers (it does after 400 ms)
      beforeAnswer: async ({ callId }) => {
        const anchored = await waitFor(() => logged(sc, "media anchored", callId), 5000, 5, "AnchorMedia");
        cfPathSeen = String(anchored.cfPath);
        await cf.open(cfPathSeen, "passive");
      },
    });
    await byeCompleted(sc, call.callId);
    await noMsrpConnectionLeft();
  });

  test("BYE-B6 BYE-B10: after the network BYE the client's SEND gets 481 and is discarded; released after the client's 200 OK", async () => {
    const k = kamailio as KamailioInstance;
    const sc = sidecar as SidecarInstance;
    const cf = await peer();
    const ue = await peer();
    let late = 0;
    const call = await anchoredChatCall(k, {
      cfMsrpPath: cf.path,
      cfSetup: "active",
      clientMsrpPath: ue.path,
      clientPauseMs: 1500,
      during: async ({ callId, clientInvite, cf200 }) => {
        await waitFor(() => logged(sc, "media answer anchored", callId), 5000, 20, "ReportMediaAnswer");
        await ue.open(msrpMedia(clientInvite.body).path, "active");
        await cf.open(msrpMedia(cf200.body).path, "active");
        assert.equal((await ue.send(chatCpim("before the BYE", "imdn-b0"), "message/cpim")).code, 200);
        await cf.waitForMessages(1);
      },
      afterBye: async ({ callId }) => {
        // HandleBye decided (and told the media plane) before the BYE went on to the client
        await waitFor(() => logged(sc, "BYE decided", callId), 5000, 10, "BYE decided");
        assert.equal(logged(sc, "BYE completed", callId), undefined, "the client has not answered the BYE yet");
        const r = await ue.send(chatCpim("race after the BYE", "imdn-b1"), "message/cpim");
        late = r.code;
        const imdn = await ue.send(imdnCpim("imdn-x", "imdn-b2", "tel:+16135551200"), "message/cpim");
        assert.equal(imdn.code, 481, "an IMDN after the BYE gets 481 too");
      },
    });
    assert.equal(late, 481, "BYE-B6: the client's chat message after the BYE gets MSRP 481");
    await byeCompleted(sc, call.callId);
    assert.equal(cf.received.length, 1, "the race messages were discarded, never relayed to the CF");
    assert.ok(logged(sc, "MSRP media released", call.callId), "BYE-B10: MSRP media released");
    await noMsrpConnectionLeft();
  });

  test("MEDIA-ANCHOR MEDIA-RELAY BYE-B6 BYE-B10 client-initiated: the client INVITEs the CF, the CF gets the PF's CF-facing path and the client's 200 the client-facing one; messages flow both ways in order; the CF's BYE is a network BYE", async () => {
    const k = kamailio as KamailioInstance;
    const sc = sidecar as SidecarInstance;
    const cf = await peer();
    const ue = await peer();
    let late = 0;
    const call = await clientInitiatedChatCall(k, {
      clientMsrpPath: ue.path,
      clientSetup: "active",
      cfMsrpPath: cf.path,
      cfSetup: "active",
      clientPauseMs: 1500,
      during: async ({ callId, cfInvite, client200 }) => {
        // on the wire: the CF got the PF's CF-facing leg, offered actpass; the client's 200 the client-facing leg
        const toCf = msrpMedia(cfInvite.body);
        const toClient = msrpMedia(client200.body);
        assert.equal(toCf.port, mediaPort);
        assert.match(toCf.path, new RegExp(`^msrp://127\\.0\\.0\\.1:${mediaPort}/[^/]+;tcp$`));
        assert.equal(toCf.setup, "actpass", "RFC 6135: the PF offers actpass to the CF");
        assert.equal(toCf.acceptWrapped, "text/plain message/imdn+xml");
        assert.match(cfInvite.body, /<entry uri="tel:\+16135551211" cp:copyControl="to"\/>/, "the resource-list reaches the CF");
        assert.equal(toClient.port, mediaPort);
        assert.match(toClient.path, new RegExp(`^msrp://127\\.0\\.0\\.1:${mediaPort}/[^/]+;tcp$`));
        assert.equal(toClient.setup, "passive", "RFC 6135: the client offered active");
        assert.notEqual(toCf.path, toClient.path, "one MSRP session per leg");
        assert.ok(!cfInvite.body.includes(ue.path), "the client's path does not reach the CF");
        assert.ok(!client200.body.includes(cf.path), "the CF's path does not reach the client");
        await waitFor(() => logged(sc, "media answer anchored", callId), 5000, 20, "ReportMediaAnswer");
        const anchored = logged(sc, "media anchored", callId);
        assert.equal(anchored?.offerer, "client");
        assert.equal(anchored?.cfPath, toClient.path, "AnchorMedia's cf_leg is the client-facing leg");
        await ue.open(toClient.path, "active");
        await cf.open(toCf.path, "active");
        assert.equal(await establishedOn(mediaPort), 2, "two MSRP connections at the sidecar");

        const downs = [1, 2, 3].map((i) => chatCpim(`down ${i}`, `imdn-cd${i}`));
        const sent = await Promise.all(downs.map((b) => cf.send(b, "message/cpim")));
        assert.deepEqual(
          sent.map((r) => r.code),
          [200, 200, 200],
        );
        assert.deepEqual(
          (await ue.waitForMessages(3)).map((m) => text(m.body)),
          downs.map(text),
          "CF messages reach the client unchanged and in order",
        );
        const ups = [1, 2, 3].map((i) => chatCpim(`up ${i}`, `imdn-cu${i}`, "tel:+16135551200"));
        for (const b of ups) assert.equal((await ue.send(b, "message/cpim")).code, 200);
        assert.deepEqual(
          (await cf.waitForMessages(3)).map((m) => text(m.body)),
          ups.map(text),
          "client messages reach the CF unchanged and in order",
        );
      },
      afterBye: async ({ callId }) => {
        const decided = await waitFor(() => logged(sc, "BYE decided", callId), 5000, 10, "BYE decided");
        assert.equal(decided.side, "network", "the CF's tag was learnt from its 2xx");
        assert.equal(decided.mode, "b2bua");
        assert.equal(logged(sc, "BYE completed", callId), undefined, "the client has not answered the BYE yet");
        late = (await ue.send(chatCpim("race after the BYE", "imdn-cb1"), "message/cpim")).code;
      },
    });
    assert.equal(late, 481, "BYE-B6: the client's chat message after the CF's BYE gets MSRP 481");
    await byeCompleted(sc, call.callId);
    assert.equal(cf.received.length, 3, "the race message was discarded, never relayed to the CF");
    assert.ok(logged(sc, "MSRP media released", call.callId), "BYE-B10: MSRP media released");
    await noMsrpConnectionLeft();
    assert.equal(await k.stat("cpm_pf_anchor_failsafe"), 0);
  });

  test("MEDIA-RELAY DEFERRED: a malformed frame from the client gets 400 / 413 (or, when framing is lost, its connection closed); the session keeps relaying, the sidecar logs why, and the deferred folder stays intact", async () => {
    const k = kamailio as KamailioInstance;
    const sc = sidecar as SidecarInstance;
    const d = dovecot as DovecotInstance;
    // part 2's sidecar runs the media defaults: 16 KiB header block, 256 KiB chunk body
    const { maxHeaderBytes, maxChunkBytes } = defaults.media;
    const cf = await peer();
    // the client answers a=setup:active and connects itself: its listener is never used
    const clientSessionId = newSessionId();
    const clientPath = `msrp://127.0.0.1:${await freePort()}/${clientSessionId};tcp`;
    const marker = `body-${newSessionId()}`; // in every malformed frame's body: must never reach a log or a peer
    const call = await anchoredChatCall(k, {
      cfMsrpPath: cf.path,
      cfSetup: "active",
      clientMsrpPath: clientPath,
      during: async ({ callId, conversationId, contributionId, clientInvite, cf200 }) => {
        await waitFor(() => logged(sc, "media answer anchored", callId), 5000, 20, "ReportMediaAnswer");
        const pfClientPath = msrpMedia(clientInvite.body).path;
        await cf.open(msrpMedia(cf200.body).path, "active");
        const client = await rawClient();
        const addressed = (extra: string[]) => [
          `To-Path: ${pfClientPath}`,
          `From-Path: ${clientPath}`,
          `Message-ID: ${newSessionId()}`,
          ...extra,
        ];
        /** Writes a frame on `on`; resolves with the response to it. */
        const exchange = async (on: RawMsrpSocket, headers: string[], body?: Buffer | string) => {
          const tid = newTransactionId();
          on.write(sendFrame(tid, headers, body));
          return { tid, res: await on.response(tid) };
        };
        const cpimHeaders = (b: Buffer) => [`Byte-Range: 1-${b.length}/${b.length}`, "Content-Type: message/cpim"];
        const clientSends = async (b: Buffer) => (await exchange(client, addressed(cpimHeaders(b)), b)).res.code;
        const toClient = () =>
          client.requests.filter((r) => r.method === "SEND" && (r.body?.length ?? 0) > 0).map((r) => text(r.body as Buffer));
        // the sidecar's log reaches the test over a pipe of its own: wait for the line, then check it
        const logLine = (msg: string, tid: string) =>
          waitFor(() => sc.logLines().find((l) => l.msg === msg && l.transactionId === tid), 5000, 20, `"${msg}" for ${tid}`);
        const badFrame = (tid: string) => logLine("bad MSRP frame", tid);

        // the client binds its session (RFC 4975 5.4 empty SEND); messages flow both ways
        assert.equal((await exchange(client, addressed([]))).res.code, 200, "bind");
        const down1 = chatCpim("to the client 1", "imdn-m1");
        assert.equal((await cf.send(down1, "message/cpim")).code, 200);
        await client.waitForRequests(1);
        assert.deepEqual(toClient(), [text(down1)]);
        const up1 = chatCpim("from the client 1", "imdn-m2", "tel:+16135551200");
        assert.equal(await clientSends(up1), 200);
        assert.equal(text((await cf.waitForMessages(1))[0]?.body as Buffer), text(up1));

        // framing kept (the transaction-id is known): the frame is answered and skipped, the connection stays (RFC 4975 7.3 / 10)
        // 1. header block over maxHeaderBytes -> 400 (request unintelligible; src/msrp: header-too-large)
        const bigHead = await exchange(
          client,
          addressed([...cpimHeaders(Buffer.from(marker)), `X-Pad: ${"p".repeat(maxHeaderBytes)}`]),
          marker,
        );
        assert.equal(bigHead.res.code, 400, "header block over the limit");
        assert.equal(bigHead.res.toPath[0]?.sessionId, clientSessionId, "answered to the client's From-Path");
        // 2. Byte-Range that does not parse -> 400
        const badRange = await exchange(client, addressed(["Byte-Range: banana", "Content-Type: message/cpim"]), marker);
        assert.equal(badRange.res.code, 400, "malformed Byte-Range");
        // 3. no To-Path: a 400 cannot be addressed (its From-Path would be the To-Path), so there is none; the next frame is served
        const noTo = newTransactionId();
        client.write(
          sendFrame(noTo, [`From-Path: ${clientPath}`, `Message-ID: ${newSessionId()}`, ...cpimHeaders(Buffer.from(marker))], marker),
        );
        // 4. chunk body over maxChunkBytes -> 413 (the receiver does not want this message)
        const huge = Buffer.alloc(maxChunkBytes + 1, "h");
        const bigBody = await exchange(client, addressed(cpimHeaders(huge)), huge);
        assert.equal(bigBody.res.code, 413, "chunk body over the limit");
        // same connection, same session: both directions still relay
        const up2 = chatCpim("from the client 2", "imdn-m3", "tel:+16135551200");
        assert.equal(await clientSends(up2), 200, "the client's next message after the malformed ones");
        assert.equal(
          client.responses.find((r) => r.transactionId === noTo),
          undefined,
          "no response to the frame without To-Path (responses come in order on the connection)",
        );
        assert.deepEqual(
          (await cf.waitForMessages(2)).map((m) => text(m.body)),
          [text(up1), text(up2)],
          "the malformed frames never reached the CF",
        );
        const down2 = chatCpim("to the client 2", "imdn-m4");
        assert.equal((await cf.send(down2, "message/cpim")).code, 200);
        await client.waitForRequests(2);
        assert.deepEqual(toClient(), [text(down1), text(down2)]);
        // why, in the sidecar's log (no body)
        assert.deepEqual(await badFrame(bigHead.tid).then((l) => [l.reason, l.limit, l.status]), [
          "header-too-large",
          "maxHeaderBytes",
          400,
        ]);
        const rangeLine = await badFrame(badRange.tid);
        assert.deepEqual([rangeLine.reason, rangeLine.status], ["header", 400]);
        assert.match(String(rangeLine.detail), /Byte-Range/);
        const noToLine = await badFrame(noTo);
        assert.deepEqual([noToLine.reason, noToLine.status], ["header", 400]);
        assert.match(String(noToLine.detail), /missing To-Path/);
        assert.deepEqual(
          await badFrame(bigBody.tid).then((l) => [l.reason, l.limit, l.status]),
          ["body-too-large", "maxBodyBytes", 413], // maxBodyBytes: the parser's name for media.maxChunkBytes
        );

        // framing lost (an end-line with another transaction-id): no response, the PF closes that connection;
        // the client leg is gone, the CF leg stays
        const lost = newTransactionId();
        client.write(sendFrame(lost, addressed([]), undefined, `-------${newTransactionId()}$`));
        await client.closed;
        assert.equal(
          client.responses.find((r) => r.transactionId === lost),
          undefined,
          "no response once framing is lost",
        );
        const unparseable = await logLine("unparseable MSRP input, closing", lost);
        assert.equal(unparseable.reason, "end-line", "logged with the reason");
        const gone = await waitFor(
          () => sc.logLines().find((l) => l.msg === "MSRP leg gone" && l.callId === callId && l.leg === "client"),
          5000,
          20,
          "client leg gone",
        );
        assert.match(String(gone.reason), /end-line/);

        // DEFERRED: what the CF sends now is stored, acknowledged once stored
        const later = [1, 2, 3].map((i) => chatCpim(`deferred ${i}`, `imdn-d${i}`));
        const stored = await Promise.all(later.map((b) => cf.send(b, "message/cpim")));
        assert.deepEqual(
          stored.map((r) => r.code),
          [200, 200, 200],
        );
        const folder = sharedDeferredFolder("tel:+16135551200", conversationId, contributionId);
        const snapshot = await folderMessages(d, folder);
        assert.deepEqual(snapshot.map(objectBody), later.map(text), "the CF's messages stored unchanged, in order");

        // the client comes back on a new connection with malformed input: answered / closed as above, the store untouched
        const again = await rawClient();
        const bigHead2 = await exchange(
          again,
          addressed([...cpimHeaders(Buffer.from(marker)), `X-Pad: ${"p".repeat(maxHeaderBytes)}`]),
          marker,
        );
        assert.equal(bigHead2.res.code, 400);
        const lost2 = newTransactionId();
        again.write(sendFrame(lost2, addressed([]), undefined, `-------${newTransactionId()}$`));
        await again.closed;
        assert.equal((await logLine("unparseable MSRP input, closing", lost2)).reason, "end-line");
        assert.deepEqual(await folderMessages(d, folder), snapshot, "deferred objects intact: same count, byte-identical");
        // the session still stores what the CF sends
        const last = chatCpim("deferred 4", "imdn-d4");
        assert.equal((await cf.send(last, "message/cpim")).code, 200);
        const afterwards = await folderMessages(d, folder);
        assert.deepEqual(afterwards.slice(0, snapshot.length), snapshot, "the earlier objects unchanged");
        assert.deepEqual(afterwards.slice(snapshot.length).map(objectBody), [text(last)]);

        assert.equal(sc.exited(), false, "the sidecar is alive");
        assert.doesNotMatch(sc.logs(), new RegExp(marker), "no malformed body in the log");
        assert.doesNotMatch(sc.logs(), /p{64}/, "no oversized header value in the log");
        assert.deepEqual(toClient(), [text(down1), text(down2)], "nothing more reached the client");
      },
    });
    await byeCompleted(sc, call.callId);
    assert.ok(logged(sc, "MSRP media released", call.callId), "MSRP media released");
    await noMsrpConnectionLeft();
    assert.equal(await k.stat("cpm_pf_anchor_failsafe"), 0);
    assert.equal(await k.stat("cpm_pf_failsafe"), 0);
    assert.doesNotMatch(k.logs(), /\b(ERROR|CRITICAL|ALERT|BUG):/);
    assert.equal(sc.logLines().filter((l) => l.level === "error").length, 0, "no error in the sidecar log");
  });
});
