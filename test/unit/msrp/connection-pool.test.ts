// Connection reuse by the active side (RFC 4975 5.4): sessions whose first hop
// has the same authority share one connection the pool opened; it closes with
// its last session and a later session opens a new one. Real loopback TCP.
import assert from "node:assert/strict";
import { once } from "node:events";
import type * as net from "node:net";
import { test } from "node:test";
import { silentLogger } from "../../../src/log/logger.js";
import { MsrpConnection } from "../../../src/msrp/connection.js";
import { authorityKey, MsrpConnectionPool } from "../../../src/msrp/connection-pool.js";
import { newSessionId } from "../../../src/msrp/ids.js";
import { MsrpResources } from "../../../src/msrp/resources.js";
import { createMsrpServer } from "../../../src/msrp/server.js";
import { MsrpSession } from "../../../src/msrp/session.js";
import { MsrpSessionTable } from "../../../src/msrp/session-table.js";
import { parseMsrpUri } from "../../../src/msrp/uri.js";
import { useCleanups } from "../../harness/cleanups.js";
import { waitFor } from "../../harness/wait.js";

const logger = silentLogger();
/** Polls every 5 ms (these are loopback sockets). */
const until = (what: string, pred: () => boolean, timeoutMs = 3000) => waitFor(pred, timeoutMs, 5, what);
const cleanups = useCleanups();

/** The peer (e.g. the Controlling Function): a listener whose sessions wait in a table; counts accepted connections. */
async function peer(resources: MsrpResources) {
  const table = new MsrpSessionTable();
  const accepted: MsrpConnection[] = [];
  const server = createMsrpServer({ table, logger, resources, onConnection: (c) => accepted.push(c) });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as net.AddressInfo).port;
  cleanups.push(async () => {
    table.closeAll();
    for (const c of accepted) c.close("test over");
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { port, table, accepted };
}

test("authorityKey: RFC 4975 6.1 host case-insensitive, scheme, port and transport distinguish", () => {
  const k = (u: string) => authorityKey(parseMsrpUri(u));
  assert.equal(k("msrp://CF.Example.net:2855/a;tcp"), k("msrp://cf.example.net:2855/b;tcp"));
  assert.notEqual(k("msrp://cf.example.net:2855/a;tcp"), k("msrp://cf.example.net:2856/a;tcp"));
  assert.notEqual(k("msrp://cf.example.net:2855/a;tcp"), k("msrps://cf.example.net:2855/a;tcp"));
  assert.notEqual(k("msrp://cf.example.net:2855/a;tcp"), k("msrp://10.0.0.1:2855/a;tcp"));
});

test("RFC 4975 5.4 reuse: sessions to one authority share one connection, closed with the last session; a new one after that", async () => {
  const mine = new MsrpResources();
  const theirs = new MsrpResources();
  const cf = await peer(theirs);
  let opened = 0;
  const pool = new MsrpConnectionPool((uri) => {
    opened++;
    return MsrpConnection.connectTo(uri, { logger, resources: mine });
  });
  cleanups.push(() => pool.closeAll());
  const pair = () => {
    const theirUri = parseMsrpUri(`msrp://127.0.0.1:${cf.port}/${newSessionId()};tcp`);
    const ourUri = parseMsrpUri(`msrp://127.0.0.1:9/${newSessionId()};tcp`);
    const remote = new MsrpSession({ localUri: theirUri, remotePath: [ourUri], logger, resources: theirs });
    cf.table.add(remote);
    const local = new MsrpSession({ localUri: ourUri, remotePath: [theirUri], logger, resources: mine });
    return { local, remote };
  };
  // Three binds at once: they wait for the same connect.
  const sessions = [pair(), pair(), pair()];
  const connections = await Promise.all(sessions.map((s) => pool.bind(s.local)));
  assert.equal(opened, 1);
  assert.equal(cf.accepted.length, 1, "the peer accepted one connection");
  assert.ok(connections.every((c) => c === connections[0]));
  assert.equal(pool.size, 1);
  assert.equal(mine.snapshot().openSockets, 1);
  // Routing by To-Path session-id on the shared connection: each message reaches its own session.
  const got: string[] = [];
  for (const [i, s] of sessions.entries()) s.local.on("message", (m) => got.push(`${i}:${m.body.toString()}`));
  for (const [i, s] of sessions.entries())
    assert.equal((await s.remote.send({ body: Buffer.from(`m${i}`), contentType: "text/plain" })).code, 200);
  assert.deepEqual(got, ["0:m0", "1:m1", "2:m2"]);

  sessions[0]?.local.close("released");
  sessions[1]?.local.close("released");
  assert.equal(connections[0]?.closed, false, "still carries the third session");
  assert.equal((await sessions[2]?.remote.send({ body: Buffer.from("still"), contentType: "text/plain" }))?.code, 200);
  sessions[2]?.local.close("released");
  assert.equal(connections[0]?.closed, true, "closed with its last session");
  assert.equal(pool.size, 0);
  await until("our socket closed", () => mine.snapshot().openSockets === 0);
  assert.deepEqual(mine.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });

  const next = pair();
  const again = await pool.bind(next.local);
  assert.notEqual(again, connections[0]);
  assert.equal(opened, 2);
  next.local.close("released");
  await until("our socket closed", () => mine.snapshot().openSockets === 0);
});

test("a session closed while its connection is being opened is not bound; the unused connection closes", async () => {
  const mine = new MsrpResources();
  const cf = await peer(new MsrpResources());
  const pool = new MsrpConnectionPool((uri) => MsrpConnection.connectTo(uri, { logger, resources: mine }));
  cleanups.push(() => pool.closeAll());
  const local = new MsrpSession({
    localUri: parseMsrpUri(`msrp://127.0.0.1:9/${newSessionId()};tcp`),
    remotePath: [parseMsrpUri(`msrp://127.0.0.1:${cf.port}/${newSessionId()};tcp`)],
    logger,
    resources: mine,
  });
  const bound = pool.bind(local);
  local.close("released while connecting");
  await assert.rejects(bound, { code: "CPM_ERR_MSRP_CONNECTION" });
  await until("our socket closed", () => mine.snapshot().openSockets === 0);
  assert.equal(pool.size, 0);
  assert.deepEqual(mine.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
});
