import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import { formatMsrpPath, formatMsrpUri, msrpUriEquals, parseMsrpPath, parseMsrpUri, tryParseMsrpUri } from "../../../src/msrp/uri.js";

test("RFC 4975 9: msrp://host:port/session-id;tcp parses and formats back", () => {
  const text = "msrp://atlanta.example.com:7654/jshA7weztas;tcp";
  const u = parseMsrpUri(text);
  assert.deepEqual(u, { scheme: "msrp", host: "atlanta.example.com", port: 7654, sessionId: "jshA7weztas", transport: "tcp", params: [] });
  assert.equal(formatMsrpUri(u), text);
});

test("msrps, IPv4, IPv6 literal, parameters, session-id with + = / chars", () => {
  for (const text of [
    "msrps://172.20.166.68:36152/1465906189109;tcp",
    "msrp://[2001:db8::1]:2855/a+b=c/d;tcp",
    "msrp://host.example:1/s-._~;tcp;foo=bar;flag",
    "msrps://alice@intra.example.com;tcp",
  ]) {
    assert.equal(formatMsrpUri(parseMsrpUri(text)), text);
  }
  assert.equal(parseMsrpUri("msrp://[::1]:9/x;tcp").host, "[::1]");
});

test("scheme is case-insensitive on input and written lower-case", () => {
  assert.equal(parseMsrpUri("MSRPS://h:1/s;tcp").scheme, "msrps");
});

test("RFC 4975 6.1: host case-insensitive, session-id case-sensitive, ports must match", () => {
  const a = parseMsrpUri("msrp://Bob.Example.COM:8888/9di4eae923wzd;tcp");
  assert.ok(msrpUriEquals(a, parseMsrpUri("msrp://bob.example.com:8888/9di4eae923wzd;TCP")));
  assert.ok(!msrpUriEquals(a, parseMsrpUri("msrp://bob.example.com:8888/9DI4EAE923WZD;tcp")));
  assert.ok(!msrpUriEquals(a, parseMsrpUri("msrp://bob.example.com/9di4eae923wzd;tcp")));
  assert.ok(!msrpUriEquals(a, parseMsrpUri("msrps://bob.example.com:8888/9di4eae923wzd;tcp")));
  assert.ok(msrpUriEquals(a, parseMsrpUri("msrp://bob.example.com:8888/9di4eae923wzd;tcp;x=y")));
});

test("paths: space-separated URIs, relays first", () => {
  const text = "msrp://relay.example.com:2855/r1;tcp msrp://bob.example.com:8888/s2;tcp";
  const p = parseMsrpPath(text);
  assert.equal(p.length, 2);
  assert.equal(p[1]?.sessionId, "s2");
  assert.equal(formatMsrpPath(p), text);
});

test("bad URIs throw CPM_ERR_MSRP_URI (tryParse returns undefined)", () => {
  for (const text of [
    "",
    "sip:bob@example.com",
    "http://h:1/s;tcp",
    "msrp://h:1/s",
    "msrp://h:99999/s;tcp",
    "msrp://h:1/s%41;tcp",
    "msrp://:1/s;tcp",
    "msrp://h:1/;tcp",
    "msrp://h:1/s;t-p",
    "msrp://h:1/s;tcp;=x",
    "msrp://[::1/s;tcp",
    "msrp://h h:1/s;tcp",
  ]) {
    assert.throws(
      () => parseMsrpUri(text),
      (e) => e instanceof CpmError && e.code === "CPM_ERR_MSRP_URI",
      text,
    );
    assert.equal(tryParseMsrpUri(text), undefined);
  }
  assert.throws(() => parseMsrpPath("   "), CpmError);
});
