// The Kamailio side of the cpm.pf.v1 contract, against a scripted gRPC
// server (in this test process) instead of the real sidecar, so that the
// bridge can be shown to: hand over exactly what Kamailio received, act on
// every answer field it uses, sanitise what goes into SIP, and never block a
// SIP worker while the sidecar is slow (SHAPE-1, 8.3.2.3 BYE-B7/B9). Twice:
// decisions over the Decide stream, and over unary calls (a sidecar without
// Decide answers UNIMPLEMENTED and the bridge falls back).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  ByeCause,
  GsoStorage_State,
  type HandleByeRequest,
  type HandleByeResponse,
  HandleByeResponseSchema,
  Mode,
  type ObserveSessionRequest,
  ObserveSessionResponseSchema,
  type ReportByeOutcomeRequest,
  ReportByeOutcomeResponseSchema,
  Side,
} from "../../src/gen/cpm/pf/v1/pf_pb.js";
import { groupChatCall } from "../harness/group-chat.js";
import { type KamailioInstance, sipOptions, startKamailio } from "../harness/kamailio.js";
import { decideHandler, startScriptedGrpc, unaryHandler } from "../harness/scripted-grpc.js";
import { header } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (raw: Uint8Array) => Buffer.from(raw).toString("utf8");

/** What the scripted sidecar saw, and how it answers. */
interface Script {
  byeDelayMs: number;
  reportDelayMs: number;
  clientReason: string;
  byes: { req: HandleByeRequest; at: number }[];
  observed: { req: ObserveSessionRequest; at: number }[];
  reports: { req: ReportByeOutcomeRequest; at: number }[];
  /** Decide streams opened by Kamailio. */
  streams: number;
}

type Transport = "stream" | "unary";

async function startScriptedSidecar(script: Script, transport: Transport): Promise<{ target: string; stop(): Promise<void> }> {
  const handleBye = async (req: HandleByeRequest): Promise<HandleByeResponse> => {
    script.byes.push({ req, at: Date.now() });
    await sleep(script.byeDelayMs);
    const callId = /^Call-ID:\s*(\S+)/im.exec(text(req.bye?.raw ?? new Uint8Array()))?.[1] ?? "";
    return create(HandleByeResponseSchema, {
      mode: Mode.B2BUA,
      side: Side.NETWORK,
      cause: ByeCause.TERMINATED,
      reasonCause: 410,
      clientReason: script.clientReason,
      waitForClients: true,
      reportOutcome: true,
      gso: { state: GsoStorage_State.STORED, folder: "Default/c/k", messageId: "m@x" },
      sessionKey: `key-${callId}`,
      notes: ["scripted"],
    });
  };
  const observeSession = async (req: ObserveSessionRequest) => {
    script.observed.push({ req, at: Date.now() });
    return create(ObserveSessionResponseSchema, { updated: true, sessionKey: "k", participantCount: 3 });
  };
  const reportByeOutcome = async (req: ReportByeOutcomeRequest) => {
    await sleep(script.reportDelayMs);
    script.reports.push({ req, at: Date.now() });
    return create(ReportByeOutcomeResponseSchema, { released: true });
  };
  // Without a decide handler grpc-js answers UNIMPLEMENTED: the bridge's fallback to unary calls.
  const decide = decideHandler({ handleBye, observeSession, reportByeOutcome, onStream: () => script.streams++ });
  return startScriptedGrpc({
    ...(transport === "stream" ? { decide } : {}),
    handleBye: unaryHandler(handleBye),
    observeSession: unaryHandler(observeSession),
    reportByeOutcome: unaryHandler(reportByeOutcome),
  });
}

const call = groupChatCall;

