// A deferred delivery cut by a SIGKILL and the delivery that takes over, from
// the wire (DeferredChatRig: the CF's INVITE and messages through Kamailio,
// the S-CSCF's REGISTERs, the client's SIPp and MSRP peer), with the counts
// a fault run prints: what the CF sent (each SEND answered 200 once stored),
// what each delivery brought, lost, sent twice, out of order, left queued.
// One sidecar restarted on its own journal, or two sidecars behind their own
// Kamailio on one Redis (the owner of the user's slot killed, the other takes
// the slot once the lease lapsed).
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaults } from "../../src/config/config.js";
import { ACK_BATCH } from "../../src/procedures/delivery-session.js";
import { cpimFacts } from "../../src/store/deferred-object.js";
import { triggerSipp } from "./anchored-chat.js";
import { type Chat, DeferredChatRig, deferredFolder, GSO_TYPE, lastLine, SERVED_USER } from "./deferred-chat.js";
import { waitServing } from "./kamailio.js";
import { freePort } from "./ports.js";
import { type RedisInstance, startRedis } from "./redis.js";
import { waitFor } from "./wait.js";

export interface TakeoverCounts {
  /** Chat messages the CF sent, each answered 200 by the PF once in the deferred queue. */
  sent: number;
  /** Items the killed delivery brought to the device before the kill. */
  before: number;
  /** Items the delivery that took over brought (the GSO after them not counted). */
  after: number;
  /** Sent by the CF, delivered by neither. */
  lost: number;
  /** Delivered by both (same IMDN Message-ID: the client can drop the copy). */
  twice: number;
  /** Of those, copies whose IMDN Message-ID is not the first copy's (or missing): a client could not drop them. */
  twiceUnmarked: number;
  /** Items not where the CF's order puts them (either delivery). */
  reordered: number;
  /** Objects left in the deferred queue once the second delivery ended. */
  left: number;
  /** The delivery that took over ended with the GSO (DD-11). */
  gso: boolean;
  ms: number;
}

/**
 * Sent twice at most across a crash: unanswered on the wire (the MSRP
 * window), confirmed but not in an ack set yet, the record write of the
 * delivered position under way.
 */
export const SENT_TWICE_BOUND = defaults.media.deliveryWindow + 2 * ACK_BATCH;

const BYE_REASON = { bye_reason: 'SIP;cause=200;text="Call completed"' };

/**
 * `chat`'s deferred messages delivered by `first` to the device (its REGISTER
 * through `first`'s Kamailio) until at least `killAtLeast` came and delivered
 * items are leaving the queue; then `crash` (a SIGKILL; `clientGone` stops
 * the device's SIPp, for a crash that restarts the sidecar to call before
 * the new process starts); then the delivery that takes over, to its end,
 * as `then` says: "registers", the one the device's next REGISTER through
 * `next`'s Kamailio starts; "resumed", the restarted sidecar's own
 * (delivery.resumeInterrupted), to the device at the same contact with no
 * REGISTER; "moves", that resumed delivery rings the contact the device
 * left (nobody answers there) and the device registers from another one.
 */
export async function deliveryAcrossCrash(
  first: DeferredChatRig,
  next: DeferredChatRig,
  chat: Chat,
  crash: (clientGone: () => Promise<void>) => Promise<void>,
  killAtLeast = 60,
  then: "registers" | "resumed" | "moves" = "registers",
): Promise<TakeoverCounts & { first: string[]; second: string[] }> {
  const texts = chat.sent.map((s) => lastLine({ body: s.body }));
  const t0 = Date.now();
  let got1: string[] = [];
  /** The IMDN Message-ID of each item's first copy, and the later copies that named another. */
  const imdnOf = new Map<string, string | undefined>();
  let unmarked = 0;
  const note = (m: { contentType?: string | undefined; body: Uint8Array }) => {
    const text = lastLine(m);
    const id = cpimFacts(m.contentType ?? "", m.body).imdnMessageId;
    if (!imdnOf.has(text)) imdnOf.set(text, id);
    else if (id === undefined || imdnOf.get(text) !== id) unmarked++;
  };
  // the device keeps its contact across the crash (a resumed delivery goes there)
  const sipPort = await freePort();
  await first.deliveredTo(
    chat,
    "client-dd-uas.xml",
    BYE_REASON,
    async ({ peer, client }) => {
      await first.untilRetiring(peer, chat, killAtLeast);
      await crash(async () => {
        await client.stop();
      });
      // what the socket held when the process died is read by now
      await new Promise((r) => setTimeout(r, 300));
      got1 = peer.received.map(lastLine);
      for (const m of peer.received) note(m);
    },
    async (contact) => {
      const reg = await first.register(contact, chat.servedUser);
      assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
    },
    "udp",
    sipPort,
  );
  let got2: string[] = [];
  let gso = false;
  await next.deliveredTo(
    chat,
    "client-dd-uas.xml",
    BYE_REASON,
    async ({ peer, client, invite }) => {
      await waitFor(() => peer.received.at(-1)?.contentType === GSO_TYPE, 60_000, 20, "the rest and the GSO");
      gso = true;
      got2 = peer.received.slice(0, -1).map(lastLine);
      for (const m of peer.received.slice(0, -1)) note(m);
      await triggerSipp(client.port, invite.headers.get("call-id")?.[0] ?? "");
      assert.equal((await client.done).code, 0);
      // what was marked delivered but not removed yet leaves with the sweep at the delivery's end
      await waitFor(async () => (await next.folder(deferredFolder(chat), chat.servedUser)).length === 0, 10_000, 50, "queue emptied").catch(
        () => undefined,
      );
    },
    async (contact) => {
      if (then === "resumed") return;
      if (then === "moves") {
        await waitFor(
          () => next.loggedAll("deferred delivery resumed: the record says it was under way and nobody ran it").length > 0,
          15_000,
          20,
          "the delivery resumed towards the contact the device left",
        );
      }
      const reg = await next.register(contact, chat.servedUser);
      assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
    },
    "udp",
    then === "moves" ? undefined : sipPort,
  );
  const left = (await next.folder(deferredFolder(chat), chat.servedUser)).length;
  const times = new Map<string, number>();
  for (const x of [...got1, ...got2]) times.set(x, (times.get(x) ?? 0) + 1);
  const resumedAt = texts.indexOf(got2[0] ?? "");
  const expected = [...texts.slice(0, got1.length), ...(resumedAt < 0 ? [] : texts.slice(resumedAt, resumedAt + got2.length))];
  const reordered = [...got1, ...got2].filter((x, i) => x !== expected[i]).length;
  return {
    sent: texts.length,
    before: got1.length,
    after: got2.length,
    lost: texts.filter((x) => !times.has(x)).length,
    twice: [...times.values()].filter((n) => n > 1).length,
    twiceUnmarked: unmarked,
    reordered,
    left,
    gso,
    ms: Date.now() - t0,
    first: got1,
    second: got2,
  };
}

