// The CF's session refresh on a group session whose client leg is gone (src/procedures/session-refresh.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { answerRefresh, type RefreshFacts } from "../../../src/procedures/session-refresh.js";

const facts = (extra: Partial<RefreshFacts> = {}): RefreshFacts => ({
  method: "UPDATE",
  fromNetwork: true,
  clientLegGone: true,
  offerSdp: undefined,
  sessionExpires: "1800;refresher=uac",
  supportsTimer: true,
  ...extra,
});

test("DD-12 RFC 4028: the CF's UPDATE for an absent client is answered by the PF, the CF staying the refresher", () => {
  assert.deepEqual(answerRefresh(facts()), {
    kind: "answer",
    headers: [
      ["Session-Expires", "1800;refresher=uac"],
      ["Require", "timer"],
    ],
    answerOffer: false,
  });
  assert.deepEqual(
    answerRefresh(facts({ supportsTimer: false })),
    { kind: "answer", headers: [], answerOffer: false },
    "RFC 4028 9: no timer, no Require",
  );
  assert.deepEqual(answerRefresh(facts({ sessionExpires: "junk" })), { kind: "answer", headers: [], answerOffer: false });
});

test("DD-12 RFC 4028: a re-INVITE with an offer is answered on the CF leg; one without an offer is refused 488 (the PF has no offer of its own to make)", () => {
  assert.deepEqual(answerRefresh(facts({ method: "INVITE", offerSdp: "v=0\r\n", sessionExpires: "90" })), {
    kind: "answer",
    headers: [
      ["Session-Expires", "90;refresher=uac"],
      ["Require", "timer"],
    ],
    answerOffer: true,
  });
  assert.deepEqual(answerRefresh(facts({ method: "INVITE" })), { kind: "refuse", status: 488, reason: "Not Acceptable Here" });
});

test("DD-12: the client's own requests, and the CF's while the client is there, are relayed as before", () => {
  assert.equal(answerRefresh(facts({ fromNetwork: false })).kind, "relay");
  assert.equal(answerRefresh(facts({ clientLegGone: false })).kind, "relay");
});
