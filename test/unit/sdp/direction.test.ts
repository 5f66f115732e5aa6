import assert from "node:assert/strict";
import { test } from "node:test";
import { withDirection } from "../../../src/sdp/direction.js";
import { SDP_OFFER } from "../../fixtures/sip.js";

const directions = (sdp: string) => sdp.split("\r\n").filter((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l));

test("DD-6: the direction attribute is set on every media, the session-level one removed, the rest kept", () => {
  const offer = SDP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n").replace("a=sendrecv", "a=inactive");
  const out = withDirection(offer, "sendrecv");
  assert.deepEqual(directions(out), ["a=sendrecv"]);
  // same lines as the original offer (sdp-transform writes the direction before the MSRP attributes)
  const lines = (sdp: string) => sdp.split("\r\n").sort();
  assert.deepEqual(lines(out), lines(SDP_OFFER));
});

test("DD-6: an SDP without direction attribute gets one; bad SDP is CPM_ERR_BAD_SDP", () => {
  const out = withDirection(SDP_OFFER.replace("a=sendrecv\r\n", ""), "sendrecv");
  assert.deepEqual(directions(out), ["a=sendrecv"]);
  for (const bad of ["", "  \r\n", "v=0\r\ns=-\r\n"]) {
    assert.throws(
      () => withDirection(bad, "sendrecv"),
      (e: Error & { code?: string }) => e.code === "CPM_ERR_BAD_SDP",
      JSON.stringify(bad),
    );
  }
});
