import assert from "node:assert/strict";
import { test } from "node:test";
import { bodyParts, buildMultipart } from "../../../src/sip/multipart.js";

test("multipart/mixed builder (RFC 2046 5.1.1): parts with their headers, parsed back by bodyParts", () => {
  const m = buildMultipart([
    { contentType: "application/sdp", body: "v=0\r\ns=-\r\n" },
    { contentType: "application/resource-lists+xml", headers: [["Content-Disposition", "recipient-list"]], body: "<resource-lists/>" },
  ]);
  assert.equal(m.contentType, "multipart/mixed;boundary=cpm-pf-boundary");
  assert.equal(
    m.body,
    "--cpm-pf-boundary\r\nContent-Type: application/sdp\r\n\r\nv=0\r\ns=-\r\n" +
      "--cpm-pf-boundary\r\nContent-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\n\r\n<resource-lists/>\r\n" +
      "--cpm-pf-boundary--\r\n",
  );
  const parts = bodyParts(m.contentType, Buffer.from(m.body));
  assert.deepEqual(
    parts.map((p) => [p.contentType, p.body.toString()]),
    [
      ["application/sdp", "v=0\r\ns=-"],
      ["application/resource-lists+xml", "<resource-lists/>"],
    ],
  );
  assert.equal(parts[1]?.headers.get("content-disposition"), "recipient-list");
});

test("multipart builder: a boundary that occurs in a part is changed", () => {
  const m = buildMultipart([{ contentType: "text/plain", body: "see --cpm-pf-boundary and --cpm-pf-boundary-1" }]);
  assert.equal(m.contentType, "multipart/mixed;boundary=cpm-pf-boundary-2");
  assert.equal(bodyParts(m.contentType, Buffer.from(m.body))[0]?.body.toString(), "see --cpm-pf-boundary and --cpm-pf-boundary-1");
});
