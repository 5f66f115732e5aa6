// The CF's session refresh on a group session whose client leg is gone (src/procedures/session-refresh.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { answerRefresh, type RefreshFacts } from "../../../src/procedures/session-refresh.js";

const facts = (extra: Partial<RefreshFacts> = {}): RefreshFacts => ({
  method: "UPDATE",
  fromNetwork: true,
  fromFurtherDevice: false,
  clientLegGone: true,
  offerSdp: undefined,
  sessionExpires: "1800;refresher=uac",
  supportsTimer: true,
  cseq: 12,
  lastCseq: 11,
  ...extra,
});

test("DD-12 RFC 3261 12.2.2: a CF request with a CSeq below the last one the PF knows is out of order: 500; the same CSeq again (a retransmission) is answered as before", () => {
  assert.deepEqual(answerRefresh(facts({ cseq: 9, lastCseq: 11 })), { kind: "refuse", status: 500, reason: "Server Internal Error" });
  assert.equal(answerRefresh(facts({ cseq: 11, lastCseq: 11 })).kind, "answer");
  assert.equal(answerRefresh(facts({ cseq: 1, lastCseq: undefined })).kind, "answer", "nothing known: nothing to order");
  assert.equal(answerRefresh(facts({ cseq: 9, lastCseq: 11, clientLegGone: false })).kind, "relay", "the client's to answer (and order)");
});

test("DD-12 RFC 4028: the CF's UPDATE for an absent client is answered by the PF, the CF staying the refresher", () => {
  assert.deepEqual(answerRefresh(facts()), {
    kind: "answer",
    headers: [
      ["Session-Expires", "1800;refresher=uac"],
      ["Require", "timer"],
    ],
    sdp: "none",
  });
  assert.deepEqual(
    answerRefresh(facts({ supportsTimer: false })),
    { kind: "answer", headers: [], sdp: "none" },
    "RFC 4028 9: no timer, no Require",
  );
  assert.deepEqual(answerRefresh(facts({ sessionExpires: "junk" })), { kind: "answer", headers: [], sdp: "none" });
});

test("DD-12 RFC 4028: a re-INVITE with an offer is answered on the CF leg; one without an offer gets the CF leg as it is as the offer (RFC 3261 14.2, RFC 3264 8)", () => {
  assert.deepEqual(answerRefresh(facts({ method: "INVITE", offerSdp: "v=0\r\n", sessionExpires: "90" })), {
    kind: "answer",
    headers: [
      ["Session-Expires", "90;refresher=uac"],
      ["Require", "timer"],
    ],
    sdp: "answer",
  });
  assert.deepEqual(answerRefresh(facts({ method: "INVITE", supportsTimer: false })), { kind: "answer", headers: [], sdp: "offer" });
  assert.deepEqual(
    answerRefresh(facts({ method: "UPDATE", offerSdp: "v=0\r\n", supportsTimer: false })),
    { kind: "answer", headers: [], sdp: "answer" },
    "an UPDATE's offer is for the executor to answer or refuse",
  );
});

test("DD-12: the client's own requests, and the CF's while the client is there, are relayed as before", () => {
  assert.equal(answerRefresh(facts({ fromNetwork: false })).kind, "relay");
  assert.equal(answerRefresh(facts({ clientLegGone: false })).kind, "relay");
});

test("BYE-B7 RFC 4028: a further device of a forked INVITE refreshing its own dialog (the PF's) is answered by the PF, whether or not the first device is there; it stays the refresher", () => {
  const device = { fromNetwork: false, fromFurtherDevice: true, clientLegGone: false };
  assert.deepEqual(answerRefresh(facts({ ...device, method: "INVITE", offerSdp: "v=0\r\n" })), {
    kind: "answer",
    headers: [
      ["Session-Expires", "1800;refresher=uac"],
      ["Require", "timer"],
    ],
    sdp: "answer",
  });
  assert.deepEqual(answerRefresh(facts({ ...device, method: "INVITE" })).kind, "answer");
  assert.deepEqual(answerRefresh(facts({ ...device, method: "INVITE", supportsTimer: false })), {
    kind: "answer",
    headers: [],
    sdp: "offer",
  });
  assert.deepEqual(answerRefresh(facts({ ...device, method: "UPDATE" })), {
    kind: "answer",
    headers: [
      ["Session-Expires", "1800;refresher=uac"],
      ["Require", "timer"],
    ],
    sdp: "none",
  });
  assert.equal(
    answerRefresh(facts({ ...device, fromFurtherDevice: false })).kind,
    "relay",
    "the first device's own: the CF's dialog, relayed",
  );
});
