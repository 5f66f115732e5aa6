// One direction of an anchored session: complete messages from one leg go out
// on the other leg in arrival order.
// - Messages that fit one chunk are pipelined (up to maxInFlight unanswered);
//   a chunked message is sent whole before the next starts, so no later
//   message can complete before it at the receiver (RFC 4975 7.1.1 lets
//   chunks of different messages interleave).
// - A relay that fails because the leg broke (legBroken, or the connection
//   went away) marks the leg gone; that message and every later one then take
//   the "absent" way (e.g. deferred storage), still in arrival order.
// - Each message is settled exactly once with the code its sender's held
//   response gets (session.ts HoldResponse).
// No sockets here: the leg (RelayTarget) and the absent path are injected.
import type { PayloadKind } from "./classify.js";
import { type Direction, type LegState, legBroken, relayAction } from "./relay-policy.js";

export interface RelayItem {
  kind: PayloadKind;
  contentType: string;
  body: Buffer;
  messageId: string;
  receivedAt: Date;
  /** Answers the sender (once). */
  settle: (code: number) => void;
  /** The leg a fan-out target (device-fanout.ts) sent it on, when it sent it on one only. */
  via?: RelayTarget | undefined;
}

export interface RelayTarget {
  readonly state: LegState;
  /** Resolves once the state is no longer "pending". */
  settled(): Promise<void>;
  /** Sends the message on this leg; resolves with the peer's code; rejects when the leg's connection is gone. */
  send(item: RelayItem): Promise<number>;
  /** Whether the message goes out as one chunk (then it may be pipelined). */
  singleChunk(item: RelayItem): boolean;
  /** The relay of `item` saw the leg break (code 481 / 408, or the connection went away). */
  broken(reason: string, item: RelayItem): void;
}

export interface AbsentPath {
  /** Deferred storage: resolves with the code for the sender (200 once stored). */
  defer(item: RelayItem & { kind: "message" | "imdn" | "gso" }): Promise<number>;
}

export interface RelayQueueOptions {
  direction: Direction;
  target: RelayTarget;
  absent: AbsentPath;
  /** Called after a message was relayed with 2xx (recording). */
  onRelayed?: (item: RelayItem) => void;
  /** Unanswered single-chunk SENDs on the leg at once. Default 32. */
  maxInFlight?: number;
}

const BROKEN = Symbol("broken");
type Outcome = number | typeof BROKEN;

interface InFlight {
  item: RelayItem;
  outcome: Promise<Outcome>;
}

type Task = { item: RelayItem } | { drain: true };

export class RelayQueue {
  private readonly tasks: Task[] = [];
  private readonly inFlight: InFlight[] = [];
  private running = false;
  /** Messages taken off `tasks` and not yet settled or in `inFlight` (waiting for the leg or the sink). */
  private active: RelayItem[] = [];
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly options: RelayQueueOptions) {}

  /** Messages queued, being handled or unanswered. */
  get size(): number {
    return this.tasks.filter((t) => "item" in t).length + this.active.length + this.inFlight.length;
  }

  push(item: RelayItem): void {
    if (this.closed) {
      item.settle(481);
      return;
    }
    this.tasks.push({ item });
    this.kick();
  }

  /** Resolves when nothing is queued or in flight (tests, shutdown). */
  idle(): Promise<void> {
    if (!this.running && this.tasks.length === 0 && this.inFlight.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drops everything (release): pending senders get 481 (RFC 4975 10: the session is gone). Returns how many were dropped. */
  close(): number {
    if (this.closed) return 0;
    this.closed = true;
    let dropped = 0;
    for (const t of this.tasks.splice(0)) {
      if ("item" in t) {
        t.item.settle(481);
        dropped++;
      }
    }
    for (const f of this.inFlight.splice(0)) {
      f.item.settle(481);
      dropped++;
    }
    for (const item of this.active.splice(0)) {
      item.settle(481);
      dropped++;
    }
    this.wakeIdle();
    return dropped;
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    void this.run();
  }

  private async run(): Promise<void> {
    try {
      for (let task = this.tasks.shift(); task !== undefined && !this.closed; task = this.tasks.shift()) {
        if ("drain" in task) await this.drain();
        else {
          this.active.push(task.item);
          try {
            await this.process(task.item);
          } finally {
            this.unmarkActive(task.item);
          }
        }
      }
    } finally {
      this.running = false;
      if (this.tasks.length > 0 && !this.closed) this.kick();
      else if (this.inFlight.length === 0) this.wakeIdle();
    }
  }

  private async process(item: RelayItem): Promise<void> {
    const { target } = this.options;
    let action = relayAction(this.options.direction, item.kind, target.state);
    if (action.do === "wait") {
      await target.settled();
      if (this.closed) return;
      action = relayAction(this.options.direction, item.kind, target.state);
    }
    switch (action.do) {
      case "relay": {
        this.sendNow(item);
        if (!target.singleChunk(item)) await this.drain();
        else if (this.inFlight.length >= (this.options.maxInFlight ?? 32)) await this.inFlight[0]?.outcome;
        return;
      }
      case "defer":
        // Earlier messages still in flight go first (some may end up deferred too).
        await this.drain();
        if (this.closed) return;
        item.settle(await this.options.absent.defer({ ...item, kind: action.kind }));
        return;
      case "drop":
      case "refuse":
        await this.drain();
        item.settle(action.code);
        return;
      default:
        // "wait" again: settled() guarantees the state left "pending".
        item.settle(481);
    }
  }

  private sendNow(item: RelayItem): void {
    const outcome: Promise<Outcome> = this.options.target.send(item).then(
      (code) => (legBroken(code) ? BROKEN : code),
      () => BROKEN,
    );
    const entry: InFlight = { item, outcome };
    this.unmarkActive(item); // counted in inFlight from now on
    this.inFlight.push(entry);
    void outcome.then((o) => {
      if (this.closed) return;
      if (o === BROKEN) {
        this.options.target.broken("relay failed", item);
        // Its fallback runs in order, from the task loop.
        this.tasks.push({ drain: true });
        this.kick();
        return;
      }
      // Successful (or refused by the peer) messages leave the window as they are answered.
      const at = this.inFlight.indexOf(entry);
      if (at >= 0) this.inFlight.splice(at, 1);
      if (o < 300) this.options.onRelayed?.(item);
      item.settle(o);
      if (!this.running && this.tasks.length === 0 && this.inFlight.length === 0) this.wakeIdle();
    });
  }

  /** Waits for every message in flight, oldest first; the broken ones take the absent way, in order. */
  private async drain(): Promise<void> {
    while (this.inFlight.length > 0 && !this.closed) {
      const entry = this.inFlight[0] as InFlight;
      const o = await entry.outcome;
      if (this.closed) return;
      if (this.inFlight[0] === entry) this.inFlight.shift();
      if (o !== BROKEN) continue; // settled by sendNow
      await this.fallback(entry.item);
    }
  }

  private async fallback(item: RelayItem): Promise<void> {
    const action = relayAction(this.options.direction, item.kind, "gone");
    if (action.do === "defer") item.settle(await this.options.absent.defer({ ...item, kind: action.kind }));
    else if (action.do === "drop" || action.do === "refuse") item.settle(action.code);
  }

  private unmarkActive(item: RelayItem): void {
    const at = this.active.indexOf(item);
    if (at >= 0) this.active.splice(at, 1);
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
