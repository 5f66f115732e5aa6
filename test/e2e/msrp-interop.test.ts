// MSRP interop (RFC 4975/4976): an independent MSRP implementation, Kamailio's
// own `msrp` module, relays between a client and a server built from our stack
// (src/msrp). The client sends with To-Path "relay server" (RFC 4976 order);
// the relay answers the SEND hop by hop (200), strips its URI from To-Path,
// prepends it to From-Path and forwards to the server; REPORTs travel back the
// same way. Raw taps on both ends parse what went over the wire with our
// parser, so the assertions see the frames exactly as Kamailio wrote them.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { silentLogger } from "../../src/log/logger.js";
import {
  createMsrpServer,
  formatMsrpPath,
  MsrpConnection,
  type MsrpFrame,
  MsrpParser,
  type MsrpRequest,
  MsrpSession,
  MsrpSessionTable,
  type MsrpUri,
  newSessionId,
  parseMsrpUri,
  type ReceivedMessage,
} from "../../src/msrp/index.js";
import { freePort } from "../harness/ports.js";
import { exited, spawnServer } from "../harness/process.js";
import { waitFor } from "../harness/wait.js";

const HOST = "127.0.0.1";

/**
 * A minimal stand-alone MSRP relay (the msrp module README's example, without
 * AUTH: the client names the relay in To-Path itself). SEND: forward along
 * To-Path, then answer 200 hop by hop (RFC 4976 7.3.1; none when
 * Failure-Report is "no", errors only when "partial"). REPORT: forward, never
 * answered. Responses end at the relay (they are hop by hop: the server's 200
 * to the relay goes no further).
 */
function relayCfg(port: number): string {
  return `#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
tcp_accept_no_cl=yes
tcp_connection_lifetime=60
listen=tcp:${HOST}:${port}

loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "msrp.so"

request_route {
	sl_send_reply("403", "No SIP Here");
	exit;
}

event_route[msrp:frame-in] {
	xlog("L_INFO", "msrp-in $msrp(method) code=$msrp(code) bodylen=$msrp(bodylen) nexthops=$msrp(nexthops) from $msrp(srcaddr)\\n");
	if (msrp_is_reply()) {
		exit;
	}
	if ($msrp(method) == "SEND") {
		if ($msrp(nexthops) < 1) {
			msrp_reply("481", "Session-does-not-exist");
			exit;
		}
		if (msrp_relay()) {
			if ($hdr(Failure-Report) != "no" && $hdr(Failure-Report) != "partial") {
				msrp_reply("200", "OK");
			}
		} else if ($hdr(Failure-Report) != "no") {
			msrp_reply("481", "Session-does-not-exist");
		}
		exit;
	}
	if ($msrp(method) == "REPORT") {
		msrp_relay();
		exit;
	}
	msrp_reply("501", "Request-method-not-understood");
}
`;
}

