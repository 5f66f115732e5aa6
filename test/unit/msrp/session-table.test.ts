// MsrpSessionTable: one session per session-id as before, and several sharing
// one (one a=path offered to every device of a forked INVITE, BYE-B7) told
// apart by the request's From-Path (RFC 4975 5.4, 7.3).
import assert from "node:assert/strict";
import { test } from "node:test";
import { silentLogger } from "../../../src/log/logger.js";
import { MsrpResources } from "../../../src/msrp/resources.js";
import { MsrpSession, type SessionTransport } from "../../../src/msrp/session.js";
import { MsrpSessionTable } from "../../../src/msrp/session-table.js";
import { parseMsrpUri } from "../../../src/msrp/uri.js";

const ours = parseMsrpUri("msrp://pf.example.com:2855/sharedId123;tcp");
const deviceA = parseMsrpUri("msrp://a.example.com:4000/devA;tcp");
const deviceB = parseMsrpUri("msrp://b.example.com:4000/devB;tcp");
const stranger = parseMsrpUri("msrp://evil.example.com:4000/x;tcp");
const placeholder = parseMsrpUri("msrp://peer-path-pending.invalid:9/pending;tcp");
const transport: SessionTransport = {
  request: () => ({ written: Promise.resolve(), verdict: Promise.resolve(200) }),
  detach: () => {},
};

function session(peer: typeof deviceA, pending = false): MsrpSession {
  return new MsrpSession({
    localUri: ours,
    remotePath: [peer],
    verifyFromPath: true,
    remotePathPending: pending,
    logger: silentLogger(),
    resources: new MsrpResources(),
  });
}

test("BYE-B7 one session-id: a second session needs `shared`; alone, find() is get() whatever the From-Path", () => {
  const table = new MsrpSessionTable();
  const a = session(deviceA);
  table.add(a);
  assert.throws(() => table.add(session(deviceB)), { code: "CPM_ERR_MSRP_SESSION_IN_USE" });
  assert.equal(table.find(a.id, stranger), a, "the session's own From-Path check refuses the stranger (connection.ts)");
  assert.equal(table.get(a.id), a);
  assert.equal(table.size, 1);
});

test("BYE-B7 shared session-id: the From-Path picks the device's session, else one waiting for its path, else the oldest", () => {
  const table = new MsrpSessionTable();
  const first = session(placeholder, true);
  const b = session(deviceB);
  table.add(first);
  table.add(b, true);
  table.add(b, true); // twice: once in the table
  assert.equal(table.size, 2);
  assert.equal(table.find(ours.sessionId as string, deviceB), b);
  assert.equal(table.find(ours.sessionId as string, deviceA), first, "unbound and its path pending: binds on the sender's word");
  first.attach(transport, deviceA);
  assert.equal(table.find(ours.sessionId as string, stranger), first, "nothing matches: the oldest, whose check refuses it");
  first.learnRemotePath([deviceA]);
  assert.equal(table.find(ours.sessionId as string, deviceA), first);
  assert.equal(table.find(ours.sessionId as string, deviceB), b);
  b.close();
  assert.equal(table.size, 1);
  assert.equal(table.find(ours.sessionId as string, deviceB), first);
  first.close();
  assert.equal(table.size, 0);
  assert.equal(table.get(ours.sessionId as string), undefined);
});

test("BYE-B7 shared session-id: closeAll closes every session of the group", () => {
  const table = new MsrpSessionTable();
  const a = session(deviceA);
  const b = session(deviceB);
  table.add(a, true);
  table.add(b, true);
  table.closeAll();
  assert.equal(a.state, "closed");
  assert.equal(b.state, "closed");
  assert.equal(table.size, 0);
});
