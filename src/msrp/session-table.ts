// Sessions waiting for, or holding, a connection, by session-id (compared
// case-sensitively, RFC 4975 6.1). A passive connection looks here for the
// session named by the To-Path of the first request it reads (RFC 4975 5.4).
import { CpmError } from "../errors/catalogue.js";
import type { MsrpSession } from "./session.js";

export class MsrpSessionTable {
  private readonly byId = new Map<string, MsrpSession>();
  /** One "close" listener for every session of the table (no closure per session); `this` is the session. */
  private readonly forget: (this: MsrpSession) => void;

  constructor() {
    const byId = this.byId;
    this.forget = function (this: MsrpSession) {
      if (byId.get(this.id) === this) byId.delete(this.id);
    };
  }

  /** Adds a session; it leaves the table by itself when it closes. */
  add(session: MsrpSession): void {
    if (session.state === "closed") throw new CpmError("CPM_ERR_MSRP_NO_SESSION", `session ${session.id} is closed`);
    if (this.byId.has(session.id)) throw new CpmError("CPM_ERR_MSRP_SESSION_IN_USE", `session-id ${session.id} is already in the table`);
    this.byId.set(session.id, session);
    // "close" is emitted once (session.ts finish()).
    session.on("close", this.forget);
  }

  get(sessionId: string): MsrpSession | undefined {
    return this.byId.get(sessionId);
  }

  get size(): number {
    return this.byId.size;
  }

  /** Closes every session (shutdown). */
  closeAll(reason = "shutdown"): void {
    for (const s of [...this.byId.values()]) s.close(reason);
  }
}
