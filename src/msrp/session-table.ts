// Sessions waiting for, or holding, a connection, by session-id (compared
// case-sensitively, RFC 4975 6.1). A passive connection looks here for the
// session named by the To-Path of the first request it reads (RFC 4975 5.4).
// One session-id may name several sessions, each bound to a distinct peer
// (the same a=path offered to every device of a forked INVITE): RFC 4975 5.4
// and 7.3 identify a session by To-Path and From-Path, so find() tells them
// apart by the request's From-Path.
import { CpmError } from "../errors/catalogue.js";
import type { MsrpSession } from "./session.js";
import type { MsrpUri } from "./uri.js";

export class MsrpSessionTable {
  /** One session per id, or the sessions sharing it (added with `shared`), oldest first. */
  private readonly byId = new Map<string, MsrpSession | MsrpSession[]>();
  private count = 0;
  /** One "close" listener for every session of the table (no closure per session); `this` is the session. */
  private readonly forget: (this: MsrpSession) => void;

  constructor() {
    const table = this;
    this.forget = function (this: MsrpSession) {
      table.remove(this);
    };
  }

  /**
   * Adds a session; it leaves the table by itself when it closes. `shared`:
   * the session-id may already be in the table for another peer's session
   * (the request's From-Path then picks one, find()); without it a taken
   * session-id throws CPM_ERR_MSRP_SESSION_IN_USE.
   */
  add(session: MsrpSession, shared = false): void {
    if (session.state === "closed") throw new CpmError("CPM_ERR_MSRP_NO_SESSION", `session ${session.id} is closed`);
    const there = this.byId.get(session.id);
    if (there === undefined) this.byId.set(session.id, session);
    else if (!shared) throw new CpmError("CPM_ERR_MSRP_SESSION_IN_USE", `session-id ${session.id} is already in the table`);
    else if (Array.isArray(there)) {
      if (there.includes(session)) return;
      there.push(session);
    } else {
      if (there === session) return;
      this.byId.set(session.id, [there, session]);
    }
    this.count++;
    // "close" is emitted once (session.ts finish()).
    session.on("close", this.forget);
  }

  /** The (oldest) session under `sessionId`. */
  get(sessionId: string): MsrpSession | undefined {
    const there = this.byId.get(sessionId);
    return Array.isArray(there) ? there[0] : there;
  }

  /**
   * The session a request from `sender` (the last From-Path URI) names with
   * `sessionId`: the one whose peer's path is known and is `sender`, else one
   * still waiting for its peer's path and unbound (it binds on the sender's
   * word, session.ts), else the oldest, whose From-Path check then refuses
   * the sender (connection.ts).
   */
  find(sessionId: string, sender: MsrpUri | undefined): MsrpSession | undefined {
    const there = this.byId.get(sessionId);
    if (!Array.isArray(there)) return there;
    for (const s of there) if (!s.pathPending && s.isPeer(sender)) return s;
    for (const s of there) if (s.pathPending && s.state === "unbound") return s;
    return there[0];
  }

  /** Sessions in the table. */
  get size(): number {
    return this.count;
  }

  /** Closes every session (shutdown). */
  closeAll(reason = "shutdown"): void {
    const all: MsrpSession[] = [];
    for (const there of this.byId.values()) {
      if (Array.isArray(there)) all.push(...there);
      else all.push(there);
    }
    for (const s of all) s.close(reason);
  }

  private remove(session: MsrpSession): void {
    const there = this.byId.get(session.id);
    if (there === session) this.byId.delete(session.id);
    else if (Array.isArray(there)) {
      const at = there.indexOf(session);
      if (at < 0) return;
      there.splice(at, 1);
      if (there.length === 1) this.byId.set(session.id, there[0] as MsrpSession);
    } else return;
    this.count--;
  }
}
