// Connections over real loopback TCP sockets on 127.0.0.1 (port 0: the kernel
// picks a free one). Each test has its own MsrpResources so the counters it
// checks are its own.
import assert from "node:assert/strict";
import { once } from "node:events";
import * as net from "node:net";
import { Duplex, PassThrough } from "node:stream";
import { test } from "node:test";
import winston from "winston";
import { CpmError } from "../../../src/errors/catalogue.js";
import { silentLogger } from "../../../src/log/logger.js";
import type { ReceivedMessage } from "../../../src/msrp/chunking.js";
import { MsrpConnection } from "../../../src/msrp/connection.js";
import type { MsrpFrame, MsrpRequest, MsrpResponse } from "../../../src/msrp/frame.js";
import { newMessageId, newSessionId, newTransactionId } from "../../../src/msrp/ids.js";
import { MsrpParser } from "../../../src/msrp/parser.js";
import { MsrpResources } from "../../../src/msrp/resources.js";
import { serializeFrame } from "../../../src/msrp/serializer.js";
import { createMsrpServer } from "../../../src/msrp/server.js";
import { MsrpSession, type MsrpSessionOptions } from "../../../src/msrp/session.js";
import { MsrpSessionTable } from "../../../src/msrp/session-table.js";
import { type MsrpUri, parseMsrpUri } from "../../../src/msrp/uri.js";
import { useCleanups } from "../../harness/cleanups.js";
import { waitFor } from "../../harness/wait.js";

const logger = silentLogger();
/** Polls every 5 ms (these are loopback sockets). */
const until = (what: string, pred: () => boolean, timeoutMs = 3000) => waitFor(pred, timeoutMs, 5, what);
const cleanups = useCleanups();

function uriFor(port: number, sessionId = newSessionId()): MsrpUri {
  return parseMsrpUri(`msrp://127.0.0.1:${port}/${sessionId};tcp`);
}

interface Server {
  port: number;
  table: MsrpSessionTable;
  connections: MsrpConnection[];
}

