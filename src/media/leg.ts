// One MSRP leg of an anchored session: the PF's MsrpSession towards the
// Controlling Function or towards the client, and whether it can carry
// messages now. A leg is "up" once its session is bound to a connection
// (RFC 4975 5.4: the active side's first SEND, or our bind()) and the peer's
// path is known from SDP; "gone" once its connection closed or broke, or when
// it did not come up within the timeout. Each leg is its own MSRP session, so
// transaction responses and REPORTs stay per hop (RFC 4975 7.1).
import type { MsrpConnection } from "../msrp/connection.js";
import type { MsrpResources } from "../msrp/resources.js";
import type { MsrpSession } from "../msrp/session.js";
import type { MsrpUri } from "../msrp/uri.js";
import type { LegState } from "./relay-policy.js";
import type { RelayItem, RelayTarget } from "./relay-queue.js";
import type { MediaLog } from "./session-log.js";

export type LegName = "cf" | "client";

/** The leg an MsrpSession belongs to: one pair of session listeners serves every leg (no closures per leg). */
const LEG = Symbol("leg");
type LegSession = MsrpSession & { [LEG]?: Leg };

function onSessionBound(this: LegSession): void {
  this[LEG]?.sessionBound();
}
function onSessionClose(this: LegSession, reason: string): void {
  this[LEG]?.sessionClosed(reason);
}

export interface LegOptions {
  name: LegName;
  session: MsrpSession;
  /** The device a client leg goes to (the To tag of its 2xx), for logs; absent for the CF leg. */
  device?: string;
  /** False while the peer's a=path is still a placeholder (client leg before its SDP answer). */
  pathKnown: boolean;
  chunkSize: number;
  resources: MsrpResources;
  log: MediaLog;
}

export class Leg implements RelayTarget {
  readonly name: LegName;
  readonly session: MsrpSession;
  /** The device a client leg goes to (the To tag of its 2xx), when known. */
  device: string | undefined;
  private current: LegState = "pending";
  private pathKnown: boolean;
  private timer: NodeJS.Timeout | undefined;
  private waiters: (() => void)[] | undefined;
  private released = false;
  // Fields, not the options object: a caller's spread-built options object carries a hidden class of its own.
  private readonly chunkSize: number;
  private readonly resources: MsrpResources;
  private readonly log: MediaLog;

  constructor(options: LegOptions) {
    this.chunkSize = options.chunkSize;
    this.resources = options.resources;
    this.name = options.name;
    this.session = options.session;
    this.device = options.device;
    this.pathKnown = options.pathKnown;
    this.log = options.log;
    (this.session as LegSession)[LEG] = this;
    this.session.on("bound", onSessionBound);
    this.session.on("close", onSessionClose);
  }

  get state(): LegState {
    return this.current;
  }

  settled(): Promise<void> {
    if (this.current !== "pending") return Promise.resolve();
    return new Promise((resolve) => {
      this.waiters ??= [];
      this.waiters.push(resolve);
    });
  }

  /** The peer's path from its SDP (RFC 4975 8.2): replaces the placeholder the session was created with. */
  learnPath(path: MsrpUri[]): void {
    this.session.learnRemotePath(path); // a foreign sender that bound the session first loses it
    this.pathKnown = true;
    this.maybeUp();
  }

  /** The leg counts as absent if it is not up within `ms`. */
  expectWithin(ms: number): void {
    if (this.current !== "pending" || this.timer !== undefined) return;
    this.timer = this.resources.setTimer(ms, () => {
      this.timer = undefined;
      if (this.current === "pending") this.gone(`no MSRP connection within ${ms} ms`);
    });
  }

  /**
   * Active side (RFC 6135): `bind` binds the session with an empty SEND over a
   * connection it opens or reuses (RFC 4975 5.4, src/msrp/connection-pool.ts);
   * failure makes the leg gone.
   */
  async connect(bind: (session: MsrpSession) => Promise<unknown>): Promise<void> {
    try {
      await bind(this.session);
    } catch (err) {
      this.gone(`connect or bind failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  async send(item: RelayItem): Promise<number> {
    const result = await this.session.send({ body: item.body, contentType: item.contentType, messageId: item.messageId });
    return result.code;
  }

  singleChunk(item: RelayItem): boolean {
    return item.body.length <= this.chunkSize;
  }

  broken(reason: string): void {
    this.gone(reason);
  }

  /** release() was called. */
  get isReleased(): boolean {
    return this.released;
  }

  /** Closes the session (and so its connection when no other session uses it) and the timer; returns how many of those it released. */
  release(): number {
    this.released = true;
    let n = 0;
    if (this.timer !== undefined) {
      this.timer = this.resources.clearTimer(this.timer);
      n++;
    }
    const connection = this.session.connection as MsrpConnection | undefined;
    if (connection !== undefined && connection.sessions.size === 1 && !connection.closed) n++;
    if (this.session.state !== "closed") {
      this.session.close("media released");
      n++;
    }
    this.gone("released");
    return n;
  }

  /** @internal (session listener) */
  sessionBound(): void {
    this.maybeUp();
  }

  /** @internal (session listener) */
  sessionClosed(reason: string): void {
    this.gone(reason);
  }

  private maybeUp(): void {
    if (this.current !== "pending" || !this.pathKnown || this.session.state !== "bound") return;
    this.timer = this.resources.clearTimer(this.timer);
    this.current = "up";
    this.log.debug("MSRP leg up", { leg: this.name, device: this.device });
    this.wake();
  }

  private gone(reason: string): void {
    if (this.current === "gone") return;
    const was = this.current;
    this.current = "gone";
    this.timer = this.resources.clearTimer(this.timer);
    if (!this.released) this.log.info("MSRP leg gone", { leg: this.name, device: this.device, reason, was });
    // A broken leg leaves its connection (RFC 4975 5.4: unused connections close).
    if (this.session.state !== "closed") this.session.close(reason);
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = undefined;
    for (const w of waiters ?? []) w();
  }
}
