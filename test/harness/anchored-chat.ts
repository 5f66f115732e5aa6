// One group chat whose MSRP media the PF anchors, as the media e2e tests play
// it: SIPp as the Controlling Function (test/scenarios/cf-invite-msrp.xml)
// and as a client of the served user (client-uas-msrp.xml), through Kamailio;
// or, client-initiated, SIPp as the client INVITEing the conference factory
// (client-invite-msrp.xml) and as the CF answering as focus (cf-uas-msrp.xml).
// The CF's BYE waits for the test: `during` runs once the call is up, then an
// OPTIONS with the call's Call-ID, sent straight to the CF's SIPp, lets it
// send the BYE.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { type KamailioInstance, sendOptions } from "./kamailio.js";
import { REPO_ROOT } from "./sidecar.js";
import { first, type SippResult, type SipTraceMessage, startSipp } from "./sipp.js";
import { waitFor } from "./wait.js";

/** The served user's device in the tests (its +sip.instance, RFC 5626): unless a test says otherwise, the device that registers and re-joins. */
export const DEVICE_INSTANCE = "<urn:gsma:imei:35209900-176148-0>";

export interface AnchoredCallOptions {
  /** +sip.instance of the client's 2xx Contact (the device in the chat the record knows, DD-1 per device). Default "": none. */
  clientInstance?: string;
  /** a=path of the CF's SDP offer (its MSRP peer), msrp://127.0.0.1:<port>/<id>;tcp. */
  cfMsrpPath: string;
  /** a=setup of the CF's offer. Default actpass (the PF connects to the CF). */
  cfSetup?: "actpass" | "active" | "passive";
  /** a=path of the client's SDP answer (a=setup:active: the client connects). */
  clientMsrpPath: string;
  /** Extra BYE header lines (e.g. "Reason: SIP;cause=410"). */
  byeHeaders?: string[];
  /** The served user the CF invites (To). Default tel:+16135551200. */
  servedUser?: string;
  /** Participants of the CF's resource list after its three (a big group makes a large INVITE). Default none. */
  moreParticipants?: readonly { uri: string; displayName: string }[];
  /** The group chat's IDs. Default: fresh random ones. */
  conversationId?: string;
  contributionId?: string;
  /** How long the client waits between the BYE and its 200 OK (sipp -d). Default 300. */
  clientPauseMs?: number;
  /** false: the client never answers the BYE (and stays clientPauseMs after it). Default true. */
  clientAnswersBye?: boolean;
  /** Who ends the session on the trigger: the CF (a network BYE, default) or the served user's client (a client-side BYE). */
  byeFrom?: "cf" | "client";
  /** SIPp global timeout in s. Default 30. */
  timeoutS?: number;
  /** Another SIPp scenario for the served user's side (e.g. an S-CSCF forking to several devices) and its keys; clientMsrpPath is then unused. */
  clientScenario?: { scenario: string; keys: Record<string, string> };
  /**
   * What the focus does with requests outside the CF's call: an
   * out-of-call scenario of the CF's SIPp (sipp -oocsf) and its keys, e.g.
   * the PF's own conference subscription (dd-11-pf-subscription.xml) or a
   * client's re-join INVITE (cf-ooc-rejoin.xml). Default none (SIPp
   * discards them unanswered).
   */
  focusOutOfCall?: { scenario: string; keys: Record<string, string> };
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
    /** The CF SIPp's SIP port (triggerSipp on it makes the CF send its BYE). */
    cfSipPort: number;
    /** The client SIPp's SIP port (triggerSipp on it makes the client leave). */
    clientSipPort: number;
    /** What the CF's SIPp sent and received so far (its out-of-call scenario's calls too). */
    cfMessages: () => Promise<SipTraceMessage[]>;
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

/** Sends OPTIONS with `callId` to a SIPp on 127.0.0.1:port (over TCP to one run with -t t1); resolves on an answer or after `waitMs`. */
/**
 * One more party's in-dialog requests on an established dialog (a session
 * refresh of the CF, or of a further device), through Kamailio: `scenario`
 * with the dialog's Call-ID as SIPp's own (it matches responses to its call
 * by it); resolves with its trace once it succeeded.
 */
export async function inDialogSipp(
  kamailio: KamailioInstance,
  scenario: string,
  callId: string,
  keys: Record<string, string>,
): Promise<SippResult> {
  const run = await startSipp({ scenario, remote: kamailio.address, timeoutS: 20, extraArgs: ["-cid_str", callId], keys });
  const r = await run.done;
  assert.equal(r.code, 0, `${scenario}: ${r.errors}`);
  return r;
}

export function triggerSipp(port: number, callId: string, waitMs = 2000, transport: "udp" | "tcp" = "udp"): Promise<string> {
  return sendOptions(port, { user: "focus", callId, timeoutMs: waitMs, transport });
}

/** One SIPp of a two-party call: scenario, -key values, extra arguments. */
interface SippSpec {
  scenario: string;
  keys: Record<string, string>;
  extraArgs?: string[];
}

/**
 * The orchestration shared by the anchored-call flavours: a SIPp UAS, then a
 * SIPp UAC through Kamailio; waits until `up` finds the call established in
 * the traces so far, runs `during`, triggers the BYE on the SIPp that sends
 * it (OPTIONS with the call's Call-ID, straight to it), runs `afterBye`, and
 * checks that both SIPp runs succeeded.
 */
async function playTriggeredCall<Up>(
  kamailio: KamailioInstance,
  spec: {
    uas: SippSpec;
    uac: (uasPort: number) => SippSpec;
    /** Which SIPp sends the BYE on the trigger. */
    byeFrom: "uac" | "uas";
    timeoutS: number;
    up: (uas: SipTraceMessage[], uac: SipTraceMessage[]) => Up | undefined;
    upLabel: string;
    beforeAnswer?: (call: { callId: string }) => Promise<void>;
    during?: (callId: string, up: Up, ports: { uac: number; uas: number; uacMessages: () => Promise<SipTraceMessage[]> }) => Promise<void>;
    afterBye?: (call: { callId: string }) => Promise<void>;
  },
): Promise<{ uas: SippResult; uac: SippResult; callId: string }> {
  const uasRun = await startSipp({ ...spec.uas, timeoutS: spec.timeoutS });
  try {
    const uacRun = await startSipp({ ...spec.uac(uasRun.port), remote: kamailio.address, timeoutS: spec.timeoutS });
    try {
      // SIPp's default Call-ID is "%u-%p@%s": call number, SIPp's pid, local ip
      const callId = `1-${uacRun.pid}@127.0.0.1`;
      if (spec.beforeAnswer) await spec.beforeAnswer({ callId });
      // the session is up once the UAS got the ACK (the trigger must not come earlier)
      const up = await waitFor(async () => spec.up(await uasRun.messagesSoFar(), await uacRun.messagesSoFar()), 10_000, 20, spec.upLabel);
      if (spec.during) await spec.during(callId, up, { uac: uacRun.port, uas: uasRun.port, uacMessages: () => uacRun.messagesSoFar() });
      // SIPp sends everything (its 200 to the trigger too) to its remote
      // address, Kamailio: the trigger's effect is the BYE, not an answer.
      await triggerSipp((spec.byeFrom === "uac" ? uacRun : uasRun).port, callId, 0);
      if (spec.afterBye) await spec.afterBye({ callId });
      const [uac, uas] = await Promise.all([uacRun.done, uasRun.done]);
      assert.equal(uac.code, 0, `${spec.uac(uasRun.port).scenario} SIPp failed (${uac.code}): ${uac.errors}\n${uac.output}`);
      assert.equal(uas.code, 0, `${spec.uas.scenario} SIPp failed (${uas.code}): ${uas.errors}\n${uas.output}`);
      return { uas, uac, callId };
    } finally {
      await uacRun.stop();
    }
  } finally {
    await uasRun.stop();
  }
}

export async function anchoredChatCall(kamailio: KamailioInstance, opts: AnchoredCallOptions): Promise<AnchoredCallResult> {
  const conversationId = opts.conversationId ?? `conv-${randomUUID()}`;
  const contributionId = opts.contributionId ?? `contrib-${randomUUID()}`;
  const {
    uas: cl,
    uac: cf,
    callId,
  } = await playTriggeredCall(kamailio, {
    uas: {
      ...(opts.clientScenario ?? {
        scenario: opts.clientAnswersBye === false ? "client-uas-msrp-bye-silent.xml" : "client-uas-msrp.xml",
        keys: {
          client_msrp_port: String(portOf(opts.clientMsrpPath)),
          client_msrp_path: opts.clientMsrpPath,
          contact_params: contactParams(opts.clientInstance ?? ""),
        },
      }),
      extraArgs: ["-d", String(opts.clientPauseMs ?? 300)],
    },
    uac: (clientPort) => ({
      scenario: "cf-invite-msrp.xml",
      keys: {
        client_port: String(clientPort),
        conversation_id: conversationId,
        contribution_id: contributionId,
        cf_msrp_port: String(portOf(opts.cfMsrpPath)),
        cf_msrp_path: opts.cfMsrpPath,
        cf_setup: opts.cfSetup ?? "actpass",
        bye_headers: (opts.byeHeaders ?? []).map((h) => `\r\n${h}`).join(""),
        served_user: opts.servedUser ?? "tel:+16135551200",
        more_participants: (opts.moreParticipants ?? [])
          .map((p) => `\r\n        <entry uri="${p.uri}" cp:copyControl="to"><display-name>${p.displayName}</display-name></entry>`)
          .join(""),
        ...(opts.focusOutOfCall?.keys ?? {}),
      },
      ...(opts.focusOutOfCall ? { extraArgs: ["-oocsf", join(REPO_ROOT, "test", "scenarios", opts.focusOutOfCall.scenario)] } : {}),
    }),
    byeFrom: opts.byeFrom === "client" ? "uas" : "uac",
    timeoutS: opts.timeoutS ?? 30,
    up: (clientMsgs, cfMsgs) => {
      const clientInvite = first(clientMsgs, { direction: "received", method: "INVITE" });
      const cf200 = first(cfMsgs, { direction: "received", status: 200, cseqMethod: "INVITE" });
      const acked = clientMsgs.some((m) => m.direction === "received" && m.method === "ACK");
      return acked && clientInvite && cf200 ? { clientInvite, cf200 } : undefined;
    },
    upLabel: "ACK at the client",
    ...(opts.beforeAnswer ? { beforeAnswer: opts.beforeAnswer } : {}),
    during: async (id, up: { clientInvite: SipTraceMessage; cf200: SipTraceMessage }, ports) => {
      if (opts.during)
        await opts.during({
          callId: id,
          conversationId,
          contributionId,
          ...up,
          cfSipPort: ports.uac,
          clientSipPort: ports.uas,
          cfMessages: ports.uacMessages,
        });
    },
    ...(opts.afterBye ? { afterBye: opts.afterBye } : {}),
  });
  const clientInvite = first(cl.messages, { direction: "received", method: "INVITE" });
  const client200 = first(cl.messages, { direction: "sent", status: 200, cseqMethod: "INVITE" });
  const cf200 = first(cf.messages, { direction: "received", status: 200, cseqMethod: "INVITE" });
  const cfInvite = first(cf.messages, { direction: "sent", method: "INVITE" });
  assert.ok(clientInvite && client200 && cf200 && cfInvite, "INVITE / 200 OK missing in the traces");
  return { cf, client: cl, callId, conversationId, contributionId, clientInvite, client200, cf200, cfInvite };
}

export interface ClientInitiatedCallOptions {
  /** a=path of the client's SDP offer (its MSRP peer). */
  clientMsrpPath: string;
  /** a=setup of the client's offer. Default active (the client connects to the PF). */
  clientSetup?: "active" | "actpass";
  /** a=path of the CF's SDP answer. */
  cfMsrpPath: string;
  /** a=setup of the CF's answer to the PF's actpass. Default active (the CF connects to the PF). */
  cfSetup?: "active" | "passive";
  /** How long the client waits between the CF's BYE and its 200 OK (sipp -d). Default 300. */
  clientPauseMs?: number;
  /** SIPp global timeout in s. Default 30. */
  timeoutS?: number;
  /** Runs once the session is up (the CF got the ACK), before the BYE trigger, with the INVITE the CF got and the 200 OK the client got. */
  during?: (call: {
    callId: string;
    conversationId: string;
    contributionId: string;
    cfInvite: SipTraceMessage;
    client200: SipTraceMessage;
  }) => Promise<void>;
  /** Runs after the BYE trigger was sent to the CF, while the client holds its 200 OK to the BYE. */
  afterBye?: (call: { callId: string }) => Promise<void>;
}

export interface ClientInitiatedCallResult {
  cf: SippResult;
  client: SippResult;
  callId: string;
  conversationId: string;
  contributionId: string;
  /** What the client sent (INVITE) and got back; what the CF got and answered. */
  clientInvite: SipTraceMessage;
  client200: SipTraceMessage;
  cfInvite: SipTraceMessage;
  cf200: SipTraceMessage;
}

/**
 * A client-initiated group chat whose MSRP media the PF anchors: SIPp as the
 * served user's client INVITEs the conference factory through Kamailio
 * (test/scenarios/client-invite-msrp.xml), SIPp as the CF answers as focus
 * (cf-uas-msrp.xml) and, on the trigger after `during`, sends the BYE (a
 * network BYE).
 */
export async function clientInitiatedChatCall(
  kamailio: KamailioInstance,
  opts: ClientInitiatedCallOptions,
): Promise<ClientInitiatedCallResult> {
  const conversationId = `conv-${randomUUID()}`;
  const contributionId = `contrib-${randomUUID()}`;
  const {
    uas: cf,
    uac: cl,
    callId,
  } = await playTriggeredCall(kamailio, {
    uas: {
      scenario: "cf-uas-msrp.xml",
      keys: { cf_msrp_port: String(portOf(opts.cfMsrpPath)), cf_msrp_path: opts.cfMsrpPath, cf_setup: opts.cfSetup ?? "active" },
    },
    uac: (cfPort) => ({
      scenario: "client-invite-msrp.xml",
      keys: {
        cf_port: String(cfPort),
        conversation_id: conversationId,
        contribution_id: contributionId,
        client_msrp_port: String(portOf(opts.clientMsrpPath)),
        client_msrp_path: opts.clientMsrpPath,
        client_setup: opts.clientSetup ?? "active",
      },
      extraArgs: ["-d", String(opts.clientPauseMs ?? 300)],
    }),
    byeFrom: "uas",
    timeoutS: opts.timeoutS ?? 30,
    up: (cfMsgs, clientMsgs) => {
      const cfInvite = first(cfMsgs, { direction: "received", method: "INVITE" });
      const client200 = first(clientMsgs, { direction: "received", status: 200, cseqMethod: "INVITE" });
      const acked = cfMsgs.some((m) => m.direction === "received" && m.method === "ACK");
      return acked && cfInvite && client200 ? { cfInvite, client200 } : undefined;
    },
    upLabel: "ACK at the CF",
    during: async (id, up: { cfInvite: SipTraceMessage; client200: SipTraceMessage }) => {
      if (opts.during) await opts.during({ callId: id, conversationId, contributionId, ...up });
    },
    ...(opts.afterBye ? { afterBye: opts.afterBye } : {}),
  });
  const clientInvite = first(cl.messages, { direction: "sent", method: "INVITE" });
  const client200 = first(cl.messages, { direction: "received", status: 200, cseqMethod: "INVITE" });
  const cfInvite = first(cf.messages, { direction: "received", method: "INVITE" });
  const cf200 = first(cf.messages, { direction: "sent", status: 200, cseqMethod: "INVITE" });
  assert.ok(clientInvite && client200 && cfInvite && cf200, "INVITE / 200 OK missing in the traces");
  return { cf, client: cl, callId, conversationId, contributionId, clientInvite, client200, cfInvite, cf200 };
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

/** The Contact parameters naming a device (RFC 5626 4.1: +sip.instance quoted); "" for none. */
export function contactParams(instance: string): string {
  return instance ? `;+sip.instance="${instance}"` : "";
}
