import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  addressUri,
  CPIM_HEADERS_URN,
  contentHeader,
  cpimHeader,
  cpimHeaders,
  IMDN_URN,
  imdnMessageId,
  mediaType,
  parseCpim,
  parseHeaderBlock,
} from "../../../src/cpim/cpim.js";
import { CpmError } from "../../../src/errors/catalogue.js";

const crlf = (s: string) => Buffer.from(s.replace(/\n/g, "\r\n"), "utf8");

// A group chat message as RCS clients send it (cpm-facts 3.7; Orange CMS fixture).
const CHAT = crlf(
  [
    "From: Bob <tel:+16135551210>",
    "To: <sip:anonymous@anonymous.invalid>",
    "NS: imdn <urn:ietf:params:imdn>",
    "DateTime: 2016-06-14T12:09:49.000+02:00",
    "imdn.Message-ID: Ms7fZ1x9aQ",
    "imdn.Disposition-Notification: positive-delivery, display",
    "",
    "Content-type: text/plain;charset=UTF-8",
    "Content-length: 12",
    "",
    "Hello wörld\n",
  ].join("\n"),
);

test("reads the CPIM headers, the imdn namespace and the encapsulated MIME entity", () => {
  const m = parseCpim(CHAT);
  assert.equal(cpimHeader(m, "From"), "Bob <tel:+16135551210>");
  assert.equal(addressUri(cpimHeader(m, "From")), "tel:+16135551210");
  assert.equal(addressUri(cpimHeader(m, "To")), "sip:anonymous@anonymous.invalid");
  assert.equal(imdnMessageId(m), "Ms7fZ1x9aQ");
  assert.equal(cpimHeader(m, "Disposition-Notification", IMDN_URN), "positive-delivery, display");
  assert.equal(m.namespaces.get("imdn"), IMDN_URN);
  assert.equal(mediaType(contentHeader(m, "Content-Type")), "text/plain");
  assert.equal(Buffer.from(m.content).toString("utf8"), "Hello wörld\r\n");
  // the content is a view at its offset in the original bytes
  assert.deepEqual(Buffer.from(m.content), CHAT.subarray(m.contentOffset));
});

test("a header prefix counts only through its NS binding (RFC 3862 3.4)", () => {
  const body = crlf(
    [
      "From: <sip:a@example.com>",
      "NS: x <urn:ietf:params:imdn>",
      "NS: imdn <urn:example:not-imdn>",
      "imdn.Message-ID: wrong",
      "x.Message-ID: right",
      "",
      "Content-Type: message/imdn+xml",
      "",
      "<imdn/>",
    ].join("\n"),
  );
  const m = parseCpim(body);
  assert.equal(imdnMessageId(m), "right");
  assert.deepEqual(cpimHeaders(m, "Message-ID", "urn:example:not-imdn"), ["wrong"]);
  // an unbound prefix resolves to no namespace at all
  const unbound = parseCpim(crlf("From: <sip:a@b>\nimdn.Message-ID: x\n\nContent-Type: text/plain\n\nhi"));
  assert.equal(imdnMessageId(unbound), undefined);
  assert.equal(cpimHeader(unbound, "From", CPIM_HEADERS_URN), "<sip:a@b>");
});

test("CPIM header parameters (;lang=) are kept apart from the value; bare LF line ends are accepted", () => {
  const m = parseCpim(Buffer.from("Subject:;lang=fr Bonjour\nFrom: <sip:a@b>\n\nContent-Type: text/plain\n\nx", "utf8"));
  assert.equal(cpimHeader(m, "Subject"), "Bonjour");
  assert.deepEqual(m.headers[0]?.params, ["lang=fr"]);
  assert.equal(Buffer.from(m.content).toString(), "x");
});

