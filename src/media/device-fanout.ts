// What the CF -> client relay queue sends to: every client leg of the served
// user that is up (one per device that answered the forked INVITE, BYE-B7
// "every connected client"), and the delivery sessions joined with the group
// session, one per device that joined it (DD-12 / RJ-5). As one RelayTarget
// for relay-queue.ts:
//   state    up when any of them is up; else the first joined session's state
//            when there is one (as before devices: it stands in for the client);
//            else pending while a device leg is pending; else gone
//   send     to each one that is up, in call order on each (so every device
//            gets the CF's messages in the CF's order); the CF's SEND is
//            answered with the first 2xx, the queue goes on once all answered
//            (a chunked message is then whole on every leg before the next);
//            when none took it: a refusal of the message (413, 415...) before
//            a broken leg (481, 408), which makes the queue store it (deferred)
// With one leg up it is that leg's send, nothing more per message.
import { type LegState, legBroken } from "./relay-policy.js";
import type { RelayItem, RelayTarget } from "./relay-queue.js";

/** No further devices: one shared empty list, so the one-device path allocates nothing per message. */
const NONE: readonly RelayTarget[] = [];

/** Of the codes of one message on several legs: the first 2xx, else a refusal of the message, else a broken leg's. */
function bestCode(codes: readonly number[]): number {
  let best: number | undefined;
  for (const c of codes) {
    if (c < 300) return c;
    if (best === undefined || (legBroken(best) && !legBroken(c)) || (legBroken(best) === legBroken(c) && c < best)) best = c;
  }
  return best ?? 481;
}

export class DeviceFanout implements RelayTarget {
  /** The first client leg (the one made with the session). */
  private readonly first: RelayTarget;
  /** Client legs of further devices, made with the second. */
  private more: RelayTarget[] | undefined;
  /** DD-12 / RJ-5: the delivery sessions joined as the client, one per device, in the order they joined. */
  private joined: RelayTarget[] = [];
  private waiters: (() => void)[] | undefined;

  constructor(first: RelayTarget) {
    this.first = first;
  }

  /** A further device's client leg. */
  add(leg: RelayTarget): void {
    this.more ??= [];
    this.more.push(leg);
    if (this.waiters !== undefined) this.watch(leg);
  }

  /** DD-12 / RJ-5: a device's delivery session joins as the client. */
  join(target: RelayTarget): void {
    if (!this.joined.includes(target)) this.joined.push(target);
    if (this.waiters !== undefined) this.watch(target);
    this.recheck();
  }

  /** A joined delivery session leaves (undefined: every one). */
  leave(target?: RelayTarget): void {
    this.joined = target === undefined ? [] : this.joined.filter((j) => j !== target);
    this.recheck();
  }

  /** A device's leg leaves (it was released). */
  remove(leg: RelayTarget): void {
    const at = this.more?.indexOf(leg) ?? -1;
    if (at >= 0) this.more?.splice(at, 1);
    this.recheck();
  }

  get state(): LegState {
    if (this.first.state === "up") return "up";
    for (const j of this.joined) if (j.state === "up") return "up";
    let pending = this.first.state === "pending";
    for (const l of this.more ?? NONE) {
      const s = l.state;
      if (s === "up") return "up";
      if (s === "pending") pending = true;
    }
    const joined = this.joined[0];
    if (joined !== undefined) return joined.state;
    return pending ? "pending" : "gone";
  }

  settled(): Promise<void> {
    if (this.state !== "pending") return Promise.resolve();
    return new Promise((resolve) => {
      const first = this.waiters === undefined;
      this.waiters ??= [];
      this.waiters.push(resolve);
      if (!first) return;
      for (const j of this.joined) this.watch(j);
      this.watch(this.first);
      for (const l of this.more ?? NONE) this.watch(l);
    });
  }

  send(item: RelayItem): Promise<number> {
    let only: RelayTarget | undefined;
    let up = 0;
    for (const j of this.joined) {
      if (j.state !== "up") continue;
      only = j;
      up++;
    }
    if (this.first.state === "up") {
      only = this.first;
      up++;
    }
    for (const l of this.more ?? NONE) {
      if (l.state !== "up") continue;
      only = l;
      up++;
    }
    if (only === undefined) return Promise.resolve(481); // nothing up any more: the queue's absent way
    if (up === 1) {
      item.via = only;
      return only.send(item);
    }
    item.via = undefined;
    return this.sendToAll(item);
  }

  singleChunk(item: RelayItem): boolean {
    for (const j of this.joined) if (!j.singleChunk(item)) return false;
    return this.first.singleChunk(item);
  }

  broken(reason: string, item: RelayItem): void {
    // sent on several legs: each broken one was marked by sendToAll already
    item.via?.broken(reason, item);
  }

  private sendToAll(item: RelayItem): Promise<number> {
    const sends: Promise<number>[] = [];
    const each = (leg: RelayTarget) => {
      sends.push(
        leg.send(item).then(
          (code) => {
            if (code < 300)
              item.settle(code); // the CF's 200 once one device took it; later codes are ignored
            else if (legBroken(code)) leg.broken("relay failed", item);
            return code;
          },
          () => {
            leg.broken("relay failed", item);
            return 481;
          },
        ),
      );
    };
    for (const j of this.joined) if (j.state === "up") each(j);
    if (this.first.state === "up") each(this.first);
    for (const l of this.more ?? NONE) if (l.state === "up") each(l);
    return Promise.all(sends).then(bestCode);
  }

  private watch(target: RelayTarget): void {
    if (target.state === "pending") void target.settled().then(() => this.recheck());
  }

  private recheck(): void {
    if (this.waiters === undefined || this.state === "pending") return;
    const waiters = this.waiters;
    this.waiters = undefined;
    for (const w of waiters) w();
  }
}
