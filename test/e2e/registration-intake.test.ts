// Deferred delivery after registration (OMA CPM Conv Fnct 8.3.2.9.1.2), the
// Kamailio side (kamailio/cpm-pf.cfg + cpm_pf_bridge.py) against a scripted
// gRPC server in this test process standing in for the sidecar:
//   - REGISTER intake (DD-1): the S-CSCF's third-party REGISTER (TS 24.229
//     5.4.1.7, SIPp scscf-third-party-register.xml) reaches ReportRegistration
//     as received and is answered 200 OK whatever the sidecar says, unless
//     the sidecar refuses it (reject_status);
//   - DD-1 trust: one from a source outside CPM_PF_SCSCF_ADDRESSES (SIPp
//     bound to 127.0.0.2, untrusted-third-party-register.xml) gets 403 from
//     Kamailio and never reaches the sidecar;
//   - requests the sidecar's SIP UA originates (a UDP socket in this test,
//     CPM_PF_UA_ADDRESS): record-routed with ;cpmpfdd, never observed as a
//     network session; the client's in-dialog requests go back to the UA,
//     never to HandleBye.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import {
  type HandleByeRequest,
  HandleByeResponseSchema,
  Mode,
  type ObserveSessionRequest,
  ObserveSessionResponseSchema,
  type ReportRegistrationRequest,
  type ReportRegistrationResponse,
  ReportRegistrationResponseSchema,
  Side,
} from "../../src/gen/cpm/pf/v1/pf_pb.js";
import { DEVICE_INSTANCE, triggerSipp } from "../harness/anchored-chat.js";
import { type KamailioInstance, startKamailio } from "../harness/kamailio.js";
import { freePort } from "../harness/ports.js";
import { decideHandler, startScriptedGrpc, unaryHandler } from "../harness/scripted-grpc.js";
import { first, header, parseSipMessage, type SippResult, type SippRun, type SipTraceMessage, startSipp } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (raw: Uint8Array | undefined) => Buffer.from(raw ?? new Uint8Array()).toString("utf8");
const SERVED_USER = "sip:+16135551200@home1.net";
const EXPIRES = "600000";

/** What the scripted sidecar saw, and how it answers ReportRegistration. */
interface Script {
  register: "answer" | "error";
  answer: { accepted: boolean; deliveries: number; notes: string[]; rejectStatus?: number; rejectReason?: string };
  registrations: ReportRegistrationRequest[];
  observed: ObserveSessionRequest[];
  byes: HandleByeRequest[];
}

async function startScriptedSidecar(script: Script): Promise<{ target: string; stop(): Promise<void> }> {
  const observeSession = async (req: ObserveSessionRequest) => {
    script.observed.push(req);
    return create(ObserveSessionResponseSchema, { updated: true, sessionKey: "k", participantCount: 1 });
  };
  const handleBye = async (req: HandleByeRequest) => {
    script.byes.push(req);
    return create(HandleByeResponseSchema, { mode: Mode.PROXY, side: Side.CLIENT, waitForClients: true, sessionKey: "k" });
  };
  const reportRegistration = async (req: ReportRegistrationRequest): Promise<ReportRegistrationResponse> => {
    script.registrations.push(req);
    if (script.register === "error") throw { code: status.INVALID_ARGUMENT, details: "scripted: not a third-party REGISTER" };
    return create(ReportRegistrationResponseSchema, script.answer);
  };
  const decide = decideHandler({ handleBye, observeSession });
  return startScriptedGrpc({
    decide,
    handleBye: unaryHandler(handleBye),
    observeSession: unaryHandler(observeSession),
    reportRegistration: unaryHandler(reportRegistration),
  });
}

interface Received {
  text: string;
  msg: ReturnType<typeof parseSipMessage>;
  from: RemoteInfo;
}

/** The sidecar's SIP UA, played by a UDP socket: sends raw requests, keeps what it receives. */
class TestUa {
  readonly received: Received[] = [];
  private constructor(
    private readonly sock: Socket,
    readonly host: string,
    readonly port: number,
  ) {
    sock.on("message", (buf, from) => {
      const t = buf.toString("utf8");
      this.received.push({ text: t, msg: parseSipMessage(t), from });
    });
  }

