// The PF's own SIP UA over TCP (RFC 3261 18) against a tiny node `net`
// server playing Kamailio: the UA's persistent connection to its outbound
// proxy, the timers of a reliable transport (RFC 3261 17), connections
// Kamailio opens to the UA (trusted sources only), the framing of
// stream-framing.ts on a live socket, and sip.transport "auto" (18.1.1).
import assert from "node:assert/strict";
import net from "node:net";
import { type TestContext, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CpmError } from "../../../src/errors/catalogue.js";
import { silentLogger } from "../../../src/log/logger.js";
import { header, parseSipMessage, type SipMessage } from "../../../src/sip/message.js";
import { SipStreamFramer } from "../../../src/sip/stream-framing.js";
import { type Dialog, SipUa, type SipUaOptions } from "../../../src/sip/ua.js";
import { branchOf, CALLER_HEADERS, capturedLog, HOST, Peer, response, SDP, startUa } from "../../fixtures/sip-ua.js";
import { freePort } from "../../harness/ports.js";

/** A UA bug that loses a callback fails the test instead of hanging it. */
const LIMIT = { timeout: 5000 };
/** Another loopback address (127.0.0.0/8 is all local on Linux): a source that is not Kamailio. */
const INTRUDER = "127.0.0.2";

interface StreamReceived {
  msg: SipMessage;
  raw: string;
  socket: net.Socket;
}

/** Kamailio on TCP: a listener and/or connections it opens; every framed message on any of them is queued for next(). */
class TcpPeer {
  readonly sockets: net.Socket[] = [];
  /** Everything received, raw, per socket (to see a CRLF pong). */
  readonly rawBySocket = new Map<net.Socket, string>();
  private readonly queue: StreamReceived[] = [];
  private wake: (() => void) | undefined;
  private server: net.Server | undefined;

  static async listen(t: TestContext, port = 0): Promise<TcpPeer> {
    const peer = new TcpPeer();
    const server = net.createServer((socket) => peer.attach(socket));
    await new Promise<void>((resolve) => server.listen(port, HOST, resolve));
    peer.server = server;
    t.after(() => peer.close());
    return peer;
  }

  /** A peer that only opens connections (Kamailio relaying a request to the UA). */
  static client(t: TestContext): TcpPeer {
    const peer = new TcpPeer();
    t.after(() => peer.close());
    return peer;
  }

  get port(): number {
    return (this.server?.address() as net.AddressInfo).port;
  }

  async connect(to: { host: string; port: number }, localAddress = HOST): Promise<net.Socket> {
    const socket = net.connect({ host: to.host, port: to.port, localAddress });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    this.attach(socket);
    return socket;
  }

  /** Resolves when `socket` is closed by the other side (or destroyed). */
  static closed(socket: net.Socket, timeoutMs = 1000): Promise<boolean> {
    if (socket.destroyed || socket.readyState === "closed") return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      socket.once("close", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  private attach(socket: net.Socket): void {
    this.sockets.push(socket);
    this.rawBySocket.set(socket, "");
    const framer = new SipStreamFramer();
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      this.rawBySocket.set(socket, (this.rawBySocket.get(socket) ?? "") + chunk.toString("utf8"));
      for (const e of framer.push(chunk)) {
        if (e.type !== "message") continue;
        this.queue.push({ msg: parseSipMessage(e.bytes), raw: e.bytes.toString("utf8"), socket });
        this.wake?.();
      }
    });
  }

