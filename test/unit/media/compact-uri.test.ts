import assert from "node:assert/strict";
import { test } from "node:test";
import { compactPath, compactUri } from "../../../src/media/compact-uri.js";
import { formatMsrpUri, msrpUriEquals, parseMsrpPath, parseMsrpUri } from "../../../src/msrp/uri.js";

test("media plane compact URIs: the copy is equal (RFC 4975 6.1) and formats the same", () => {
  for (const text of [
    "msrp://127.0.0.1:2855/abcDEF0123456789xyzW;tcp",
    "msrps://alice@relay.example.net:12000/s1=+/x;tcp;foo=bar;flag",
    "msrp://[2001:db8::1]:9/s;tcp",
  ]) {
    const uri = parseMsrpUri(text);
    const copy = compactUri(uri);
    assert.ok(msrpUriEquals(copy, uri), text);
    assert.equal(formatMsrpUri(copy), formatMsrpUri(uri));
    assert.deepEqual(copy, uri);
  }
  const path = parseMsrpPath("msrp://relay.example.net:2855/r1;tcp msrp://192.0.2.10:7394/cf1;tcp");
  assert.deepEqual(compactPath(path), path);
});

test("media plane compact URIs: repeated hosts and transports are one shared string", () => {
  const a = compactUri(parseMsrpUri("msrp://cf.example.net:2855/aaaaaaaaaaaaaaaaaaaa;tcp"));
  const b = compactUri(parseMsrpUri("MSRP://cf.example.net:2855/bbbbbbbbbbbbbbbbbbbb;tcp"));
  assert.equal(a.host, b.host);
  assert.equal(a.scheme, "msrp");
  assert.equal(b.scheme, "msrp");
  assert.notEqual(a.sessionId, b.sessionId);
});
