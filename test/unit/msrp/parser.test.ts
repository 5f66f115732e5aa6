import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { MsrpRequest, MsrpResponse } from "../../../src/msrp/frame.js";
import { MAX_END_LINE_BYTES, type MsrpParseEvent, MsrpParser, type MsrpParserLimits } from "../../../src/msrp/parser.js";
import { serializeFrame } from "../../../src/msrp/serializer.js";
import { formatMsrpUri } from "../../../src/msrp/uri.js";
import {
  ALL_EXAMPLES,
  AUTH_1,
  AUTH_200,
  AUTH_401,
  BASIC_SEND,
  CHUNK_1,
  OVERVIEW_200,
  OVERVIEW_SEND,
  SUCCESS_REPORT,
} from "./rfc-examples.js";

function parseWhole(bytes: Buffer, limits?: Partial<MsrpParserLimits>): MsrpParseEvent[] {
  return new MsrpParser(limits).push(bytes);
}

function parseBytewise(bytes: Buffer, limits?: Partial<MsrpParserLimits>): { events: MsrpParseEvent[]; maxBuffered: number } {
  const p = new MsrpParser(limits);
  const events: MsrpParseEvent[] = [];
  let maxBuffered = 0;
  for (let i = 0; i < bytes.length; i++) {
    events.push(...p.push(bytes.subarray(i, i + 1)));
    maxBuffered = Math.max(maxBuffered, p.bufferedBytes);
  }
  return { events, maxBuffered };
}

function onlyFrame(events: MsrpParseEvent[]) {
  assert.equal(events.length, 1, JSON.stringify(events.map((e) => e.type)));
  const ev = events[0];
  assert.ok(ev && ev.type === "frame", `expected a frame, got ${JSON.stringify(ev)}`);
  return ev.frame;
}

function req(bytes: string): string {
  return bytes.replace(/\n/g, "\r\n");
}

describe("RFC 4975 / RFC 4976 example frames", () => {
  for (const [name, bytes] of Object.entries(ALL_EXAMPLES)) {
    test(`${name}: parses and re-serializes byte-exact`, () => {
      const frame = onlyFrame(parseWhole(bytes));
      assert.equal(serializeFrame(frame).toString("latin1"), bytes.toString("latin1"));
    });
    test(`${name}: byte-at-a-time feeding equals whole feeding`, () => {
      assert.deepEqual(parseBytewise(bytes).events, parseWhole(bytes));
    });
  }

  test("all examples back to back in one push: every frame, in order", () => {
    const stream = Buffer.concat(Object.values(ALL_EXAMPLES));
    const events = parseWhole(stream);
    assert.equal(events.length, Object.keys(ALL_EXAMPLES).length);
    assert.ok(events.every((e) => e.type === "frame"));
    assert.deepEqual(parseBytewise(stream).events, events);
  });

  test("the overview SEND: typed fields", () => {
    const f = onlyFrame(parseWhole(OVERVIEW_SEND)) as MsrpRequest;
    assert.equal(f.kind, "request");
    assert.equal(f.method, "SEND");
    assert.equal(f.transactionId, "a786hjs2");
    assert.equal(formatMsrpUri(f.toPath[0] ?? assert.fail()), "msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp");
    assert.equal(f.toPath[0]?.sessionId, "kjhd37s2s20w2a");
    assert.equal(f.messageId, "87652491");
    assert.deepEqual(f.byteRange, { start: 1, end: 25, total: 25 });
    assert.equal(f.contentType, "text/plain");
    assert.equal(f.body?.toString(), "Hey Bob, are you there?");
    assert.equal(f.continuation, "$");
  });

  test("the 200: response with comment, To-Path = the sender", () => {
    const f = onlyFrame(parseWhole(OVERVIEW_200)) as MsrpResponse;
    assert.equal(f.kind, "response");
    assert.equal(f.code, 200);
    assert.equal(f.comment, "OK");
    assert.equal(f.toPath[0]?.host, "atlanta.example.com");
  });

  test("chunk 1 of 2: Byte-Range 1-*/8 and continuation +", () => {
    const f = onlyFrame(parseWhole(CHUNK_1)) as MsrpRequest;
    assert.deepEqual(f.byteRange, { start: 1, end: "*", total: 8 });
    assert.equal(f.continuation, "+");
  });

  test("REPORT: Status 000 200 OK", () => {
    const f = onlyFrame(parseWhole(SUCCESS_REPORT)) as MsrpRequest;
    assert.equal(f.method, "REPORT");
    assert.deepEqual(f.status, { namespace: "000", code: 200, comment: "OK" });
    assert.equal(f.body, undefined);
  });

  test("RFC 4976 AUTH: unknown method kept, userinfo URIs, extra headers kept in order", () => {
    const auth = onlyFrame(parseWhole(AUTH_1)) as MsrpRequest;
    assert.equal(auth.method, "AUTH");
    assert.equal(auth.toPath[0]?.user, "alice");
    assert.equal(auth.toPath[0]?.sessionId, undefined);
    assert.equal(auth.toPath[0]?.port, undefined);
    const challenge = onlyFrame(parseWhole(AUTH_401)) as MsrpResponse;
    assert.equal(challenge.code, 401);
    assert.equal(challenge.headers[0]?.name, "WWW-Authenticate");
    const ok = onlyFrame(parseWhole(AUTH_200)) as MsrpResponse;
    assert.deepEqual(
      ok.headers.map((h) => h.name),
      ["Use-Path", "Expires"],
    );
  });
});

