// One group chat whose MSRP media the PF anchors, as the media e2e tests play
// it: SIPp as the Controlling Function (test/scenarios/cf-invite-msrp.xml)
// and as a client of the served user (client-uas-msrp.xml), through Kamailio.
// The CF's BYE waits for the test: `during` runs once the call is up, then an
// OPTIONS with the call's Call-ID, sent straight to the CF's SIPp, lets it
// send the BYE.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { type KamailioInstance, sendOptions } from "./kamailio.js";
import { first, type SippResult, type SipTraceMessage, startSipp } from "./sipp.js";
import { waitFor } from "./wait.js";

export interface AnchoredCallOptions {
  /** a=path of the CF's SDP offer (its MSRP peer), msrp://127.0.0.1:<port>/<id>;tcp. */
  cfMsrpPath: string;
  /** a=setup of the CF's offer. Default actpass (the PF connects to the CF). */
  cfSetup?: "actpass" | "active" | "passive";
  /** a=path of the client's SDP answer (a=setup:active: the client connects). */
  clientMsrpPath: string;
  /** Extra BYE header lines (e.g. "Reason: SIP;cause=410"). */
  byeHeaders?: string[];
  /** How long the client waits between the BYE and its 200 OK (sipp -d). Default 300. */
  clientPauseMs?: number;
  /** SIPp global timeout in s. Default 30. */
  timeoutS?: number;
  /**
   * Runs once the session is up (the client got the ACK), before the BYE
   * trigger, with the INVITE the client got and the 200 OK the CF got.
   */
  during?: (call: {
    callId: string;
    conversationId: string;
    contributionId: string;
    clientInvite: SipTraceMessage;
    cf200: SipTraceMessage;
  }) => Promise<void>;
  /** Runs once the CF's SIPp started (INVITE on its way); the client answers 400 ms after it got the INVITE. */
  beforeAnswer?: (call: { callId: string }) => Promise<void>;
  /** Runs after the BYE trigger was sent, while the client holds its 200 OK. */
  afterBye?: (call: { callId: string }) => Promise<void>;
}

export interface AnchoredCallResult {
  cf: SippResult;
  client: SippResult;
  callId: string;
  conversationId: string;
  contributionId: string;
  /** What the client received (the INVITE) and answered; what the CF got back. */
  clientInvite: SipTraceMessage;
  client200: SipTraceMessage;
  cf200: SipTraceMessage;
  cfInvite: SipTraceMessage;
}

/** Sends OPTIONS with `callId` to a SIPp on 127.0.0.1:port; resolves on an answer or after `waitMs`. */
export function triggerSipp(port: number, callId: string, waitMs = 2000): Promise<string> {
  return sendOptions(port, { user: "focus", callId, timeoutMs: waitMs });
}

export async function anchoredChatCall(kamailio: KamailioInstance, opts: AnchoredCallOptions): Promise<AnchoredCallResult> {
  const conversationId = `conv-${randomUUID()}`;
  const contributionId = `contrib-${randomUUID()}`;
  const timeoutS = opts.timeoutS ?? 30;
  const client = await startSipp({
    scenario: "client-uas-msrp.xml",
    timeoutS,
    keys: { client_msrp_port: String(portOf(opts.clientMsrpPath)), client_msrp_path: opts.clientMsrpPath },
    extraArgs: ["-d", String(opts.clientPauseMs ?? 300)],
  });
  try {
    const cfRun = await startSipp({
      scenario: "cf-invite-msrp.xml",
      remote: kamailio.address,
      timeoutS,
      keys: {
        client_port: String(client.port),
        conversation_id: conversationId,
        contribution_id: contributionId,
        cf_msrp_port: String(portOf(opts.cfMsrpPath)),
        cf_msrp_path: opts.cfMsrpPath,
        cf_setup: opts.cfSetup ?? "actpass",
        bye_headers: (opts.byeHeaders ?? []).map((h) => `\r\n${h}`).join(""),
      },
    });
    try {
      // SIPp's default Call-ID is "%u-%p@%s": call number, SIPp's pid, local ip
      const callId = `1-${cfRun.pid}@127.0.0.1`;
      if (opts.beforeAnswer) await opts.beforeAnswer({ callId });
      // the session is up once the client got the ACK (the CF's trigger must not come earlier)
      const up = await waitFor(
        async () => {
          const cl = await client.messagesSoFar();
          const cf = await cfRun.messagesSoFar();
          const clientInvite = first(cl, { direction: "received", method: "INVITE" });
          const cf200 = first(cf, { direction: "received", status: 200, cseqMethod: "INVITE" });
          const acked = cl.some((m) => m.direction === "received" && m.method === "ACK");
          return acked && clientInvite && cf200 ? { clientInvite, cf200 } : undefined;
        },
        10_000,
        20,
        "ACK at the client",
      );
      if (opts.during) await opts.during({ callId, conversationId, contributionId, ...up });
      // SIPp as a UAC sends everything (its 200 to the trigger too) to its
      // remote address, Kamailio: the trigger's effect is the BYE, not an answer.
      await triggerSipp(cfRun.port, callId, 0);
      if (opts.afterBye) await opts.afterBye({ callId });
      const [cf, cl] = await Promise.all([cfRun.done, client.done]);
      assert.equal(cf.code, 0, `CF SIPp failed (${cf.code}): ${cf.errors}\n${cf.output}`);
      assert.equal(cl.code, 0, `client SIPp failed (${cl.code}): ${cl.errors}\n${cl.output}`);
      const clientInvite = first(cl.messages, { direction: "received", method: "INVITE" });
      const client200 = first(cl.messages, { direction: "sent", status: 200, cseqMethod: "INVITE" });
      const cf200 = first(cf.messages, { direction: "received", status: 200, cseqMethod: "INVITE" });
      const cfInvite = first(cf.messages, { direction: "sent", method: "INVITE" });
      assert.ok(clientInvite && client200 && cf200 && cfInvite, "INVITE / 200 OK missing in the traces");
      return { cf, client: cl, callId, conversationId, contributionId, clientInvite, client200, cf200, cfInvite };
    } finally {
      await cfRun.stop();
    }
  } finally {
    await client.stop();
  }
}

function portOf(msrpUri: string): number {
  const m = /^msrps?:\/\/[^/]*:(\d+)\//.exec(msrpUri);
  if (!m) throw new Error(`no port in ${msrpUri}`);
  return Number(m[1]);
}

/** The MSRP media description of an SDP (or of a multipart body's SDP part): port, a=path, a=setup, c=. */
export function msrpMedia(body: string): {
  port: number;
  path: string;
  setup: string;
  c: string[];
  acceptTypes: string;
  acceptWrapped: string;
} {
  const lines = body.split(/\r?\n/);
  const m = lines.find((l) => l.startsWith("m=message "));
  const get = (prefix: string) =>
    lines
      .find((l) => l.startsWith(prefix))
      ?.slice(prefix.length)
      .trim() ?? "";
  return {
    port: Number(m?.split(" ")[1] ?? 0),
    path: get("a=path:"),
    setup: get("a=setup:"),
    c: lines.filter((l) => l.startsWith("c=")),
    acceptTypes: get("a=accept-types:"),
    acceptWrapped: get("a=accept-wrapped-types:"),
  };
}
