// A minimal SIP user agent for the requests the PF originates itself
// (deferred delivery, 8.3.2.9.1.2): INVITE, ACK, CANCEL and BYE as UAC,
// SUBSCRIBE (RFC 6665 4.1.2) and its in-dialog refreshes as a subscriber,
// through Kamailio as outbound proxy (RFC 3261 8.1.2), and the UAS side of
// requests that reach it: an in-dialog BYE from the client, the notifier's
// NOTIFY, and the client's re-join INVITE the PF answers itself
// (8.3.2.9.1.3; INVITE server transaction 17.2.1, the 2xx retransmitted by
// the core until the ACK, 13.3.1.4). It speaks UDP
// and TCP on one host:port (RFC 3261 18; TCP in tcp-transport.ts and
// stream-framing.ts); which one a request takes is `transport` ("auto":
// RFC 3261 18.1.1, TCP above 1300 bytes). Transactions follow RFC 3261 17
// on both, retransmitting over UDP only. Everything reaches the UA through
// Kamailio, so a datagram or a connection from any other source is dropped
// unanswered, logged and counted: a BYE or a 603 sent straight to the UA
// would otherwise end a delivery and discard the user's deferred data.
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import { isIPv6 } from "node:net";
import { asCpmError, CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import { type AddressList, inAddressList, parseAddressList } from "./address-list.js";
import { cseqOfMessage } from "./cseq.js";
import { header, headerValues, parseSipMessage, type SipMessage, splitCommaList } from "./message.js";
import { parseNameAddr, tagOf, uriParams } from "./name-addr.js";
import { parseParams } from "./params.js";
import { type SipHeaderLine, serializeRequest, serializeResponse } from "./serialize.js";
import type { SipStreamLimits } from "./stream-framing.js";
import { connectionRefused, type Endpoint, hostPort, type SipConnection, SipTcpTransport } from "./tcp-transport.js";

/** sip.transport: what the UA's requests take where the next hop's URI does not say (RFC 3263 4.1). */
export type TransportMode = "udp" | "tcp" | "auto";
/** A transport as the Via names it (RFC 3261 18, 20.42). */
export type Transport = "UDP" | "TCP";

export interface SipUaOptions {
  /** Local UDP bind address; port 0 = any free port. Also the Via sent-by, so not a wildcard address. */
  host: string;
  port: number;
  /** Kamailio: every request the UA originates goes there (RFC 3261 8.1.2 outbound proxy, as a loose-route Route header). */
  outboundProxy: { host: string; port: number };
  /**
   * The sources (Kamailio's addresses) the UA takes requests and responses
   * from; others are dropped unanswered and counted (refusedDatagrams).
   * Default: the outbound proxy's address, which must then be an IP address.
   */
  trustedSources?: AddressList;
  /** Extra URI parameters on that pre-loaded Route header, e.g. ";cpmpfuac" (Kamailio recognises PF-originated requests by it). */
  routeParams?: string;
  log: Logger;
  /** RFC 3261 T1, default 500 ms (tests use smaller). Timer A/B/E/F derive from it. */
  t1Ms?: number;
  /**
   * "udp": every request over UDP (unless a hop's URI says transport=tcp);
   * "tcp": every request over TCP; "auto" (default): RFC 3261 18.1.1, TCP
   * for a request above 1300 bytes, UDP otherwise, and UDP when the next hop
   * refuses the TCP connection.
   */
  transport?: TransportMode;
  /** How long opening a TCP connection may take (ms). Default 2000. */
  tcpConnectTimeoutMs?: number;
  /** Framing limits of TCP connections (stream-framing.ts defaults). */
  streamLimits?: Partial<SipStreamLimits>;
}

/** RFC 3261 12.1.2, UAC side. */
export interface Dialog {
  callId: string;
  localTag: string;
  remoteTag: string;
  /** From (name-addr without tag). */
  localUri: string;
  /** To (name-addr without tag). */
  remoteUri: string;
  /** Contact URI of the 2xx. */
  remoteTarget: string;
  /** Record-Route of the 2xx, reversed (12.1.2). */
  routeSet: string[];
  localCSeq: number;
}

export interface InviteOutcome {
  status: number;
  reason: string;
  /** The final response. */
  response: SipMessage;
  /** For a 2xx. */
  dialog?: Dialog;
}

export interface InviteRequest {
  requestUri: string;
  /** To, From (no tag), Contact, ... in the order to send; not the headers the UA writes (Via, Call-ID, CSeq, Max-Forwards, Content-Length, Route). */
  headers: SipHeaderLine[];
  body: string;
  callId?: string;
  /** Routes pre-loaded after the outbound proxy's (e.g. the S-CSCF, TS 24.229 5.7.3), nearest first. */
  route?: string[];
}

export interface InviteHandle {
  callId: string;
  outcome: Promise<InviteOutcome>;
  cancel(): void;
}

/** A dialog-creating non-INVITE request (SUBSCRIBE, RFC 6665 4.1.2.1): as InviteRequest, no body by default. */
export interface SubscribeRequest {
  requestUri: string;
  /** Routes pre-loaded after the outbound proxy's (e.g. the S-CSCF's originating route, TS 24.229 5.7.3), nearest first. */
  route?: string[];
  /** To, From (no tag), Contact, Event, Expires, ... in the order to send; not the headers the UA writes. */
  headers: SipHeaderLine[];
  body?: string;
  callId?: string;
}

export interface NonInviteOutcome {
  status: number;
  reason: string;
  /** The final response; absent for the UA's own 408 (Timer F) and 503 (transport error, close()). */
  response?: SipMessage;
}

export interface SubscribeHandle {
  callId: string;
  /** The From tag: the NOTIFYs of the subscription carry it as their To tag (RFC 6665 4.1.2.4), the 2xx may come after them. */
  localTag: string;
  /** The From and To as sent (no tags): what a dialog built from an early NOTIFY needs (dialogFromNotify). */
  localUri: string;
  remoteUri: string;
  /** Resolves with the final response (never rejects); a 2xx brings the dialog (RFC 6665 4.1.2.1, RFC 3261 12.1.2). */
  outcome: Promise<NonInviteOutcome & { dialog?: Dialog }>;
}

export type RequestHandler = (
  req: SipMessage,
  reply: (status: number, reason: string, headers?: SipHeaderLine[], body?: string) => void,
) => void;

/** An initial INVITE that reached the UA (INVITE server transaction, 17.2.1), answered once by its handler. */
export interface IncomingInvite {
  readonly request: SipMessage;
  /**
   * 2xx with `body` (Content-Type among `headers`): the dialog's UAS side
   * (12.1.1: route set = the INVITE's Record-Route in order, remote target =
   * its Contact); the UA retransmits the 2xx until the ACK (13.3.1.4).
   * Throws CpmError CPM_ERR_BAD_SIP for an INVITE without Contact, and
   * CPM_ERR_BAD_REQUEST once answered or CANCELled.
   */
  accept(headers: SipHeaderLine[], body: string): Dialog;
  /** The request is a re-INVITE (its To has a tag): no new dialog. */
  readonly inDialog: boolean;
  /** 2xx to a re-INVITE (12.2.2): no new dialog; retransmitted until the ACK (13.3.1.4). Throws CPM_ERR_BAD_REQUEST once answered. */
  acceptInDialog(headers: SipHeaderLine[], body: string): void;
  /** A final non-2xx (17.2.1: retransmitted over UDP until its ACK). Ignored once answered. */
  reject(status: number, reason: string, headers?: SipHeaderLine[]): void;
  /** Resolves true with the ACK of the 2xx, false when none came within 64*T1 (13.3.1.4: the session then ends) or the UA closed. */
  readonly acked: Promise<boolean>;
  /** Called when a CANCEL ended the INVITE before its final response (the UA answered 487 itself, 9.2). */
  onCancel(fn: () => void): void;
}

export type InviteHandler = (invite: IncomingInvite) => void;

/** Where a message came from, so where its response goes (RFC 3261 18.2.2; RFC 3581 4). */
type Source = { transport: "UDP"; peer: Endpoint } | { transport: "TCP"; peer: Endpoint; connection: SipConnection };

/** A request on its way: the transport chosen for it, its next hop, its bytes (their top Via names that transport). */
interface Outgoing {
  method: string;
  transport: Transport;
  to: Endpoint;
  bytes: Buffer;
  /** The request written for a transport. */
  build: (transport: Transport) => Buffer;
  /** On TCP only for its size (18.1.1): a refused connection sends it over UDP. */
  bySize: boolean;
}

/** The transport side of one client transaction (17.1), shared by INVITE and non-INVITE. */
interface ClientFlow {
  readonly transport: Transport;
  /** TCP: no retransmissions (17.1.1.2, 17.1.2.2), Timer D and K zero. */
  readonly reliable: boolean;
  send(): void;
  /** Timer A / E: over UDP only. */
  retransmit(): void;
  /** Another request of the same transaction on the same flow: the ACK to a non-2xx (17.1.1.3); `first` counts it. */
  sendAlso(method: string, bytes: Buffer, first: boolean): void;
  /** A request of another transaction on this flow's transport and hop: the CANCEL (9.1). */
  derive(method: string, build: (transport: Transport) => Buffer): Outgoing;
  /** The final response came: the connection closing no longer concerns the transaction. */
  release(): void;
}

/** A pending client transaction (17.1), found by its Via branch and CSeq method (17.1.3). */
interface ClientTransaction {
  onResponse(res: SipMessage): void;
  /** close(): end now, clearing the timers. */
  abort(): void;
}

/** A non-INVITE server transaction (17.2.2): the final response is kept for retransmissions (over UDP). */
interface ServerTransaction {
  response?: Buffer;
  timer: NodeJS.Timeout;
}

/** An INVITE server transaction (17.2.1): its latest response, resent for a retransmitted INVITE. */
interface InviteServerTransaction {
  response: Buffer;
  final: boolean;
  cancelled?: () => void;
  /** The ACK of its non-2xx came (17.2.1 Confirmed). */
  confirmed?: () => void;
  /** Timer G / H over UDP for a non-2xx; cleared by its ACK. */
  timers: NodeJS.Timeout[];
}

/** The UAS core's 2xx waiting for its ACK (13.3.1.4), by Call-ID. */
interface PendingAck {
  cseq: number;
  timers: NodeJS.Timeout[];
  settle: (acked: boolean) => void;
}

/** A confirmed dialog the UA still answers 2xx retransmissions for (13.2.2.4). */
interface DialogState {
  dialog: Dialog;
  inviteCSeq: number;
  /** What its INVITE went over: its requests stay on TCP when that was TCP. */
  transport: Transport;
  ack?: Outgoing;
  /** ACKs sent to the 2xx of other forks, by their To tag. */
  forks: Map<string, Outgoing>;
}

/** RFC 3261 17.1.2.2. */
const T2_MS = 4000;
/** RFC 3261 8.1.1.6. */
const MAX_FORWARDS = "70";
/** RFC 3261 18.1.1: above this a request goes over a congestion-controlled transport when the path MTU is unknown. */
const UDP_MAX_REQUEST_BYTES = 1300;
const DEFAULT_TCP_CONNECT_TIMEOUT_MS = 2000;
/** Port 0: attempts at a port free for both UDP and TCP. */
const BIND_ATTEMPTS = 10;
/** A request the handler leaves unanswered this long gets 500. */
const UNANSWERED_MS = 1000;
/** Written by the UA itself (with their compact forms, 7.3.3). */
const UA_HEADERS = new Set(["via", "v", "call-id", "i", "cseq", "max-forwards", "content-length", "l", "route"]);

const randomHex = (): string => randomBytes(8).toString("hex");
/** 8.1.1.7: the magic cookie marks an RFC 3261 branch. */
const newBranch = (): string => `z9hG4bK${randomHex()}`;
const isFrom = (name: string): boolean => /^(from|f)$/i.test(name);
const isTo = (name: string): boolean => /^(to|t)$/i.test(name);

/** host:port of a SIP URI (19.1.1); 5060 when the port is absent. */
function uriEndpoint(uri: string): Endpoint {
  const m = /^sips?:(?:[^@]*@)?(\[[^\]]+\]|[^:;?]+)(?::(\d+))?/i.exec(uri);
  if (!m?.[1]) throw new CpmError("CPM_ERR_BAD_SIP", `no host in URI ${uri}`);
  return { host: m[1].replace(/^\[(.*)\]$/, "$1"), port: m[2] ? Number(m[2]) : 5060 };
}

