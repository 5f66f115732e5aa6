// A minimal SIP user agent over UDP for the requests the PF originates itself
// (deferred delivery, 8.3.2.9.1.2): INVITE, ACK, CANCEL and BYE as UAC,
// through Kamailio as outbound proxy (RFC 3261 8.1.2), and the UAS side of
// requests that reach it (an in-dialog BYE from the client). Transactions
// follow RFC 3261 17 for an unreliable transport only. Everything reaches the
// UA through Kamailio, so a datagram from any other source is dropped
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

export type RequestHandler = (req: SipMessage, reply: (status: number, reason: string, headers?: SipHeaderLine[]) => void) => void;

interface Endpoint {
  host: string;
  port: number;
}

/** A pending client transaction (17.1), found by its Via branch and CSeq method (17.1.3). */
interface ClientTransaction {
  onResponse(res: SipMessage): void;
  /** close(): end now, clearing the timers. */
  abort(): void;
}

/** A non-INVITE server transaction (17.2.2): the final response is kept for retransmissions. */
interface ServerTransaction {
  response?: Buffer;
  timer: NodeJS.Timeout;
}

/** A confirmed dialog the UA still answers 2xx retransmissions for (13.2.2.4). */
interface DialogState {
  dialog: Dialog;
  inviteCSeq: number;
  ack?: Datagram;
  /** ACKs sent to the 2xx of other forks, by their To tag. */
  forks: Map<string, Datagram>;
}

interface Datagram {
  bytes: Buffer;
  to: Endpoint;
}

/** RFC 3261 17.1.2.2. */
const T2_MS = 4000;
/** RFC 3261 8.1.1.6. */
const MAX_FORWARDS = "70";
/** A request the handler leaves unanswered this long gets 500. */
const UNANSWERED_MS = 1000;
/** Written by the UA itself (with their compact forms, 7.3.3). */
const UA_HEADERS = new Set(["via", "v", "call-id", "i", "cseq", "max-forwards", "content-length", "l", "route"]);