async function startServer(
  resources: MsrpResources,
  options: { bindTimeoutMs?: number; idleTimeoutMs?: number; maxBodyBytes?: number } = {},
): Promise<Server> {
  const table = new MsrpSessionTable();
  const connections: MsrpConnection[] = [];
  const server = createMsrpServer({
    table,
    logger,
    resources,
    bindTimeoutMs: options.bindTimeoutMs ?? 5000,
    idleTimeoutMs: options.idleTimeoutMs ?? 0,
    limits: options.maxBodyBytes ? { maxBodyBytes: options.maxBodyBytes } : {},
    onConnection: (c) => connections.push(c),
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const addr = server.address() as net.AddressInfo;
  cleanups.push(async () => {
    for (const c of connections) c.close("test over");
    table.closeAll();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { port: addr.port, table, connections };
}

function serverSession(port: number, resources: MsrpResources, extra: Partial<MsrpSessionOptions> = {}): MsrpSession {
  return new MsrpSession({ localUri: uriFor(port), remotePath: [uriFor(1)], logger, resources, ...extra });
}

/** A bare TCP peer that writes frames and reads what comes back, with no MSRP logic of its own. */
class RawPeer {
  readonly frames: MsrpFrame[] = [];
  readonly uri: MsrpUri;
  private readonly parser = new MsrpParser();
  closed = false;

  private constructor(readonly socket: net.Socket) {
    this.uri = parseMsrpUri(`msrp://127.0.0.1:${socket.localPort}/${newSessionId()};tcp`);
    socket.on("data", (b: Buffer) => {
      for (const ev of this.parser.push(b)) if (ev.type === "frame") this.frames.push(ev.frame);
    });
    socket.on("close", () => {
      this.closed = true;
    });
    socket.on("error", () => {});
  }

  static async connect(port: number): Promise<RawPeer> {
    const socket = net.connect({ host: "127.0.0.1", port });
    await once(socket, "connect");
    const peer = new RawPeer(socket);
    cleanups.push(() => {
      socket.destroy();
    });
    return peer;
  }

  send(toSessionUri: MsrpUri, options: { body?: string; tid?: string; method?: string } = {}): string {
    const tid = options.tid ?? newTransactionId();
    const req: MsrpRequest = {
      kind: "request",
      method: options.method ?? "SEND",
      transactionId: tid,
      toPath: [toSessionUri],
      fromPath: [this.uri],
      messageId: newMessageId(),
      headers: [],
      continuation: "$",
    };
    if (options.body !== undefined) {
      req.contentType = "text/plain";
      req.body = Buffer.from(options.body);
      req.byteRange = { start: 1, end: req.body.length, total: req.body.length };
    }
    this.socket.write(serializeFrame(req));
    return tid;
  }

  async response(tid: string): Promise<MsrpResponse> {
    let found: MsrpResponse | undefined;
    await until(`response to ${tid}`, () => {
      found = this.frames.find((f): f is MsrpResponse => f.kind === "response" && f.transactionId === tid);
      return found !== undefined;
    });
    return found as MsrpResponse;
  }
}

test("BYE-B6: a request for an unknown session gets 481, From-Path back as To-Path, and reaches no session", async () => {
  const resources = new MsrpResources();
  const srv = await startServer(resources);
  const known = serverSession(srv.port, resources, { localUri: uriFor(srv.port, "MixedCaseSession42") });
  srv.table.add(known);
  const delivered: ReceivedMessage[] = [];
  known.on("message", (m) => delivered.push(m));

  const peer = await RawPeer.connect(srv.port);
  const unknown = uriFor(srv.port, "no-such-session");
  const t1 = peer.send(unknown, { body: "hello?" });
  const r1 = await peer.response(t1);
  assert.equal(r1.code, 481);
  assert.equal(r1.toPath[0]?.sessionId, peer.uri.sessionId);
  assert.equal(r1.fromPath[0]?.sessionId, "no-such-session");
  assert.equal(delivered.length, 0);
  assert.equal(known.state, "unbound");

  // The same connection then binds the real session, and 481 still answers the unknown one.
  const t2 = peer.send(known.localUri, { body: "hi" });
  assert.equal((await peer.response(t2)).code, 200);
  assert.equal(delivered.length, 1);
  assert.equal(delivered[0]?.body.toString(), "hi");
  const t3 = peer.send(unknown, { body: "still there?" });
  assert.equal((await peer.response(t3)).code, 481);
  assert.equal(delivered.length, 1);
  // Session-ids are compared case-sensitively (RFC 4975 6.1).
  const t4 = peer.send(uriFor(srv.port, known.id.toLowerCase()), { body: "x" });
  assert.equal((await peer.response(t4)).code, 481);
  // REPORTs to an unknown session are dropped without a response (RFC 4975 7.1.2).
  const t5 = peer.send(unknown, { method: "REPORT" });
  const t6 = peer.send(unknown, { body: "after report" });
  await peer.response(t6);
  assert.equal(peer.frames.filter((f) => f.transactionId === t5).length, 0);
});

test("session isolation: each connection only reaches its own sessions; 506 for one bound elsewhere", async () => {
  const resources = new MsrpResources();
  const srv = await startServer(resources);
  const a = serverSession(srv.port, resources);
  const b = serverSession(srv.port, resources);
  const c = serverSession(srv.port, resources);
  for (const s of [a, b, c]) srv.table.add(s);
  const got: Record<string, string[]> = { a: [], b: [], c: [] };
  a.on("message", (m) => got.a?.push(m.body.toString()));
  b.on("message", (m) => got.b?.push(m.body.toString()));
  c.on("message", (m) => got.c?.push(m.body.toString()));

  const p1 = await RawPeer.connect(srv.port);
  const p2 = await RawPeer.connect(srv.port);
  assert.equal((await p1.response(p1.send(a.localUri, { body: "1->a" }))).code, 200);
  assert.equal((await p2.response(p2.send(b.localUri, { body: "2->b" }))).code, 200);
  // p1 aims at b, which lives on p2's connection.
  assert.equal((await p1.response(p1.send(b.localUri, { body: "1->b" }))).code, 506);
  // Several sessions per connection: p1 may bind c too.
  assert.equal((await p1.response(p1.send(c.localUri, { body: "1->c" }))).code, 200);
  assert.equal((await p2.response(p2.send(c.localUri, { body: "2->c" }))).code, 506);
  assert.deepEqual(got, { a: ["1->a"], b: ["2->b"], c: ["1->c"] });
  assert.equal(srv.connections.length, 2);
  assert.deepEqual([...(srv.connections[0]?.sessions.keys() ?? [])].sort(), [a.id, c.id].sort());
  assert.deepEqual([...(srv.connections[1]?.sessions.keys() ?? [])], [b.id]);
  // A session closed on the server (BYE) answers 481 afterwards (BYE-B6).
  a.close("BYE");
  assert.equal((await p1.response(p1.send(a.localUri, { body: "late" }))).code, 481);
  assert.deepEqual(got.a, ["1->a"]);
});

test("a connection that never binds a session is closed after bindTimeoutMs", async () => {
  const resources = new MsrpResources();
  const srv = await startServer(resources, { bindTimeoutMs: 150 });
  const peer = await RawPeer.connect(srv.port);
  const started = Date.now();
  // A request for an unknown session does not bind anything.
  assert.equal((await peer.response(peer.send(uriFor(srv.port), { body: "x" }))).code, 481);
  await until("server closes the socket", () => peer.closed);
  assert.ok(Date.now() - started >= 140, "closed before the timeout");
  await until("counters back to zero", () => resources.snapshot().openSockets === 0 && resources.snapshot().timers === 0);
});

test("bind and idle timeouts of many connections share one sweeper timer, which goes with the last deadline", async () => {
  const resources = new MsrpResources();
  const srv = await startServer(resources, { bindTimeoutMs: 200, idleTimeoutMs: 400 });
  const started = Date.now();
  const peers = await Promise.all(Array.from({ length: 5 }, () => RawPeer.connect(srv.port)));
  const s = serverSession(srv.port, resources);
  srv.table.add(s);
  const bound = peers[0] as RawPeer;
  assert.equal((await bound.response(bound.send(s.localUri, { body: "x" }))).code, 200);
  await until("5 connections accepted", () => srv.connections.length === 5);
  assert.equal(resources.snapshot().timers, 1, "one timer for 5 connections");
  await until("the 4 unbound connections closed", () => peers.slice(1).every((p) => p.closed));
  assert.ok(Date.now() - started >= 190, "not before bindTimeoutMs");
  assert.equal(bound.closed, false, "the bound one waits for its idle timeout");
  assert.equal(resources.snapshot().timers, 1);
  await until("the idle one closed", () => bound.closed);
  await until("counters back to zero", () => resources.snapshot().openSockets === 0 && resources.snapshot().timers === 0);
});

test("idle timeout closes a bound connection and its sessions", async () => {
  const resources = new MsrpResources();
  const srv = await startServer(resources, { idleTimeoutMs: 150 });
  const s = serverSession(srv.port, resources);
  srv.table.add(s);
  const closed = once(s, "close");
  const peer = await RawPeer.connect(srv.port);
  assert.equal((await peer.response(peer.send(s.localUri, { body: "x" }))).code, 200);
  const [reason] = await closed;
  assert.equal(reason, "idle timeout");
  await until("socket closed", () => peer.closed);
});

test("413 on the wire: maxBodyBytes answers the chunk with 413 and the connection carries on", async () => {
  const resources = new MsrpResources();
  const srv = await startServer(resources, { maxBodyBytes: 64 });
  const s = serverSession(srv.port, resources);
  srv.table.add(s);
  const peer = await RawPeer.connect(srv.port);
  assert.equal((await peer.response(peer.send(s.localUri, { body: "bind" }))).code, 200);
  assert.equal((await peer.response(peer.send(s.localUri, { body: "y".repeat(500) }))).code, 413);
  assert.equal((await peer.response(peer.send(s.localUri, { body: "small again" }))).code, 200);
});

test("garbage on the connection closes it", async () => {
  const resources = new MsrpResources();
  const srv = await startServer(resources);
  const peer = await RawPeer.connect(srv.port);
  peer.socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  await until("closed", () => peer.closed);
  await until("counters back to zero", () => resources.snapshot().openSockets === 0);
});

test("active and passive MsrpConnections: empty-SEND bind, chunked messages both ways, success REPORT, then BYE-B10: every counter back to zero", async () => {
  const resources = new MsrpResources();
  const srv = await startServer(resources);
  const bobUri = uriFor(srv.port);
  const aliceUri = parseMsrpUri(`msrp://127.0.0.1:1/${newSessionId()};tcp`);
  const bob = new MsrpSession({ localUri: bobUri, remotePath: [aliceUri], logger, resources, chunkSize: 700 });
  srv.table.add(bob);
  const alice = new MsrpSession({ localUri: aliceUri, remotePath: [bobUri], logger, resources, chunkSize: 1000, successReport: "yes" });

  const conn = await MsrpConnection.connectTo(bobUri, { logger, resources, bindTimeoutMs: 5000 });
  await conn.bind(alice);
  assert.equal(alice.state, "bound");
  await until("bob bound", () => bob.state === "bound");

  const big = Buffer.alloc(10_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) % 251;
  const atBob = once(bob, "message");
  const report = once(alice, "report");
  const sent = await alice.send({ body: big, contentType: "application/octet-stream" });
  assert.deepEqual({ code: sent.code, chunks: sent.chunks }, { code: 200, chunks: 10 });
  const [m] = (await atBob) as [ReceivedMessage];
  assert.deepEqual(m.body, big);
  assert.equal(m.messageId, sent.messageId);
  const [r] = (await report) as [MsrpRequest];
  assert.equal(r.method, "REPORT");
  assert.equal(r.messageId, sent.messageId);
  assert.deepEqual(r.status, { namespace: "000", code: 200, comment: "OK" });
  assert.deepEqual(r.byteRange, { start: 1, end: 10_000, total: 10_000 });

  // The passive side sends back on the same connection.
  const atAlice = once(alice, "message");
  const back = await bob.send({ body: Buffer.from("x".repeat(2000)), contentType: "text/plain" });
  assert.equal(back.code, 200);
  assert.equal(back.chunks, 3);
  const [m2] = (await atAlice) as [ReceivedMessage];
  assert.equal(m2.body.length, 2000);

  // Ending the session on the active side closes the connection (last session left), which ends bob's session too.
  const bobClosed = once(bob, "close");
  alice.close("BYE");
  await bobClosed;
  await until("counters back to zero", () => {
    const c = resources.snapshot();
    return c.openSockets === 0 && c.sessions === 0 && c.timers === 0 && c.bufferedBytes === 0;
  });
  assert.deepEqual(resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
  await assert.rejects(alice.send({ body: Buffer.from("late"), contentType: "text/plain" }), CpmError);
});

test("413 from the receiver stops the sender's message (maxMessageBytes)", async () => {
  const resources = new MsrpResources();
  const srv = await startServer(resources);
  const bobUri = uriFor(srv.port);
  const aliceUri = uriFor(1);
  const bob = new MsrpSession({ localUri: bobUri, remotePath: [aliceUri], logger, resources, reassembly: { maxMessageBytes: 2500 } });
  srv.table.add(bob);
  let delivered = 0;
  bob.on("message", () => delivered++);
  const alice = new MsrpSession({ localUri: aliceUri, remotePath: [bobUri], logger, resources, chunkSize: 1000 });
  const conn = await MsrpConnection.connectTo(bobUri, { logger, resources });
  await conn.bind(alice);
  // Byte-Range total 10 000 > 2500: the first chunk already gets 413 and the rest is never sent.
  const r = await alice.send({ body: Buffer.alloc(10_000), contentType: "application/octet-stream" });
  assert.equal(r.code, 413);
  assert.ok(r.chunks < 10, `sent ${r.chunks} chunks`);
  assert.equal(delivered, 0);
  assert.equal(bob.bufferedBytes, 0);
  // The session is still usable.
  assert.equal((await alice.send({ body: Buffer.from("ok"), contentType: "text/plain" })).code, 200);
  alice.close();
  await until("counters back to zero", () => resources.snapshot().openSockets === 0 && resources.snapshot().timers === 0);
});

test("bind refused with 481: bind() rejects, the session and the connection are closed", async () => {
  const resources = new MsrpResources();
  const srv = await startServer(resources);
  const alice = new MsrpSession({ localUri: uriFor(1), remotePath: [uriFor(srv.port, "unknown-session")], logger, resources });
  const conn = await MsrpConnection.connectTo(uriFor(srv.port), { logger, resources });
  await assert.rejects(conn.bind(alice), (e) => e instanceof CpmError && e.code === "CPM_ERR_MSRP_NO_SESSION");
  assert.equal(alice.state, "closed");
  assert.ok(conn.closed);
  await until("counters back to zero", () => {
    const c = resources.snapshot();
    return c.openSockets === 0 && c.sessions === 0 && c.timers === 0;
  });
});

test("transaction timeout: no response within transactionTimeoutMs counts as 408", async () => {
  const resources = new MsrpResources();
  // A listener that accepts and never answers.
  const silent = net.createServer((s) => s.on("data", () => {}));
  silent.listen(0, "127.0.0.1");
  await once(silent, "listening");
  const port = (silent.address() as net.AddressInfo).port;
  const sockets: net.Socket[] = [];
  silent.on("connection", (s) => sockets.push(s));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  });
  const alice = new MsrpSession({ localUri: uriFor(1), remotePath: [uriFor(port)], logger, resources });
  const conn = await MsrpConnection.connectTo(uriFor(port), { logger, resources, transactionTimeoutMs: 100 });
  await assert.rejects(conn.bind(alice), (e) => e instanceof CpmError && e.code === "CPM_ERR_MSRP_TIMEOUT");
  await until("counters back to zero", () => {
    const c = resources.snapshot();
    return c.openSockets === 0 && c.sessions === 0 && c.timers === 0;
  });
});

test("message bodies never reach the log (captured at debug level, the most verbose)", async () => {
  const resources = new MsrpResources();
  const lines: string[] = [];
  const sink = new PassThrough();
  sink.on("data", (b: Buffer) => lines.push(...b.toString().split("\n").filter(Boolean)));
  const captured = winston.createLogger({
    level: "debug",
    format: winston.format.json(),
    transports: [new winston.transports.Stream({ stream: sink })],
  });
  const table = new MsrpSessionTable();
  const server = createMsrpServer({ table, logger: captured, resources, limits: { maxBodyBytes: 64 } });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as net.AddressInfo).port;
  const s = new MsrpSession({ localUri: uriFor(port), remotePath: [uriFor(1)], logger: captured, resources });
  table.add(s);
  cleanups.push(async () => {
    table.closeAll();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const peer = await RawPeer.connect(port);
  assert.equal((await peer.response(peer.send(s.localUri, { body: "TOP-SECRET-BODY" }))).code, 200);
  assert.equal((await peer.response(peer.send(s.localUri, { body: `TOP-SECRET-BODY${"z".repeat(100)}` }))).code, 413);
  assert.equal((await peer.response(peer.send(uriFor(port), { body: "TOP-SECRET-BODY" }))).code, 481);
  s.close();
  await until("log flushed", () => lines.some((l) => l.includes("session closed")));
  assert.ok(
    lines.some((l) => l.includes('"level":"debug"')),
    "debug lines were captured",
  );
  assert.ok(
    lines.some((l) => l.includes("bad MSRP frame")),
    "the 413 was logged",
  );
  assert.deepEqual(
    lines.filter((l) => l.includes("TOP-SECRET")),
    [],
  );
});

test("a peer that sends but never reads: past maxWriteQueueBytes of unread responses the connection is closed, logged and counted", async () => {
  const resources = new MsrpResources();
  const table = new MsrpSessionTable();
  const session = serverSession(1, resources);
  table.add(session);
  cleanups.push(() => table.closeAll());
  // the peer's side of the socket: takes the first write and then nothing more (never reads)
  const socket = new Duplex({ read() {}, write(_chunk, _enc, _done) {} });
  const connection = new MsrpConnection(socket, { role: "passive", table, logger, resources, maxWriteQueueBytes: 4096 });
  const peerUri = uriFor(7394);
  let sent = 0;
  while (!connection.closed && sent < 1000) {
    const body = Buffer.from(`message ${sent}`);
    const req: MsrpRequest = {
      kind: "request",
      method: "SEND",
      transactionId: newTransactionId(),
      toPath: [session.localUri],
      fromPath: [peerUri],
      messageId: newMessageId(),
      headers: [],
      continuation: "$",
      contentType: "text/plain",
      body,
      byteRange: { start: 1, end: body.length, total: body.length },
    };
    socket.push(serializeFrame(req));
    sent++;
    await new Promise((r) => setImmediate(r));
  }
  assert.ok(connection.closed, `still open after ${sent} SENDs`);
  // each 200 is a few hundred bytes: closed after the queue passed 4 KiB, not after the 1000th
  assert.ok(sent < 100, `closed only after ${sent} SENDs`);
  assert.equal(resources.refusals.unreadConnections, 1);
});