/** The transport a hop's URI names (19.1.1 transport parameter), if any; one the UA does not speak is CPM_ERR_BAD_SIP. */
function uriTransport(uri: string): Transport | undefined {
  const named = uriParams(uri).get("transport")?.toLowerCase();
  if (named === undefined) return undefined;
  if (named === "udp" || named === "tcp") return named === "udp" ? "UDP" : "TCP";
  throw new CpmError("CPM_ERR_BAD_SIP", `transport=${named} in ${uri}: the PF's UA speaks UDP and TCP only`);
}

/** The port of the topmost Via's sent-by (18.2.2); 5060 when absent. */
function viaSentByPort(msg: SipMessage): number {
  const via = splitCommaList(header(msg, "via") ?? "")[0] ?? "";
  const m = /^SIP\s*\/\s*2\.0\s*\/\s*[A-Za-z]+\s+(?:\[[^\]]+\]|[^\s:;]+)(?::(\d+))?/i.exec(via);
  return m?.[1] ? Number(m[1]) : 5060;
}

/** The branch of the topmost Via (17.1.3, 17.2.3). */
function topBranch(msg: SipMessage): string {
  const via = splitCommaList(header(msg, "via") ?? "")[0] ?? "";
  const semi = via.indexOf(";");
  return semi < 0 ? "" : (parseParams(via.slice(semi)).get("branch") ?? "");
}

/** Request-URI, Route headers, next hop and the transport its URI names, of an in-dialog request (12.2.1.1, loose routing only: Kamailio sets ;lr). */
function inDialogTarget(dialog: Dialog): { requestUri: string; route: SipHeaderLine[]; to: Endpoint; transport: Transport | undefined } {
  const first = dialog.routeSet[0];
  const hop = first === undefined ? dialog.remoteTarget : parseNameAddr(first).uri;
  return {
    requestUri: dialog.remoteTarget,
    route: dialog.routeSet.map((r): SipHeaderLine => ["Route", r]),
    to: uriEndpoint(hop),
    transport: uriTransport(hop),
  };
}

/** The headers every in-dialog request carries (12.2.1.1). */
function dialogHeaders(dialog: Dialog, via: string, cseq: string): SipHeaderLine[] {
  return [
    ["Via", via],
    ["Max-Forwards", MAX_FORWARDS],
    ...inDialogTarget(dialog).route,
    ["From", `${dialog.localUri};tag=${dialog.localTag}`],
    ["To", `${dialog.remoteUri};tag=${dialog.remoteTag}`],
    ["Call-ID", dialog.callId],
    ["CSeq", cseq],
  ];
}