describe("body framing", () => {
  test("the body may hold fake end-lines of other transactions and our tid without a valid flag", () => {
    const body = "line\r\n-------othertid$\r\n-------a786hjs2X\r\n-------a786hjs2$tail\r\nMSRP zzzz 200 OK\r\n";
    const wire = req(
      `MSRP a786hjs2 SEND\nTo-Path: msrp://b.example.com:1/s1;tcp\nFrom-Path: msrp://a.example.com:2/s2;tcp\nMessage-ID: m1\nContent-Type: text/plain\n\n`,
    );
    const bytes = Buffer.concat([Buffer.from(wire), Buffer.from(body), Buffer.from("\r\n-------a786hjs2$\r\n")]);
    const f = onlyFrame(parseWhole(bytes)) as MsrpRequest;
    assert.equal(f.body?.toString(), body);
    assert.deepEqual(parseBytewise(bytes).events, parseWhole(bytes));
  });

  test("binary body with every byte value, and an empty body", () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const head = Buffer.from(
      req("MSRP abcd SEND\nTo-Path: msrp://h:1/s;tcp\nFrom-Path: msrp://g:2/t;tcp\nContent-Type: application/octet-stream\n\n"),
    );
    const f = onlyFrame(parseWhole(Buffer.concat([head, all, Buffer.from("\r\n-------abcd+\r\n")]))) as MsrpRequest;
    assert.deepEqual(f.body, all);
    assert.equal(f.continuation, "+");
    const empty = onlyFrame(parseWhole(Buffer.concat([head, Buffer.from("\r\n-------abcd#\r\n")]))) as MsrpRequest;
    assert.equal(empty.body?.length, 0);
    assert.equal(empty.continuation, "#");
  });

  test("a stray CRLF between frames is tolerated", () => {
    const events = parseWhole(Buffer.concat([Buffer.from("\r\n"), OVERVIEW_200, Buffer.from("\r\n"), OVERVIEW_200]));
    assert.equal(events.filter((e) => e.type === "frame").length, 2);
  });

  test("header names are case-insensitive; unknown headers are kept as written", () => {
    const f = onlyFrame(
      parseWhole(
        Buffer.from(req("MSRP abcd SEND\nto-path: msrp://h:1/s;tcp\nFROM-PATH: msrp://g:2/t;tcp\nX-Thing:  spaced  \n-------abcd$\n")),
      ),
    ) as MsrpRequest;
    assert.equal(f.toPath[0]?.host, "h");
    assert.deepEqual(f.headers, [{ name: "X-Thing", value: "spaced" }]);
  });
});

