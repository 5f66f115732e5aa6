// Served-user slot ownership across sidecars (session.store "redis"): the
// sidecar holding a slot's lease (slot-leases.ts) runs the deferred
// deliveries of the users hashed to it. A slot is taken when first needed
// (a registration for one of its users, and nobody holds it), renewed every
// third of the TTL, released on drain. A registration that reaches another
// sidecar is published to the holder on <p>wake:<slot> (pub/sub; a wake-up
// nobody receives is retried by the sender once the lease has lapsed).
import { Redis } from "ioredis";
import { CpmError } from "../../errors/catalogue.js";
import type { Logger } from "../../log/logger.js";
import type { Keyspace } from "./keyspace.js";
import { type Lease, SlotLeases, slotOf } from "./slot-leases.js";

/** What the holder needs to start the delivery: the served user and the registered contact (DD-1). */
export interface Wake {
  servedUser: string;
  client: { contact: string; instanceId?: string };
  /** The sidecar that got the registration. */
  from: string;
}

export type SlotOwner =
  | { self: true; lease: Lease }
  | {
      self: false;
      slot: number;
      holder: string;
      /** When the holder's lease lapses unless renewed (ms from now). */
      lapsesInMs: number;
      /** The holder's SIP UA as Kamailio reaches it (what it published); undefined when it published none. */
      ua?: string;
    };

export interface SlotOwnershipOptions {
  /** session.redisUrl: the wake-ups' subscriber connects there. */
  url: string;
  /** Commands (the record store's connection). */
  redis: Redis;
  keyspace: Keyspace;
  /** This sidecar (the record store's writer name). */
  holder: string;
  /** This sidecar's SIP UA as Kamailio reaches it (config.ts uaAddress): published for re-joins routed to the holder; "" = none. */
  uaAddress?: string;
  /** session.slots */
  slots: number;
  /** session.leaseTtlMs */
  ttlMs: number;
  log: Logger;
}

export class SlotOwnership {
  private readonly leases: SlotLeases;
  private readonly held = new Map<number, Lease>();
  /**
   * When each held lease has surely lapsed in Redis: the time its grant or
   * last renewal was sent, plus the TTL (this clock; the command may have
   * waited in the network, never the other way round).
   */
  private readonly until = new Map<number, number>();
  private readonly lostHandlers: ((slot: number) => void)[] = [];
  private readonly subscriber: Redis;
  private renewer?: NodeJS.Timeout;
  private handler?: (wake: Wake) => void;
  private listening = false;

  constructor(private readonly opts: SlotOwnershipOptions) {
    this.leases = new SlotLeases({ redis: opts.redis, keyspace: opts.keyspace, holder: opts.holder, slots: opts.slots, ttlMs: opts.ttlMs });
    this.subscriber = new Redis(opts.url, { lazyConnect: true, maxRetriesPerRequest: 1, connectionName: `cpmpf-wake:${opts.holder}` });
    this.subscriber.on("error", (err: Error) => opts.log.warn("wake-up subscriber: Redis error", { reason: String(err) }));
  }

  get self(): string {
    return this.opts.holder;
  }

  /** Slots this sidecar holds now. */
  get heldSlots(): number[] {
    return [...this.held.keys()].sort((a, b) => a - b);
  }

  slotOf(servedUser: string): number {
    return slotOf(servedUser, this.opts.slots);
  }

  /** Checks every sidecar hashes into the same slots, subscribes, starts renewing. */
  async start(onWake: (wake: Wake) => void): Promise<void> {
    const { redis, keyspace, slots } = this.opts;
    try {
      await redis.set(keyspace.slotCount, String(slots), "NX");
      const stored = await redis.get(keyspace.slotCount);
      if (stored !== String(slots)) {
        // a user hashed into another slot by another sidecar would have two owners
        throw new CpmError(
          "CPM_ERR_CONFIG",
          `session.slots: ${slots} here, ${stored} in Redis (${keyspace.slotCount}): every sidecar must use the same`,
        );
      }
      await this.publishUa();
      await this.subscriber.connect();
    } catch (err) {
      if (err instanceof CpmError) throw err;
      throw new CpmError("CPM_ERR_RECORD_STORE_UNAVAILABLE", "slot ownership not started", { cause: err });
    }
    this.handler = onWake;
    this.listening = true;
    this.subscriber.on("message", (channel: string, text: string) => this.onMessage(channel, text));
    this.renewer = setInterval(() => void this.renewAll(), Math.max(1, Math.floor(this.opts.ttlMs / 3)));
    this.renewer.unref();
  }

  /** Who runs the served user's deliveries: this sidecar (its lease, taken now if nobody held it) or the live holder. */
  async owner(servedUser: string): Promise<SlotOwner> {
    const slot = this.slotOf(servedUser);
    const mine = this.held.get(slot);
    if (mine) return { self: true, lease: mine };
    const key = this.opts.keyspace.lease(slot);
    // the holder's lease may lapse between the two commands: once more, then it is ours or someone's
    for (let i = 0; i < 2; i++) {
      const sent = Date.now();
      const lease = await this.leases.acquire(slot);
      if (lease) {
        this.until.set(slot, sent + this.opts.ttlMs);
        await this.hold(lease);
        return { self: true, lease };
      }
      const [cur, pttl] = await Promise.all([this.opts.redis.get(key), this.opts.redis.pttl(key)]);
      const holder = cur?.split(" ")[0];
      if (holder) {
        const ua = (await this.opts.redis.get(this.opts.keyspace.ua(holder))) ?? undefined;
        return { self: false, slot, holder, lapsesInMs: Math.max(0, pttl), ...(ua ? { ua } : {}) };
      }
    }
    throw new CpmError("CPM_ERR_RECORD_STORE_UNAVAILABLE", `slot ${slot}: neither granted nor held`);
  }