/** Caller headers of an in-dialog request: none the UA writes itself (From and To included: the dialog's). */
function checkDialogHeaders(headers: readonly SipHeaderLine[]): void {
  for (const [name] of headers) {
    if (UA_HEADERS.has(name.toLowerCase()) || isFrom(name) || isTo(name)) {
      throw new CpmError("CPM_ERR_BAD_REQUEST", `the UA writes ${name} itself`);
    }
  }
}

/** Caller headers for a new dialog-creating request: no UA-written header, a From and a To without tags, one line each. */
function checkInviteHeaders(headers: readonly SipHeaderLine[], method = "INVITE"): { from: string; to: string } {
  for (const [name] of headers) {
    if (UA_HEADERS.has(name.toLowerCase())) throw new CpmError("CPM_ERR_BAD_REQUEST", `the UA writes ${name} itself`);
  }
  const from = headers.find(([n]) => isFrom(n))?.[1];
  const to = headers.find(([n]) => isTo(n))?.[1];
  if (!from || !to) throw new CpmError("CPM_ERR_BAD_REQUEST", `a ${method} needs From and To`);
  if (tagOf(from) || tagOf(to)) throw new CpmError("CPM_ERR_BAD_REQUEST", `From and To of a new ${method} carry no tag`);
  return { from, to };
}

/**
 * RFC 6665 4.1.2.4: a NOTIFY that comes before the 2xx to the SUBSCRIBE
 * creates the subscription's dialog: the remote tag is its From tag, the
 * remote target its Contact, the route set its Record-Route in order (as a
 * UAS builds it, RFC 3261 12.1.1). A NOTIFY without a Contact or a From
 * tag is CPM_ERR_BAD_SIP.
 */
export function dialogFromNotify(
  notify: SipMessage,
  base: Pick<Dialog, "callId" | "localTag" | "localUri" | "remoteUri" | "localCSeq">,
): Dialog {
  const remoteTag = tagOf(header(notify, "from"));
  const contact = splitCommaList(header(notify, "contact") ?? "")[0];
  if (!remoteTag || !contact) throw new CpmError("CPM_ERR_BAD_SIP", "NOTIFY without From tag or Contact");
  const dialog: Dialog = {
    ...base,
    remoteTag,
    remoteTarget: parseNameAddr(contact).uri,
    routeSet: headerValues(notify, "record-route").flatMap(splitCommaList),
  };
  inDialogTarget(dialog);
  return dialog;
}

function bindUdp(host: string, port: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket(isIPv6(host) ? "udp6" : "udp4");
  return new Promise<dgram.Socket>((resolve, reject) => {
    socket.once("error", (err) => {
      socket.close();
      reject(new CpmError("CPM_ERR_CONFIG", `cannot bind SIP UDP ${host}:${port}`, { cause: err }));
    });
    socket.bind(port, host, () => {
      socket.removeAllListeners("error");
      resolve(socket);
    });
  });
}

/** The UA's own SIP URI at `address` (its Contact in the requests it originates and the answers it gives). */
export const uaUriOf = (address: Endpoint): string => `sip:${hostPort(address)}`;

