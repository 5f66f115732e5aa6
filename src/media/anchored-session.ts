// One group session anchored in the PF: its legs (towards the Controlling
// Function, and towards the served user's client: one per device that
// answered the forked INVITE, BYE-B7), a relay queue per direction, and what
// is kept for recording. The MSRP sockets live in the
// legs' sessions; this file wires the legs' "message" events to the queues
// and the queues to the deferred storage port.
import { ErrorCodes } from "../errors/catalogue.js";
import type { ReceivedMessage } from "../msrp/chunking.js";
import type { HoldResponse } from "../msrp/session.js";
import { classifyPayload } from "./classify.js";
import { DeviceFanout } from "./device-fanout.js";
import type { Leg } from "./leg.js";
import type { DeferredSink, GroupSessionRef } from "./ports.js";
import { SessionRecording } from "./recording.js";
import type { Direction, LegState } from "./relay-policy.js";
import { type RelayItem, RelayQueue, type RelayTarget } from "./relay-queue.js";
import type { MediaLog } from "./session-log.js";

/** The anchored session an MsrpSession (leg) belongs to: one "message" listener per direction for all sessions. */
const ANCHORED = Symbol("anchoredSession");
type AnchoredMsrpSession = Leg["session"] & { [ANCHORED]?: AnchoredSession };

function onCfMessage(this: AnchoredMsrpSession, m: ReceivedMessage, hold: HoldResponse): void {
  this[ANCHORED]?.received("from-network", m, hold);
}
function onClientMessage(this: AnchoredMsrpSession, m: ReceivedMessage, hold: HoldResponse): void {
  this[ANCHORED]?.received("from-client", m, hold);
}

export interface AnchoredSessionOptions {
  ref: GroupSessionRef;
  cf: Leg;
  client: Leg;
  deferredSink: DeferredSink;
  /** Keep relayed messages for 8.5.2 recording (allow-offline-storage or config recording). */
  record: boolean;
  maxRecordedBytes: number;
  log: MediaLog;
  now: () => Date;
  /** A message relayed leg to leg with 2xx, seconds from its arrival (metrics). */
  relayed?: (seconds: number) => void;
}

/** DD-12 / RJ-5: the delivery session's MSRP session towards the client, joined as the group session's client leg. */
export interface JoinedClient extends RelayTarget {
  /** Closes it (8.3.2.3 2.f with the rest of the group session's media); how many resources that freed. */
  release(): number;
}

export interface ReleaseCount {
  /** MSRP sessions, their connections and leg timers closed. */
  legs: number;
  /** Queued or unanswered messages dropped (their senders get 481). */
  queued: number;
  /** Recorded messages freed. */
  recorded: number;
}

export class AnchoredSession {
  readonly ref: GroupSessionRef;
  readonly cf: Leg;
  /** The first client leg: the device whose answer took it (see assignClient), or the only client. */
  readonly client: Leg;
  readonly startedAt: Date;
  readonly recording: SessionRecording | undefined;
  /** CF -> client (from-network) and client -> CF (from-client), made with the first message (idle sessions hold none). */
  private toClientQueue: RelayQueue | undefined;
  private toCfQueue: RelayQueue | undefined;
  private readonly options: AnchoredSessionOptions;
  private readonly log: MediaLog;
  /** DD-12 / RJ-5: the delivery sessions joined, one per device: the CF's messages go to each (the original client leg is gone by then). */
  private readonly joined = new Set<JoinedClient>();
  /** What the CF -> client queue relays to: every client leg that is up, and the joined client. */
  private readonly clientSide: DeviceFanout;
  /** The device (2xx To tag) the first client leg belongs to; undefined until an answer took it. */
  private clientKey: string | undefined;
  /** Client legs of further devices by device key, made with the second device. */
  private devices: Map<string, Leg> | undefined;