interface Relay {
  port: number;
  pid: number;
  logs(): string;
  stop(): Promise<void>;
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

async function startRelay(): Promise<Relay> {
  const port = await freePort();
  const runDir = await mkdtemp(join(tmpdir(), "cpm-msrp-relay-"));
  const cfg = join(runDir, "kamailio-msrp-relay.cfg");
  await writeFile(cfg, relayCfg(port));
  const args = ["-DD", "-E", "-f", cfg, "-m", "64", "-M", "16", "-Y", runDir, "-P", join(runDir, "kamailio.pid")];
  const server = spawnServer("kamailio", args, runDir);
  const { child, pid } = server;
  const stop = async () => {
    await server.stop();
    await rm(runDir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      async () => server.spawnError() !== undefined || exited(child) || tcpOpen(port),
      8000,
      50,
      `kamailio msrp relay listening on tcp:${HOST}:${port}`,
    );
    const spawnError = server.spawnError();
    if (spawnError) throw spawnError;
    if (exited(child)) throw new Error(`kamailio exited early (${child.exitCode ?? child.signalCode})`);
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n--- kamailio output ---\n${server.output().slice(-6000)}`);
  }
  return { port, pid, logs: () => server.output(), stop };
}

/** Parses everything a socket receives with our parser, alongside whoever else reads it. */
function tap(socket: net.Socket, into: MsrpFrame[], errors: string[], raw?: Buffer[]): void {
  const parser = new MsrpParser();
  socket.on("data", (d: Buffer) => {
    raw?.push(d);
    for (const ev of parser.push(d)) {
      if (ev.type === "frame") into.push(ev.frame);
      else if (ev.type === "error") errors.push(`${ev.error.reason}: ${ev.error.detail}`);
    }
  });
}

const uri = (port: number, session: string): MsrpUri => parseMsrpUri(`msrp://${HOST}:${port}/${session};tcp`);

/** Deterministic binary body covering every byte value, CR and LF included. */
function binaryBody(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

describe("MSRP interop (RFC 4975/4976): Kamailio msrp module as relay", () => {
  let relay: Relay;
  let server: net.Server;
  let clientSocket: net.Socket;
  let clientConn: MsrpConnection;
  let clientSession: MsrpSession;
  let serverSession: MsrpSession;
  let relayUri: MsrpUri;
  let serverUri: MsrpUri;
  let clientUri: MsrpUri;
  const serverFrames: MsrpFrame[] = [];
  const clientFrames: MsrpFrame[] = [];
  const parseErrors: string[] = [];
  const serverRaw: Buffer[] = [];
  const serverMessages: ReceivedMessage[] = [];
  const clientReports: MsrpRequest[] = [];
  const logger = silentLogger();

  before(async () => {
    relay = await startRelay();
    const serverPort = await freePort();
    relayUri = uri(relay.port, newSessionId());
    serverUri = uri(serverPort, newSessionId());
    const table = new MsrpSessionTable();
    server = createMsrpServer({ table, logger, bindTimeoutMs: 5000 });
    server.on("connection", (s: net.Socket) => tap(s, serverFrames, parseErrors, serverRaw));
    await new Promise<void>((resolve) => server.listen(serverPort, HOST, resolve));

    clientSocket = net.connect({ host: HOST, port: relay.port });
    await new Promise<void>((resolve, reject) => {
      clientSocket.once("connect", resolve);
      clientSocket.once("error", reject);
    });
    tap(clientSocket, clientFrames, parseErrors);
    // Our URI names the connection's own port: the relay finds the open
    // connection to it for what travels back (RFC 4976: no new connection).
    clientUri = uri(clientSocket.localPort as number, newSessionId());
    serverSession = new MsrpSession({ localUri: serverUri, remotePath: [relayUri, clientUri], logger });
    serverSession.on("message", (m) => serverMessages.push(m));
    table.add(serverSession);
    clientSession = new MsrpSession({ localUri: clientUri, remotePath: [relayUri, serverUri], chunkSize: 1024, logger });
    clientSession.on("report", (r) => clientReports.push(r));
    clientConn = new MsrpConnection(clientSocket, { role: "active", logger, bindTimeoutMs: 5000, transactionTimeoutMs: 3000 });
    await clientConn.bind(clientSession); // empty SEND through the relay (RFC 4975 5.4)
    await waitFor(() => serverSession.state === "bound", 3000, 20, "server session bound through the relay");
  });

  after(async () => {
    clientSession?.close("test over");
    clientConn?.close("test over");
    clientSocket?.destroy();
    serverSession?.close("test over");
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if (process.env.MSRP_INTEROP_DEBUG) {
      console.log(Buffer.concat(serverRaw).toString("latin1"));
      console.log(relay?.logs());
    }
    if (relay) await relay.stop();
  });

  test("MSRP interop (RFC 4975/4976): SEND through the relay arrives intact, 200 and Success REPORT come back", async () => {
    const body = Buffer.from("Hello through Kamailio \u00e9\u00e8 \u2603", "utf8");
    const contentType = "text/plain;charset=UTF-8";
    const result = await clientSession.send({ body, contentType, successReport: "yes" });
    assert.equal(result.code, 200, `relay answered ${result.code}\n${relay.logs().slice(-3000)}`);
    assert.equal(result.chunks, 1);

    const msg = await waitFor(() => serverMessages.find((m) => m.messageId === result.messageId), 3000, 20, "message at the server");
    assert.deepEqual(msg.body, body);
    assert.equal(msg.contentType, contentType);

    // On the wire at the server: the relay took itself off To-Path and put itself first in From-Path.
    const sends = serverFrames.filter((f): f is MsrpRequest => f.kind === "request" && f.messageId === result.messageId);
    assert.equal(sends.length, 1);
    const send = sends[0] as MsrpRequest;
    assert.equal(send.method, "SEND");
    assert.equal(formatMsrpPath(send.toPath), formatMsrpPath([serverUri]));
    assert.equal(formatMsrpPath(send.fromPath), formatMsrpPath([relayUri, clientUri]));
    assert.equal(send.contentType, contentType);
    assert.equal(send.successReport, "yes");
    assert.deepEqual(send.byteRange, { start: 1, end: body.length, total: body.length });
    assert.equal(send.continuation, "$");
    assert.deepEqual(send.body, body);
    assert.match(relay.logs(), /msrp-in SEND /, "the frames went through Kamailio's msrp module");

    // The hop-by-hop 200 from the relay, as the client received it.
    const ok = clientFrames.find((f) => f.kind === "response" && f.code === 200 && f.transactionId === send.transactionId);
    assert.ok(ok, "200 for the SEND's transaction at the client");
    assert.equal(formatMsrpPath(ok.toPath), formatMsrpPath([clientUri]));
    assert.equal(formatMsrpPath(ok.fromPath), formatMsrpPath([relayUri]));

    // The server's Success REPORT, relayed back over the client's own connection.
    const report = await waitFor(
      () => clientReports.find((r) => r.messageId === result.messageId),
      3000,
      20,
      "Success REPORT at the client",
    );
    assert.equal(report.method, "REPORT");
    assert.equal(report.status?.code, 200);
    assert.deepEqual(report.byteRange, { start: 1, end: body.length, total: body.length });
    assert.equal(formatMsrpPath(report.toPath), formatMsrpPath([clientUri]));
    assert.equal(formatMsrpPath(report.fromPath), formatMsrpPath([relayUri, serverUri]));
    assert.deepEqual(parseErrors, []);
  });

  test("MSRP interop (RFC 4975/4976): a chunked message (Byte-Range, + then $) passes the relay intact", async () => {
    const body = binaryBody(4500); // 1024-byte chunks: 5 of them
    const contentType = "application/octet-stream";
    const result = await clientSession.send({ body, contentType });
    assert.equal(result.code, 200, `relay answered ${result.code}\n${relay.logs().slice(-3000)}`);
    assert.equal(result.chunks, 5);

    const msg = await waitFor(
      () => serverMessages.find((m) => m.messageId === result.messageId),
      3000,
      20,
      "chunked message at the server",
    );
    assert.equal(msg.chunks, 5);
    assert.equal(msg.contentType, contentType);
    assert.ok(msg.body.equals(body), "reassembled body differs");

    const chunks = serverFrames.filter((f): f is MsrpRequest => f.kind === "request" && f.messageId === result.messageId);
    assert.equal(chunks.length, 5);
    let next = 1;
    chunks.forEach((c, i) => {
      const last = i === chunks.length - 1;
      assert.equal(c.continuation, last ? "$" : "+", `chunk ${i + 1} end-line flag`);
      assert.equal(c.byteRange?.start, next, `chunk ${i + 1} Byte-Range start`);
      assert.equal(c.byteRange?.total, body.length);
      const len = c.body?.length ?? 0;
      assert.equal(c.byteRange?.end, next + len - 1, `chunk ${i + 1} Byte-Range end`);
      assert.ok(c.body?.equals(body.subarray(next - 1, next - 1 + len)), `chunk ${i + 1} body`);
      assert.equal(formatMsrpPath(c.fromPath), formatMsrpPath([relayUri, clientUri]));
      next += len;
    });
    assert.equal(next, body.length + 1);
    // Every chunk got its hop-by-hop 200 from the relay.
    for (const c of chunks) {
      assert.ok(
        clientFrames.some((f) => f.kind === "response" && f.code === 200 && f.transactionId === c.transactionId),
        `200 for chunk ${c.transactionId}`,
      );
    }
    assert.deepEqual(parseErrors, []);
  });
});