/** Two sidecars on one Redis and one Dovecot, each behind its own Kamailio (its own sidecar first in its target list, the other next). */
export interface OwnerPair {
  redis: RedisInstance;
  a: DeferredChatRig;
  b: DeferredChatRig;
  stop(): Promise<void>;
}

export async function startOwnerPair(opts: { slots: number; leaseTtlMs: number; env?: Record<string, string> }): Promise<OwnerPair> {
  const redis = await startRedis();
  const dir = await mkdtemp(join(tmpdir(), "cpm-owner-"));
  const sockA = join(dir, "a.sock");
  const sockB = join(dir, "b.sock");
  const env = {
    CPM_PF__SESSION__STORE: "redis",
    CPM_PF__SESSION__REDISURL: redis.url,
    CPM_PF__SESSION__SLOTS: String(opts.slots),
    CPM_PF__SESSION__LEASETTLMS: String(opts.leaseTtlMs),
    ...opts.env,
  };
  const a = await DeferredChatRig.start(env, undefined, { grpcSocket: sockA, moreGrpcTargets: [`unix:${sockB}`] });
  const b = await DeferredChatRig.start(env, [], { dovecot: a.dovecot, grpcSocket: sockB, moreGrpcTargets: [`unix:${sockA}`] });
  // each Kamailio started before its sidecar: its health timer marked it not serving at first; decisions go in the configured order once both are seen
  for (const rig of [a, b]) await waitServing(rig.kamailio, [`unix:${sockA}`, `unix:${sockB}`]);
  return {
    redis,
    a,
    b,
    async stop() {
      await b.stop();
      await a.stop();
      await redis.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The fault run's case: `messages` deferred (the CF's BYE 480 after them),
 * delivered to the device's REGISTER, the delivering sidecar SIGKILLed
 * mid-way; one sidecar: restarted on its journal, the device registers
 * again; two: the device's REGISTER reaches the other sidecar.
 */
export async function runDeliveryFault(opts: {
  messages: number;
  scaleOut: boolean;
  progress?: (line: string) => void;
}): Promise<TakeoverCounts> {
  const texts = Array.from({ length: opts.messages }, (_, i) => `fault run ${i}`);
  const say = opts.progress ?? (() => {});
  if (!opts.scaleOut) {
    const rig = await DeferredChatRig.start();
    try {
      say(`${opts.messages} messages deferred through one sidecar`);
      const chat = await rig.chatWhileAway(texts, { byeHeaders: ["Reason: SIP;cause=480"] });
      say("delivering; SIGKILL mid-delivery, restart: the record resumes the delivery to the same contact");
      return await deliveryAcrossCrash(rig, rig, chat, (clientGone) => rig.crashAndRestart(clientGone), undefined, "resumed");
    } finally {
      await rig.stop();
    }
  }
  const pair = await startOwnerPair({ slots: 16, leaseTtlMs: 1500 });
  try {
    // the device registers through A first (nothing pending): A takes the user's slot
    assert.equal((await pair.a.register("<sip:earlier@127.0.0.1:9>", SERVED_USER)).code, 0);
    say(`${opts.messages} messages deferred through A (the owner of the user's slot)`);
    const chat = await pair.a.chatWhileAway(texts, { byeHeaders: ["Reason: SIP;cause=480"] });
    say("A delivering; SIGKILL of A mid-delivery, REGISTER through B");
    return await deliveryAcrossCrash(pair.a, pair.b, chat, () => pair.a.sidecar.kill("SIGKILL"));
  } finally {
    await pair.stop();
  }
}
