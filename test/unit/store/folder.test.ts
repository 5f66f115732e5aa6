import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { CpmError } from "../../../src/errors/catalogue.js";
import {
  decodeFolderComponent,
  EMPTY_COMPONENT,
  encodeFolderComponent,
  groupSessionFolder,
  isShortenedComponent,
  MAX_COMPONENT_BYTES,
} from "../../../src/store/folder.js";

/** What an encoded component may contain: the safe set and uppercase %XX escapes, nothing else. */
const ENCODED = /^(?:[A-Za-z0-9\-_@+:=,!]|%[0-9A-F]{2})+$/;

function assertSafe(name: string): void {
  assert.match(name, ENCODED, `unsafe characters in ${JSON.stringify(name)}`);
  assert.ok(!name.includes("/"), "separator");
  assert.ok(!name.includes("."), "dot");
  assert.ok(!name.includes("*"), "wildcard *");
  assert.ok(!/[\x00-\x20\x7f-\uffff]/.test(name), "control, space or non-ASCII");
  assert.ok(!/%(?![0-9A-F]{2})/.test(name), "% only as an escape");
  assert.ok(name.length <= MAX_COMPONENT_BYTES, `too long: ${name.length}`);
}

const HOSTILE = [
  "a/b",
  "a.b",
  ".",
  "..",
  "../../etc",
  "%",
  "%25",
  "%FF",
  "*",
  "a*b%c",
  "~",
  "~root",
  '"quoted"',
  "back\\slash",
  "\0",
  "\t\r\n\x7f\x1b",
  " ",
  " leading and trailing ",
  "é",
  "日本語",
  "emoji 😀 pair",
  "\ud800",
  "lone low \udc00 surrogate",
  "&-amp&",
  "INBOX",
  "{literal}",
  "(paren) [bracket] <angle>",
  "conv-7f3a@x+y:z",
];

test("ordinary IDs are not changed", () => {
  for (const id of [
    "c6cca468b4ade657694b9e75baeb9e93",
    "conv-7f3a@x+y:z",
    "tel:+33612345678",
    "a=b,c!d_e-f",
    "0b9f6c1e-5d4a-4c4e-9f0b-2f1f3b0a9c11",
  ]) {
    assert.equal(encodeFolderComponent(id), id);
    assert.equal(decodeFolderComponent(id), id);
  }
  assert.equal(groupSessionFolder("Default", "conv-7f3a@x+y:z", "contrib-1"), "Default/conv-7f3a@x+y:z/contrib-1");
});

test("hostile strings round-trip and encode to safe names", () => {
  for (const s of HOSTILE) {
    const enc = encodeFolderComponent(s);
    assertSafe(enc);
    assert.equal(decodeFolderComponent(enc), s, `round trip of ${JSON.stringify(s)}`);
  }
  assert.equal(encodeFolderComponent('a/b.c%d*e"f~g hé'), "a%2Fb%2Ec%25d%2Ae%22f%7Eg%20h%C3%A9");
});

test("empty string has its own marker, distinct from NUL", () => {
  assert.equal(encodeFolderComponent(""), EMPTY_COMPONENT);
  assert.equal(encodeFolderComponent("\0"), "%00");
  assert.equal(decodeFolderComponent(EMPTY_COMPONENT), "");
  assert.equal(groupSessionFolder("Default", "", "x"), `Default/${EMPTY_COMPONENT}/x`);
});

test("long values are capped with a hash suffix and are distinct", () => {
  const a = `${"x".repeat(300)}a`;
  const b = `${"x".repeat(300)}b`;
  const ea = encodeFolderComponent(a);
  const eb = encodeFolderComponent(b);
  assertSafe(ea);
  assertSafe(eb);
  assert.notEqual(ea, eb);
  assert.equal(ea, encodeFolderComponent(a), "deterministic");
  assert.ok(isShortenedComponent(ea));
  assert.throws(() => decodeFolderComponent(ea), CpmError);
  // escapes are never cut in half
  const e = encodeFolderComponent("é".repeat(100));
  assertSafe(e);
  assert.ok(isShortenedComponent(e));
  // exactly at the cap: not shortened
  const atCap = "y".repeat(MAX_COMPONENT_BYTES);
  assert.equal(encodeFolderComponent(atCap), atCap);
});

test("decode rejects what encode never produces", () => {
  for (const bad of ["", "a.b", "%", "%2", "%2f", "%G0", "%41", "a b", "%C3", "%C0%80", "%ED%A0%BD%ED%B8%80", "%F8%88%80%80%80", "é"]) {
    assert.throws(
      () => decodeFolderComponent(bad),
      (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_BAD_REQUEST",
      JSON.stringify(bad),
    );
  }
});

test("rootFolder must be a non-empty path", () => {
  for (const root of ["", "/Default", "Default/", "a//b"]) {
    assert.throws(
      () => groupSessionFolder(root, "c", "d"),
      (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_CONFIG",
    );
  }
  assert.equal(groupSessionFolder("RCS/Default", "c", "d"), "RCS/Default/c/d");
});

const anyString = fc.oneof(
  fc.string({ unit: "binary", maxLength: 80 }),
  // arbitrary UTF-16 code units, lone surrogates included
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((n) => String.fromCharCode(n)), maxLength: 80 }),
  fc.string({ unit: "grapheme-ascii", maxLength: 200 }),
);

test("property: every string encodes to a safe name and short ones round-trip", () => {
  fc.assert(
    fc.property(anyString, (s) => {
      const enc = encodeFolderComponent(s);
      assertSafe(enc);
      if (isShortenedComponent(enc)) {
        // at most 9 encoded chars per UTF-16 code unit, so only long inputs get here
        assert.ok(s.length * 9 > MAX_COMPONENT_BYTES, "shortened although short");
      } else {
        assert.equal(decodeFolderComponent(enc), s);
      }
    }),
    { numRuns: 2000 },
  );
});

test("property: distinct strings give distinct names", () => {
  fc.assert(
    fc.property(anyString, anyString, (a, b) => {
      fc.pre(a !== b);
      assert.notEqual(encodeFolderComponent(a), encodeFolderComponent(b));
    }),
    { numRuns: 2000 },
  );
});
