// Resource accounting for the MSRP stack: open sockets, live sessions, armed
// timers and buffered bytes, so tests (and a health endpoint) can prove that
// closing a session or a connection releases everything (BYE-B10).

export interface MsrpCounters {
  /** Connections whose socket has not emitted "close" yet. */
  openSockets: number;
  /** Sessions created and not closed. */
  sessions: number;
  /** Timers armed by the stack (bind, idle, transaction timeouts). */
  timers: number;
  /** Parser buffers + partially reassembled messages + bytes queued on sockets. */
  bufferedBytes: number;
}

/** Input refused from the network, by kind: each one also has a log line naming the peer. */
export interface MsrpRefusals {
  /** Connections closed because their input could not be framed (garbage, lost resync). */
  unparseableConnections: number;
  /** Requests refused 403 (and sessions taken back) because their From-Path is not the session's peer (RFC 4975 5.4, 14). */
  foreignSenders: number;
  /** Connections closed because the peer left more than maxWriteQueueBytes unread. */
  unreadConnections: number;
}

/** MSRP on the wire since start (metrics): requests by "in|out METHOD", responses by "in|out CODE", bytes. */
export interface MsrpTraffic {
  requests: Map<string, number>;
  responses: Map<string, number>;
  bytesIn: number;
  bytesOut: number;
}

/** RFC 4975 7, RFC 4976 (AUTH), RFC 7701 (NICKNAME). */
const KNOWN_METHODS = new Set(["SEND", "REPORT", "AUTH", "NICKNAME"]);

function bump(m: Map<string, number>, key: string): void {
  m.set(key, (m.get(key) ?? 0) + 1);
}

const FIRED = Symbol("msrpTimerDone");
type TimerWithFlag = NodeJS.Timeout & { [FIRED]?: boolean };

interface BufferHolder {
  readonly bufferedBytes: number;
}

export class MsrpResources {
  private readonly sockets = new Set<BufferHolder>();
  private readonly liveSessions = new Set<BufferHolder>();
  private armed = 0;
  /** Counted as they happen; not part of snapshot() (which drains to zero when everything is released). */
  readonly refusals: MsrpRefusals = { unparseableConnections: 0, foreignSenders: 0, unreadConnections: 0 };
  readonly traffic: MsrpTraffic = { requests: new Map(), responses: new Map(), bytesIn: 0, bytesOut: 0 };

  /** A frame read or written; a method other than the known ones counts as OTHER (a peer cannot grow the key set). */
  frame(direction: "in" | "out", frame: { kind: "request"; method: string } | { kind: "response"; code: number }, bytes: number): void {
    if (frame.kind === "request") bump(this.traffic.requests, `${direction} ${KNOWN_METHODS.has(frame.method) ? frame.method : "OTHER"}`);
    else bump(this.traffic.responses, `${direction} ${frame.code}`);
    if (direction === "out") this.traffic.bytesOut += bytes;
  }

  socketOpened(c: BufferHolder): void {
    this.sockets.add(c);
  }

  socketClosed(c: BufferHolder): void {
    this.sockets.delete(c);
  }

  sessionOpened(s: BufferHolder): void {
    this.liveSessions.add(s);
  }

  sessionClosed(s: BufferHolder): void {
    this.liveSessions.delete(s);
  }

  /** A setTimeout that is counted while armed; unref'd so it never keeps the process alive by itself. */
  setTimer(ms: number, fn: () => void): NodeJS.Timeout {
    this.armed++;
    const t: TimerWithFlag = setTimeout(() => {
      t[FIRED] = true;
      this.armed--;
      fn();
    }, ms);
    t.unref();
    return t;
  }

  /** Clears a timer from setTimer; safe on undefined and on timers that already fired or were cleared. */
  clearTimer(t: NodeJS.Timeout | undefined): undefined {
    if (t === undefined) return undefined;
    const flagged = t as TimerWithFlag;
    if (!flagged[FIRED]) {
      flagged[FIRED] = true;
      this.armed--;
    }
    clearTimeout(t);
    return undefined;
  }

  snapshot(): MsrpCounters {
    let bufferedBytes = 0;
    for (const c of this.sockets) bufferedBytes += c.bufferedBytes;
    for (const s of this.liveSessions) bufferedBytes += s.bufferedBytes;
    return { openSockets: this.sockets.size, sessions: this.liveSessions.size, timers: this.armed, bufferedBytes };
  }
}

/** The process-wide counters, used unless a component is given its own MsrpResources. */
export const msrpResources = new MsrpResources();

export function msrpCounters(): MsrpCounters {
  return msrpResources.snapshot();
}