test("MIME headers of the entity may be folded, CPIM headers may not", () => {
  const m = parseCpim(crlf("From: <sip:a@b>\n\nContent-Type: text/plain;\n charset=UTF-8\n\nx"));
  assert.equal(contentHeader(m, "content-type"), "text/plain; charset=UTF-8");
  assert.throws(
    () => parseCpim(crlf("From: <sip:a@b>\n folded\n\nContent-Type: text/plain\n\nx")),
    (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_BAD_CPIM" && /continuation line/.test(e.detail),
  );
});

test("malformed CPIM gives CPM_ERR_BAD_CPIM with the reason, never another error", () => {
  const cases: [string | Buffer, RegExp][] = [
    ["", /no blank line/],
    ["\r\n\r\nContent-Type: text/plain\r\n\r\nx", /empty/],
    ["From: <sip:a@b>\r\nTo: <sip:c@d>", /no blank line/],
    ["From: <sip:a@b>\r\n\r\nContent-Type: text/plain", /no blank line/],
    ["no colon here\r\n\r\n\r\n", /without a name/],
    [": empty name\r\n\r\n\r\n", /without a name/],
    ["Bad Name: x\r\n\r\n\r\n", /bad header name/],
    ["From: a\0b\r\n\r\n\r\n", /CR or NUL/],
    ["From: a\rb\r\n\r\n\r\n", /CR or NUL/],
    [Buffer.from([0x46, 0x3a, 0x20, 0xc3, 0x28, 0x0d, 0x0a, 0x0d, 0x0a, 0x0d, 0x0a]), /not UTF-8/],
    ["NS: imdn urn:no-brackets\r\n\r\n\r\n", /bad NS header/],
    [`From: ${"x".repeat(70_000)}\r\n\r\n\r\n`, /longer than 65536 bytes/],
  ];
  for (const [input, re] of cases) {
    const buf = typeof input === "string" ? Buffer.from(input, "utf8") : input;
    assert.throws(
      () => parseCpim(buf),
      (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_BAD_CPIM" && re.test(e.detail),
      `input ${JSON.stringify(buf.toString("utf8").slice(0, 40))}`,
    );
  }
  assert.throws(() => parseCpim(CHAT, { maxHeaderBytes: 40 }), /longer than 40 bytes/);
});

test("more than 256 headers are refused", () => {
  const many = `${Array.from({ length: 300 }, (_, i) => `H${i}: v`).join("\r\n")}\r\n\r\n\r\n`;
  assert.throws(() => parseCpim(Buffer.from(many)), /more than 256 headers/);
});

test("parseHeaderBlock stops at the blank line and reports where the rest starts", () => {
  const buf = Buffer.from("A: 1\r\nB:2\r\n\r\nrest", "utf8");
  const b = parseHeaderBlock(buf, 0, { what: "t", folding: true });
  assert.deepEqual(
    b.fields.map((f) => [f.name, f.value]),
    [
      ["A", "1"],
      ["B", "2"],
    ],
  );
  assert.equal(buf.subarray(b.end).toString(), "rest");
});

test("addressUri and mediaType", () => {
  assert.equal(addressUri('"Alice B" <sip:alice@example.com>'), "sip:alice@example.com");
  assert.equal(addressUri("tel:+1234"), "tel:+1234");
  assert.equal(addressUri("Alice Smith"), undefined);
  assert.equal(addressUri(undefined), undefined);
  assert.equal(mediaType(" Message/IMDN+XML ; charset=x"), "message/imdn+xml");
  assert.equal(mediaType(""), undefined);
});

test("property: any bytes either parse or give CPM_ERR_BAD_CPIM", () => {
  const prefix = fc.constantFrom("", "From: <sip:a@b>\r\n", "NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: x\r\n\r\n");
  fc.assert(
    fc.property(prefix, fc.uint8Array({ maxLength: 300 }), (p, tail) => {
      const buf = Buffer.concat([Buffer.from(p), tail]);
      try {
        const m = parseCpim(buf);
        assert.ok(m.contentOffset <= buf.length);
      } catch (e) {
        assert.ok(e instanceof CpmError && e.code === "CPM_ERR_BAD_CPIM", String(e));
      }
    }),
    { numRuns: 2000 },
  );
});

/** parseHeaderBlock read line by line (each line checked for CR, NUL, UTF-8 before the next): what the block reader must match. */
function headerBlockByLine(
  buf: Uint8Array,
  start: number,
  opts: { what: string; folding: boolean; cpimParams?: boolean; maxBytes?: number },
) {
  const fail = (why: string): never => {
    throw new CpmError("CPM_ERR_BAD_CPIM", `${opts.what}: ${why}`);
  };
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const limit = Math.min(buf.length, start + (opts.maxBytes ?? 65536));
  const raw: string[] = [];
  let pos = start;
  for (;;) {
    let nl = -1;
    for (let i = pos; i < limit; i++) {
      if (buf[i] === 0x0a) {
        nl = i;
        break;
      }
    }
    if (nl < 0) fail(limit < buf.length ? `header block longer than ${opts.maxBytes ?? 65536} bytes` : "no blank line after the headers");
    const lineEnd = nl > pos && buf[nl - 1] === 0x0d ? nl - 1 : nl;
    const line = Buffer.from(buf.buffer, buf.byteOffset + pos, lineEnd - pos);
    pos = nl + 1;
    if (line.length === 0) break;
    if (line.includes(0x0d) || line.includes(0x00)) fail("CR or NUL inside a header line");
    let text = "";
    try {
      text = utf8.decode(line);
    } catch {
      fail("header line is not UTF-8");
    }
    if (text[0] === " " || text[0] === "\t") {
      if (!opts.folding) fail("continuation line (CPIM headers are not folded, RFC 3862 3.2)");
      if (raw.length === 0) fail("continuation line before the first header");
      raw[raw.length - 1] += ` ${text.trim()}`;
      continue;
    }
    if (raw.length >= 256) fail("more than 256 headers");
    raw.push(text);
  }
  const fields = raw.map((text) => {
    const colon = text.indexOf(":");
    if (colon <= 0) fail(`header line without a name: ${JSON.stringify(text.slice(0, 40))}`);
    const name = text.slice(0, colon);
    if (!/^[!-9;-~]+$/.test(name)) fail(`bad header name ${JSON.stringify(name.slice(0, 40))}`);
    let rest = text.slice(colon + 1);
    const params: string[] = [];
    if (opts.cpimParams) {
      for (let m = /^;([^;\s]+)/.exec(rest); m; m = /^;([^;\s]+)/.exec(rest)) {
        params.push(m[1] as string);
        rest = rest.slice(m[0].length);
      }
    }
    return { name, value: rest.trim(), params };
  });
  return { fields, end: pos };
}

function outcome(f: () => unknown): unknown {
  try {
    return f();
  } catch (e) {
    return e instanceof CpmError ? `${e.code}: ${e.detail}` : `other: ${String(e)}`;
  }
}

test("property: a header block reads the same whole as line by line (faults, their order, BOMs, folding, limits)", () => {
  const piece = fc.oneof(
    fc.constantFrom(
      "From: <sip:a@b>",
      "To: x",
      "NS: imdn <urn:ietf:params:imdn>",
      "imdn.Message-ID: 1",
      "Content-Type: text/plain",
      "X;;y: z",
    ),
    fc.constantFrom("\r\n", "\n", "\r", "\0", " folded", "\t", ":", "é", "\ufeff", "Bad Name: 1", ";lang=fr v"),
    fc.uint8Array({ maxLength: 4 }).map((b) => Buffer.from(b).toString("latin1")),
  );
  const bytes = (parts: string[], raw: Uint8Array) =>
    Buffer.concat([
      ...parts.map((p) => (/^[\x00-\xff]*$/.test(p) && !/[é\ufeff]/.test(p) ? Buffer.from(p, "latin1") : Buffer.from(p, "utf8"))),
      raw,
    ]);
  fc.assert(
    fc.property(
      fc.array(piece, { maxLength: 24 }),
      fc.uint8Array({ maxLength: 8 }),
      fc.boolean(),
      fc.boolean(),
      fc.constantFrom(undefined, 16, 64),
      fc.nat(3),
      (parts, tail, folding, cpimParams, maxBytes, start) => {
        const buf = bytes([...parts, "\r\n\r\n"], tail);
        const from = Math.min(start, buf.length);
        const opts = { what: "t", folding, cpimParams, ...(maxBytes ? { maxBytes } : {}) };
        const mine = outcome(() => parseHeaderBlock(buf, from, opts));
        assert.deepEqual(
          mine,
          outcome(() => headerBlockByLine(buf, from, opts)),
        );
        // a Uint8Array that is not a Buffer, inside a larger buffer
        const inner = new Uint8Array(new ArrayBuffer(buf.length + 3), 2, buf.length);
        inner.set(buf);
        assert.deepEqual(
          outcome(() => parseHeaderBlock(inner, from, opts)),
          mine,
        );
      },
    ),
    { numRuns: 3000 },
  );
});
