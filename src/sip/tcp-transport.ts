// SIP over TCP for the PF's own UA (RFC 3261 18): a listener on the UA's
// host:port for the connections Kamailio opens (its requests towards the UA,
// and responses whose connection is gone, 18.2.2), and the connections the
// UA opens itself, one per next hop (Kamailio, the outbound proxy), kept open
// and opened again on demand. Messages are framed by stream-framing.ts. Only
// Kamailio talks to the UA: a connection from, or to, an address outside the
// trusted sources is closed as soon as it is seen, counted and logged. A
// framing error closes its own connection only.
import net from "node:net";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import { SipStreamFramer, type SipStreamLimits } from "./stream-framing.js";

export interface Endpoint {
  host: string;
  port: number;
}

export const hostPort = (e: Endpoint): string => (net.isIPv6(e.host) ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`);

/** RFC 5626 4.4.1: the answer to a CRLFCRLF ping. */
const PONG = Buffer.from("\r\n", "latin1");

export interface SipTcpOptions {
  /** Local address: the listener's, and the source of every connection the UA opens (Kamailio checks $si against it). */
  host: string;
  port: number;
  /** Whether a peer address may talk to the UA (the UA's trustedSources). */
  trusted: (ip: string) => boolean;
  /** A complete message from a trusted peer. */
  onMessage: (raw: Buffer, connection: SipConnection) => void;
  /** How long opening a connection may take (ms). */
  connectTimeoutMs: number;
  limits?: Partial<SipStreamLimits>;
  log: Logger;
}

/** One TCP connection carrying SIP, either way. */
export class SipConnection {
  readonly peer: Endpoint;
  private readonly framer: SipStreamFramer;
  private readonly closeListeners = new Set<(reason: string) => void>();
  private closeReason: string | undefined;

  constructor(
    private readonly socket: net.Socket,
    /** The next hop (host:port as the UA named it) of a connection the UA opened; undefined for one its listener accepted. */
    readonly hop: string | undefined,
    private readonly transport: SipTcpTransport,
    limits: Partial<SipStreamLimits> | undefined,
  ) {
    this.peer = { host: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    this.framer = new SipStreamFramer(limits);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("error", (err) => this.close(`socket error: ${err.message}`));
    socket.on("close", () => this.close("closed by the peer"));
  }

  get open(): boolean {
    return this.closeReason === undefined;
  }

  /** Throws CpmError CPM_ERR_SIP_TRANSPORT when the connection is gone. */
  write(bytes: Buffer): void {
    if (this.closeReason !== undefined) {
      throw new CpmError("CPM_ERR_SIP_TRANSPORT", `TCP connection with ${hostPort(this.peer)} is closed (${this.closeReason})`);
    }
    this.socket.write(bytes);
  }

  /** Calls `fn` once when the connection closes; returns the unsubscribe. */
  onClose(fn: (reason: string) => void): () => void {
    this.closeListeners.add(fn);
    return () => this.closeListeners.delete(fn);
  }

  close(reason: string): void {
    if (this.closeReason !== undefined) return;
    this.closeReason = reason;
    this.socket.destroy();
    this.transport.forget(this);
    for (const fn of [...this.closeListeners]) fn(reason);
    this.closeListeners.clear();
  }

  private receive(chunk: Buffer): void {
    for (const event of this.framer.push(chunk)) {
      if (!this.open) return;
      if (event.type === "ping") this.socket.write(PONG);
      else if (event.type === "error") this.transport.framingError(this, event.reason, event.detail);
      else this.transport.deliver(event.bytes, this);
    }
  }
}

export class SipTcpTransport {
  /** Connections closed because the peer is not a trusted Kamailio. */
  refusedConnections = 0;
  /** Connections closed because their framing was lost (stream-framing.ts). */
  framingErrors = 0;
  private readonly connections = new Set<SipConnection>();
  /** The open connections the UA opened, by next hop (host:port). */
  private readonly byHop = new Map<string, SipConnection>();
  /** Connections being opened, by next hop: one attempt at a time per hop. */
  private readonly opening = new Map<string, Promise<SipConnection>>();
  private readonly connecting = new Set<net.Socket>();
  private closed = false;

  private constructor(
    private readonly server: net.Server,
    private readonly opts: SipTcpOptions,
  ) {
    server.on("connection", (socket) => this.accept(socket));
    server.on("error", (err) => opts.log.error("SIP TCP listener error", { error: err.message }));
  }

  /** Listens on host:port; rejects with the listen error (EADDRINUSE...). */
  static async listen(opts: SipTcpOptions): Promise<SipTcpTransport> {
    const server = net.createServer({ noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: opts.host, port: opts.port, exclusive: true }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return new SipTcpTransport(server, opts);
  }

  /** Open connections, both ways. */
  get openConnections(): number {
    return this.connections.size;
  }

  /**
   * The UA's connection to `to`: the open one, or a new one (from the UA's
   * own address). Rejects with CpmError CPM_ERR_SIP_TRANSPORT when the
   * connection cannot be made within connectTimeoutMs, or the peer is not
   * trusted; the connect error (ECONNREFUSED...) is its cause.
   */
  connection(to: Endpoint): Promise<SipConnection> {
    if (this.closed) return Promise.reject(new CpmError("CPM_ERR_SIP_TRANSPORT", "SIP TCP transport is closed"));
    const hop = hostPort(to);
    const open = this.byHop.get(hop);
    if (open?.open) return Promise.resolve(open);
    let attempt = this.opening.get(hop);
    if (!attempt) {
      attempt = this.connect(to, hop).finally(() => this.opening.delete(hop));
      this.opening.set(hop, attempt);
    }
    return attempt;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.connecting) s.destroy();
    for (const c of [...this.connections]) c.close("SIP UA closed");
    await stopped;
  }

  /** @internal SipConnection: a message framed on `connection`. */
  deliver(raw: Buffer, connection: SipConnection): void {
    this.opts.onMessage(raw, connection);
  }

  /** @internal SipConnection: framing lost; closes that connection only. */
  framingError(connection: SipConnection, reason: string, detail: string): void {
    this.framingErrors++;
    this.opts.log.warn("SIP over TCP: framing lost, closing the connection", { peer: hostPort(connection.peer), reason, detail });
    connection.close(`framing lost: ${reason}`);
  }

  /** @internal SipConnection: it closed. */
  forget(connection: SipConnection): void {
    this.connections.delete(connection);
    if (connection.hop !== undefined && this.byHop.get(connection.hop) === connection) this.byHop.delete(connection.hop);
  }

  private accept(socket: net.Socket): void {
    const peer = { host: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    if (this.closed) {
      socket.destroy();
      return;
    }
    if (!this.opts.trusted(peer.host)) {
      socket.destroy();
      this.refused(peer, "accepted");
      return;
    }
    this.connections.add(new SipConnection(socket, undefined, this, this.opts.limits));
  }

  private refused(peer: Endpoint, how: "accepted" | "opened"): void {
    this.refusedConnections++;
    // a flood must not flood the log: the first ten, then one in a thousand
    if (this.refusedConnections <= 10 || this.refusedConnections % 1000 === 0)
      this.opts.log.warn("SIP TCP connection with a peer that is not a trusted Kamailio, closed", {
        peer: hostPort(peer),
        how,
        refused: this.refusedConnections,
      });
  }

  private connect(to: Endpoint, hop: string): Promise<SipConnection> {
    return new Promise<SipConnection>((resolve, reject) => {
      const socket = net.connect({ host: to.host, port: to.port, localAddress: this.opts.host, noDelay: true });
      this.connecting.add(socket);
      const timer = setTimeout(() => fail(new Error(`no connection within ${this.opts.connectTimeoutMs} ms`)), this.opts.connectTimeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.connecting.delete(socket);
        socket.off("error", fail);
        socket.off("close", closed);
      };
      const fail = (err: Error): void => {
        done();
        socket.destroy();
        reject(new CpmError("CPM_ERR_SIP_TRANSPORT", `TCP connection to ${hop} failed: ${err.message}`, { cause: err }));
      };
      const closed = (): void => fail(new Error("closed while connecting"));
      socket.once("error", fail);
      socket.once("close", closed);
      socket.once("connect", () => {
        const peer = { host: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
        if (this.closed) return fail(new Error("SIP TCP transport closed"));
        // the same rule as for what the UA takes: only Kamailio (a host name is checked once resolved)
        if (!this.opts.trusted(peer.host)) {
          this.refused(peer, "opened");
          return fail(new Error(`${hostPort(peer)} is not a trusted Kamailio`));
        }
        done();
        const connection = new SipConnection(socket, hop, this, this.opts.limits);
        this.connections.add(connection);
        this.byHop.set(hop, connection);
        resolve(connection);
      });
    });
  }
}

/** True for a connect the peer refused (TCP reset): RFC 3261 18.1.1's cue to try UDP. */
export function connectionRefused(err: unknown): boolean {
  const cause = err instanceof Error ? err.cause : undefined;
  return (cause as NodeJS.ErrnoException | undefined)?.code === "ECONNREFUSED";
}