describe("transaction-id syntax (4-32 ident chars)", () => {
  for (const [tid, ok] of [
    ["abcd", true],
    ["a.-+%=b", true],
    ["A".repeat(32), true],
    ["abc", false],
    ["A".repeat(33), false],
    [".abc", false],
    ["ab_cd", false],
  ] as const) {
    test(`${JSON.stringify(tid)} ${ok ? "accepted" : "rejected (fatal)"}`, () => {
      const events = parseWhole(
        Buffer.from(req(`MSRP ${tid} 200 OK\nTo-Path: msrp://h:1/s;tcp\nFrom-Path: msrp://g:2/t;tcp\n-------${tid}$\n`)),
      );
      const ev = events[0];
      if (ok) assert.equal(ev?.type, "frame");
      else {
        assert.ok(ev?.type === "error" && ev.error.fatal && ev.error.reason === "start-line");
      }
    });
  }
});

describe("errors and limits: events, never exceptions", () => {
  const head =
    "MSRP t1234 SEND\nTo-Path: msrp://h:1/s;tcp\nFrom-Path: msrp://g:2/t;tcp\nMessage-ID: m1\nByte-Range: 1-*/*\nFailure-Report: yes\n";

  test("body over maxBodyBytes: 413 error naming the limit, then resync to the next frame", () => {
    const big = Buffer.alloc(1000, 0x61);
    const bytes = Buffer.concat([
      Buffer.from(req(`${head}Content-Type: text/plain\n\n`)),
      big,
      Buffer.from("\r\n-------t1234+\r\n"),
      OVERVIEW_200,
    ]);
    for (const feed of [
      (b: Buffer) => parseWhole(b, { maxBodyBytes: 100 }),
      (b: Buffer) => parseBytewise(b, { maxBodyBytes: 100 }).events,
    ]) {
      const events = feed(bytes);
      assert.deepEqual(
        events.map((e) => e.type),
        ["error", "resync", "frame"],
      );
      const err = events[0]?.type === "error" ? events[0].error : assert.fail();
      assert.equal(err.status, 413);
      assert.equal(err.limit, "maxBodyBytes");
      assert.equal(err.reason, "body-too-large");
      assert.equal(err.fatal, false);
      assert.equal(err.transactionId, "t1234");
      assert.equal(err.head?.messageId, "m1");
      assert.equal(err.head?.fromPath?.[0]?.host, "g");
      assert.deepEqual(events[1], { type: "resync", transactionId: "t1234", continuation: "+" });
    }
    const { maxBuffered } = parseBytewise(bytes, { maxBodyBytes: 100 });
    assert.ok(maxBuffered <= 16 * 1024 + 100 + MAX_END_LINE_BYTES, `buffered ${maxBuffered}`);
  });

  test("a body exactly at maxBodyBytes is accepted", () => {
    const body = Buffer.alloc(100, 0x62);
    const bytes = Buffer.concat([Buffer.from(req(`${head}Content-Type: text/plain\n\n`)), body, Buffer.from("\r\n-------t1234$\r\n")]);
    assert.equal(parseWhole(bytes, { maxBodyBytes: 100 })[0]?.type, "frame");
    assert.equal(parseBytewise(bytes, { maxBodyBytes: 100 }).events[0]?.type, "frame");
  });

  test("header block over maxHeaderBytes: 400 error naming the limit, resync, buffer stays bounded", () => {
    const many = Array.from({ length: 50 }, (_, i) => `X-Pad-${i}: ${"p".repeat(40)}\n`).join("");
    const bytes = Buffer.concat([
      Buffer.from(req(`${head}${many}Content-Type: text/plain\n\nbody`)),
      Buffer.from("\r\n-------t1234$\r\n"),
      OVERVIEW_200,
    ]);
    const limits = { maxHeaderBytes: 512 };
    const whole = parseWhole(bytes, limits);
    assert.deepEqual(
      whole.map((e) => e.type),
      ["error", "resync", "frame"],
    );
    const err = whole[0]?.type === "error" ? whole[0].error : assert.fail();
    assert.equal(err.status, 400);
    assert.equal(err.limit, "maxHeaderBytes");
    assert.equal(err.fatal, false);
    const bw = parseBytewise(bytes, limits);
    assert.deepEqual(bw.events, whole);
    assert.ok(bw.maxBuffered <= 512 + 256 * 1024 + MAX_END_LINE_BYTES);
    assert.ok(bw.maxBuffered <= 512, `header-only phase buffered ${bw.maxBuffered}`);
  });

  test("a start line longer than maxHeaderBytes is fatal", () => {
    const events = parseWhole(Buffer.from(`MSRP abcd 200 ${"x".repeat(600)}`), { maxHeaderBytes: 100 });
    assert.equal(events.length, 1);
    assert.ok(events[0]?.type === "error" && events[0].error.fatal);
  });

  test("garbage is fatal at once, and the parser then ignores input", () => {
    const p = new MsrpParser();
    const events = p.push(Buffer.from("GET / HTTP/1.1\r\n"));
    assert.equal(events.length, 1);
    assert.ok(events[0]?.type === "error" && events[0].error.fatal && events[0].error.reason === "start-line");
    assert.ok(p.failed);
    assert.deepEqual(p.push(OVERVIEW_200), []);
    assert.equal(p.bufferedBytes, 0);
    p.reset();
    assert.equal(p.push(OVERVIEW_200)[0]?.type, "frame");
  });

  test("garbage is detected from the first bytes, not after maxHeaderBytes", () => {
    const p = new MsrpParser();
    assert.equal(p.push(Buffer.from("MSRX"))[0]?.type, "error");
  });

  test("an end-line with another transaction-id in the header block is fatal", () => {
    const events = parseWhole(Buffer.from(req("MSRP abcd 200 OK\nTo-Path: msrp://h:1/s;tcp\nFrom-Path: msrp://g:2/t;tcp\n-------wxyz$\n")));
    assert.ok(events[0]?.type === "error" && events[0].error.reason === "end-line" && events[0].error.fatal);
  });

  for (const [what, headers, status] of [
    ["bad Byte-Range", "Byte-Range: 0-1/1\n", 400],
    ["bad Failure-Report", "Failure-Report: maybe\n", 400],
    ["bad To-Path", "To-Path: http://x/y\n", 400],
    ["duplicate Message-ID", "Message-ID: a1\nMessage-ID: a2\n", 400],
    ["malformed header line", "no colon here\n", 400],
  ] as const) {
    test(`${what}: non-fatal 400 error, next frame still parsed`, () => {
      const toPath = headers.startsWith("To-Path") ? "" : "To-Path: msrp://h:1/s;tcp\n";
      const bytes = Buffer.concat([
        Buffer.from(req(`MSRP abcd SEND\n${toPath}${headers}From-Path: msrp://g:2/t;tcp\nContent-Type: text/plain\n\nxx\n-------abcd$\n`)),
        OVERVIEW_200,
      ]);
      const events = parseWhole(bytes);
      assert.deepEqual(
        events.map((e) => e.type),
        ["error", "resync", "frame"],
      );
      const err = events[0]?.type === "error" ? events[0].error : assert.fail();
      assert.equal(err.status, status);
      assert.equal(err.fatal, false);
      assert.equal(err.reason, "header");
      assert.deepEqual(parseBytewise(bytes).events, events);
    });
  }

  test("a body without Content-Type is a 400", () => {
    const events = parseWhole(
      Buffer.from(req("MSRP abcd SEND\nTo-Path: msrp://h:1/s;tcp\nFrom-Path: msrp://g:2/t;tcp\n\nxx\n-------abcd$\n")),
    );
    assert.ok(events[0]?.type === "error" && events[0].error.status === 400 && !events[0].error.fatal);
  });

  test("a response with a body is an error, never answered", () => {
    const events = parseWhole(
      Buffer.from(req("MSRP abcd 200 OK\nTo-Path: msrp://h:1/s;tcp\nFrom-Path: msrp://g:2/t;tcp\n\nxx\n-------abcd$\n")),
    );
    assert.ok(events[0]?.type === "error" && events[0].error.isResponse);
  });

  // A refused frame whose end-line never comes: the parser must not skip (and drop) for ever.
  const refusedHead = req(
    "MSRP lost1 SEND\nTo-Path: msrp://h:1/s;tcp\nFrom-Path: msrp://g:2/t;tcp\nByte-Range: 0-1/1\nContent-Type: text/plain\n\n",
  );
  const validSends = (n: number) => Buffer.concat(Array.from({ length: n }, () => BASIC_SEND));

  test("MSRP stall, resync lost: a refused frame whose end-line never comes is fatal after maxSkipBytes, not a silent drop", () => {
    const limits = { maxSkipBytes: 4096 };
    const bytes = Buffer.concat([Buffer.from(refusedHead), validSends(Math.ceil(8192 / BASIC_SEND.length))]);
    for (const events of [parseWhole(bytes, limits), parseBytewise(bytes, limits).events]) {
      assert.deepEqual(
        events.map((e) => (e.type === "error" ? `${e.error.reason}${e.error.fatal ? "!" : ""}` : e.type)),
        ["header", "resync-lost!"],
      );
      const lost = events[1]?.type === "error" ? events[1].error : assert.fail();
      assert.equal(lost.transactionId, "lost1");
      assert.match(lost.detail, /maxSkipBytes \(4096\)/);
    }
    const p = new MsrpParser(limits);
    p.push(bytes);
    assert.ok(p.failed);
    assert.equal(p.bufferedBytes, 0);
  });

  test("MSRP stall, resync lost: the bound counts the bytes skipped, not the bytes kept before a body limit", () => {
    const limits = { maxBodyBytes: 100, maxSkipBytes: 1000 };
    const head = req("MSRP big1 SEND\nTo-Path: msrp://h:1/s;tcp\nFrom-Path: msrp://g:2/t;tcp\nContent-Type: text/plain\n\n");
    // 100 body bytes kept, then 900 skipped: still within the bound, so the end-line resyncs
    const within = Buffer.concat([Buffer.from(head), Buffer.alloc(1000, 0x61), Buffer.from("\r\n-------big1$\r\n"), OVERVIEW_200]);
    assert.deepEqual(
      parseWhole(within, limits).map((e) => e.type),
      ["error", "resync", "frame"],
    );
    const past = Buffer.concat([Buffer.from(head), Buffer.alloc(1200, 0x61), Buffer.from("\r\n-------big1$\r\n"), OVERVIEW_200]);
    const events = parseBytewise(past, limits).events;
    assert.deepEqual(
      events.map((e) => (e.type === "error" ? e.error.reason : e.type)),
      ["body-too-large", "resync-lost"],
    );
  });

  test("MSRP stall, resync within maxSkipBytes: the skipped frame's end-line brings the frames after it back", () => {
    const bytes = Buffer.concat([Buffer.from(refusedHead), Buffer.from("xx\r\n-------lost1$\r\n"), validSends(3)]);
    assert.deepEqual(
      parseWhole(bytes, { maxSkipBytes: 64 }).map((e) => e.type),
      ["error", "resync", "frame", "frame", "frame"],
    );
  });

  test("a frame split anywhere gives the same result (every split point)", () => {
    const expected = parseWhole(BASIC_SEND);
    for (let i = 1; i < BASIC_SEND.length; i++) {
      const p = new MsrpParser();
      const events = [...p.push(BASIC_SEND.subarray(0, i)), ...p.push(BASIC_SEND.subarray(i))];
      assert.deepEqual(events, expected, `split at ${i}`);
    }
  });
});
