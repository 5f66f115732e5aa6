// One timer for the bind (unauthenticated) and idle deadlines of every
// connection that shares an MsrpResources, instead of a timer per connection
// (RSS per idle anchored session). Deadlines are rounded up to a
// grain of 1/16 of their timeout (at most 1 s), so a deadline fires never
// early and at most one grain late, and a sweep handles every deadline of its
// grain at once: with thousands of connections the timer fires at most about
// once per grain, each sweep a pass over the connections that have a deadline.
import type { MsrpResources } from "./resources.js";

export interface HasDeadline {
  /** The deadline set with schedule() has passed (`now` = Date.now() of the sweep). */
  deadlinePassed(now: number): void;
}

const MAX_GRAIN_MS = 1000;

export class DeadlineSweeper {
  private readonly due = new Map<HasDeadline, number>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private sweeping = false;

  constructor(private readonly resources: MsrpResources) {}

  /** Items with a deadline. */
  get size(): number {
    return this.due.size;
  }

  /** Sets (or moves) `item`'s deadline to `at` (epoch ms), for a timeout of `timeoutMs`. */
  schedule(item: HasDeadline, at: number, timeoutMs: number): void {
    const grain = Math.min(MAX_GRAIN_MS, Math.max(1, Math.floor(timeoutMs / 16)));
    const when = Math.ceil(at / grain) * grain;
    this.due.set(item, when);
    if (!this.sweeping && when < this.timerAt) this.arm(when);
  }

  /** Drops `item`'s deadline; the timer goes with the last one. */
  cancel(item: HasDeadline): void {
    if (!this.due.delete(item)) return;
    if (this.due.size === 0 && !this.sweeping) this.disarm();
  }

  private arm(when: number): void {
    this.resources.clearTimer(this.timer);
    this.timerAt = when;
    this.timer = this.resources.setTimer(Math.max(0, when - Date.now()), () => this.sweep());
  }

  private disarm(): void {
    this.timer = this.resources.clearTimer(this.timer);
    this.timerAt = Number.POSITIVE_INFINITY;
  }

  private sweep(): void {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const now = Date.now();
    this.sweeping = true;
    try {
      // An item may schedule itself again from deadlinePassed(): it then comes later in this loop, due in the future.
      for (const [item, when] of this.due) {
        if (when > now) continue;
        this.due.delete(item);
        item.deadlinePassed(now);
      }
    } finally {
      this.sweeping = false;
      let next = Number.POSITIVE_INFINITY;
      for (const when of this.due.values()) if (when < next) next = when;
      if (next !== Number.POSITIVE_INFINITY) this.arm(next);
    }
  }
}

const sweepers = new WeakMap<MsrpResources, DeadlineSweeper>();

/** The sweeper of the connections counted in `resources` (its timer is counted there too). */
export function deadlineSweeper(resources: MsrpResources): DeadlineSweeper {
  let s = sweepers.get(resources);
  if (s === undefined) {
    s = new DeadlineSweeper(resources);
    sweepers.set(resources, s);
  }
  return s;
}
