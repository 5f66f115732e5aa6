// Hostile XML bodies: every entry point of src/xml ends a bad input with a
// CpmError CPM_ERR_BAD_XML, the parser's own errors included, and never lets
// a name reach Object.prototype.
import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import { parseConferenceInfo } from "../../../src/xml/conference-info.js";
import { parseGso, serializeGso } from "../../../src/xml/gso.js";
import { MAX_XML_DEPTH, parseXml } from "../../../src/xml/parse.js";
import { buildResourceLists, parseResourceLists } from "../../../src/xml/resource-lists.js";
import { RESOURCE_LIST } from "../../fixtures/sip.js";

const ENTRY_POINTS: Record<string, (xml: string | Buffer) => unknown> = {
  parseXml,
  parseGso,
  parseConferenceInfo,
  parseResourceLists,
};

const isBadXml = (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_BAD_XML";

const nested = (depth: number, leaf: string) => `${"<a>".repeat(depth - 1)}${leaf}${"</a>".repeat(depth - 1)}`;

/** Inputs the library itself threw on (not its validator), and the names that would pollute a prototype. */
const HOSTILE: Record<string, string> = {
  "broken XML declaration": '<?xml versi0" encoding="UTF-8"?><a/>',
  "unclosed processing instruction": "<?xml version='1.0'<a/>",
  "element __proto__": "<__proto__/>",
  "element constructor": "<groupstate><constructor/></groupstate>",
  "element prototype": "<resource-lists><list><prototype/></list></resource-lists>",
  "prefixed element __proto__": '<conference-info xmlns:x="u"><x:__proto__/></conference-info>',
  "attribute __proto__": '<groupstate __proto__="x" timestamp="2026-01-01T00:00:00Z" lastfocussessionid="sip:f@cf"/>',
  "attribute constructor": '<conference-info constructor="1"/>',
  "prefixed attribute prototype": '<resource-lists xmlns:x="u" x:prototype="1"/>',
  "open tags nested past the parser's own bound": nested(200, "<a></a>"),
  [`open tags nested deeper than ${MAX_XML_DEPTH}`]: nested(MAX_XML_DEPTH + 1, "<a></a>"),
  [`an empty element nested deeper than ${MAX_XML_DEPTH}`]: nested(MAX_XML_DEPTH + 1, "<a/>"),
  "internal DTD subset": '<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
};

for (const [name, parse] of Object.entries(ENTRY_POINTS)) {
  test(`${name}: every hostile input (parser errors, prototype names, deep nesting) is CPM_ERR_BAD_XML`, () => {
    for (const [what, xml] of Object.entries(HOSTILE)) {
      assert.throws(() => parse(xml), isBadXml, `${name}: ${what}`);
      assert.throws(() => parse(Buffer.from(xml)), isBadXml, `${name}: ${what} (Buffer)`);
    }
  });
}

test(`parseXml: nesting up to ${MAX_XML_DEPTH} is read, one more is refused`, () => {
  assert.doesNotThrow(() => parseXml(nested(MAX_XML_DEPTH, "<a/>")));
  assert.doesNotThrow(() => parseXml(nested(MAX_XML_DEPTH, "<a>text</a>")));
  assert.throws(() => parseXml(nested(MAX_XML_DEPTH + 1, "<a/>")), isBadXml);
});

test("parseXml: no prototype is polluted and no key named after Object.prototype appears", () => {
  for (const xml of Object.values(HOSTILE)) assert.throws(() => parseXml(xml), isBadXml);
  assert.equal(({} as Record<string, unknown>).x, undefined);
  const doc = parseXml("<a><hasOwnProperty/><toString/></a>");
  assert.equal(Object.getPrototypeOf(doc), Object.prototype);
  assert.equal(typeof doc.hasOwnProperty, "function");
});

test("entity expansion stays off: only predefined entities and character references are decoded, once", () => {
  const [entry] = parseResourceLists(
    '<resource-lists><list><entry uri="sip:a@b"><display-name>&amp;lt; &unknown; &#65;&#x42;</display-name></entry></list></resource-lists>',
  );
  assert.equal(entry?.displayName, "&lt; &unknown; AB");
});

// ---- seeded mutation fuzz -------------------------------------------------

/** mulberry32: small, seeded, reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEEDS = [
  RESOURCE_LIST,
  buildResourceLists([{ uri: "sip:bob@example.net", displayName: "Bob & co" }]),
  serializeGso({
    timestamp: new Date("2026-11-25T10:00:00.000Z"),
    lastFocusSessionId: "sip:focus@cf.example.net",
    groupType: "Closed",
    participants: [{ name: "Bob", commAddr: "tel:+16135551210" }],
    status: "removed",
    subject: "Trip",
  }),
  '<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:f@cf" state="full" version="3"><conference-description><subject>S</subject><icon><icon-uri>http://x</icon-uri></icon></conference-description><users><user entity="tel:+1"><display-text>B</display-text><endpoint><status>connected</status></endpoint><roles><entry>admin</entry></roles></user></users></conference-info>',
];

const FRAGMENTS = [
  "<",
  ">",
  "</",
  "/>",
  '"',
  "'",
  "=",
  "&",
  ";",
  ":",
  "<?xml",
  "?>",
  "<!--",
  "-->",
  "<![CDATA[",
  "]]>",
  "<!DOCTYPE x>",
  "&lol;",
  "&#x110000;",
  "&#0;",
  "__proto__",
  "constructor",
  "prototype",
  "xmlns:p=",
  "p:",
  "\u0000",
  "\uFFFF",
  "\uD800",
  " a b c",
  "<a>".repeat(40),
  "</a>".repeat(40),
  "#text",
  "@_",
];

function mutate(input: string, rnd: () => number): string {
  let s = input;
  const steps = 1 + Math.floor(rnd() * 4);
  for (let i = 0; i < steps; i++) {
    const at = Math.floor(rnd() * (s.length + 1));
    switch (Math.floor(rnd() * 6)) {
      case 0: // flip one character
        s = s.slice(0, at) + String.fromCharCode(Math.floor(rnd() * 128)) + s.slice(at + 1);
        break;
      case 1: // insert a fragment
        s = s.slice(0, at) + FRAGMENTS[Math.floor(rnd() * FRAGMENTS.length)] + s.slice(at);
        break;
      case 2: // delete a range
        s = s.slice(0, at) + s.slice(at + Math.floor(rnd() * 16));
        break;
      case 3: // duplicate a range
        s = s.slice(0, at) + s.slice(at, at + Math.floor(rnd() * 64)) + s.slice(at);
        break;
      case 4: // truncate
        s = s.slice(0, at);
        break;
      default: // random printable noise
        s =
          s.slice(0, at) +
          Array.from({ length: 1 + Math.floor(rnd() * 8) }, () => String.fromCharCode(32 + Math.floor(rnd() * 95))).join("") +
          s.slice(at);
    }
  }
  return s;
}

test("seeded XML fuzz: 4000 mutated and random bodies per entry point, only CPM_ERR_BAD_XML escapes", () => {
  const rnd = prng(0x10c0ffee);
  const outcomes = { accepted: 0, refused: 0 };
  for (let i = 0; i < 4000; i++) {
    const input =
      i % 10 === 9
        ? Array.from({ length: Math.floor(rnd() * 200) }, () => FRAGMENTS[Math.floor(rnd() * FRAGMENTS.length)]).join("")
        : mutate(SEEDS[i % SEEDS.length] as string, rnd);
    for (const [name, parse] of Object.entries(ENTRY_POINTS)) {
      try {
        parse(input);
        outcomes.accepted++;
      } catch (err) {
        if (!isBadXml(err)) assert.fail(`${name} let ${String(err)} escape for input ${JSON.stringify(input)}`);
        outcomes.refused++;
      }
    }
  }
  // The corpus exercises both paths: a fuzz that only ever fails (or passes) proves nothing.
  assert.ok(outcomes.accepted > 500 && outcomes.refused > 1000, JSON.stringify(outcomes));
});