for (const transport of ["stream", "unary"] as const)
  describe(`Kamailio bridge (cpm-pf.cfg + cpm_pf_bridge.py) against a scripted sidecar, decisions over ${transport === "stream" ? "the Decide stream" : "unary calls (no Decide)"}`, () => {
    const script: Script = { byeDelayMs: 0, reportDelayMs: 0, clientReason: "", byes: [], observed: [], reports: [], streams: 0 };
    let sidecar: { target: string; stop(): Promise<void> } | undefined;
    let kamailio: KamailioInstance | undefined;

    before(async () => {
      sidecar = await startScriptedSidecar(script, transport);
      kamailio = await startKamailio({ grpcTarget: sidecar.target, deadlineMs: 1000 });
    });
    after(async () => {
      await kamailio?.stop();
      await sidecar?.stop();
    });

    test("SHAPE-1: the sidecar gets the INVITE and the BYE as received (a non-focus 2xx is not sent) ($mb, $si:$sp, $pr); the session key comes back in ReportByeOutcome", async () => {
      Object.assign(script, {
        byeDelayMs: 0,
        reportDelayMs: 0,
        clientReason: 'SIP;cause=410;text="Gone"',
        byes: [],
        observed: [],
        reports: [],
      });
      const c = await call(kamailio as KamailioInstance, ['Reason: SIP;cause=410;text="Gone"']);
      const callId = header(c.cfBye, "call-id") as string;

      const invite = script.observed.find((o) => text(o.req.message?.raw ?? new Uint8Array()).startsWith("INVITE "));
      assert.ok(invite, "INVITE observed");
      assert.equal(invite.req.message?.source, `127.0.0.1:${c.cfPort}`);
      assert.equal(invite.req.message?.transport, "udp");
      assert.match(text(invite.req.message?.raw ?? new Uint8Array()), /application\/resource-lists\+xml[\s\S]*tel:\+16135551212/);
      // The client's 2xx carries no `isfocus` Contact: nothing new for the PF,
      // so it is not sent (only a focus's 2xx is, RFC 4579 3.4).
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(
        !script.observed.some((o) => text(o.req.message?.raw ?? new Uint8Array()).startsWith("SIP/2.0 200 OK")),
        "non-focus 2xx not observed",
      );

      assert.equal(script.byes.length, 1);
      const bye = script.byes[0]?.req.bye;
      assert.equal(bye?.source, `127.0.0.1:${c.cfPort}`);
      assert.equal(bye?.transport, "udp");
      const raw = text(bye?.raw ?? new Uint8Array());
      assert.match(raw, /^BYE sip:/);
      assert.match(raw, /^Reason: SIP;cause=410;text="Gone"\r$/m);
      assert.match(raw, new RegExp(`^Call-ID: ${callId.replace(/\./g, "\\.")}\\r$`, "m"));

      await waitFor(() => script.reports.length === 1, 2000, 20, "ReportByeOutcome");
      assert.equal(script.reports[0]?.req.sessionKey, `key-${callId}`);
      assert.equal(script.reports[0]?.req.statusCode, 200);
      assert.equal(script.reports[0]?.req.mode, Mode.B2BUA);
    });

    test("BYE-B7: client_reason replaces every Reason of the BYE; CR/LF in it cannot inject a header", async () => {
      Object.assign(script, { clientReason: 'SIP;cause=410;text="Gone"\r\nX-Injected: 1', byes: [], observed: [], reports: [] });
      const c = await call(kamailio as KamailioInstance, ["Reason: SIP;cause=410", 'Reason: Q.850;cause=16;text="Normal"']);
      assert.deepEqual(c.clientBye.headers.get("reason"), ['SIP;cause=410;text="Gone" X-Injected: 1']);
      assert.equal(c.clientBye.headers.get("x-injected"), undefined);
    });

    test("SHAPE-1 BYE-B9: a slow sidecar never blocks a SIP worker; the CF's 200 OK does not wait for ReportByeOutcome", async (t) => {
      Object.assign(script, {
        byeDelayMs: 600,
        reportDelayMs: 1000,
        clientReason: "SIP;cause=200",
        byes: [],
        observed: [],
        reports: [],
      });
      const k = kamailio as KamailioInstance;
      // OPTIONS to Kamailio every 10 ms while the call runs (4 SIP workers): when each went and was answered
      const probes: { sent: number; answered: number }[] = [];
      let probing = true;
      const prober = (async () => {
        while (probing) {
          const sent = Date.now();
          const answer = await sipOptions(k.sipPort, 5000);
          assert.ok(answer.startsWith("SIP/2.0 200"), "OPTIONS answered");
          probes.push({ sent, answered: Date.now() });
          await sleep(10);
        }
      })();
      const c = await call(k, []);
      await waitFor(() => script.reports.length === 1, 5000, 20, "ReportByeOutcome");
      probing = false;
      await prober;

      // ordering, not timing: SIP workers answer while the BYE waits for its decision
      const duringHold = probes.filter((p) => p.sent > c.cfBye.time && p.answered < c.clientBye.time).length;
      t.diagnostic(
        `OPTIONS during the call: n=${probes.length}, ${duringHold} sent and answered while the BYE waited for HandleBye (600 ms); ` +
          `BYE held ${(c.clientBye.time - c.cfBye.time).toFixed(1)} ms; ReportByeOutcome took 1000 ms`,
      );
      assert.ok(duringHold >= 3, `only ${duringHold} OPTIONS were answered while the BYE was held: a SIP worker waited`);
      assert.ok(c.clientBye.time >= c.cfBye.time + 550, "the BYE waited for the decision");
      assert.ok((script.reports[0]?.at ?? 0) > c.cf200.time, "the CF had its 200 OK before ReportByeOutcome answered");
    });

    test("BYE-B9 fail-safe: an answer later than the deadline -> the BYE goes on unchanged when the deadline fires; the same async worker decides the next BYE", async (t) => {
      // one async worker, so that the second BYE is decided by the process
      // whose decision came too late (over the stream: on a fresh stream)
      const k = await startKamailio({ grpcTarget: (sidecar as { target: string }).target, deadlineMs: 300, asyncWorkers: 1 });
      try {
        Object.assign(script, { byeDelayMs: 700, reportDelayMs: 0, clientReason: "SIP;cause=200", byes: [], observed: [], reports: [] });
        const late = await call(k, ["Reason: SIP;cause=480"]);
        const held = late.clientBye.time - late.cfBye.time;
        t.diagnostic(`late answer: BYE held ${held.toFixed(1)} ms (deadline 300 ms, answer after 700 ms)`);
        assert.deepEqual(late.clientBye.headers.get("reason"), ["SIP;cause=480"], "relayed unchanged");
        // relayed when the deadline fired, not when the late answer came
        assert.ok(held >= 280 && held < 650, `BYE held ${held} ms`);
        assert.equal(await k.stat("cpm_pf_failsafe"), 1);
        assert.match(k.logs(), /HandleBye failed after \d+ ms: DEADLINE_EXCEEDED/);

        await sleep(500); // the late answer has come and gone
        Object.assign(script, { byeDelayMs: 0 });
        const next = await call(k, ["Reason: SIP;cause=480"]);
        assert.deepEqual(next.clientBye.headers.get("reason"), ["SIP;cause=200"], "decided again");
        assert.equal(await k.stat("cpm_pf_failsafe"), 1, "no second fail-safe");
      } finally {
        await k.stop();
      }
    });

    test("SHAPE-1: the decisions went over the transport under test", () => {
      if (transport === "stream") assert.ok(script.streams >= 1, "Kamailio opened a Decide stream");
      else assert.equal(script.streams, 0);
    });
  });
