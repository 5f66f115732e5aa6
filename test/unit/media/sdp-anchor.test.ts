import assert from "node:assert/strict";
import { test } from "node:test";
import { anchorSdp } from "../../../src/media/sdp-anchor.js";

const OFFER = [
  "v=0",
  "o=cf 2890844526 2890844526 IN IP4 192.0.2.10",
  "s=-",
  "c=IN IP4 192.0.2.10",
  "t=0 0",
  "m=message 7394 TCP/MSRP *",
  "a=accept-types:message/cpim application/im-iscomposing+xml",
  "a=accept-wrapped-types:text/plain message/imdn+xml",
  "a=path:msrp://relay.example.net:2855/r1;tcp msrp://192.0.2.10:7394/cf1;tcp",
  "a=setup:actpass",
  "a=sendrecv",
  "",
].join("\r\n");

const ANCHOR = { host: "127.0.0.1", port: 9000, sessionId: "pf-leg-b-7Qx", tls: false };

test("SDP anchoring: a=path, port and c= point at the PF; MSRP attributes pass unchanged", () => {
  const r = anchorSdp(OFFER, ANCHOR, "offer");
  assert.deepEqual(r.peerPath, ["msrp://relay.example.net:2855/r1;tcp", "msrp://192.0.2.10:7394/cf1;tcp"]);
  assert.equal(r.peerSetup, "actpass");
  assert.match(r.sdp, /\r\nm=message 9000 TCP\/MSRP \*\r\n/);
  assert.match(r.sdp, /\r\na=path:msrp:\/\/127\.0\.0\.1:9000\/pf-leg-b-7Qx;tcp\r\n/);
  assert.match(r.sdp, /\r\nc=IN IP4 127\.0\.0\.1\r\n/);
  assert.doesNotMatch(r.sdp, /192\.0\.2\.10/, "no address of the other leg leaks");
  // clients drop IMDNs when message/imdn+xml disappears from accept-wrapped-types
  assert.match(r.sdp, /\r\na=accept-wrapped-types:text\/plain message\/imdn\+xml\r\n/);
  assert.match(r.sdp, /\r\na=accept-types:message\/cpim application\/im-iscomposing\+xml\r\n/);
  assert.match(r.sdp, /\r\na=setup:actpass\r\n/);
  assert.match(r.sdp, /\r\na=sendrecv\r\n/);
});

test("SDP anchoring: answers pick the opposite role of the offer (RFC 6135), TLS uses msrps", () => {
  const r = anchorSdp(OFFER.replace("a=setup:actpass", "a=setup:passive"), { ...ANCHOR, tls: true }, "answer", "active");
  assert.equal(r.localSetup, "passive");
  assert.match(r.sdp, /m=message 9000 TCP\/TLS\/MSRP \*/);
  assert.match(r.sdp, /a=path:msrps:\/\/127\.0\.0\.1:9000\/pf-leg-b-7Qx;tcp/);
  assert.equal(anchorSdp(OFFER, ANCHOR, "answer", "actpass").localSetup, "active");
});

test("SDP anchoring: unusable SDP is refused with CPM_ERR_BAD_SDP / CPM_ERR_MSRP_URI", () => {
  const code = (c: string) => (e: Error & { code?: string }) => e.code === c;
  assert.throws(() => anchorSdp("", ANCHOR, "offer"), code("CPM_ERR_BAD_SDP"));
  assert.throws(
    () => anchorSdp(OFFER.replace("m=message 7394 TCP/MSRP *", "m=audio 7394 RTP/AVP 0"), ANCHOR, "offer"),
    code("CPM_ERR_BAD_SDP"),
  );
  assert.throws(() => anchorSdp(OFFER.replace(/a=path:[^\r]*\r\n/, ""), ANCHOR, "offer"), code("CPM_ERR_BAD_SDP"));
  assert.throws(() => anchorSdp(OFFER.replace("msrp://192.0.2.10:7394/cf1;tcp", "http://x"), ANCHOR, "offer"), code("CPM_ERR_MSRP_URI"));
});
