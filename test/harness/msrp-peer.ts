// MSRP test peers built from src/msrp, for tests and benchmarks that play the
// Controlling Function or the client on real loopback TCP sockets.
// - MsrpPeer: one MSRP session with its own listener on 127.0.0.1 (port 0),
//   passive (waits for the other side's first SEND) or active (connects and
//   binds, RFC 6135), collecting whole messages; waits are event-driven.
// - RawMsrpSocket: a bare TCP connection that writes any bytes (malformed
//   frames included) and parses what comes back, answering SENDs with 200.
// Each peer should get its own MsrpResources so that the counters of the
// system under test stay its own.
import { EventEmitter, once } from "node:events";
import type * as net from "node:net";
import * as tcp from "node:net";
import type * as tls from "node:tls";
import type { Logger } from "../../src/log/logger.js";
import { silentLogger } from "../../src/log/logger.js";
import { makeEmptySend, type ReceivedMessage } from "../../src/msrp/chunking.js";
import { MsrpConnection } from "../../src/msrp/connection.js";
import type { MsrpRequest, MsrpResponse } from "../../src/msrp/frame.js";
import { newSessionId } from "../../src/msrp/ids.js";
import { MsrpParser } from "../../src/msrp/parser.js";
import { MsrpResources } from "../../src/msrp/resources.js";
import { makeResponse, serializeFrame } from "../../src/msrp/serializer.js";
import { createMsrpServer } from "../../src/msrp/server.js";
import { MsrpSession, type SendResult } from "../../src/msrp/session.js";
import { MsrpSessionTable } from "../../src/msrp/session-table.js";
import type { ConnectionRole, SetupAttribute } from "../../src/msrp/setup.js";
import { formatMsrpUri, type MsrpUri, parseMsrpPath, parseMsrpUri } from "../../src/msrp/uri.js";

export interface MsrpPeerOptions {
  resources?: MsrpResources;
  logger?: Logger;
  /** Bytes per chunk this peer sends (default the stack's 2048). */
  chunkSize?: number;
  /** Chunks of one message in flight (default the stack's 4). */
  chunkWindow?: number;
  /** TLS options for active connections to msrps:// paths (e.g. the CA of a self-signed PF). */
  tls?: tls.ConnectionOptions;
}

/** The a=path value of the first MSRP media description of an SDP. */
export function sdpPath(sdp: string): string {
  const m = /^a=path:(.+?)\r?$/m.exec(sdp);
  if (!m?.[1]) throw new Error("no a=path in SDP");
  return m[1].trim();
}

/** The a=setup value of an SDP (undefined when absent). */
export function sdpSetup(sdp: string): SetupAttribute | undefined {
  return /^a=setup:(\w+)\r?$/m.exec(sdp)?.[1] as SetupAttribute | undefined;
}

export class MsrpPeer extends EventEmitter<{ message: [ReceivedMessage] }> {
  readonly received: ReceivedMessage[] = [];
  readonly localUri: MsrpUri;
  readonly resources: MsrpResources;
  session: MsrpSession | undefined;
  private readonly connections = new Set<MsrpConnection>();
  private readonly logger: Logger;

  private constructor(
    private readonly server: net.Server,
    private readonly table: MsrpSessionTable,
    port: number,
    private readonly options: MsrpPeerOptions,
  ) {
    super();
    this.setMaxListeners(0);
    this.resources = options.resources ?? new MsrpResources();
    this.logger = options.logger ?? silentLogger();
    this.localUri = parseMsrpUri(`msrp://127.0.0.1:${port}/${newSessionId()};tcp`);
  }