  async next(what: string, timeoutMs = 1000): Promise<StreamReceived> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`TCP peer: no ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.queue.shift() as StreamReceived;
  }

  async drain(ms: number): Promise<StreamReceived[]> {
    await sleep(ms);
    return this.queue.splice(0);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

function inviteFrom(ua: SipUa, body = SDP, onProvisional?: (status: number) => void) {
  return ua.invite({ requestUri: "sip:+15551234@ims.example.com", headers: CALLER_HEADERS, body }, onProvisional);
}

/** A body that makes the INVITE larger than 1300 bytes (RFC 3261 18.1.1). */
const BIG_BODY = `v=0\r\n${"a=x-participant:sip:+16135550100@ims.example.com\r\n".repeat(30)}`;

const viaRe = (transport: string, ua: SipUa) =>
  new RegExp(`^SIP/2\\.0/${transport} 127\\.0\\.0\\.1:${ua.address.port};branch=z9hG4bK[0-9a-f]+;rport$`);

/** INVITE over TCP answered 100 then 200 (Record-Route: the proxy, no transport parameter); the dialog. */
async function establish(t: TestContext, extra: Partial<SipUaOptions> = {}) {
  const proxy = await TcpPeer.listen(t);
  const ua = await startUa(t, proxy.port, { transport: "tcp", ...extra });
  const call = inviteFrom(ua);
  const invite = await proxy.next("INVITE");
  invite.socket.write(response(invite.msg, "100 Trying"));
  invite.socket.write(
    response(invite.msg, "200 OK", [`Contact: <sip:device@127.0.0.1:9>`, `Record-Route: <sip:${HOST}:${proxy.port};lr;cpmpfdd=ab>`]),
  );
  const outcome = await call.outcome;
  return { proxy, ua, invite, dialog: outcome.dialog as Dialog };
}

test(
  "sip.transport tcp: the INVITE goes on one connection from the UA's own address, Via SIP/2.0/TCP <UA host:port>, and is not retransmitted (no Timer A); 100 and 200 come on it; the ACK (new branch) goes on that same connection",
  LIMIT,
  async (t) => {
    const proxy = await TcpPeer.listen(t);
    const ua = await startUa(t, proxy.port, { transport: "tcp" });
    const call = inviteFrom(ua);
    const invite = await proxy.next("INVITE");
    assert.match(header(invite.msg, "via") ?? "", viaRe("TCP", ua));
    assert.equal(header(invite.msg, "route"), `<sip:127.0.0.1:${proxy.port};lr;cpmpfuac>`);
    assert.equal(invite.socket.remoteAddress, HOST, "Kamailio's $si check: the UA's address");
    assert.deepEqual(await proxy.drain(100), [], "no retransmission over TCP (Timer A would have fired at 10, 30, 70 ms)");
    invite.socket.write(response(invite.msg, "100 Trying"));
    invite.socket.write(
      response(invite.msg, "200 OK", ["Contact: <sip:device@127.0.0.1:9>", `Record-Route: <sip:${HOST}:${proxy.port};lr>`]),
    );
    const outcome = await call.outcome;
    assert.equal(outcome.status, 200);
    ua.ack(outcome.dialog as Dialog);
    const ack = await proxy.next("ACK");
    assert.equal(ack.msg.method, "ACK");
    assert.equal(ack.socket, invite.socket, "the same connection");
    assert.match(header(ack.msg, "via") ?? "", viaRe("TCP", ua));
    assert.notEqual(branchOf(ack.msg), branchOf(invite.msg));
    assert.equal(proxy.sockets.length, 1, "one persistent connection to the outbound proxy");
    assert.deepEqual(Object.fromEntries(ua.requestsSent), { "tcp INVITE": 1, "tcp ACK": 1 });
  },
);

test(
  "a non-2xx over TCP: the transaction's ACK on the INVITE's connection with its Via; Timer D is zero (a repeated 486 is not ACKed again)",
  LIMIT,
  async (t) => {
    const proxy = await TcpPeer.listen(t);
    const ua = await startUa(t, proxy.port, { transport: "tcp" });
    const call = inviteFrom(ua);
    const invite = await proxy.next("INVITE");
    invite.socket.write(response(invite.msg, "486 Busy Here"));
    assert.equal((await call.outcome).status, 486);
    const ack = await proxy.next("ACK");
    assert.equal(ack.socket, invite.socket);
    assert.equal(header(ack.msg, "via"), header(invite.msg, "via"));
    invite.socket.write(response(invite.msg, "486 Busy Here"));
    assert.deepEqual(await proxy.drain(80), []);
  },
);

test("CANCEL goes on the INVITE's connection, with the INVITE's Via (TCP, same branch) (RFC 3261 9.1)", LIMIT, async (t) => {
  const proxy = await TcpPeer.listen(t);
  const ua = await startUa(t, proxy.port, { transport: "tcp" });
  const call = inviteFrom(ua);
  const invite = await proxy.next("INVITE");
  invite.socket.write(response(invite.msg, "180 Ringing"));
  await sleep(20);
  call.cancel();
  const cancel = await proxy.next("CANCEL");
  assert.equal(cancel.msg.method, "CANCEL");
  assert.equal(cancel.socket, invite.socket);
  assert.equal(header(cancel.msg, "via"), header(invite.msg, "via"));
  cancel.socket.write(response(cancel.msg, "200 OK"));
  cancel.socket.write(response(invite.msg, "487 Request Terminated"));
  assert.equal((await call.outcome).status, 487);
});

test(
  "BYE over TCP: no retransmission (no Timer E), its 200 resolves 200; unanswered, Timer F still gives 408 with the one BYE sent",
  LIMIT,
  async (t) => {
    const { proxy, ua, dialog, invite } = await establish(t);
    const status = ua.bye(dialog, [["Reason", "SIP;cause=200"]]);
    const bye = await proxy.next("BYE");
    assert.equal(bye.socket, invite.socket);
    assert.match(header(bye.msg, "via") ?? "", viaRe("TCP", ua));
    assert.deepEqual(await proxy.drain(80), []);
    bye.socket.write(response(bye.msg, "200 OK"));
    assert.equal(await status, 200);
    const started = Date.now();
    const unanswered = await ua.bye({ ...dialog, callId: "other-call" });
    assert.equal(unanswered, 408);
    assert.ok(Date.now() - started >= 630, "Timer F is 64*T1");
    assert.deepEqual(
      (await proxy.drain(0)).map((r) => r.msg.method),
      ["BYE"],
    );
  },
);

test(
  "the connection drops mid-transaction: the INVITE's outcome rejects with CpmError CPM_ERR_SIP_TRANSPORT, a BYE resolves 503; the next request opens a new connection",
  LIMIT,
  async (t) => {
    const proxy = await TcpPeer.listen(t);
    const ua = await startUa(t, proxy.port, { transport: "tcp", t1Ms: 200 });
    const call = inviteFrom(ua);
    const invite = await proxy.next("INVITE");
    invite.socket.write(response(invite.msg, "100 Trying"));
    await sleep(20);
    invite.socket.destroy();
    await assert.rejects(call.outcome, (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_SIP_TRANSPORT");
    const again = inviteFrom(ua);
    const second = await proxy.next("INVITE on a new connection");
    assert.notEqual(second.socket, invite.socket);
    assert.equal(proxy.sockets.length, 2, "reconnected on demand");
    const d: Dialog = {
      callId: "c",
      localTag: "l",
      remoteTag: "r",
      localUri: "<sip:a@b>",
      remoteUri: "<sip:c@d>",
      remoteTarget: `sip:${HOST}:${proxy.port};transport=tcp`,
      routeSet: [],
      localCSeq: 1,
    };
    const bye = ua.bye(d);
    await proxy.next("BYE");
    second.socket.destroy();
    assert.equal(await bye, 503);
    await assert.rejects(again.outcome, CpmError);
  },
);

/** An in-dialog BYE as Kamailio relays it to the UA over TCP. */
function relayedBye(viaHostPort: string, callId = "dd-1"): string {
  return [
    "BYE sip:conf-1@127.0.0.1 SIP/2.0",
    `Via: SIP/2.0/TCP ${viaHostPort};branch=z9hG4bKkam${callId}`,
    "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKdev1",
    "From: <sip:+15551234@ims.example.com>;tag=ue",
    'To: "Group" <sip:conf-1@pf.example.com>;tag=pf',
    `Call-ID: ${callId}`,
    "CSeq: 2 BYE",
    "Reason: SIP;cause=200",
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
}

test(
  "inbound: Kamailio opens a connection to the UA's port (same as UDP) for an in-dialog BYE: onRequest sees it, the 200 goes back on that connection (18.2.2); a CRLFCRLF ping gets a CRLF pong (RFC 5626 4.4.1)",
  LIMIT,
  async (t) => {
    const ua = await startUa(t, 9, { transport: "udp" });
    const seen: SipMessage[] = [];
    ua.onRequest((req, reply) => {
      seen.push(req);
      reply(200, "OK");
    });
    const kamailio = TcpPeer.client(t);
    const socket = await kamailio.connect(ua.address);
    socket.write("\r\n\r\n");
    socket.write(relayedBye(`${HOST}:5060`));
    const ok = await kamailio.next("200 to the BYE");
    assert.equal(ok.msg.statusCode, 200);
    assert.equal(ok.socket, socket);
    assert.equal(header(ok.msg, "via"), `SIP/2.0/TCP ${HOST}:5060;branch=z9hG4bKkamdd-1`);
    assert.ok(kamailio.rawBySocket.get(socket)?.startsWith("\r\nSIP/2.0 200 OK\r\n"), "the pong, then the response");
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.method, "BYE");
    assert.equal(ua.refusedConnections, 0);
  },
);

test(
  "UA source check over TCP: a connection from a source that is not the trusted Kamailio is closed at once, counted, logged; its BYE reaches no handler",
  LIMIT,
  async (t) => {
    const { log, lines } = capturedLog();
    const ua = await startUa(t, 9, { transport: "tcp", log });
    const seen: SipMessage[] = [];
    ua.onRequest((req, reply) => {
      seen.push(req);
      reply(200, "OK");
    });
    const intruder = TcpPeer.client(t);
    const socket = await intruder.connect(ua.address, INTRUDER);
    socket.write(relayedBye(`${INTRUDER}:5060`));
    assert.ok(await TcpPeer.closed(socket), "closed by the UA");
    assert.deepEqual(await intruder.drain(50), [], "no answer");
    assert.equal(seen.length, 0);
    assert.equal(ua.refusedConnections, 1);
    const refused = lines.filter((l) => l.level === "warn" && String(l.message).includes("not a trusted Kamailio"));
    assert.equal(refused.length, 1);
    assert.match(String(refused[0]?.peer), /^127\.0\.0\.2:\d+$/);
  },
);

test(
  "framing lost on one connection (no Content-Length on TCP, RFC 3261 18.3): that connection is closed with a warn line naming the reason; another connection is still served",
  LIMIT,
  async (t) => {
    const { log, lines } = capturedLog();
    const ua = await startUa(t, 9, { transport: "tcp", log });
    ua.onRequest((_req, reply) => reply(200, "OK"));
    const kamailio = TcpPeer.client(t);
    const bad = await kamailio.connect(ua.address);
    const good = await kamailio.connect(ua.address);
    bad.write(relayedBye(`${HOST}:5060`, "no-cl").replace("Content-Length: 0\r\n", ""));
    assert.ok(await TcpPeer.closed(bad));
    good.write(relayedBye(`${HOST}:5060`, "fine"));
    const ok = await kamailio.next("200 on the other connection");
    assert.equal(ok.socket, good);
    assert.equal(header(ok.msg, "call-id"), "fine");
    assert.equal(ua.framingErrors, 1);
    const warn = lines.find((l) => l.level === "warn" && String(l.message).includes("framing lost"));
    assert.equal(warn?.reason, "no-content-length");
  },
);

test(
  "a response whose connection is gone goes on a new connection to the source address and the Via sent-by port (RFC 3261 18.2.2)",
  LIMIT,
  async (t) => {
    const kamailio = await TcpPeer.listen(t);
    const ua = await startUa(t, kamailio.port, { transport: "tcp" });
    let reply: ((status: number, reason: string) => void) | undefined;
    ua.onRequest((_req, r) => {
      reply = r;
    });
    const socket = await kamailio.connect(ua.address);
    socket.write(relayedBye(`${HOST}:${kamailio.port}`));
    await sleep(50);
    socket.destroy();
    await sleep(20);
    reply?.(200, "OK");
    const ok = await kamailio.next("200 on a new connection");
    assert.equal(ok.msg.statusCode, 200);
    assert.notEqual(ok.socket, socket);
  },
);

/** Kamailio on UDP and TCP on one port, as the harness runs it. */
async function dualProxy(t: TestContext) {
  const port = await freePort();
  return { udp: await Peer.open(t, HOST, port), tcp: await TcpPeer.listen(t, port), port };
}

test(
  "sip.transport auto (RFC 3261 18.1.1): an INVITE above 1300 bytes goes over TCP, one of at most 1300 over UDP; requestsSent counts per transport",
  LIMIT,
  async (t) => {
    const proxy = await dualProxy(t);
    const ua = await startUa(t, proxy.port, { transport: undefined });
    const big = inviteFrom(ua, BIG_BODY);
    const overTcp = await proxy.tcp.next("big INVITE");
    assert.ok(Buffer.byteLength(overTcp.raw) > 1300, `${Buffer.byteLength(overTcp.raw)} bytes`);
    assert.match(header(overTcp.msg, "via") ?? "", viaRe("TCP", ua));
    overTcp.socket.write(response(overTcp.msg, "486 Busy Here"));
    assert.equal((await big.outcome).status, 486);
    const small = inviteFrom(ua);
    const overUdp = await proxy.udp.next("small INVITE");
    assert.ok(Buffer.byteLength(overUdp.raw) <= 1300);
    assert.match(header(overUdp.msg, "via") ?? "", viaRe("UDP", ua));
    proxy.udp.send(response(overUdp.msg, "486 Busy Here"), ua.address);
    assert.equal((await small.outcome).status, 486);
    await sleep(20);
    assert.deepEqual(Object.fromEntries(ua.requestsSent), { "tcp INVITE": 1, "tcp ACK": 1, "udp INVITE": 1, "udp ACK": 1 });
  },
);

test(
  "sip.transport auto: the next hop refuses TCP (RST) -> the large INVITE goes over UDP with a UDP Via and Timer A retransmissions (RFC 3261 18.1.1), with a warn line",
  LIMIT,
  async (t) => {
    const { log, lines } = capturedLog();
    const udpOnly = await Peer.open(t);
    const ua = await startUa(t, udpOnly.port, { transport: "auto", log });
    const call = inviteFrom(ua, BIG_BODY);
    const first = await udpOnly.next("INVITE over UDP");
    assert.match(header(first.msg, "via") ?? "", viaRe("UDP", ua));
    assert.ok((await udpOnly.drain(40)).length >= 1, "retransmitted (Timer A)");
    udpOnly.send(response(first.msg, "603 Decline"), ua.address);
    assert.equal((await call.outcome).status, 603);
    assert.ok(lines.some((l) => l.level === "warn" && String(l.message).includes("refused TCP")));
    assert.equal(ua.requestsSent.get("udp INVITE"), 1);
    assert.equal(ua.requestsSent.get("tcp INVITE"), undefined);
  },
);

test("sip.transport tcp: a refused connection fails the INVITE with CpmError CPM_ERR_SIP_TRANSPORT, no UDP retry", LIMIT, async (t) => {
  const udpOnly = await Peer.open(t);
  const ua = await startUa(t, udpOnly.port, { transport: "tcp" });
  await assert.rejects(
    inviteFrom(ua, BIG_BODY).outcome,
    (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_SIP_TRANSPORT" && /ECONNREFUSED|refused/i.test(err.message),
  );
  assert.deepEqual(await udpOnly.drain(30), []);
});

test(
  "start(): TCP listens on the UDP port; a TCP port already taken is CPM_ERR_CONFIG; close() closes the connections and leaves no timer",
  LIMIT,
  async (t) => {
    const proxy = await TcpPeer.listen(t);
    const taken = await TcpPeer.listen(t);
    await assert.rejects(
      SipUa.start({ host: HOST, port: taken.port, outboundProxy: { host: HOST, port: 5060 }, log: silentLogger() }),
      (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_CONFIG",
    );
    const ua = await SipUa.start({
      host: HOST,
      port: 0,
      outboundProxy: { host: HOST, port: proxy.port },
      transport: "tcp",
      log: silentLogger(),
    });
    const probe = TcpPeer.client(t);
    const inbound = await probe.connect(ua.address);
    const call = inviteFrom(ua);
    const invite = await proxy.next("INVITE");
    await ua.close();
    await assert.rejects(call.outcome, (err: unknown) => err instanceof CpmError && /closed/.test(err.message));
    assert.ok(await TcpPeer.closed(invite.socket), "the UA's connection is closed");
    assert.ok(await TcpPeer.closed(inbound), "the accepted connection is closed");
    assert.deepEqual(
      process.getActiveResourcesInfo().filter((r) => r === "Timeout"),
      [],
      "no timer left behind",
    );
  },
);