  static async open(host = "127.0.0.1"): Promise<TestUa> {
    const sock = createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind(0, host, () => resolve());
    });
    return new TestUa(sock, host, sock.address().port);
  }

  send(message: string, port: number, host = "127.0.0.1"): Promise<void> {
    return new Promise((resolve, reject) => this.sock.send(message, port, host, (err) => (err ? reject(err) : resolve())));
  }

  wait(pred: (m: Received) => boolean, what: string, timeoutMs = 3000): Promise<Received> {
    return waitFor(() => this.received.find(pred), timeoutMs, 10, what);
  }

  close(): void {
    this.sock.close();
  }
}

const h = (m: Received, name: string) => m.msg.headers.get(name)?.[0] ?? "";
const cseqMethod = (m: Received) => h(m, "cseq").split(/\s+/)[1];
/** Hex of a string as Kamailio's {s.encode.hexa} writes it. */
const hex = (s: string) => Buffer.from(s, "utf8").toString("hex");

function sipMessage(startLine: string, headers: string[], body = ""): string {
  return [startLine, ...headers, `Content-Length: ${Buffer.byteLength(body)}`, "", body].join("\r\n");
}

/**
 * A PF-originated dialog: the UA's INVITE through Kamailio to `clientPort`,
 * the 200 OK, the ACK. `contact`: the UA's Contact (default: its socket).
 */
async function uaInvite(ua: TestUa, k: KamailioInstance, clientPort: number, contact = `sip:deferred@${ua.host}:${ua.port}`) {
  const callId = `dd-${randomUUID()}`;
  const fromTag = `pf${randomUUID().slice(0, 8)}`;
  const from = `<sip:deferred@pf.home1.net>;tag=${fromTag}`;
  const sdp = [
    "v=0",
    "o=pf 1 1 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=message 2855 TCP/MSRP *",
    "a=accept-types:message/cpim",
    `a=path:msrp://127.0.0.1:2855/${randomUUID().slice(0, 8)};tcp`,
    "a=setup:actpass",
    "",
  ].join("\r\n");
  const invite = sipMessage(
    `INVITE sip:client@127.0.0.1:${clientPort} SIP/2.0`,
    [
      `Via: SIP/2.0/UDP ${ua.host}:${ua.port};branch=z9hG4bK-${randomUUID()}`,
      "Max-Forwards: 70",
      `Route: <sip:${k.address};lr;cpmpfuac>`,
      `From: ${from}`,
      `To: <${SERVED_USER}>`,
      `Call-ID: ${callId}`,
      "CSeq: 1 INVITE",
      `Contact: <${contact}>`,
      "P-Asserted-Identity: <sip:deferred@pf.home1.net>",
      // what a group chat INVITE carries: route[CPM_PF_HOOK_IS_CPM] would say yes
      `Conversation-ID: conv-${randomUUID()}`,
      `Contribution-ID: contrib-${randomUUID()}`,
      "Content-Type: application/sdp",
    ],
    sdp,
  );
  await ua.send(invite, k.sipPort);
  const ok = await ua.wait(
    (m) => m.msg.status === 200 && h(m, "call-id") === callId && cseqMethod(m) === "INVITE",
    "200 OK to the UA's INVITE",
  );
  const rr = ok.msg.headers.get("record-route") ?? [];
  const target = /<([^>]+)>/.exec(h(ok, "contact"))?.[1] ?? "";
  const toWithTag = h(ok, "to");
  const inDialog = (method: string, cseq: number) =>
    sipMessage(`${method} ${target} SIP/2.0`, [
      `Via: SIP/2.0/UDP ${ua.host}:${ua.port};branch=z9hG4bK-${randomUUID()}`,
      "Max-Forwards: 70",
      // UAC: the route set is the Record-Route in reverse order
      ...[...rr].reverse().map((r) => `Route: ${r}`),
      `From: ${from}`,
      `To: ${toWithTag}`,
      `Call-ID: ${callId}`,
      `CSeq: ${cseq} ${method}`,
    ]);
  await ua.send(inDialog("ACK", 1), k.sipPort);
  return { callId, fromTag, ok, rr, inDialog };
}

