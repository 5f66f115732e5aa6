// Fault case (c): an anchored MSRP relay whose sidecar is SIGKILLed mid-way,
// from the wire. The CF invites the served user through Kamailio (media
// anchored), both MSRP legs connect to the sidecar, the CF sends chat
// messages pipelined and the sidecar is SIGKILLed once the client got a
// number of them; then the CF's BYE (480). What the CF got a 200 for must
// have reached the client: the PF answers a relayed SEND once the client's
// own 200 came back (relay-policy.ts), so a crash can leave a message
// unacknowledged, never acknowledged and gone. With two sidecars the CF's BYE
// goes through the killed one's Kamailio to the other, decided from the
// shared record. Short form: test/e2e/relay-crash.test.ts; full: npm run faults.
import { randomUUID } from "node:crypto";
import { chatCpim } from "../fixtures/cpim.js";
import { anchoredChatCall, msrpMedia } from "./anchored-chat.js";
import { DeferredChatRig, groupFolder, lastLine, SERVED_USER } from "./deferred-chat.js";
import { startOwnerPair } from "./delivery-takeover.js";
import { waitFor } from "./wait.js";

/** SENDs the CF keeps unanswered. */
const OUTSTANDING = 16;

export interface RelayCounts {
  sent: number;
  /** SENDs the CF got 200 for. */
  acknowledged: number;
  /** SENDs with no 200 (the kill). */
  unanswered: number;
  /** Messages the client got. */
  delivered: number;
  /** Acknowledged and never at the client. */
  lost: number;
  /** At the client more than once. */
  doubled: number;
  /** At the client out of the CF's order or after a gap. */
  reordered: number;
  /** Kamailio's fail-safe BYEs from the kill on (two sidecars: the other one should decide). */
  failsafes: number;
  /** Two sidecars: the sidecar that decided the CF's BYE ("a", "b"), "" for none. */
  decidedBy: string;
  /** GSOs in the group session's folder after the BYE. */
  gsos: number;
}

export interface RelayRun {
  counts: RelayCounts;
  callId: string;
}

/**
 * The anchored chat through `r`'s Kamailio and sidecar: `messages` pipelined, `r`'s sidecar SIGKILLed once the
 * client got `killAt`, then the CF's BYE. `byeDecided`: the BYE still meets a sidecar (another one of a pair)
 * and the call must end cleanly; else it meets the fail-safe, whose outcome is not the case's.
 */
export async function relayAcrossKill(
  r: DeferredChatRig,
  opts: { messages: number; killAt: number; byeDecided: boolean },
): Promise<{ run: RelayRun; call: { conversationId: string; contributionId: string }; ended: boolean }> {
  const ids = { conversationId: `conv-${randomUUID()}`, contributionId: `contrib-${randomUUID()}` };
  const cf = await r.peer("CF");
  const ue = await r.peer("client");
  const texts = Array.from({ length: opts.messages }, (_, i) => `relayed ${i}`);
  const acked: string[] = [];
  let unanswered = 0;
  let played = false;
  let callId = "";
  let failsafesAtKill = 0;
  const call = await anchoredChatCall(r.kamailio, {
    ...ids,
    servedUser: SERVED_USER,
    cfMsrpPath: cf.path,
    cfSetup: "active",
    clientMsrpPath: ue.path,
    byeHeaders: ["Reason: SIP;cause=480"],
    timeoutS: 60,
    during: async ({ callId: id, clientInvite, cf200 }) => {
      callId = id;
      await waitFor(() => r.logged("media answer anchored", id), 5000, 20, "ReportMediaAnswer");
      await ue.open(msrpMedia(clientInvite.body).path, "active");
      await cf.open(msrpMedia(cf200.body).path, "active");
      failsafesAtKill = await r.kamailio.stat("cpm_pf_failsafe");
      let killed: Promise<void> | undefined;
      ue.on("message", () => {
        if (!killed && ue.received.length >= opts.killAt) killed = r.sidecar.kill("SIGKILL");
      });
      let next = 0;
      const worker = async () => {
        while (next < texts.length) {
          const text = texts[next++] as string;
          const outcome = await cf.send(chatCpim(text, `imdn-relay-${text}`), "message/cpim").then(
            (res) => res.code,
            () => 0,
          );
          if (outcome === 200) acked.push(text);
          else {
            unanswered++;
            if (killed) return;
          }
        }
      };
      await Promise.all(Array.from({ length: OUTSTANDING }, worker));
      await killed;
      // what the client's socket held when the sidecar died is read by now
      await new Promise((res) => setTimeout(res, 300));
      played = true;
    },
  }).catch((err: unknown) => {
    if (opts.byeDecided || !played) throw err;
    return undefined;
  });
  const delivered = ue.received.map(lastLine);
  const got = new Set(delivered);
  let reordered = 0;
  for (let i = 0; i < delivered.length; i++) if (delivered[i] !== texts[i]) reordered++;
  const counts: RelayCounts = {
    sent: texts.length,
    acknowledged: acked.length,
    unanswered,
    delivered: delivered.length,
    lost: acked.filter((x) => !got.has(x)).length,
    doubled: delivered.length - got.size,
    reordered,
    failsafes: (await r.kamailio.stat("cpm_pf_failsafe")) - failsafesAtKill,
    decidedBy: "",
    gsos: 0,
  };
  return { run: { counts, callId }, call: ids, ended: call !== undefined };
}

/** GSOs in the group session's folder once one is there (or after 5 s). */
async function gsosOf(r: DeferredChatRig, call: { conversationId: string; contributionId: string }): Promise<number> {
  const stored = async () => (await r.folder(groupFolder(call), SERVED_USER)).length;
  await waitFor(async () => (await stored()) > 0, 5000, 50, "the GSO").catch(() => {});
  return stored();
}

/** The full case of npm run faults: one sidecar (restarted after) or 2 Kamailio × 2 sidecars on Redis (A killed). */
export async function runRelayFault(opts: {
  messages: number;
  scaleOut: boolean;
  progress?: (line: string) => void;
}): Promise<RelayCounts> {
  const say = opts.progress ?? (() => {});
  const killAt = Math.floor(opts.messages / 4);
  if (!opts.scaleOut) {
    const rig = await DeferredChatRig.start({}, undefined, { failsafeJournal: true });
    try {
      say(`${opts.messages} messages relayed through one sidecar, SIGKILL after ${killAt}; restarted, the fail-safe BYE replayed`);
      const { run, call } = await relayAcrossKill(rig, { messages: opts.messages, killAt, byeDecided: false });
      await rig.restart();
      return { ...run.counts, gsos: await gsosOf(rig, call) };
    } finally {
      await rig.stop();
    }
  }
  const pair = await startOwnerPair({ slots: 16, leaseTtlMs: 1500 });
  try {
    say(`${opts.messages} messages relayed through A, SIGKILL of A after ${killAt}; the CF's BYE through A's Kamailio`);
    const { run, call } = await relayAcrossKill(pair.a, { messages: opts.messages, killAt, byeDecided: true });
    const decided = await waitFor(() => pair.b.logged("BYE decided", run.callId), 5000, 20, "B decided the BYE").then(
      () => "b",
      () => "",
    );
    return { ...run.counts, decidedBy: decided, gsos: await gsosOf(pair.b, call) };
  } finally {
    await pair.stop();
  }
}
