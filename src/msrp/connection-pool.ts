// Connection reuse for the active side (RFC 4975 5.4 and 6.1, RFC 6135; paraphrased,
// the RFC text was not at hand to quote): an
// endpoint that needs a connection to the first hop of a session's path uses
// the one it already opened to the same authority (scheme, host, port, and
// transport), so many sessions with one peer (the Controlling Function, or an
// SBC in front of many clients) share one TCP connection; requests are routed
// by the session-id of the To-Path (connection.ts). A pooled connection closes
// by itself when its last session leaves (closeWhenUnused) and then leaves
// the pool; the next session to that authority opens a new one.
// Only connections WE opened are reused: one a peer opened to our listener
// belongs to the sessions it bound (RFC 4975 5.4).
import { CpmError } from "../errors/catalogue.js";
import type { MsrpConnection } from "./connection.js";
import type { MsrpSession } from "./session.js";
import type { MsrpUri } from "./uri.js";

/**
 * The key two URIs share when one connection serves both: RFC 4975 6.1
 * compares scheme and host case-insensitively, port exactly, plus the
 * transport (msrp ;tcp and msrps never share).
 */
export function authorityKey(uri: MsrpUri): string {
  return `${uri.scheme}://${uri.host.toLowerCase()}:${uri.port ?? ""};${uri.transport.toLowerCase()}`;
}

/** Attempts when a pooled connection closes between being handed out and the bind (its last session just left). */
const MAX_ATTEMPTS = 3;

export class MsrpConnectionPool {
  private readonly open = new Map<string, MsrpConnection>();
  private readonly opening = new Map<string, Promise<MsrpConnection>>();

  /** `connect` opens a new connection (active role, closeWhenUnused) to the first hop `uri`. */
  constructor(private readonly connect: (uri: MsrpUri) => Promise<MsrpConnection>) {}

  /** Open connections in the pool. */
  get size(): number {
    return this.open.size;
  }

  /**
   * Binds `session` (RFC 4975 5.4 empty SEND) over the connection to the
   * authority of its path's first hop, opening that connection if there is
   * none. Resolves with the connection once the peer answered 200; rejects
   * like MsrpConnection.bind(), or when the session was closed meanwhile.
   */
  async bind(session: MsrpSession): Promise<MsrpConnection> {
    const first = session.remotePath[0];
    if (first === undefined) throw new CpmError("CPM_ERR_MSRP_URI", "empty path");
    const key = authorityKey(first);
    for (let attempt = 1; ; attempt++) {
      let connection = this.open.get(key) ?? (await this.opened(key, first));
      // Requests are routed by session-id (connection.ts): a session sharing its id with one already on
      // the connection (one a=path offered to several devices) gets a connection of its own, not pooled.
      if (connection.sessions.has(session.id)) connection = await this.connect(first);
      if (session.state !== "unbound") {
        // Released while connecting: a connection nobody is bound to goes (others waiting for it open another).
        if (connection.sessions.size === 0) connection.close("session left while connecting");
        throw new CpmError("CPM_ERR_MSRP_CONNECTION", `session ${session.id} left while connecting`);
      }
      if (connection.closed) {
        if (attempt < MAX_ATTEMPTS) continue;
        throw new CpmError("CPM_ERR_MSRP_CONNECTION", `connection to ${key} closed before the bind`);
      }
      // bind() attaches the session synchronously: from here the connection counts it and stays open for it.
      await connection.bind(session);
      return connection;
    }
  }

  /** Closes every pooled connection (and so the sessions on them); shutdown. */
  closeAll(reason = "shutdown"): void {
    for (const c of [...this.open.values()]) c.close(reason);
  }

  /** The connection being opened to `key`, shared by every session that asks meanwhile. */
  private opened(key: string, uri: MsrpUri): Promise<MsrpConnection> {
    let pending = this.opening.get(key);
    if (pending === undefined) {
      pending = this.connect(uri).then(
        (connection) => {
          this.opening.delete(key);
          if (!connection.closed) {
            this.open.set(key, connection);
            connection.once("close", () => {
              if (this.open.get(key) === connection) this.open.delete(key);
            });
          }
          return connection;
        },
        (err: unknown) => {
          this.opening.delete(key);
          throw err;
        },
      );
      this.opening.set(key, pending);
    }
    return pending;
  }
}