  constructor(options: AnchoredSessionOptions) {
    this.options = options;
    this.ref = options.ref;
    this.cf = options.cf;
    this.client = options.client;
    this.log = options.log;
    this.startedAt = options.now();
    this.recording = options.record ? new SessionRecording(options.maxRecordedBytes, options.log) : undefined;
    (this.cf.session as AnchoredMsrpSession)[ANCHORED] = this;
    (this.client.session as AnchoredMsrpSession)[ANCHORED] = this;
    this.cf.session.on("message", onCfMessage);
    this.client.session.on("message", onClientMessage);
    this.clientSide = new DeviceFanout(this.client);
  }

  /** The first client leg belongs to device `key` (its answer took it). */
  assignClient(key: string): void {
    this.clientKey = key;
    this.client.device = key;
  }

  /** The first client leg while no device's answer took it. */
  get unassignedClient(): Leg | undefined {
    return this.clientKey === undefined ? this.client : undefined;
  }

  /** BYE-B7: one more device of the served user answered; `leg` goes to it. Its messages go to the CF, the CF's to it. */
  addDevice(key: string, leg: Leg): void {
    this.devices ??= new Map();
    this.devices.set(key, leg);
    (leg.session as AnchoredMsrpSession)[ANCHORED] = this;
    leg.session.on("message", onClientMessage);
    this.clientSide.add(leg);
  }

  /** The client leg of device `key`, if it answered. */
  device(key: string): Leg | undefined {
    return key === this.clientKey ? this.client : this.devices?.get(key);
  }

  /** Releases device `key`'s leg (its BYE); the other legs go on. How many resources that freed (0: no such device, or released before). */
  releaseDevice(key: string): number {
    const leg = this.device(key);
    if (leg === undefined || leg.isReleased) return 0;
    if (leg !== this.client) {
      this.devices?.delete(key);
      this.clientSide.remove(leg);
    }
    return leg.release();
  }

  /** The client legs devices' answers took (the first one once assigned), by device key; released ones are left out. */
  clientLegs(): { key: string; leg: Leg }[] {
    const out: { key: string; leg: Leg }[] = [];
    if (this.clientKey !== undefined && !this.client.isReleased) out.push({ key: this.clientKey, leg: this.client });
    for (const [key, leg] of this.devices ?? []) out.push({ key, leg });
    return out;
  }

  /** Runs `f` on every client leg, the first one assigned or not. */
  forEachClientLeg(f: (leg: Leg) => void): void {
    f(this.client);
    for (const leg of this.devices?.values() ?? []) f(leg);
  }

  /** The client side as one state: up when a client leg is up, pending when one is pending, else gone. */
  get clientState(): LegState {
    let state: LegState = this.client.state;
    if (state === "up") return state;
    for (const leg of this.devices?.values() ?? []) {
      if (leg.state === "up") return "up";
      if (leg.state === "pending") state = "pending";
    }
    return state;
  }

  /**
   * DD-12 / RJ-5: the delivery session becomes the group session's client
   * leg: the CF's messages go to it from now on (stored for later only while
   * it is not up), and relayToCf() takes what the client sends in it.
   */
  join(client: JoinedClient): void {
    this.joined.add(client);
    this.clientSide.join(client);
    this.log.info("delivery session joined with the group session", { was: this.client.state, joined: this.joined.size });
  }

  /**
   * A joined client leaves this session without being closed (undefined: every one): a re-start that did
   * not come up (the delivery session goes on), or one device's delivery session ended while others stay.
   */
  detach(client?: JoinedClient): void {
    if (client === undefined) this.joined.clear();
    else this.joined.delete(client);
    this.clientSide.leave(client);
  }

  /** DD-12 / RJ-5: a message the joined client sent, relayed to the CF leg in call order; resolves with the CF's code. */
  relayToCf(m: { contentType: string; body: Buffer; messageId: string }): Promise<number> {
    return new Promise<number>((settle) => {
      this.toCf().push({
        kind: classifyPayload(m.contentType, m.body),
        contentType: m.contentType,
        body: m.body,
        messageId: m.messageId,
        receivedAt: this.options.now(),
        settle,
        via: undefined,
      });
    });
  }