/** The UA answers a request it received (200 OK back along the Vias, i.e. to Kamailio). */
async function uaAnswer(ua: TestUa, req: Received): Promise<void> {
  const vias = req.msg.headers.get("via") ?? [];
  const ok = sipMessage("SIP/2.0 200 OK", [
    ...vias.map((v) => `Via: ${v}`),
    `From: ${h(req, "from")}`,
    `To: ${h(req, "to")}`,
    `Call-ID: ${h(req, "call-id")}`,
    `CSeq: ${h(req, "cseq")}`,
  ]);
  await ua.send(ok, req.from.port, req.from.address);
}

/** Resolves once the client SIPp got the ACK (the next step must not overtake it). */
async function ackReached(client: SippRun): Promise<void> {
  await waitFor(
    async () => (await client.messagesSoFar()).some((m) => m.direction === "received" && m.method === "ACK"),
    3000,
    10,
    "the ACK at the client",
  );
}

/** The S-CSCF's third-party REGISTER; `from`: SIPp's source address, `scenario` the one expecting 403 for a refusal. */
async function thirdPartyRegister(
  k: KamailioInstance,
  opts: { from?: string; scenario?: string } = {},
): Promise<{ r: SippResult; sent: SipTraceMessage; port: number }> {
  const run = await startSipp({
    scenario: opts.scenario ?? "scscf-third-party-register.xml",
    remote: k.address,
    ...(opts.from ? { host: opts.from } : {}),
    timeoutS: 5,
    keys: { served_user: SERVED_USER, expires: EXPIRES, ue_contact: "<sip:192.0.2.4:5060>", instance: DEVICE_INSTANCE },
  });
  const r = await run.done;
  const sent = first(r.messages, { direction: "sent", method: "REGISTER" });
  assert.ok(sent, `SIPp sent no REGISTER: ${r.output}`);
  return { r, sent, port: run.port };
}