  static async start(options: MsrpPeerOptions = {}): Promise<MsrpPeer> {
    const resources = options.resources ?? new MsrpResources();
    const table = new MsrpSessionTable();
    let peer: MsrpPeer | undefined;
    const server = createMsrpServer({
      table,
      logger: options.logger ?? silentLogger(),
      resources,
      bindTimeoutMs: 30_000,
      onConnection: (c) => peer?.track(c),
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    peer = new MsrpPeer(server, table, (server.address() as net.AddressInfo).port, { ...options, resources });
    return peer;
  }

  get path(): string {
    return formatMsrpUri(this.localUri);
  }

  /** An SDP body with this peer's a=path (offer or answer). */
  sdp(setup: SetupAttribute | undefined, acceptWrapped = "text/plain message/imdn+xml application/im-iscomposing+xml"): string {
    const lines = [
      "v=0",
      "o=peer 1 1 IN IP4 127.0.0.1",
      "s=-",
      "c=IN IP4 127.0.0.1",
      "t=0 0",
      `m=message ${this.localUri.port} TCP/MSRP *`,
      "a=accept-types:message/cpim application/im-iscomposing+xml",
      `a=accept-wrapped-types:${acceptWrapped}`,
      `a=path:${this.path}`,
    ];
    if (setup !== undefined) lines.push(`a=setup:${setup}`);
    lines.push("a=sendrecv", "");
    return lines.join("\r\n");
  }

  /**
   * Creates the session towards `remotePath`. Passive: waits in the table for
   * the other side's first SEND; active: connects and binds (resolves on 200).
   * Returns once the session is bound for "active", at once for "passive"
   * (use bound()).
   */
  async open(remotePath: string, role: ConnectionRole): Promise<void> {
    const session = new MsrpSession({
      localUri: this.localUri,
      remotePath: parseMsrpPath(remotePath),
      logger: this.logger,
      resources: this.resources,
      ...(this.options.chunkSize ? { chunkSize: this.options.chunkSize } : {}),
      ...(this.options.chunkWindow ? { chunkWindow: this.options.chunkWindow } : {}),
    });
    this.session = session;
    session.on("message", (m) => {
      this.received.push(m);
      this.emit("message", m);
    });
    if (role === "passive") {
      this.table.add(session);
      return;
    }
    const first = session.remotePath[0] as MsrpUri;
    const connection = await MsrpConnection.connectTo(first, { logger: this.logger, resources: this.resources }, this.options.tls);
    this.track(connection);
    await connection.bind(session);
  }

  /** Resolves once the session is bound to a connection. */
  async bound(): Promise<void> {
    const s = this.mustSession();
    if (s.state === "bound") return;
    await once(s, "bound");
  }

  send(body: string | Buffer, contentType: string): Promise<SendResult> {
    return this.mustSession().send({ body: typeof body === "string" ? Buffer.from(body) : body, contentType });
  }

  /** An empty SEND on the session (RFC 4975 5.4 keep-alive); resolves with its response code. */
  keepalive(): Promise<number> {
    const s = this.mustSession();
    const transport = s.connection;
    if (!transport) throw new Error("MsrpPeer: session not bound");
    return transport.request(makeEmptySend(s.remotePath, [s.localUri]), s).verdict;
  }

  /** Resolves with the first `n` messages received, once there are that many. */
  async waitForMessages(n: number): Promise<ReceivedMessage[]> {
    while (this.received.length < n) await once(this, "message");
    return this.received.slice(0, n);
  }

  /** Drops the connection(s) under the session (a client that went away). */
  dropConnections(): void {
    for (const c of this.connections) c.close("test drops the connection");
  }

  async close(): Promise<void> {
    this.session?.close("peer closed");
    this.table.closeAll();
    this.dropConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private track(c: MsrpConnection): void {
    this.connections.add(c);
    c.once("close", () => this.connections.delete(c));
  }

  private mustSession(): MsrpSession {
    if (!this.session) throw new Error("MsrpPeer: open() first");
    return this.session;
  }
}

/** A bare TCP MSRP peer: writes raw bytes, collects parsed frames, answers SENDs with 200. */
export class RawMsrpSocket extends EventEmitter<{ frame: [] }> {
  readonly responses: MsrpResponse[] = [];
  readonly requests: MsrpRequest[] = [];
  readonly closed: Promise<void>;
  private readonly parser = new MsrpParser();

  private constructor(private readonly socket: tcp.Socket) {
    super();
    this.setMaxListeners(0);
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      for (const ev of this.parser.push(chunk)) {
        if (ev.type !== "frame") continue;
        const f = ev.frame;
        if (f.kind === "response") this.responses.push(f);
        else {
          this.requests.push(f);
          if (f.method === "SEND" && f.failureReport !== "no" && f.failureReport !== "partial")
            this.socket.write(serializeFrame(makeResponse(f, 200)));
        }
        this.emit("frame");
      }
    });
  }

  static async connect(port: number, host = "127.0.0.1"): Promise<RawMsrpSocket> {
    const socket = tcp.connect({ host, port });
    await once(socket, "connect");
    return new RawMsrpSocket(socket);
  }

  write(bytes: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** The PF (or the test) closed the connection. */
  get isClosed(): boolean {
    return this.socket.destroyed || this.socket.readableEnded;
  }

  /** Resolves with the response to `transactionId` (or rejects when the socket closes first). */
  async response(transactionId: string): Promise<MsrpResponse> {
    for (;;) {
      const r = this.responses.find((x) => x.transactionId === transactionId);
      if (r) return r;
      if (this.socket.destroyed) throw new Error(`socket closed before the response to ${transactionId}`);
      await Promise.race([once(this, "frame"), this.closed]);
    }
  }

  /** Resolves once `n` requests have arrived. */
  async waitForRequests(n: number): Promise<MsrpRequest[]> {
    while (this.requests.length < n) {
      if (this.socket.destroyed) throw new Error(`socket closed after ${this.requests.length} of ${n} requests`);
      await Promise.race([once(this, "frame"), this.closed]);
    }
    return this.requests.slice(0, n);
  }

  destroy(): void {
    this.socket.destroy();
  }
}
