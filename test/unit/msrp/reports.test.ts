import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import type { MsrpRequest } from "../../../src/msrp/frame.js";
import { MsrpParser } from "../../../src/msrp/parser.js";
import {
  buildReport,
  failureReportFor,
  responsePolicy,
  shouldRespond,
  successReportFor,
  wantsFailureReport,
  wantsSuccessReport,
} from "../../../src/msrp/reports.js";
import { serializeFrame } from "../../../src/msrp/serializer.js";
import { answerSetup, connectionRole } from "../../../src/msrp/setup.js";
import { REPORTED_SEND, SUCCESS_REPORT } from "./rfc-examples.js";

function parse(bytes: Buffer): MsrpRequest {
  const ev = new MsrpParser().push(bytes)[0];
  assert.ok(ev?.type === "frame" && ev.frame.kind === "request");
  return ev.frame;
}

test("RFC 4975 7.1.1: Failure-Report decides the responses a SEND gets", () => {
  const send = (failureReport?: "yes" | "no" | "partial") => (failureReport ? { method: "SEND", failureReport } : { method: "SEND" });
  assert.equal(responsePolicy(send()), "all");
  assert.equal(responsePolicy(send("yes")), "all");
  assert.equal(responsePolicy(send("partial")), "errors-only");
  assert.equal(responsePolicy(send("no")), "none");
  assert.equal(shouldRespond(send("partial"), 200), false);
  assert.equal(shouldRespond(send("partial"), 413), true);
  assert.equal(shouldRespond(send("no"), 481), false);
  assert.equal(shouldRespond(send(), 200), true);
});

test("RFC 4975 7.1.2: REPORTs are never answered; AUTH and unknown methods follow Failure-Report", () => {
  assert.equal(responsePolicy({ method: "REPORT" }), "none");
  assert.equal(shouldRespond({ method: "REPORT" }, 481), false);
  assert.equal(responsePolicy({ method: "AUTH" }), "all");
  assert.equal(shouldRespond({ method: "FOO" }, 501), true);
});

test("RFC 4975 7.1.3: success REPORT after the whole message when Success-Report is yes", () => {
  const send = parse(REPORTED_SEND);
  assert.ok(wantsSuccessReport(send));
  assert.ok(!wantsSuccessReport({ method: "SEND" }));
  const local = send.toPath[0] ?? assert.fail();
  const report = successReportFor(
    { messageId: "12339sdqwer", byteRange: { start: 1, end: 106, total: 106 }, fromPath: send.fromPath, successReport: "yes" },
    local,
  );
  assert.ok(report);
  // Same frame as RFC 4975 11.5 but for the (random) transaction-id.
  const expected = parse(SUCCESS_REPORT);
  assert.deepEqual({ ...report, transactionId: expected.transactionId }, expected);
  assert.equal(serializeFrame({ ...report, transactionId: expected.transactionId }).toString(), SUCCESS_REPORT.toString());
  assert.equal(
    successReportFor({ messageId: "x", byteRange: report.byteRange as never, fromPath: send.fromPath, successReport: "no" }, local),
    undefined,
  );
});

test("RFC 4975 7.1.4: failure REPORTs unless Failure-Report is no (RJ-4 failure delivery notification)", () => {
  const send = parse(REPORTED_SEND); // Failure-Report: no
  const local = send.toPath[0] ?? assert.fail();
  assert.ok(!wantsFailureReport(send));
  assert.equal(failureReportFor(send, 408, local), undefined);
  for (const fr of ["yes", "partial", undefined] as const) {
    const s: MsrpRequest = { ...send, failureReport: fr as never };
    if (fr === undefined) delete s.failureReport;
    const r = failureReportFor(s, 408, local);
    assert.ok(r, String(fr));
    assert.equal(r.method, "REPORT");
    assert.deepEqual(r.status, { namespace: "000", code: 408, comment: "Request Timeout" });
    assert.deepEqual(r.toPath, send.fromPath);
    assert.deepEqual(r.byteRange, send.byteRange);
    assert.equal(r.successReport, undefined);
    assert.equal(r.failureReport, undefined);
  }
  assert.equal(failureReportFor({ ...send, failureReport: "yes" }, 200, local), undefined);
});

test("buildReport: Status with and without comment", () => {
  const base = { toPath: [], fromPath: [], messageId: "m", byteRange: { start: 1, end: 1, total: 1 } };
  assert.deepEqual(buildReport({ ...base, code: 413, comment: null }).status, { namespace: "000", code: 413 });
  assert.equal(buildReport({ ...base, code: 481 }).status?.comment, "Session Does Not Exist");
});

test("RFC 6135 a=setup: connectionRole", () => {
  assert.equal(connectionRole(undefined, undefined, true), "active"); // RFC 4975 default: offerer connects
  assert.equal(connectionRole(undefined, undefined, false), "passive");
  assert.equal(connectionRole("actpass", "passive", true), "active");
  assert.equal(connectionRole("actpass", "active", true), "passive");
  assert.equal(connectionRole("actpass", undefined, true), "active");
  assert.equal(connectionRole("active", "actpass", false), "active");
  assert.equal(connectionRole("passive", "actpass", false), "passive");
  assert.equal(connectionRole(undefined, "actpass", false), "passive");
  assert.equal(connectionRole(undefined, "passive", false), "active");
  assert.throws(
    () => connectionRole("active", "active", true),
    (e) => e instanceof CpmError && e.code === "CPM_ERR_MSRP_SETUP",
  );
  assert.throws(() => connectionRole("passive", "passive", false), CpmError);
  assert.throws(() => connectionRole("holdconn", "actpass", false), CpmError);
});

test("RFC 6135 a=setup: what an answerer puts in its answer", () => {
  assert.equal(answerSetup("actpass"), "active");
  assert.equal(answerSetup("actpass", "passive"), "passive");
  assert.equal(answerSetup("active"), "passive");
  assert.equal(answerSetup("passive"), "active");
  assert.equal(answerSetup(undefined), "passive");
});