  /**
   * The fence before a claim: true while `lease` is the slot's newest (its
   * token still current, extended by the TTL); false once it lapsed or a
   * newer one was granted (the slot is dropped here).
   */
  async confirm(lease: Lease): Promise<boolean> {
    if (await this.renewed(lease)) return true;
    this.drop(lease, "slot lease lost");
    return false;
  }

  /**
   * Whether this sidecar may go on with the served user's live work now: it
   * holds the slot and the lease has not lapsed by this clock (a sidecar
   * paused or starved past the TTL stops before Redis can tell it).
   */
  holds(servedUser: string): boolean {
    const slot = this.slotOf(servedUser);
    return this.held.has(slot) && Date.now() < (this.until.get(slot) ?? 0);
  }

  /** `fn` runs when a slot is lost (lapsed, or taken by another sidecar): stop that slot's work. */
  onLost(fn: (slot: number) => void): void {
    this.lostHandlers.push(fn);
  }

  /** Publishes a registration to the slot's holder; resolves with how many sidecars received it (0: the holder is not listening). */
  async wake(slot: number, wake: Omit<Wake, "from">): Promise<number> {
    const body: Wake = { ...wake, from: this.opts.holder };
    return this.opts.redis.publish(this.opts.keyspace.wake(slot), JSON.stringify(body));
  }

  /** Drain, first step: no more wake-ups taken (their senders retry once the leases are released). */
  async stopWakes(): Promise<void> {
    this.listening = false;
    if (this.held.size > 0) await this.subscriber.unsubscribe().catch(() => {});
  }

  /** Drain, last step: every lease given up at once, instead of letting the TTL run out. */
  async release(): Promise<void> {
    this.listening = false;
    clearInterval(this.renewer);
    const leases = [...this.held.values()];
    this.held.clear();
    await Promise.all(
      leases.map((l) =>
        this.leases.release(l).catch((err) => this.opts.log.warn("slot lease not released", { slot: l.slot, reason: String(err) })),
      ),
    );
    if (leases.length > 0) this.opts.log.info("slot leases released", { slots: leases.map((l) => l.slot) });
    await this.opts.redis.del(this.opts.keyspace.ua(this.opts.holder)).catch(() => 0);
    this.subscriber.disconnect();
  }

  private async hold(lease: Lease): Promise<void> {
    this.held.set(lease.slot, lease);
    this.opts.log.info("slot lease taken", { slot: lease.slot, token: lease.token });
    if (this.listening) await this.subscriber.subscribe(this.opts.keyspace.wake(lease.slot));
  }

  private drop(lease: Lease, why: string): void {
    if (this.held.get(lease.slot)?.token !== lease.token) return;
    this.held.delete(lease.slot);
    this.until.delete(lease.slot);
    this.opts.log.warn(why, { slot: lease.slot, token: lease.token });
    this.subscriber.unsubscribe(this.opts.keyspace.wake(lease.slot)).catch(() => {});
    for (const fn of this.lostHandlers) fn(lease.slot);
  }

  private async renewed(lease: Lease): Promise<boolean> {
    const sent = Date.now();
    if (!(await this.leases.renew(lease))) return false;
    if (this.held.get(lease.slot)?.token === lease.token) this.until.set(lease.slot, sent + this.opts.ttlMs);
    return true;
  }

  /** `<p>ua:<holder>`: where another sidecar routes a re-join of a user whose slot this one holds; outlives a lease, not a dead sidecar by long. */
  private async publishUa(): Promise<void> {
    if (!this.opts.uaAddress) return;
    await this.opts.redis.set(this.opts.keyspace.ua(this.opts.holder), this.opts.uaAddress, "PX", 3 * this.opts.ttlMs);
  }

  private async renewAll(): Promise<void> {
    this.publishUa().catch((err) => this.opts.log.warn("UA address not published", { reason: String(err) }));
    // lapsed by this clock (the process did not run for a TTL): the slot is someone else's already
    for (const lease of [...this.held.values()]) {
      if (Date.now() >= (this.until.get(lease.slot) ?? 0)) this.drop(lease, "slot lease lapsed while this sidecar did not run");
    }
    await Promise.all(
      [...this.held.values()].map(async (lease) => {
        try {
          if (!(await this.renewed(lease))) this.drop(lease, "slot lease lost");
        } catch (err) {
          // kept: the fence before each claim tells whether it is still ours
          this.opts.log.warn("slot lease not renewed", { slot: lease.slot, reason: String(err) });
        }
      }),
    );
  }

  private onMessage(channel: string, text: string): void {
    const slot = this.opts.keyspace.slotOfWake(channel);
    if (slot === undefined || !this.listening) return;
    let wake: Wake;
    try {
      wake = JSON.parse(text) as Wake;
      if (typeof wake.servedUser !== "string" || typeof wake.client?.contact !== "string") throw new Error("no served user or contact");
    } catch (err) {
      this.opts.log.warn("wake-up unreadable: skipped", { slot, reason: String(err) });
      return;
    }
    if (!this.held.has(slot) || this.slotOf(wake.servedUser) !== slot) {
      this.opts.log.warn("wake-up for a slot this sidecar does not hold: skipped", { slot, servedUser: wake.servedUser, from: wake.from });
      return;
    }
    this.handler?.(wake);
  }
}