  /** Messages queued or awaiting the next hop, both directions. */
  get queued(): number {
    return (this.toClientQueue?.size ?? 0) + (this.toCfQueue?.size ?? 0);
  }

  /** Resolves once both directions have nothing queued or in flight. */
  async idle(): Promise<void> {
    await Promise.all([this.toClientQueue?.idle(), this.toCfQueue?.idle()]);
  }

  release(): ReleaseCount {
    const queued = (this.toClientQueue?.close() ?? 0) + (this.toCfQueue?.close() ?? 0);
    let legs = this.cf.release() + this.client.release();
    for (const j of this.joined) legs += j.release();
    for (const leg of this.devices?.values() ?? []) legs += leg.release();
    const recorded = this.recording?.clear() ?? 0;
    return { legs, queued, recorded };
  }

  /** @internal (session listener) A whole message arrived on one leg. */
  received(direction: Direction, m: ReceivedMessage, hold: HoldResponse): void {
    const kind = classifyPayload(m.contentType, m.body);
    let answered = false;
    let answer!: (code: number) => void;
    // The sender's response waits until the message is relayed (the next hop's 200) or stored.
    hold(
      new Promise<number>((resolve) => {
        answer = resolve;
      }),
    );
    const item: RelayItem = {
      kind,
      contentType: m.contentType ?? "application/octet-stream",
      body: m.body,
      messageId: m.messageId,
      receivedAt: this.options.now(),
      settle: (code) => {
        if (answered) return;
        answered = true;
        answer(code);
      },
      via: undefined,
    };
    this.log.debug("MSRP message to relay", { direction, kind, messageId: m.messageId, bytes: m.body.length });
    (direction === "from-network" ? this.toClient() : this.toCf()).push(item);
  }

  private toClient(): RelayQueue {
    this.toClientQueue ??= new RelayQueue({
      direction: "from-network",
      target: this.clientSide,
      absent: { defer: (item) => this.storeDeferred(item) },
      onRelayed: (item) => this.keep("from-network", item),
    });
    return this.toClientQueue;
  }

  private toCf(): RelayQueue {
    this.toCfQueue ??= new RelayQueue({
      direction: "from-client",
      target: this.cf,
      // relay-policy never defers what the client sends: the CF leg is the only way out.
      absent: { defer: async () => 481 },
      onRelayed: (item) => this.keep("from-client", item),
    });
    return this.toCfQueue;
  }

  /** Deferred storage (8.3.2.3 with the client leg absent): the CF's SEND gets its 200 once the Message Store port took it. */
  private async storeDeferred(item: RelayItem & { kind: "message" | "imdn" | "gso" }): Promise<number> {
    try {
      await this.options.deferredSink.storeDeferred(this.ref, {
        kind: item.kind,
        contentType: item.contentType,
        body: item.body,
        msrpMessageId: item.messageId,
        receivedAt: item.receivedAt,
      });
      this.log.debug("MSRP message stored for deferred delivery", { kind: item.kind, messageId: item.messageId });
      return 200;
    } catch (err) {
      this.log.error("deferred storage failed", {
        code: "CPM_ERR_MEDIA_DEFER_FAILED",
        kind: item.kind,
        messageId: item.messageId,
        err: err instanceof Error ? err.message : String(err),
      });
      return ErrorCodes.CPM_ERR_MEDIA_DEFER_FAILED.msrp;
    }
  }

  private keep(direction: Direction, item: RelayItem): void {
    this.options.relayed?.((this.options.now().getTime() - item.receivedAt.getTime()) / 1000);
    if (this.recording === undefined || item.kind === "isComposing") return;
    this.recording.add({ direction, contentType: item.contentType, body: item.body, msrpMessageId: item.messageId, at: item.receivedAt });
  }
}