export class SipUa {
  readonly address: Endpoint;
  /** Requests sent (first transmissions, not retransmissions), by "<udp|tcp> <METHOD>". */
  readonly requestsSent = new Map<string, number>();
  /** Datagrams dropped because they came from outside trustedSources. */
  refusedDatagrams = 0;
  private readonly t1: number;
  private readonly mode: TransportMode;
  private readonly proxy: Endpoint;
  private readonly proxyRoute: string;
  private readonly clients = new Map<string, ClientTransaction>();
  private readonly servers = new Map<string, ServerTransaction>();
  private readonly dialogs = new Map<string, DialogState>();
  private readonly inviteServers = new Map<string, InviteServerTransaction>();
  private readonly pendingAcks = new Map<string, PendingAck>();
  /** ACKs sent for 2xx of dialogs the UA did not INVITE, by Call-ID, tags and CSeq (see ack()). */
  private readonly acksOfOthers = new Map<string, Outgoing>();
  private handler: RequestHandler | undefined;
  private inviteHandler: InviteHandler | undefined;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly tcp: SipTcpTransport,
    private readonly opts: SipUaOptions,
    private readonly trusted: AddressList,
  ) {
    const bound = socket.address();
    this.address = { host: bound.address, port: bound.port };
    this.t1 = opts.t1Ms ?? 500;
    this.mode = opts.transport ?? "auto";
    this.proxy = { host: opts.outboundProxy.host, port: opts.outboundProxy.port };
    // 8.1.2: the outbound proxy as a pre-loaded Route, loose routing (;lr).
    this.proxyRoute = `<sip:${hostPort(this.proxy)};lr${opts.routeParams ?? ""}>`;
    socket.on("message", (raw, rinfo) => this.receiveDatagram(raw, { host: rinfo.address, port: rinfo.port }));
    socket.on("error", (err) => opts.log.error("SIP UDP socket error", { error: err.message }));
  }

  /** Binds UDP and listens on TCP on the same host:port (RFC 3261 18.2.1); port 0 takes one free for both. */
  static async start(opts: SipUaOptions): Promise<SipUa> {
    const trusted = opts.trustedSources ?? parseAddressList(opts.outboundProxy.host, "the outbound proxy's"); // before binding
    for (let attempt = 1; ; attempt++) {
      const socket = await bindUdp(opts.host, opts.port);
      const { address, port } = socket.address();
      if (address === "0.0.0.0" || address === "::") {
        socket.close();
        throw new CpmError("CPM_ERR_CONFIG", `SIP UDP host ${address} cannot be a Via sent-by; bind a reachable address`);
      }
      let ua: SipUa | undefined;
      let tcp: SipTcpTransport;
      try {
        tcp = await SipTcpTransport.listen({
          host: opts.host,
          port,
          trusted: (ip) => inAddressList(ip, trusted),
          onMessage: (raw, connection) => ua?.receive(raw, { transport: "TCP", peer: connection.peer, connection }),
          connectTimeoutMs: opts.tcpConnectTimeoutMs ?? DEFAULT_TCP_CONNECT_TIMEOUT_MS,
          ...(opts.streamLimits ? { limits: opts.streamLimits } : {}),
          log: opts.log,
        });
      } catch (err) {
        socket.close();
        const taken = (err as NodeJS.ErrnoException).code === "EADDRINUSE";
        if (opts.port === 0 && taken && attempt < BIND_ATTEMPTS) continue;
        throw new CpmError("CPM_ERR_CONFIG", `cannot listen on SIP TCP ${opts.host}:${port}`, { cause: err });
      }
      ua = new SipUa(socket, tcp, opts, trusted);
      return ua;
    }
  }

  /** TCP connections closed because the peer is not a trusted Kamailio. */
  get refusedConnections(): number {
    return this.tcp.refusedConnections;
  }

  /** TCP connections closed because their framing was lost. */
  get framingErrors(): number {
    return this.tcp.framingErrors;
  }

  /**
   * The pre-loaded Route to the outbound proxy (8.1.2). A request on a dialog
   * the PF only proxies puts it before the dialog's route set, so that it
   * still goes through Kamailio (which knows it by the route's parameters).
   */
  get outboundRoute(): string {
    return this.proxyRoute;
  }

  onRequest(handler: RequestHandler): void {
    this.handler = handler;
  }

  /** Initial INVITEs (no To tag); without a handler they are answered 501. */
  onInvite(handler: InviteHandler): void {
    this.inviteHandler = handler;
  }

  /**
   * Sends an INVITE (INVITE client transaction, 17.1.1). Throws CpmError
   * CPM_ERR_BAD_REQUEST, before sending anything, for headers the UA writes
   * itself, a missing From/To or a tagged one. `outcome` resolves with the
   * final response and rejects with CpmError: CPM_ERR_INTERNAL on Timer B,
   * no final response 64*T1 after a CANCEL (9.1) or close();
   * CPM_ERR_SIP_TRANSPORT when the request cannot be sent or its TCP
   * connection closes before the final response (17.1.4).
   * Timer B only runs before the first provisional response (17.1.1.2); after
   * one, ending a call that rings too long is the caller's cancel().
   */
  invite(req: InviteRequest, onProvisional?: (status: number, response: SipMessage) => void): InviteHandle {
    if (this.closing) throw new CpmError("CPM_ERR_INTERNAL", "SIP UA is closed");
    const { from, to } = checkInviteHeaders(req.headers);
    const callId = req.callId ?? `${randomHex()}@${this.address.host}`;
    const localTag = randomHex();
    const branch = newBranch();
    const key = `${branch} INVITE`;
    const fromTagged = `${from};tag=${localTag}`;
    const cseq = 1;
    // 8.1.2; CANCEL and a non-2xx ACK carry the INVITE's Route headers and top Via (9.1, 17.1.1.3)
    const routes: SipHeaderLine[] = [this.proxyRoute, ...(req.route ?? [])].map((r): SipHeaderLine => ["Route", r]);
    const common = (transport: Transport, method: string, toValue: string): SipHeaderLine[] => [
      ["Via", this.via(branch, transport)],
      ["Max-Forwards", MAX_FORWARDS],
      ...routes,
      ["From", fromTagged],
      ["To", toValue],
      ["Call-ID", callId],
      ["CSeq", `${cseq} ${method}`],
    ];
    const build = (transport: Transport): Buffer =>
      serializeRequest(
        "INVITE",
        req.requestUri,
        [
          ["Via", this.via(branch, transport)],
          ["Max-Forwards", MAX_FORWARDS],
          ...routes,
          ["Call-ID", callId],
          ["CSeq", `${cseq} INVITE`],
          ...req.headers.map(([n, v]): SipHeaderLine => (isFrom(n) ? [n, fromTagged] : [n, v])),
        ],
        req.body,
      );
    const out = this.outgoing("INVITE", this.proxy, undefined, build);
    const log = this.opts.log.child({ callId });

    let state: "calling" | "proceeding" | "completed" | "terminated" = "calling";
    let cancelWanted = false;
    let ack: Buffer | undefined;
    const timers = new Set<NodeJS.Timeout>();
    const after = (ms: number, fn: () => void): void => {
      const t = setTimeout(() => {
        timers.delete(t);
        fn();
      }, ms);
      timers.add(t);
    };
    const clearTimers = (): void => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
    };
    let settle!: { resolve: (o: InviteOutcome) => void; reject: (e: CpmError) => void };
    const outcome = new Promise<InviteOutcome>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const terminate = (): void => {
      state = "terminated";
      clearTimers();
      flow.release();
      this.clients.delete(key);
    };
    const fail = (detail: string, cause?: unknown): void => {
      if (state === "terminated") return;
      terminate();
      settle.reject(cause instanceof CpmError ? cause : new CpmError("CPM_ERR_INTERNAL", detail, { cause }));
    };
    // 17.1.1.2 Timer A: retransmit while Calling, doubling; over UDP only
    const timerA = (interval: number): void =>
      after(interval, () => {
        if (state !== "calling") return;
        flow.retransmit();
        timerA(interval * 2);
      });
    const flow = this.clientFlow(out, { failed: (err) => fail(err.detail, err), unreliable: () => timerA(this.t1) });

    // 9.1: CANCEL once a provisional response has arrived; same branch, R-URI, Call-ID, CSeq number, hop and transport.
    const sendCancel = (): void => {
      const cancel = flow.derive("CANCEL", (transport) => serializeRequest("CANCEL", req.requestUri, common(transport, "CANCEL", to)));
      void this.request(cancel, branch).then(({ status }) => log.debug("CANCEL answered", { status }));
      after(64 * this.t1, () => fail("no final response to the INVITE 64*T1 after CANCEL"));
    };

    this.clients.set(key, {
      abort: () => fail("SIP UA closed"),
      onResponse: (res) => {
        const status = res.statusCode;
        if (status < 200) {
          if (state === "calling") {
            state = "proceeding";
            clearTimers(); // Timers A and B
            if (cancelWanted) sendCancel();
          }
          if (state === "proceeding") onProvisional?.(status, res);
          return;
        }
        if (state === "completed") {
          if (ack && status >= 300) flow.sendAlso("ACK", ack, false); // 17.1.1.2: a retransmitted final response is ACKed again
          return;
        }
        if (status < 300) {
          // 17.1.1.2: a 2xx ends the transaction; the caller ACKs it (13.2.2.4).
          const transport = flow.transport;
          terminate();
          try {
            const dialog = this.dialogFrom(res, { callId, localTag, localUri: from, remoteUri: to, localCSeq: cseq });
            this.dialogs.set(callId, { dialog, inviteCSeq: cseq, transport, forks: new Map() });
            settle.resolve({ status, reason: res.reasonPhrase, response: res, dialog });
          } catch (err) {
            settle.reject(asCpmError(err, "CPM_ERR_BAD_SIP"));
          }
          return;
        }
        // 17.1.1.3: the transaction ACKs a non-2xx final response itself.
        state = "completed";
        clearTimers();
        ack = serializeRequest("ACK", req.requestUri, common(flow.transport, "ACK", header(res, "to") ?? to));
        flow.sendAlso("ACK", ack, true);
        settle.resolve({ status, reason: res.reasonPhrase, response: res });
        if (flow.reliable)
          terminate(); // Timer D: zero over TCP
        else after(64 * this.t1, terminate); // Timer D (32 s over UDP; scaled with T1 here)
      },
    });
    flow.send();
    if (!flow.reliable) timerA(this.t1);
    after(64 * this.t1, () => fail(`Timer B: no response to the INVITE within ${64 * this.t1} ms`)); // Timer B

    return {
      callId,
      outcome,
      cancel: () => {
        if (state === "calling") cancelWanted = true;
        else if (state === "proceeding" && !cancelWanted) {
          cancelWanted = true;
          sendCancel();
        }
      },
    };
  }

  /**
   * ACK for a 2xx (13.2.2.4): the INVITE's CSeq number, a new branch, sent
   * to the first route (or the remote target), over the INVITE's transport
   * unless that hop's URI names one. Kept until the dialog ends so a
   * retransmitted 2xx is ACKed again. For a dialog whose INVITE the UA did
   * not send (a further device of a forked INVITE), the ACK is kept for the
   * 64*T1 the UAS retransmits its 2xx (13.3.1.4): each retransmission the
   * caller reports gets that same ACK again, not a new one.
   */
  ack(dialog: Dialog): void {
    if (this.closing) return;
    const known = this.stateOf(dialog);
    if (known) {
      known.ack = this.ackFor(dialog, known.inviteCSeq, known.transport);
      this.sendStateless(known.ack, true);
      return;
    }
    const key = `${dialog.callId} ${dialog.localTag} ${dialog.remoteTag} ${dialog.localCSeq}`;
    const sent = this.acksOfOthers.get(key);
    if (sent) {
      this.sendStateless(sent, false);
      return;
    }
    const ack = this.ackFor(dialog, dialog.localCSeq, undefined);
    this.acksOfOthers.set(key, ack);
    setTimeout(() => this.acksOfOthers.delete(key), 64 * this.t1).unref();
    this.sendStateless(ack, true);
  }

  private ackFor(dialog: Dialog, inviteCSeq: number, dialogTransport: Transport | undefined): Outgoing {
    const { requestUri, to, transport } = inDialogTarget(dialog);
    const branch = newBranch();
    return this.outgoing(
      "ACK",
      to,
      transport,
      (t) => serializeRequest("ACK", requestUri, dialogHeaders(dialog, this.via(branch, t), `${inviteCSeq} ACK`)),
      dialogTransport,
    );
  }

  /**
   * In-dialog BYE (15.1.1), a non-INVITE client transaction (17.1.2).
   * Resolves with the final status: 408 on Timer F, 503 on a transport
   * error (its TCP connection lost too) or close() (8.1.3.1).
   */
  async bye(dialog: Dialog, headers: SipHeaderLine[] = []): Promise<number> {
    return this.byeOn(dialog, headers, this.stateOf(dialog)?.transport);
  }

  private async byeOn(dialog: Dialog, headers: SipHeaderLine[], dialogTransport: Transport | undefined): Promise<number> {
    const { status } = await this.inDialogOn(dialog, "BYE", headers, "", dialogTransport);
    if (this.stateOf(dialog)) this.dialogs.delete(dialog.callId);
    return status;
  }

  /**
   * Another non-INVITE request on `dialog` (12.2.1.1): a SUBSCRIBE refresh
   * or the unsubscribe, Expires: 0 (RFC 6665 4.1.2.2, 4.1.2.3). Resolves
   * with the final response, as request() does: 408 on Timer F, 503 on a
   * transport error or close(). Throws CpmError CPM_ERR_BAD_REQUEST for
   * headers the UA writes itself and for INVITE, ACK and CANCEL.
   */
  inDialog(dialog: Dialog, method: string, headers: SipHeaderLine[] = [], body = ""): Promise<NonInviteOutcome> {
    if (/^(INVITE|ACK|CANCEL)$/i.test(method)) throw new CpmError("CPM_ERR_BAD_REQUEST", `${method} is not sent by inDialog()`);
    checkDialogHeaders(headers);
    return this.inDialogOn(dialog, method.toUpperCase(), headers, body, this.stateOf(dialog)?.transport);
  }

  private async inDialogOn(
    dialog: Dialog,
    method: string,
    headers: SipHeaderLine[],
    body: string,
    dialogTransport: Transport | undefined,
  ): Promise<NonInviteOutcome> {
    if (this.closing) return { status: 503, reason: "Service Unavailable" };
    checkDialogHeaders(headers);
    dialog.localCSeq += 1; // 12.2.1.1
    const branch = newBranch();
    const { requestUri, to, transport } = inDialogTarget(dialog);
    const build = (t: Transport): Buffer =>
      serializeRequest(
        method,
        requestUri,
        [...dialogHeaders(dialog, this.via(branch, t), `${dialog.localCSeq} ${method}`), ...headers],
        body,
      );
    return this.request(this.outgoing(method, to, transport, build, dialogTransport), branch);
  }

  /**
   * SUBSCRIBE (RFC 6665 4.1.2.1): a dialog-creating non-INVITE request
   * (17.1.2), through the outbound proxy like an INVITE. Throws CpmError
   * CPM_ERR_BAD_REQUEST as invite() does. The NOTIFYs come to the request
   * handler (onRequest), possibly before the 2xx (RFC 6665 4.1.2.4): they
   * carry `localTag` as their To tag.
   */
  subscribe(req: SubscribeRequest): SubscribeHandle {
    if (this.closing) throw new CpmError("CPM_ERR_INTERNAL", "SIP UA is closed");
    const { from, to } = checkInviteHeaders(req.headers, "SUBSCRIBE");
    const callId = req.callId ?? `${randomHex()}@${this.address.host}`;
    const localTag = randomHex();
    const branch = newBranch();
    const fromTagged = `${from};tag=${localTag}`;
    const cseq = 1;
    const build = (transport: Transport): Buffer =>
      serializeRequest(
        "SUBSCRIBE",
        req.requestUri,
        [
          ["Via", this.via(branch, transport)],
          ["Max-Forwards", MAX_FORWARDS],
          ["Route", this.proxyRoute],
          ...(req.route ?? []).map((r): SipHeaderLine => ["Route", r]),
          ["Call-ID", callId],
          ["CSeq", `${cseq} SUBSCRIBE`],
          ...req.headers.map(([n, v]): SipHeaderLine => (isFrom(n) ? [n, fromTagged] : [n, v])),
        ],
        req.body ?? "",
      );
    const outcome = this.request(this.outgoing("SUBSCRIBE", this.proxy, undefined, build), branch).then(
      (o): NonInviteOutcome & { dialog?: Dialog } => {
        if (!o.response || o.status >= 300) return o;
        try {
          return { ...o, dialog: this.dialogFrom(o.response, { callId, localTag, localUri: from, remoteUri: to, localCSeq: cseq }) };
        } catch (err) {
          // RFC 6665 4.1.2.1: a 2xx without Contact is no usable subscription dialog
          this.opts.log.warn("2xx to SUBSCRIBE without a usable dialog", { callId, reason: asCpmError(err).detail });
          return { status: 502, reason: "Bad Gateway", response: o.response };
        }
      },
    );
    return { callId, localTag, localUri: from, remoteUri: to, outcome };
  }

  /** The kept state of this dialog (not of another fork with the same Call-ID). */
  private stateOf(dialog: Dialog): DialogState | undefined {
    const known = this.dialogs.get(dialog.callId);
    return known?.dialog.localTag === dialog.localTag && known.dialog.remoteTag === dialog.remoteTag ? known : undefined;
  }

  /** Resolves once the UDP socket and the TCP listener and connections are closed; pending transactions end as described on invite() and bye(). */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    let closed!: () => void;
    this.closing = new Promise<void>((resolve) => {
      closed = resolve;
    });
    // the transactions end as closed, before their connections go
    for (const t of [...this.clients.values()]) t.abort();
    for (const s of this.servers.values()) clearTimeout(s.timer);
    this.servers.clear();
    for (const t of this.inviteServers.values()) for (const timer of t.timers) clearTimeout(timer);
    this.inviteServers.clear();
    for (const p of [...this.pendingAcks.values()]) p.settle(false);
    this.dialogs.clear();
    const udp = new Promise<void>((resolve) => this.socket.close(() => resolve()));
    void Promise.all([udp, this.tcp.close()]).then(() => closed());
    return this.closing;
  }

  private via(branch: string, transport: Transport): string {
    return `SIP/2.0/${transport} ${hostPort(this.address)};branch=${branch};rport`;
  }

  /**
   * The transport of a request (RFC 3263 4.1, RFC 3261 18.1.1): the one its
   * next hop's URI names; else TCP when its dialog's INVITE went over TCP;
   * else sip.transport, "auto" being TCP above 1300 bytes.
   */
  private outgoing(
    method: string,
    to: Endpoint,
    named: Transport | undefined,
    build: (transport: Transport) => Buffer,
    dialogTransport?: Transport,
  ): Outgoing {
    let transport: Transport;
    let bytes: Buffer | undefined;
    let bySize = false;
    if (named) transport = named;
    else if (dialogTransport === "TCP" || this.mode === "tcp") transport = "TCP";
    else if (this.mode === "udp") transport = "UDP";
    else {
      bytes = build("UDP");
      bySize = bytes.length > UDP_MAX_REQUEST_BYTES;
      transport = bySize ? "TCP" : "UDP";
    }
    return { method, transport, to, bytes: bytes && transport === "UDP" ? bytes : build(transport), build, bySize };
  }

  /**
   * Sends a request on its transport; over TCP on the UA's connection to
   * the next hop (opened when there is none) and resolves with it. Rejects
   * with CpmError CPM_ERR_SIP_TRANSPORT. `first`: a first transmission, counted.
   */
  private async transmit(out: Pick<Outgoing, "method" | "transport" | "to" | "bytes">, first: boolean): Promise<SipConnection | undefined> {
    if (this.closing) throw new CpmError("CPM_ERR_SIP_TRANSPORT", "SIP UA is closed");
    let connection: SipConnection | undefined;
    if (out.transport === "UDP") await this.sendDatagram(out.bytes, out.to);
    else {
      connection = await this.tcp.connection(out.to);
      connection.write(out.bytes);
    }
    if (first) {
      const key = `${out.transport.toLowerCase()} ${out.method}`;
      this.requestsSent.set(key, (this.requestsSent.get(key) ?? 0) + 1);
    }
    return connection;
  }

  private sendDatagram(bytes: Buffer, to: Endpoint): Promise<void> {
    return new Promise<void>((resolve, reject) =>
      this.socket.send(bytes, to.port, to.host, (err) => {
        if (!err) return resolve();
        reject(new CpmError("CPM_ERR_SIP_TRANSPORT", `UDP send to ${hostPort(to)} failed: ${err.message}`, { cause: err }));
      }),
    );
  }

  /** A request outside any transaction (the ACK to a 2xx): a failure is logged only. */
  private sendStateless(out: Outgoing, first: boolean): void {
    this.transmit(out, first).catch((err: unknown) => {
      if (!this.closing)
        this.opts.log.warn("SIP request not sent", {
          method: out.method,
          to: hostPort(out.to),
          transport: out.transport,
          reason: asCpmError(err).detail,
        });
    });
  }

  /**
   * The transport side of a client transaction. Over TCP the transaction
   * fails (`failed`) when the connection cannot be had or closes before
   * release() (17.1.4); over UDP when a send fails. A request on TCP only
   * for its size whose connection the next hop refuses goes over UDP
   * instead (18.1.1), and `unreliable` starts its retransmissions.
   */
  private clientFlow(first: Outgoing, on: { failed: (err: CpmError) => void; unreliable: () => void }): ClientFlow {
    let out = first;
    let released = false;
    let unwatch: (() => void) | undefined;
    const failed = (err: CpmError): void => {
      if (!released) on.failed(err);
    };
    const watch = (connection: SipConnection | undefined): void => {
      if (released || connection === undefined || unwatch) return;
      const lost = (reason: string): void =>
        failed(new CpmError("CPM_ERR_SIP_TRANSPORT", `TCP connection to ${hostPort(out.to)} lost before the final response (${reason})`));
      if (connection.open) unwatch = connection.onClose(lost);
      else lost("closed");
    };
    const send = (first: boolean): void => {
      this.transmit(out, first).then(watch, (err: unknown) => {
        if (released) return;
        if (out.bySize && connectionRefused(err)) {
          this.opts.log.warn("next hop refused TCP: request sent over UDP (RFC 3261 18.1.1)", {
            method: out.method,
            to: hostPort(out.to),
            bytes: out.bytes.length,
          });
          out = { ...out, transport: "UDP", bytes: out.build("UDP"), bySize: false };
          send(first);
          on.unreliable();
        } else {
          const error = asCpmError(err, "CPM_ERR_SIP_TRANSPORT");
          if (!this.closing)
            this.opts.log.warn("SIP request not sent", {
              method: out.method,
              to: hostPort(out.to),
              transport: out.transport,
              reason: error.detail,
            });
          failed(error);
        }
      });
    };
    return {
      get transport() {
        return out.transport;
      },
      get reliable() {
        return out.transport === "TCP";
      },
      send: () => send(true),
      retransmit: () => {
        if (out.transport === "UDP") send(false);
      },
      sendAlso: (method, bytes, first) => this.sendStateless({ ...out, method, bytes }, first),
      derive: (method, build) => ({ method, transport: out.transport, to: out.to, bytes: build(out.transport), build, bySize: false }),
      release: () => {
        released = true;
        unwatch?.();
      },
    };
  }

  /**
   * Non-INVITE client transaction (17.1.2.2): over UDP Timer E retransmits
   * (T1 doubling up to T2); Timer F gives 408, a transport error 503 (both
   * without a response). Timer K is zero: the transaction ends with its
   * final response.
   */
  private request(out: Outgoing, branch: string): Promise<NonInviteOutcome> {
    const key = `${branch} ${out.method}`;
    return new Promise<NonInviteOutcome>((resolve) => {
      let interval = this.t1;
      let timerE: NodeJS.Timeout | undefined;
      const finish = (status: number, reason: string, response?: SipMessage): void => {
        if (!this.clients.has(key)) return;
        clearTimeout(timerE);
        clearTimeout(timerF);
        flow.release();
        this.clients.delete(key);
        resolve(response ? { status, reason, response } : { status, reason });
      };
      const retransmit = (): void => {
        timerE = setTimeout(() => {
          flow.retransmit();
          interval = Math.min(interval * 2, T2_MS);
          retransmit();
        }, interval);
      };
      const timerF = setTimeout(() => finish(408, "Request Timeout"), 64 * this.t1);
      const unavailable = (): void => finish(503, "Service Unavailable");
      const flow = this.clientFlow(out, { failed: unavailable, unreliable: retransmit });
      this.clients.set(key, {
        abort: unavailable,
        onResponse: (res) => {
          if (res.statusCode >= 200) finish(res.statusCode, res.reasonPhrase, res);
          else interval = T2_MS; // Proceeding: retransmit every T2
        },
      });
      flow.send();
      if (!flow.reliable) retransmit();
    });
  }

  /** 12.1.2: the UAC's dialog from a 2xx to its INVITE (or SUBSCRIBE, RFC 6665 4.1.2.1). */
  private dialogFrom(res: SipMessage, base: Omit<Dialog, "remoteTag" | "remoteTarget" | "routeSet">): Dialog {
    const remoteTag = tagOf(header(res, "to"));
    const contact = splitCommaList(header(res, "contact") ?? "")[0];
    if (!remoteTag || !contact)
      throw new CpmError("CPM_ERR_BAD_SIP", `2xx to ${cseqOfMessage(res)?.method ?? "a request"} without To tag or Contact`);
    const dialog: Dialog = {
      ...base,
      remoteTag,
      remoteTarget: parseNameAddr(contact).uri,
      routeSet: headerValues(res, "record-route").flatMap(splitCommaList).reverse(),
    };
    const first = dialog.routeSet[0];
    if (first !== undefined && !uriParams(parseNameAddr(first).uri).has("lr")) {
      this.opts.log.warn("strict router in the route set; routing loosely anyway", { callId: dialog.callId, route: first });
    }
    inDialogTarget(dialog); // the first hop must have a host and a transport the UA speaks before the dialog is handed out
    return dialog;
  }

  /** The UDP socket handler: only what trustedSources sends is taken. */
  private receiveDatagram(raw: Buffer, from: Endpoint): void {
    if (!inAddressList(from.host, this.trusted)) {
      this.refusedDatagrams++;
      // a flood must not flood the log: the first ten, then one in a thousand
      if (this.refusedDatagrams <= 10 || this.refusedDatagrams % 1000 === 0)
        this.opts.log.warn("SIP datagram from a source that is not a trusted Kamailio, dropped unanswered", {
          from: hostPort(from),
          bytes: raw.length,
          refused: this.refusedDatagrams,
        });
      return;
    }
    this.receive(raw, { transport: "UDP", peer: from });
  }

  /** A datagram, or a message framed on a TCP connection with a trusted peer: never throws; anything unusable is logged and dropped. */
  private receive(raw: Buffer, source: Source): void {
    let msg: SipMessage;
    try {
      msg = parseSipMessage(raw);
      const missing = ["via", "from", "to", "call-id", "cseq"].find((h) => header(msg, h) === undefined);
      if (missing) throw new CpmError("CPM_ERR_BAD_SIP", `no ${missing} header`);
      if (!cseqOfMessage(msg)) throw new CpmError("CPM_ERR_BAD_SIP", "unreadable CSeq");
    } catch (err) {
      this.opts.log.warn(`dropped a ${source.transport === "UDP" ? "datagram" : "TCP message"} that is not a usable SIP message`, {
        from: hostPort(source.peer),
        bytes: raw.length,
        reason: err instanceof Error ? err.message : String(err),
      });
      return;
    }
    try {
      if (msg.kind === "response") this.receiveResponse(msg);
      else this.receiveRequest(msg, source);
    } catch (err) {
      this.opts.log.warn("failed to handle a SIP message", { callId: header(msg, "call-id"), reason: asCpmError(err).message });
    }
  }

  private receiveResponse(res: SipMessage): void {
    const cseq = cseqOfMessage(res);
    const transaction = this.clients.get(`${topBranch(res)} ${cseq?.method}`);
    if (transaction) {
      transaction.onResponse(res);
      return;
    }
    // 13.2.2.4: a 2xx retransmission reaches the core after its transaction ended.
    const known = this.dialogs.get(header(res, "call-id") ?? "");
    const isInvite2xx = res.statusCode >= 200 && res.statusCode < 300 && cseq?.method === "INVITE";
    if (known && isInvite2xx && cseq?.seq === known.inviteCSeq) {
      const tag = tagOf(header(res, "to"));
      const ack = tag === known.dialog.remoteTag ? known.ack : known.forks.get(tag);
      if (ack) this.sendStateless(ack, false);
      else if (tag !== known.dialog.remoteTag) this.endForkedDialog(res, known);
      return;
    }
    this.opts.log.debug("stray SIP response dropped", { callId: header(res, "call-id"), status: res.statusCode });
  }

  /** 13.2.2.4: a 2xx from another fork than the accepted one gets an ACK, then a BYE. */
  private endForkedDialog(res: SipMessage, known: DialogState): void {
    const { callId, localTag, localUri, remoteUri } = known.dialog;
    const fork = this.dialogFrom(res, { callId, localTag, localUri, remoteUri, localCSeq: known.inviteCSeq });
    const ack = this.ackFor(fork, known.inviteCSeq, known.transport);
    known.forks.set(fork.remoteTag, ack); // its 2xx retransmissions get this ACK, not another BYE
    this.sendStateless(ack, true);
    this.opts.log.info("2xx from a second fork: ACK and BYE", { callId, remoteTag: fork.remoteTag });
    void this.byeOn(fork, [], known.transport);
  }

  private receiveRequest(req: SipMessage, source: Source): void {
    if (req.method === "ACK") {
      if (this.absorbAck(req)) return;
      this.handler?.(req, () => {});
      return;
    }
    if (req.method === "INVITE") {
      this.receiveInvite(req, source);
      return;
    }
    if (req.method === "CANCEL") {
      this.receiveCancel(req, source);
      return;
    }
    const key = `${topBranch(req) || `${header(req, "call-id")} ${header(req, "cseq")}`} ${req.method}`;
    const known = this.servers.get(key);
    if (known) {
      // 17.2.2: a retransmission gets the kept response again, or waits for the handler.
      if (known.response) this.respond(known.response, req, source);
      return;
    }
    const transaction: ServerTransaction = { timer: setTimeout(() => reply(500, "Server Internal Error"), UNANSWERED_MS) };
    this.servers.set(key, transaction);
    const reply = (status: number, reason: string, headers: SipHeaderLine[] = [], body?: string): void => {
      if (transaction.response || this.closing) return;
      clearTimeout(transaction.timer);
      transaction.response = serializeResponse(status, reason, [...responseHeaders(req), ...headers], body);
      this.respond(transaction.response, req, source);
      // Timer J: 64*T1 over UDP, zero over TCP (17.2.2); no Timer G: the UA is no INVITE server
      if (source.transport === "TCP") this.servers.delete(key);
      else transaction.timer = setTimeout(() => this.servers.delete(key), 64 * this.t1);
      const ended = this.dialogs.get(header(req, "call-id") ?? "")?.dialog;
      if (req.method === "BYE" && status < 300 && ended?.remoteTag === tagOf(header(req, "from"))) this.dialogs.delete(ended.callId);
    };
    try {
      this.handler?.(req, reply);
    } catch (err) {
      this.opts.log.warn("SIP request handler threw", { callId: header(req, "call-id"), reason: asCpmError(err).message });
      reply(500, "Server Internal Error");
    }
  }

  /** An ACK the UA's own INVITE server side takes: of a non-2xx (17.2.1, same branch) or of a 2xx (13.3.1.4, by Call-ID and CSeq). */
  private absorbAck(ack: SipMessage): boolean {
    const server = this.inviteServers.get(`${topBranch(ack)} INVITE`);
    if (server?.final) {
      server.confirmed?.(); // Timer G / H stop; Timer I
      return true;
    }
    const callId = header(ack, "call-id") ?? "";
    const pending = this.pendingAcks.get(callId);
    if (pending && cseqOfMessage(ack)?.seq === pending.cseq) {
      pending.settle(true);
      return true;
    }
    return false;
  }

  /** 17.2.1: an INVITE (initial, or a re-INVITE); a retransmission gets the latest response again. */
  private receiveInvite(req: SipMessage, source: Source): void {
    const key = `${topBranch(req) || `${header(req, "call-id")} ${header(req, "cseq")}`} INVITE`;
    const known = this.inviteServers.get(key);
    if (known) {
      this.respond(known.response, req, source);
      return;
    }
    const inDialog = tagOf(header(req, "to")) !== "";
    const toTag = inDialog ? tagOf(header(req, "to")) : randomHex();
    const base = responseHeaders(req, toTag);
    const transaction: InviteServerTransaction = { response: serializeResponse(100, "Trying", base), final: false, timers: [] };
    this.inviteServers.set(key, transaction);
    this.respond(transaction.response, req, source); // 17.2.1: at once, the handler may take longer than 200 ms
    const ended = (): void => {
      for (const t of transaction.timers) clearTimeout(t);
      const t = setTimeout(() => this.inviteServers.delete(key), 64 * this.t1);
      t.unref();
      transaction.timers = [t];
    };
    const finalResponse = (bytes: Buffer, retransmitUntilAck: boolean): void => {
      transaction.response = bytes;
      transaction.final = true;
      for (const t of transaction.timers) clearTimeout(t);
      transaction.timers = [];
      this.respond(bytes, req, source);
      if (!retransmitUntilAck || source.transport === "TCP") {
        ended();
        return;
      }
      transaction.confirmed = ended;
      // Timer G (T1 doubling up to T2) until the ACK, Timer H 64*T1
      const g = (interval: number): void => {
        const t = setTimeout(() => {
          this.respond(bytes, req, source);
          g(Math.min(interval * 2, T2_MS));
        }, interval);
        transaction.timers.push(t);
      };
      g(this.t1);
      transaction.timers.push(setTimeout(ended, 64 * this.t1));
    };
    let settleAcked!: (acked: boolean) => void;
    const acked = new Promise<boolean>((resolve) => {
      settleAcked = resolve;
    });
    const reject = (status: number, reason: string, headers: SipHeaderLine[] = []): void => {
      if (transaction.final || this.closing) return;
      finalResponse(serializeResponse(status, reason, [...base, ...headers]), true);
      settleAcked(false);
    };
    const unanswered = setTimeout(() => reject(500, "Server Internal Error"), 64 * this.t1);
    transaction.timers.push(unanswered);
    const cancelHandlers: (() => void)[] = [];
    transaction.cancelled = () => {
      reject(487, "Request Terminated");
      for (const fn of cancelHandlers) fn();
    };
    const invite: IncomingInvite = {
      request: req,
      inDialog,
      acked,
      acceptInDialog: (headers, body) => {
        if (transaction.final || !inDialog) throw new CpmError("CPM_ERR_BAD_REQUEST", "not a re-INVITE waiting for its answer");
        const bytes = serializeResponse(200, "OK", [...base, ...headers], body);
        finalResponse(bytes, false);
        this.awaitAck(header(req, "call-id") ?? "", cseqOfMessage(req)?.seq ?? 0, () => this.respond(bytes, req, source), settleAcked);
      },
      onCancel: (fn) => cancelHandlers.push(fn),
      reject,
      accept: (headers, body) => {
        if (transaction.final || inDialog) throw new CpmError("CPM_ERR_BAD_REQUEST", "not an initial INVITE waiting for its answer");
        const dialog = this.uasDialog(req, toTag);
        const recordRoute = headerValues(req, "record-route").map((v): SipHeaderLine => ["Record-Route", v]);
        const bytes = serializeResponse(200, "OK", [...base, ...recordRoute, ...headers], body);
        // the 2xx ends the transaction (17.2.1); the core retransmits it until the ACK (13.3.1.4)
        finalResponse(bytes, false);
        this.dialogs.set(dialog.callId, { dialog, inviteCSeq: dialog.localCSeq, transport: source.transport, forks: new Map() });
        this.awaitAck(dialog.callId, cseqOfMessage(req)?.seq ?? 0, () => this.respond(bytes, req, source), settleAcked);
        return dialog;
      },
    };
    if (!this.inviteHandler) {
      reject(501, "Not Implemented");
      return;
    }
    try {
      this.inviteHandler(invite);
    } catch (err) {
      this.opts.log.warn("SIP INVITE handler threw", { callId: header(req, "call-id"), reason: asCpmError(err).message });
      reject(500, "Server Internal Error");
    }
  }

  /** 13.3.1.4: the 2xx again at T1, doubling up to T2, until its ACK; none within 64*T1 settles false. */
  private awaitAck(callId: string, cseq: number, resend: () => void, settle: (acked: boolean) => void): void {
    const timers: NodeJS.Timeout[] = [];
    const pending: PendingAck = {
      cseq,
      timers,
      settle: (acked) => {
        for (const t of timers) clearTimeout(t);
        if (this.pendingAcks.get(callId) === pending) this.pendingAcks.delete(callId);
        settle(acked);
      },
    };
    this.pendingAcks.set(callId, pending);
    const again = (interval: number): void => {
      timers.push(
        setTimeout(() => {
          resend();
          again(Math.min(interval * 2, T2_MS));
        }, interval),
      );
    };
    again(this.t1);
    timers.push(setTimeout(() => pending.settle(false), 64 * this.t1));
  }

  /** 12.1.1: the UAS side of the dialog an INVITE creates. */
  private uasDialog(req: SipMessage, localTag: string): Dialog {
    const contact = splitCommaList(header(req, "contact") ?? "")[0];
    const from = header(req, "from") ?? "";
    const remoteTag = tagOf(from);
    if (!contact || !remoteTag) throw new CpmError("CPM_ERR_BAD_SIP", "INVITE without Contact or From tag");
    const dialog: Dialog = {
      callId: header(req, "call-id") ?? "",
      localTag,
      remoteTag,
      localUri: withoutTag(header(req, "to") ?? ""),
      remoteUri: withoutTag(from),
      remoteTarget: parseNameAddr(contact).uri,
      routeSet: headerValues(req, "record-route").flatMap(splitCommaList),
      // the UAS's own CSeq space starts anywhere (12.1.1); the INVITE's number keys its ACK
      localCSeq: cseqOfMessage(req)?.seq ?? 1,
    };
    inDialogTarget(dialog); // a first hop the UA can reach, before the 2xx goes out
    return dialog;
  }

  /** 9.2: a CANCEL matching an INVITE still without its final response ends it with 487; the CANCEL itself gets 200 (481 when nothing matches). */
  private receiveCancel(req: SipMessage, source: Source): void {
    const server = this.inviteServers.get(`${topBranch(req)} INVITE`);
    const base = responseHeaders(req);
    if (!server) {
      this.respond(serializeResponse(481, "Call/Transaction Does Not Exist", base), req, source);
      return;
    }
    this.respond(serializeResponse(200, "OK", base), req, source);
    if (!server.final) server.cancelled?.();
  }

  /**
   * A response goes back where its request came from: over UDP to the
   * source address and port (RFC 3581 4); over TCP on the request's
   * connection, or, when that is gone, on a connection to the source
   * address and the Via sent-by port (18.2.2).
   */
  private respond(bytes: Buffer, req: SipMessage, source: Source): void {
    const out = { method: "response", bytes };
    let sending: Promise<unknown>;
    if (source.transport === "UDP") sending = this.sendDatagram(bytes, source.peer);
    else if (source.connection.open) sending = Promise.resolve().then(() => source.connection.write(bytes));
    else sending = this.transmit({ ...out, transport: "TCP", to: { host: source.peer.host, port: viaSentByPort(req) } }, false);
    sending.catch((err: unknown) => {
      if (!this.closing)
        this.opts.log.warn("SIP response not sent", {
          callId: header(req, "call-id"),
          to: hostPort(source.peer),
          reason: asCpmError(err).detail,
        });
    });
  }
}

/** 8.2.6.2: Via, From, To (a To tag added if absent), Call-ID and CSeq copied from the request. */
function responseHeaders(req: SipMessage, toTag = randomHex()): SipHeaderLine[] {
  const to = header(req, "to") ?? "";
  return [
    ...headerValues(req, "via").map((v): SipHeaderLine => ["Via", v]),
    ["From", header(req, "from") ?? ""],
    ["To", tagOf(to) ? to : `${to};tag=${toTag}`],
    ["Call-ID", header(req, "call-id") ?? ""],
    ["CSeq", header(req, "cseq") ?? ""],
  ];
}

/** A From / To value without its tag parameter (the dialog's local and remote URI, 12.1.1). */
function withoutTag(value: string): string {
  return value.replace(/;\s*tag\s*=\s*[^;>\s]*/i, "");
}