describe("8.3.2.9.1.2 deferred delivery, Kamailio side: REGISTER intake and the PF's own requests (scripted sidecar)", () => {
  const script: Script = {
    register: "answer",
    answer: { accepted: true, deliveries: 2, notes: ["scripted"] },
    registrations: [],
    observed: [],
    byes: [],
  };
  const reset = (patch: Partial<Script> = {}) =>
    Object.assign(script, { register: "answer", registrations: [], observed: [], byes: [] }, patch);
  let sidecar: { target: string; stop(): Promise<void> } | undefined;
  let kamailio: KamailioInstance | undefined;
  let ua: TestUa | undefined;

  before(async () => {
    sidecar = await startScriptedSidecar(script);
    ua = await TestUa.open();
    kamailio = await startKamailio({
      grpcTarget: sidecar.target,
      deadlineMs: 1000,
      defines: [`CPM_PF_UA_ADDRESS="sip:${ua.host}:${ua.port}"`],
    });
  });
  after(async () => {
    await kamailio?.stop();
    await sidecar?.stop();
    ua?.close();
  });

  test("DD-1: the S-CSCF's third-party REGISTER reaches ReportRegistration exactly as sent ($mb, $si:$sp, $pr); 200 OK with its Expires, no Contact", async () => {
    reset({ answer: { accepted: true, deliveries: 2, notes: ["scripted"] } });
    const k = kamailio as KamailioInstance;
    const before = await k.stat("cpm_pf_registrations");
    const { r, sent, port } = await thirdPartyRegister(k);
    assert.equal(r.code, 0, `S-CSCF SIPp failed (${r.code}): ${r.errors}\n${r.output}`);

    assert.equal(script.registrations.length, 1, "one ReportRegistration");
    const env = script.registrations[0]?.register;
    assert.equal(env?.source, `127.0.0.1:${port}`);
    assert.equal(env?.transport, "udp");
    const raw = text(env?.raw);
    // byte for byte, but for two things: the trace strips trailing white
    // space, and the example cfg's REQINIT (mf_process_maxfwd_header, before
    // route(CPM_PF)) decrements Max-Forwards in Kamailio's buffer itself
    assert.match(raw, /^Max-Forwards: 69\r$/m);
    assert.equal(raw.replace(/\s+$/, "").replace(/^Max-Forwards: 69\r$/m, "Max-Forwards: 70\r"), sent.text);
    assert.match(raw, /^REGISTER sip:/);
    assert.match(raw, /^Content-Type: message\/sip\r$/m);
    assert.match(raw, /\r\n\r\nREGISTER sip:home1\.net SIP\/2\.0\r\n[\s\S]*\+sip\.instance="<urn:gsma:imei:35209900-176148-0>"/);
    assert.equal(script.observed.length, 0, "a REGISTER is no session fact");

    const ok = first(r.messages, { direction: "received", status: 200 });
    assert.ok(ok, "200 OK received");
    assert.equal(header(ok, "expires"), EXPIRES);
    assert.equal(header(ok, "contact"), undefined);
    assert.equal(header(ok, "call-id"), header(sent, "call-id"));
    assert.equal(await k.stat("cpm_pf_registrations"), before + 1);
    assert.match(k.logs(), /cpm-pf: REGISTER for sip:\+16135551200@home1\.net: deferred delivery started for 2 group session/);
  });

  test("DD-1 fail-safe: the sidecar answers an error -> still 200 OK, cpm_pf_register_failsafe +1", async () => {
    reset({ register: "error" });
    const k = kamailio as KamailioInstance;
    const before = await k.stat("cpm_pf_register_failsafe");
    const { r } = await thirdPartyRegister(k);
    assert.equal(r.code, 0, `S-CSCF SIPp failed (${r.code}): ${r.errors}\n${r.output}`);
    assert.equal(script.registrations.length, 1);
    assert.equal(header(first(r.messages, { direction: "received", status: 200 }) as SipTraceMessage, "expires"), EXPIRES);
    assert.equal(await k.stat("cpm_pf_register_failsafe"), before + 1);
    assert.match(k.logs(), /ReportRegistration failed after \d+ ms: INVALID_ARGUMENT: scripted/);
  });

  test("DD-1: accepted=false (deferred delivery off) is an answer, not a failure: 200 OK, no fail-safe", async () => {
    reset({ answer: { accepted: false, deliveries: 0, notes: ["deferred delivery is off"] } });
    const k = kamailio as KamailioInstance;
    const before = await k.stat("cpm_pf_register_failsafe");
    const { r } = await thirdPartyRegister(k);
    assert.equal(r.code, 0, `S-CSCF SIPp failed (${r.code}): ${r.errors}\n${r.output}`);
    assert.equal(script.registrations.length, 1);
    assert.equal(await k.stat("cpm_pf_register_failsafe"), before);
  });

  test("DD-1 fail-safe: sidecar down -> the REGISTER is still answered 200 OK, cpm_pf_register_failsafe +1", async () => {
    // nothing listens on this port
    const k = await startKamailio({ grpcTarget: `127.0.0.1:${await freePort()}`, deadlineMs: 300, asyncWorkers: 1 });
    try {
      const { r } = await thirdPartyRegister(k);
      assert.equal(r.code, 0, `S-CSCF SIPp failed (${r.code}): ${r.errors}\n${r.output}`);
      assert.ok(first(r.messages, { direction: "received", status: 200 }), "200 OK");
      assert.equal(await k.stat("cpm_pf_register_failsafe"), 1);
      assert.equal(await k.stat("cpm_pf_registrations"), 1);
      assert.match(k.logs(), /fail-safe for REGISTER for sip:\+16135551200@home1\.net: UNAVAILABLE/);
    } finally {
      await k.stop();
    }
  });

  test("DD-1 trust: a third-party REGISTER from a source not among CPM_PF_SCSCF_ADDRESSES gets 403 from Kamailio and never reaches the sidecar; the trusted S-CSCF's still gets 200", async () => {
    reset({ answer: { accepted: true, deliveries: 1, notes: ["scripted"] } });
    const k = kamailio as KamailioInstance;
    const untrusted = await k.stat("cpm_pf_register_untrusted");
    const taken = await k.stat("cpm_pf_registrations");
    // default CPM_PF_SCSCF_ADDRESSES: loopback 127.0.0.1 / ::1 only
    const forged = await thirdPartyRegister(k, { from: "127.0.0.2", scenario: "untrusted-third-party-register.xml" });
    assert.equal(forged.r.code, 0, `untrusted SIPp did not get 403 (${forged.r.code}): ${forged.r.errors}\n${forged.r.output}`);
    const refusal = first(forged.r.messages, { direction: "received", status: 403 });
    assert.ok(refusal, "403 received");
    assert.equal(header(refusal, "call-id"), header(forged.sent, "call-id"));
    assert.equal(first(forged.r.messages, { direction: "received", status: 200 }), undefined, "no 200 OK");
    await sleep(100);
    assert.equal(script.registrations.length, 0, "not reported to the sidecar: nothing delivered, nothing deleted");
    assert.equal(await k.stat("cpm_pf_register_untrusted"), untrusted + 1);
    assert.equal(await k.stat("cpm_pf_registrations"), taken, "not taken by the plugin");
    assert.match(
      k.logs(),
      new RegExp(`REGISTER for sip:\\+16135551200@home1\\.net from 127\\.0\\.0\\.2:${forged.port}, not a trusted S-CSCF`),
    );

    const trusted = await thirdPartyRegister(k);
    assert.equal(trusted.r.code, 0, `S-CSCF SIPp failed (${trusted.r.code}): ${trusted.r.errors}\n${trusted.r.output}`);
    assert.ok(first(trusted.r.messages, { direction: "received", status: 200 }), "200 OK to the trusted S-CSCF");
    assert.equal(script.registrations.length, 1);
    assert.equal(script.registrations[0]?.register?.source, `127.0.0.1:${trusted.port}`);
    assert.equal(await k.stat("cpm_pf_register_untrusted"), untrusted + 1);
  });

  test("DD-1 trust: the sidecar refuses the REGISTER (reject_status 403, its delivery.trustedRegistrars) -> Kamailio answers 403, not 200; cpm_pf_register_untrusted +1, no fail-safe", async () => {
    reset({
      answer: {
        accepted: false,
        deliveries: 0,
        notes: ["not a trusted registrar"],
        rejectStatus: 403,
        rejectReason: "Forbidden",
      },
    });
    const k = kamailio as KamailioInstance;
    const untrusted = await k.stat("cpm_pf_register_untrusted");
    const failsafe = await k.stat("cpm_pf_register_failsafe");
    const { r, sent } = await thirdPartyRegister(k, { scenario: "untrusted-third-party-register.xml" });
    assert.equal(r.code, 0, `SIPp did not get 403 (${r.code}): ${r.errors}\n${r.output}`);
    assert.equal(script.registrations.length, 1, "reported (Kamailio trusts 127.0.0.1), refused by the sidecar");
    const refusal = first(r.messages, { direction: "received", status: 403 });
    assert.ok(refusal, "403 received");
    assert.equal(header(refusal, "call-id"), header(sent, "call-id"));
    assert.equal(first(r.messages, { direction: "received", status: 200 }), undefined, "no 200 OK");
    assert.equal(await k.stat("cpm_pf_register_untrusted"), untrusted + 1);
    assert.equal(await k.stat("cpm_pf_register_failsafe"), failsafe);
    assert.match(k.logs(), /REGISTER for sip:\+16135551200@home1\.net from 127\.0\.0\.1:\d+ refused by the sidecar: 403 Forbidden/);
  });

  test("DD-1 trust: CPM_PF_SCSCF_ADDRESSES takes CIDRs: with 127.0.0.0/24 the REGISTER from 127.0.0.2 is reported and answered 200", async () => {
    reset({ answer: { accepted: true, deliveries: 0, notes: ["scripted"] } });
    const k = await startKamailio({
      grpcTarget: (sidecar as { target: string }).target,
      asyncWorkers: 1,
      defines: ['CPM_PF_SCSCF_ADDRESSES="10.0.0.5,127.0.0.0/24"'],
    });
    try {
      const { r, port } = await thirdPartyRegister(k, { from: "127.0.0.2" });
      assert.equal(r.code, 0, `S-CSCF SIPp failed (${r.code}): ${r.errors}\n${r.output}`);
      assert.equal(script.registrations.length, 1);
      assert.equal(script.registrations[0]?.register?.source, `127.0.0.2:${port}`);
      assert.equal(await k.stat("cpm_pf_register_untrusted"), 0);
    } finally {
      await k.stop();
    }
  });

  test("WITH_CPM_PF_NO_REGISTER: the plugin leaves REGISTER to the operator's routing (no ReportRegistration, no 200 from the PF)", async () => {
    reset();
    const k = await startKamailio({ grpcTarget: (sidecar as { target: string }).target, defines: ["WITH_CPM_PF_NO_REGISTER"] });
    try {
      // the example cfg relays it to its Request-URI (this proxy) until Max-Forwards runs out
      const { r } = await thirdPartyRegister(k);
      assert.notEqual(r.code, 0);
      assert.equal(first(r.messages, { direction: "received", status: 200 }), undefined);
      assert.equal(script.registrations.length, 0);
      assert.equal(await k.stat("cpm_pf_registrations"), 0);
    } finally {
      await k.stop();
    }
  });

  test("DD: the UA's INVITE (Route ;cpmpfuac) reaches the client record-routed ;cpmpfdd, is not observed; the 200 comes back to the UA; the client's BYE goes to the UA, not to HandleBye", async () => {
    reset();
    const k = kamailio as KamailioInstance;
    const u = ua as TestUa;
    const client = await startSipp({
      scenario: "client-dd-uas.xml",
      timeoutS: 8,
      keys: { client_msrp_port: "9", client_msrp_path: "msrp://127.0.0.1:9/none;tcp", bye_reason: "SIP;cause=200" },
    });
    try {
      // a Contact nothing listens on: the client's BYE can reach the UA only
      // because Kamailio sends it to CPM_PF_UA_ADDRESS
      const contact = `sip:deferred@127.0.0.1:${await freePort()}`;
      const d = await uaInvite(u, k, client.port, contact);
      await ackReached(client);
      await triggerSipp(client.port, d.callId); // the client's BYE now
      assert.ok(
        d.rr.some((r) => r.includes(`;cpmpfdd=${hex(d.fromTag)}`)),
        `Record-Route ${JSON.stringify(d.rr)} carries ;cpmpfdd=<hex of the UA's From tag>`,
      );
      const bye = await u.wait((m) => m.msg.method === "BYE" && h(m, "call-id") === d.callId, "the client's BYE at the UA");
      assert.match(bye.msg.headers.get("from")?.[0] ?? "", /tag=\d+UE/, "the client's BYE");
      assert.ok(bye.text.startsWith(`BYE ${contact} SIP/2.0\r\n`), "Request-URI unchanged (the UA's Contact)");
      assert.equal(bye.msg.headers.get("route"), undefined, "loose-routed: no Route left");
      assert.equal(bye.from.port, k.sipPort, "relayed by Kamailio");
      await uaAnswer(u, bye);
      const r = await client.done;
      assert.equal(r.code, 0, `client SIPp failed (${r.code}): ${r.errors}\n${r.output}`);

      const invite = first(r.messages, { direction: "received", method: "INVITE" });
      assert.ok(invite);
      assert.equal(invite.headers.get("route"), undefined, "the UA's Route to Kamailio was consumed");
      assert.match(header(invite, "record-route") ?? "", new RegExp(`^<sip:${k.address.replace(/\./g, "\\.")};lr;cpmpfdd=`));
      assert.match(header(invite, "contribution-id") ?? "", /^contrib-/);
      assert.ok(first(r.messages, { direction: "received", method: "ACK" }), "the UA's ACK reached the client");
      assert.ok(first(r.messages, { direction: "received", status: 200, cseqMethod: "BYE" }), "the UA's 200 to the BYE reached the client");
      await sleep(100);
      assert.equal(script.observed.length, 0, "no ObserveSession for the PF's own session");
      assert.equal(script.byes.length, 0, "no HandleBye for the client's BYE");
    } finally {
      await client.stop();
    }
  });

  test("DD: the UA's own BYE in that dialog goes to the client (From tag = the recorded one), not to HandleBye and not back to the UA", async () => {
    reset();
    const k = kamailio as KamailioInstance;
    const u = ua as TestUa;
    const client = await startSipp({ scenario: "client-uas.xml", extraArgs: ["-d", "0"], timeoutS: 8 });
    try {
      const d = await uaInvite(u, k, client.port);
      await ackReached(client); // Kamailio's UDP workers may reorder two requests sent back to back
      await u.send(d.inDialog("BYE", 2), k.sipPort);
      const ok = await u.wait(
        (m) => m.msg.status === 200 && h(m, "call-id") === d.callId && cseqMethod(m) === "BYE",
        "the client's 200 to the UA's BYE",
      );
      assert.equal(ok.from.port, k.sipPort);
      const r = await client.done;
      assert.equal(r.code, 0, `client SIPp failed (${r.code}): ${r.errors}\n${r.output}`);
      assert.ok(first(r.messages, { direction: "received", method: "BYE" }), "the client got the BYE");
      assert.equal(
        u.received.filter((m) => m.msg.method !== undefined && h(m, "call-id") === d.callId).length,
        0,
        "no request of this dialog came back to the UA",
      );
      assert.equal(script.byes.length, 0, "no HandleBye");
      assert.equal(script.observed.length, 0, "no ObserveSession");
    } finally {
      await client.stop();
    }
  });

  test("DD: ;cpmpfuac from another host than CPM_PF_UA_ADDRESS's is not a PF request (handled as any CPM INVITE: observed)", async () => {
    reset();
    const k = kamailio as KamailioInstance;
    const stranger = await TestUa.open("127.0.0.2");
    try {
      const callId = `stranger-${randomUUID()}`;
      const invite = sipMessage(`INVITE sip:client@127.0.0.1:${await freePort()} SIP/2.0`, [
        `Via: SIP/2.0/UDP ${stranger.host}:${stranger.port};branch=z9hG4bK-${randomUUID()}`,
        "Max-Forwards: 70",
        `Route: <sip:${k.address};lr;cpmpfuac>`,
        `From: <sip:mallory@example.org>;tag=${randomUUID().slice(0, 8)}`,
        `To: <${SERVED_USER}>`,
        `Call-ID: ${callId}`,
        "CSeq: 1 INVITE",
        `Contact: <sip:mallory@${stranger.host}:${stranger.port}>`,
        `Contribution-ID: contrib-${randomUUID()}`,
      ]);
      await stranger.send(invite, k.sipPort);
      await waitFor(
        () => script.observed.some((o) => text(o.message?.raw).includes(callId)),
        3000,
        20,
        "ObserveSession for the stranger's INVITE",
      );
      assert.match(k.logs(), /INVITE marked cpmpfuac from 127\.0\.0\.2:\d+, not from the PF's UA/);
      // CANCEL it so that Kamailio does not retransmit to a closed port for long
      await stranger.send(
        sipMessage(`CANCEL ${invite.split(" ")[1]} SIP/2.0`, [
          (invite.match(/^Via: .*$/m) as RegExpMatchArray)[0],
          "Max-Forwards: 70",
          /^From: .*$/m.exec(invite)?.[0] as string,
          `To: <${SERVED_USER}>`,
          `Call-ID: ${callId}`,
          "CSeq: 1 CANCEL",
        ]),
        k.sipPort,
      );
    } finally {
      stranger.close();
    }
  });
});