const randomHex = (): string => randomBytes(8).toString("hex");
/** 8.1.1.7: the magic cookie marks an RFC 3261 branch. */
const newBranch = (): string => `z9hG4bK${randomHex()}`;
const hostPort = (e: Endpoint): string => (isIPv6(e.host) ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`);
const isFrom = (name: string): boolean => /^(from|f)$/i.test(name);
const isTo = (name: string): boolean => /^(to|t)$/i.test(name);

/** host:port of a SIP URI (19.1.1); 5060 when the port is absent (UDP only). */
function uriEndpoint(uri: string): Endpoint {
  const m = /^sips?:(?:[^@]*@)?(\[[^\]]+\]|[^:;?]+)(?::(\d+))?/i.exec(uri);
  if (!m?.[1]) throw new CpmError("CPM_ERR_BAD_SIP", `no host in URI ${uri}`);
  return { host: m[1].replace(/^\[(.*)\]$/, "$1"), port: m[2] ? Number(m[2]) : 5060 };
}

/** The branch of the topmost Via (17.1.3, 17.2.3). */
function topBranch(msg: SipMessage): string {
  const via = splitCommaList(header(msg, "via") ?? "")[0] ?? "";
  const semi = via.indexOf(";");
  return semi < 0 ? "" : (parseParams(via.slice(semi)).get("branch") ?? "");
}

/** Request-URI, Route headers and next hop of an in-dialog request (12.2.1.1, loose routing only: Kamailio sets ;lr). */
function inDialogTarget(dialog: Dialog): { requestUri: string; route: SipHeaderLine[]; to: Endpoint } {
  const first = dialog.routeSet[0];
  return {
    requestUri: dialog.remoteTarget,
    route: dialog.routeSet.map((r): SipHeaderLine => ["Route", r]),
    to: uriEndpoint(first === undefined ? dialog.remoteTarget : parseNameAddr(first).uri),
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

/** Caller headers for a new INVITE: no UA-written header, a From and a To without tags, one line each. */
function checkInviteHeaders(headers: readonly SipHeaderLine[]): { from: string; to: string } {
  for (const [name] of headers) {
    if (UA_HEADERS.has(name.toLowerCase())) throw new CpmError("CPM_ERR_BAD_REQUEST", `the UA writes ${name} itself`);
  }
  const from = headers.find(([n]) => isFrom(n))?.[1];
  const to = headers.find(([n]) => isTo(n))?.[1];
  if (!from || !to) throw new CpmError("CPM_ERR_BAD_REQUEST", "an INVITE needs From and To");
  if (tagOf(from) || tagOf(to)) throw new CpmError("CPM_ERR_BAD_REQUEST", "From and To of a new INVITE carry no tag");
  return { from, to };
}

export class SipUa {
  readonly address: Endpoint;
  private readonly t1: number;
  private readonly proxy: Endpoint;
  private readonly proxyRoute: string;
  private readonly clients = new Map<string, ClientTransaction>();
  private readonly servers = new Map<string, ServerTransaction>();
  private readonly dialogs = new Map<string, DialogState>();
  private readonly trusted: AddressList;
  private handler: RequestHandler | undefined;
  private closing: Promise<void> | undefined;
  /** Datagrams dropped because they came from outside trustedSources. */
  refusedDatagrams = 0;

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly opts: SipUaOptions,
  ) {
    const bound = socket.address();
    this.address = { host: bound.address, port: bound.port };
    this.t1 = opts.t1Ms ?? 500;
    this.proxy = { host: opts.outboundProxy.host, port: opts.outboundProxy.port };
    this.trusted = opts.trustedSources ?? parseAddressList(this.proxy.host, "the outbound proxy's");
    // 8.1.2: the outbound proxy as a pre-loaded Route, loose routing (;lr).
    this.proxyRoute = `<sip:${hostPort(this.proxy)};lr${opts.routeParams ?? ""}>`;
    socket.on("message", (raw, rinfo) => this.receive(raw, { host: rinfo.address, port: rinfo.port }));
    socket.on("error", (err) => opts.log.error("SIP UDP socket error", { error: err.message }));
  }

  static async start(opts: SipUaOptions): Promise<SipUa> {
    if (opts.trustedSources === undefined) parseAddressList(opts.outboundProxy.host, "the outbound proxy's"); // before binding
    const socket = dgram.createSocket(isIPv6(opts.host) ? "udp6" : "udp4");
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("error", reject);
        socket.bind(opts.port, opts.host, () => {
          socket.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      socket.close();
      throw new CpmError("CPM_ERR_CONFIG", `cannot bind SIP UDP ${opts.host}:${opts.port}`, { cause: err });
    }
    const { address } = socket.address();
    if (address === "0.0.0.0" || address === "::") {
      socket.close();
      throw new CpmError("CPM_ERR_CONFIG", `SIP UDP host ${address} cannot be a Via sent-by; bind a reachable address`);
    }
    return new SipUa(socket, opts);
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

  /**
   * Sends an INVITE (INVITE client transaction, 17.1.1). Throws CpmError
   * CPM_ERR_BAD_REQUEST, before sending anything, for headers the UA writes
   * itself, a missing From/To or a tagged one. `outcome` resolves with the
   * final response and rejects with CpmError CPM_ERR_INTERNAL on Timer B,
   * a transport error, no final response 64*T1 after a CANCEL (9.1) or close().
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
    const via = this.via(branch);
    const fromTagged = `${from};tag=${localTag}`;
    const cseq = 1;
    // 8.1.2; CANCEL and a non-2xx ACK carry the INVITE's Route headers (9.1, 17.1.1.3)
    const routes: SipHeaderLine[] = [this.proxyRoute, ...(req.route ?? [])].map((r): SipHeaderLine => ["Route", r]);
    const common = (method: string, toValue: string): SipHeaderLine[] => [
      ["Via", via],
      ["Max-Forwards", MAX_FORWARDS],
      ...routes,
      ["From", fromTagged],
      ["To", toValue],
      ["Call-ID", callId],
      ["CSeq", `${cseq} ${method}`],
    ];
    const headers: SipHeaderLine[] = [
      ["Via", via],
      ["Max-Forwards", MAX_FORWARDS],
      ...routes,
      ["Call-ID", callId],
      ["CSeq", `${cseq} INVITE`],
      ...req.headers.map(([n, v]): SipHeaderLine => (isFrom(n) ? [n, fromTagged] : [n, v])),
    ];
    const invite = serializeRequest("INVITE", req.requestUri, headers, req.body);
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
      this.clients.delete(key);
    };
    const fail = (detail: string, cause?: unknown): void => {
      if (state === "terminated") return;
      terminate();
      settle.reject(cause instanceof CpmError ? cause : new CpmError("CPM_ERR_INTERNAL", detail, { cause }));
    };
    const send = (bytes: Buffer): void => this.send(bytes, this.proxy, (err) => fail(`INVITE transport error: ${err.message}`, err));

    // 9.1: CANCEL once a provisional response has arrived; same branch, R-URI, Call-ID, CSeq number.
    const sendCancel = (): void => {
      const cancel = serializeRequest("CANCEL", req.requestUri, common("CANCEL", to));
      void this.request("CANCEL", cancel, branch, this.proxy).then((status) => log.debug("CANCEL answered", { status }));
      after(64 * this.t1, () => fail("no final response to the INVITE 64*T1 after CANCEL"));
    };
    // 17.1.1.2 Timer A: retransmit while Calling, doubling.
    const timerA = (interval: number): void =>
      after(interval, () => {
        send(invite);
        timerA(interval * 2);
      });

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
          if (ack && status >= 300) send(ack); // 17.1.1.2: a retransmitted final response is ACKed again
          return;
        }
        if (status < 300) {
          // 17.1.1.2: a 2xx ends the transaction; the caller ACKs it (13.2.2.4).
          terminate();
          try {
            const dialog = this.dialogFrom(res, { callId, localTag, localUri: from, remoteUri: to, localCSeq: cseq });
            this.dialogs.set(callId, { dialog, inviteCSeq: cseq, forks: new Map() });
            settle.resolve({ status, reason: res.reasonPhrase, response: res, dialog });
          } catch (err) {
            settle.reject(asCpmError(err, "CPM_ERR_BAD_SIP"));
          }
          return;
        }
        // 17.1.1.3: the transaction ACKs a non-2xx final response itself.
        state = "completed";
        clearTimers();
        ack = serializeRequest("ACK", req.requestUri, common("ACK", header(res, "to") ?? to));
        send(ack);
        after(64 * this.t1, terminate); // Timer D (32 s over UDP; scaled with T1 here)
        settle.resolve({ status, reason: res.reasonPhrase, response: res });
      },
    });
    send(invite);
    timerA(this.t1);
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
   * to the first route (or the remote target). Kept until the dialog ends so a
   * retransmitted 2xx is ACKed again.
   */
  ack(dialog: Dialog): void {
    if (this.closing) return;
    const known = this.stateOf(dialog);
    const ack = this.ackFor(dialog, known?.inviteCSeq ?? dialog.localCSeq);
    if (known) known.ack = ack;
    this.send(ack.bytes, ack.to);
  }

  private ackFor(dialog: Dialog, inviteCSeq: number): Datagram {
    const { requestUri, to } = inDialogTarget(dialog);
    return { bytes: serializeRequest("ACK", requestUri, dialogHeaders(dialog, this.via(newBranch()), `${inviteCSeq} ACK`)), to };
  }

  /**
   * In-dialog BYE (15.1.1), a non-INVITE client transaction (17.1.2).
   * Resolves with the final status: 408 on Timer F, 503 on a transport
   * error or close() (8.1.3.1).
   */
  async bye(dialog: Dialog, headers: SipHeaderLine[] = []): Promise<number> {
    if (this.closing) return 503;
    for (const [name] of headers) {
      if (UA_HEADERS.has(name.toLowerCase()) || isFrom(name) || isTo(name)) {
        throw new CpmError("CPM_ERR_BAD_REQUEST", `the UA writes ${name} itself`);
      }
    }
    dialog.localCSeq += 1; // 12.2.1.1
    const branch = newBranch();
    const { requestUri, to } = inDialogTarget(dialog);
    const bytes = serializeRequest("BYE", requestUri, [...dialogHeaders(dialog, this.via(branch), `${dialog.localCSeq} BYE`), ...headers]);
    const status = await this.request("BYE", bytes, branch, to);
    if (this.stateOf(dialog)) this.dialogs.delete(dialog.callId);
    return status;
  }

  /** The kept state of this dialog (not of another fork with the same Call-ID). */
  private stateOf(dialog: Dialog): DialogState | undefined {
    const known = this.dialogs.get(dialog.callId);
    return known?.dialog.localTag === dialog.localTag && known.dialog.remoteTag === dialog.remoteTag ? known : undefined;
  }

  /** Resolves once the socket is closed; pending transactions end as described on invite() and bye(). */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = new Promise<void>((resolve) => this.socket.close(() => resolve()));
    for (const t of [...this.clients.values()]) t.abort();
    for (const s of this.servers.values()) clearTimeout(s.timer);
    this.servers.clear();
    this.dialogs.clear();
    return this.closing;
  }

  private via(branch: string): string {
    return `SIP/2.0/UDP ${hostPort(this.address)};branch=${branch};rport`;
  }

  private send(bytes: Buffer, to: Endpoint, onError?: (err: Error) => void): void {
    if (this.closing) return;
    this.socket.send(bytes, to.port, to.host, (err) => {
      if (!err) return;
      this.opts.log.warn("SIP UDP send failed", { to: hostPort(to), error: err.message });
      onError?.(err);
    });
  }

  /** Non-INVITE client transaction (17.1.2.2): Timer E retransmits (T1 doubling up to T2), Timer F gives 408. */
  private request(method: string, bytes: Buffer, branch: string, to: Endpoint): Promise<number> {
    const key = `${branch} ${method}`;
    return new Promise<number>((resolve) => {
      let interval = this.t1;
      let timerE: NodeJS.Timeout | undefined;
      const finish = (status: number): void => {
        if (!this.clients.has(key)) return;
        clearTimeout(timerE);
        clearTimeout(timerF);
        this.clients.delete(key);
        resolve(status);
      };
      const send = (): void => this.send(bytes, to, () => finish(503));
      const retransmit = (): void => {
        timerE = setTimeout(() => {
          send();
          interval = Math.min(interval * 2, T2_MS);
          retransmit();
        }, interval);
      };
      const timerF = setTimeout(() => finish(408), 64 * this.t1);
      this.clients.set(key, {
        abort: () => finish(503),
        onResponse: (res) => {
          if (res.statusCode >= 200) finish(res.statusCode);
          else interval = T2_MS; // Proceeding: retransmit every T2
        },
      });
      send();
      retransmit();
    });
  }

  /** 12.1.2: the UAC's dialog from a 2xx to its INVITE. */
  private dialogFrom(res: SipMessage, base: Omit<Dialog, "remoteTag" | "remoteTarget" | "routeSet">): Dialog {
    const remoteTag = tagOf(header(res, "to"));
    const contact = splitCommaList(header(res, "contact") ?? "")[0];
    if (!remoteTag || !contact) throw new CpmError("CPM_ERR_BAD_SIP", "2xx to INVITE without To tag or Contact");
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
    inDialogTarget(dialog); // every hop must have a host before the dialog is handed out
    return dialog;
  }

  /** The socket handler: never throws; anything unusable is logged and dropped. */
  private receive(raw: Buffer, from: Endpoint): void {
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
    let msg: SipMessage;
    try {
      msg = parseSipMessage(raw);
      const missing = ["via", "from", "to", "call-id", "cseq"].find((h) => header(msg, h) === undefined);
      if (missing) throw new CpmError("CPM_ERR_BAD_SIP", `no ${missing} header`);
      if (!cseqOfMessage(msg)) throw new CpmError("CPM_ERR_BAD_SIP", "unreadable CSeq");
    } catch (err) {
      this.opts.log.warn("dropped a datagram that is not a usable SIP message", {
        from: hostPort(from),
        bytes: raw.length,
        reason: err instanceof Error ? err.message : String(err),
      });
      return;
    }
    try {
      if (msg.kind === "response") this.receiveResponse(msg);
      else this.receiveRequest(msg, from);
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
      if (ack) this.send(ack.bytes, ack.to);
      else if (tag !== known.dialog.remoteTag) this.endForkedDialog(res, known);
      return;
    }
    this.opts.log.debug("stray SIP response dropped", { callId: header(res, "call-id"), status: res.statusCode });
  }

  /** 13.2.2.4: a 2xx from another fork than the accepted one gets an ACK, then a BYE. */
  private endForkedDialog(res: SipMessage, known: DialogState): void {
    const { callId, localTag, localUri, remoteUri } = known.dialog;
    const fork = this.dialogFrom(res, { callId, localTag, localUri, remoteUri, localCSeq: known.inviteCSeq });
    const ack = this.ackFor(fork, known.inviteCSeq);
    known.forks.set(fork.remoteTag, ack); // its 2xx retransmissions get this ACK, not another BYE
    this.send(ack.bytes, ack.to);
    this.opts.log.info("2xx from a second fork: ACK and BYE", { callId, remoteTag: fork.remoteTag });
    void this.bye(fork);
  }

  private receiveRequest(req: SipMessage, from: Endpoint): void {
    if (req.method === "ACK") {
      this.handler?.(req, () => {});
      return;
    }
    const key = `${topBranch(req) || `${header(req, "call-id")} ${header(req, "cseq")}`} ${req.method}`;
    const known = this.servers.get(key);
    if (known) {
      // 17.2.2: a retransmission gets the kept response again, or waits for the handler.
      if (known.response) this.send(known.response, from);
      return;
    }
    const transaction: ServerTransaction = { timer: setTimeout(() => reply(500, "Server Internal Error"), UNANSWERED_MS) };
    this.servers.set(key, transaction);
    const reply = (status: number, reason: string, headers: SipHeaderLine[] = []): void => {
      if (transaction.response || this.closing) return;
      clearTimeout(transaction.timer);
      transaction.response = serializeResponse(status, reason, [...responseHeaders(req), ...headers]);
      // RFC 3581 4: the response goes back to the source address and port.
      this.send(transaction.response, from);
      transaction.timer = setTimeout(() => this.servers.delete(key), 64 * this.t1); // Timer J
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
}

/** 8.2.6.2: Via, From, To (a To tag added if absent), Call-ID and CSeq copied from the request. */
function responseHeaders(req: SipMessage): SipHeaderLine[] {
  const to = header(req, "to") ?? "";
  return [
    ...headerValues(req, "via").map((v): SipHeaderLine => ["Via", v]),
    ["From", header(req, "from") ?? ""],
    ["To", tagOf(to) ? to : `${to};tag=${randomHex()}`],
    ["Call-ID", header(req, "call-id") ?? ""],
    ["CSeq", header(req, "cseq") ?? ""],
  ];
}
