// The passive side's listener: every accepted TCP (or TLS) connection becomes
// a passive MsrpConnection that binds sessions from the given table.
import * as net from "node:net";
import * as tls from "node:tls";
import { MsrpConnection, type MsrpConnectionOptions } from "./connection.js";
import type { MsrpSessionTable } from "./session-table.js";

export interface MsrpServerOptions extends Omit<MsrpConnectionOptions, "role" | "table"> {
  table: MsrpSessionTable;
  /** Serve msrps (TLS) with these options; plain TCP when absent. */
  tls?: tls.TlsOptions;
  /** Called with each new connection (for logging, metrics, tests). */
  onConnection?: (connection: MsrpConnection) => void;
}

export function createMsrpServer(options: MsrpServerOptions): net.Server {
  const { table, tls: tlsOptions, onConnection, ...connectionOptions } = options;
  const accept = (socket: net.Socket) => {
    const connection = new MsrpConnection(socket, { ...connectionOptions, role: "passive", table });
    onConnection?.(connection);
  };
  return tlsOptions ? tls.createServer(tlsOptions, accept) : net.createServer(accept);
}
