import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { MsrpFrame, MsrpRequest, MsrpResponse } from "../../../src/msrp/frame.js";
import { MAX_END_LINE_BYTES, type MsrpParseEvent, MsrpParser } from "../../../src/msrp/parser.js";
import { firstEndLine, serializeFrame } from "../../../src/msrp/serializer.js";
import type { MsrpUri } from "../../../src/msrp/uri.js";
import { ALL_EXAMPLES } from "./rfc-examples.js";

const tid = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}$/);
const ident = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}$/);
const printable = fc.stringMatching(/^[!-~]([ -~]{0,24}[!-~])?$/);

const uri: fc.Arbitrary<MsrpUri> = fc.record(
  {
    scheme: fc.constantFrom("msrp" as const, "msrps" as const),
    user: fc.stringMatching(/^[a-z0-9.]{1,8}$/),
    host: fc.oneof(fc.stringMatching(/^[a-z0-9][a-z0-9.-]{0,20}$/), fc.constant("[2001:db8::1]"), fc.constant("192.0.2.7")),
    port: fc.integer({ min: 0, max: 65535 }),
    sessionId: fc.stringMatching(/^[A-Za-z0-9\-._~+=/]{1,24}$/),
    transport: fc.constantFrom("tcp", "ws"),
    params: fc.array(
      fc.record(
        { name: fc.stringMatching(/^[a-z]{1,6}$/), value: fc.stringMatching(/^[a-z0-9]{1,6}$/) },
        { requiredKeys: ["name"], noNullPrototype: true },
      ),
      {
        maxLength: 2,
      },
    ),
  },
  { requiredKeys: ["scheme", "host", "transport", "params"], noNullPrototype: true },
);

const path = fc.array(uri, { minLength: 1, maxLength: 3 });
const extraHeaders = fc.array(
  fc.record({ name: fc.stringMatching(/^X-[A-Za-z0-9-]{1,12}$/), value: fc.oneof(printable, fc.constant("")) }, { noNullPrototype: true }),
  {
    maxLength: 3,
  },
);
const flag = fc.constantFrom("$" as const, "+" as const, "#" as const);

const request: fc.Arbitrary<MsrpRequest> = fc
  .record(
    {
      kind: fc.constant("request" as const),
      method: fc.oneof(fc.constantFrom("SEND", "REPORT", "AUTH", "NICKNAME"), fc.stringMatching(/^[A-Z]{1,10}$/)),
      transactionId: tid,
      toPath: path,
      fromPath: path,
      headers: extraHeaders,
      continuation: flag,
      messageId: ident,
      byteRange: fc.record(
        {
          start: fc.integer({ min: 1, max: 1e9 }),
          end: fc.oneof(fc.integer({ min: 0, max: 1e9 }), fc.constant("*" as const)),
          total: fc.oneof(fc.integer({ min: 0, max: 1e9 }), fc.constant("*" as const)),
        },
        { noNullPrototype: true },
      ),
      successReport: fc.constantFrom("yes" as const, "no" as const),
      failureReport: fc.constantFrom("yes" as const, "no" as const, "partial" as const),
      status: fc.record(
        { namespace: fc.constant("000"), code: fc.integer({ min: 100, max: 999 }), comment: printable },
        { requiredKeys: ["namespace", "code"], noNullPrototype: true },
      ),
      contentType: fc.constantFrom("text/plain", "message/cpim", "application/im-iscomposing+xml", "text/plain;charset=utf-8"),
      body: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    },
    { requiredKeys: ["kind", "method", "transactionId", "toPath", "fromPath", "headers", "continuation"], noNullPrototype: true },
  )
  .map((r) => {
    // A body needs a Content-Type (RFC 4975 9 content-stuff).
    if (r.body !== undefined && r.contentType === undefined) return { ...r, contentType: "application/octet-stream" };
    return r;
  })
  .filter(
    (r) =>
      r.body === undefined ||
      firstEndLine(Buffer.concat([r.body, Buffer.from(`\r\n-------${r.transactionId}$\r\n`)]), r.transactionId) === r.body.length,
  );

const response: fc.Arbitrary<MsrpResponse> = fc.record(
  {
    kind: fc.constant("response" as const),
    transactionId: tid,
    code: fc.integer({ min: 100, max: 999 }),
    comment: printable,
    toPath: path,
    fromPath: path,
    headers: extraHeaders,
    continuation: flag,
  },
  { requiredKeys: ["kind", "transactionId", "code", "toPath", "fromPath", "headers", "continuation"], noNullPrototype: true },
);

const frame: fc.Arbitrary<MsrpFrame> = fc.oneof(request, response);

