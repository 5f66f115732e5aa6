// MsrpSession decisions without sockets: what each incoming request gets.
import assert from "node:assert/strict";
import { test } from "node:test";
import { silentLogger } from "../../../src/log/logger.js";
import { chunkMessage, type ReceivedMessage } from "../../../src/msrp/chunking.js";
import type { MsrpRequest } from "../../../src/msrp/frame.js";
import { MsrpResources } from "../../../src/msrp/resources.js";
import { MsrpSession, type MsrpSessionOptions } from "../../../src/msrp/session.js";
import { MsrpSessionTable } from "../../../src/msrp/session-table.js";
import { parseMsrpUri } from "../../../src/msrp/uri.js";

const ours = parseMsrpUri("msrp://pf.example.com:2855/ourSession123;tcp");
const peer = parseMsrpUri("msrp://client.example.com:4000/peerSession456;tcp");
const other = parseMsrpUri("msrp://evil.example.com:4000/peerSession456;tcp");

function session(extra: Partial<MsrpSessionOptions> = {}): {
  s: MsrpSession;
  resources: MsrpResources;
  got: ReceivedMessage[];
  reports: MsrpRequest[];
} {
  const resources = new MsrpResources();
  const s = new MsrpSession({ localUri: ours, remotePath: [peer], logger: silentLogger(), resources, ...extra });
  const got: ReceivedMessage[] = [];
  const reports: MsrpRequest[] = [];
  s.on("message", (m) => got.push(m));
  s.on("report", (r) => reports.push(r));
  return { s, resources, got, reports };
}

function send(body: string, extra: Partial<MsrpRequest> = {}): MsrpRequest {
  const [c] = chunkMessage({ body: Buffer.from(body), contentType: "message/cpim" }, [ours], [peer]);
  return { ...(c as MsrpRequest), ...extra };
}

test("a whole SEND: 200, delivered; Success-Report yes adds a success REPORT to the peer", () => {
  const { s, got } = session();
  assert.deepEqual(s.receive(send("hello")), { respond: 200, reports: [] });
  assert.equal(got[0]?.body.toString(), "hello");
  const withReport = s.receive(send("again", { successReport: "yes" }));
  assert.equal(withReport.respond, 200);
  assert.equal(withReport.reports.length, 1);
  assert.equal(withReport.reports[0]?.method, "REPORT");
  assert.deepEqual(withReport.reports[0]?.toPath, [peer]);
  assert.deepEqual(withReport.reports[0]?.fromPath, [ours]);
});

test("Failure-Report partial: no 200, but errors; no: nothing at all", () => {
  const { s } = session({ acceptTypes: ["message/cpim"] });
  assert.deepEqual(s.receive(send("x", { failureReport: "partial" })), { reports: [] });
  assert.deepEqual(s.receive(send("x", { failureReport: "partial", contentType: "text/html" })), { respond: 415, reports: [] });
  assert.deepEqual(s.receive(send("x", { failureReport: "no", contentType: "text/html" })), { reports: [] });
});

test("a=accept-types: wildcards and parameters", () => {
  const { s } = session({ acceptTypes: ["message/cpim", "application/*"] });
  assert.equal(s.receive(send("x", { contentType: "Message/CPIM; charset=utf-8" })).respond, 200);
  assert.equal(s.receive(send("x", { contentType: "application/im-iscomposing+xml" })).respond, 200);
  assert.equal(s.receive(send("x", { contentType: "text/plain" })).respond, 415);
});

test("REPORT: emitted, never answered; unknown method: 501; closed session: 481", () => {
  const { s, reports } = session();
  const report: MsrpRequest = { ...send("x"), method: "REPORT", status: { namespace: "000", code: 200 } };
  delete report.body;
  assert.deepEqual(s.receive(report), { reports: [] });
  assert.equal(reports.length, 1);
  assert.equal(s.receive({ ...send("x"), method: "NICKNAME" }).respond, 501);
  s.close("BYE");
  assert.deepEqual(s.receive(send("late")), { respond: 481, reports: [] });
});

test("verifyFromPath: only the expected sender is from the peer", () => {
  assert.ok(session().s.isFromPeer({ fromPath: [other] }));
  const strict = session({ verifyFromPath: true }).s;
  assert.ok(strict.isFromPeer({ fromPath: [parseMsrpUri("msrp://relay:1/r;tcp"), peer] }));
  assert.ok(!strict.isFromPeer({ fromPath: [other] }));
});

test("closing releases the session's counters and buffers; the table forgets it", () => {
  const { s, resources } = session();
  const table = new MsrpSessionTable();
  table.add(s);
  const [first] = chunkMessage({ body: Buffer.alloc(5000), contentType: "message/cpim" }, [ours], [peer], 1000);
  s.receive(first as MsrpRequest);
  assert.deepEqual(resources.snapshot(), { openSockets: 0, sessions: 1, timers: 0, bufferedBytes: 1000 });
  s.close();
  assert.deepEqual(resources.snapshot(), { openSockets: 0, sessions: 0, timers: 0, bufferedBytes: 0 });
  assert.equal(table.get(s.id), undefined);
  assert.equal(table.size, 0);
});