function feedInSlices(p: MsrpParser, bytes: Buffer, cuts: number[], onStep?: () => void): MsrpParseEvent[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const events: MsrpParseEvent[] = [];
  let prev = 0;
  for (const at of [...points, bytes.length]) {
    if (at <= prev) continue;
    events.push(...p.push(bytes.subarray(prev, at)));
    onStep?.();
    prev = at;
  }
  return events;
}

test("property: random frames round-trip (parse(serialize(f)) == f, and bytes re-serialize equal)", () => {
  fc.assert(
    fc.property(frame, (f) => {
      const bytes = serializeFrame(f);
      const events = new MsrpParser({ maxHeaderBytes: 64 * 1024 }).push(bytes);
      assert.equal(events.length, 1);
      const ev = events[0];
      assert.ok(ev?.type === "frame", JSON.stringify(ev));
      assert.deepEqual(ev.frame, f);
      assert.deepEqual(serializeFrame(ev.frame), bytes);
    }),
    { numRuns: 300 },
  );
});

test("property: a stream of frames cut at random points gives the same events as one push", () => {
  fc.assert(
    fc.property(fc.array(frame, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 40 }), (frames, cuts) => {
      const bytes = Buffer.concat(frames.map(serializeFrame));
      const whole = new MsrpParser({ maxHeaderBytes: 64 * 1024 }).push(bytes);
      assert.equal(whole.length, frames.length);
      const sliced = feedInSlices(new MsrpParser({ maxHeaderBytes: 64 * 1024 }), bytes, cuts);
      assert.deepEqual(sliced, whole);
    }),
    { numRuns: 150 },
  );
});

const limits = { maxHeaderBytes: 300, maxBodyBytes: 120 };
const bound = limits.maxHeaderBytes + limits.maxBodyBytes + MAX_END_LINE_BYTES;

function checkNeverThrowsAndBounded(bytes: Buffer, cuts: number[]): void {
  const p = new MsrpParser(limits);
  let maxSeen = 0;
  // push() throwing would fail the property; so would the buffer going over the bound at any step.
  feedInSlices(p, bytes, cuts, () => {
    maxSeen = Math.max(maxSeen, p.bufferedBytes);
  });
  assert.ok(maxSeen <= bound, `buffered ${maxSeen} > ${bound}`);
}

test("property: random bytes never throw out of push() and the buffer stays under the limits", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), fc.array(fc.nat(), { maxLength: 30 }), (arr, cuts) => {
      checkNeverThrowsAndBounded(Buffer.from(arr), cuts);
      // Random bytes behind a valid start line reach the header and body code paths.
      checkNeverThrowsAndBounded(Buffer.concat([Buffer.from("MSRP abcd SEND\r\n"), Buffer.from(arr)]), cuts);
    }),
    { numRuns: 300 },
  );
});

type Mutation = { at: number; kind: "flip" | "insert" | "delete" | "dup"; byte: number; len: number };
const mutation: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  kind: fc.constantFrom("flip" as const, "insert" as const, "delete" as const, "dup" as const),
  byte: fc.constantFrom(0x0d, 0x0a, 0x2d, 0x24, 0x2b, 0x23, 0x3a, 0x20, 0x00, 0xff, 0x4d),
  len: fc.integer({ min: 1, max: 400 }),
});

function mutate(bytes: Buffer, m: Mutation): Buffer {
  if (bytes.length === 0) return bytes;
  const at = m.at % bytes.length;
  switch (m.kind) {
    case "flip": {
      const out = Buffer.from(bytes);
      out[at] = m.byte;
      return out;
    }
    case "insert":
      return Buffer.concat([bytes.subarray(0, at), Buffer.alloc(m.len, m.byte), bytes.subarray(at)]);
    case "delete":
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(Math.min(bytes.length, at + m.len))]);
    default:
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at, at + m.len), bytes.subarray(at)]);
  }
}

test("property: mutated valid streams never throw out of push() and the buffer stays under the limits", () => {
  const seeds = Object.values(ALL_EXAMPLES);
  fc.assert(
    fc.property(
      fc.array(fc.oneof(frame.map(serializeFrame), fc.constantFrom(...seeds)), { minLength: 1, maxLength: 4 }),
      fc.array(mutation, { maxLength: 6 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      (frames, mutations, cuts) => {
        let bytes: Buffer = Buffer.concat(frames);
        for (const m of mutations) bytes = mutate(bytes, m);
        checkNeverThrowsAndBounded(bytes, cuts);
      },
    ),
    { numRuns: 300 },
  );
});
