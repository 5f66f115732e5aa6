// What the fuzzer feeds: every parser of network input, each with valid
// seeds, a dictionary of tokens of its syntax and, for XML, the hostile
// documents of the classic attacks. A target's check() returns normally or
// throws CpmError for a refused input; anything else it throws is an escape.

import { parseCpim } from "../src/cpim/cpim.js";
import { CpmError } from "../src/errors/catalogue.js";
import { MAX_END_LINE_BYTES, MsrpParser } from "../src/msrp/parser.js";
import { header, parseSipMessage } from "../src/sip/message.js";
import { bodyParts } from "../src/sip/multipart.js";
import { parseNameAddr } from "../src/sip/name-addr.js";
import { parseParams } from "../src/sip/params.js";
import { normaliseIdentity } from "../src/sip/public-identity.js";
import { parseReasonHeaders, parseReasonValue } from "../src/sip/reason.js";
import { readThirdPartyRegister } from "../src/sip/third-party-register.js";
import { parseConferenceInfo } from "../src/xml/conference-info.js";
import { parseGso, serializeGso } from "../src/xml/gso.js";
import { parseXml } from "../src/xml/parse.js";
import { buildResourceLists, parseResourceLists } from "../src/xml/resource-lists.js";
import { chatCpim, GSO_XML, IMDN_XML } from "../test/fixtures/cpim.js";
import { thirdPartyRegister } from "../test/fixtures/registration.js";
import { bye, inviteFromFocus, RESOURCE_LIST } from "../test/fixtures/sip.js";
import type { Rng } from "./rng.js";

export interface FuzzTarget {
  name: string;
  /** Inputs of a full run (npm run fuzz). */
  count: number;
  seeds: Buffer[];
  dictionary: Buffer[];
  /** Hand-made hostile inputs, tried first and then mutated like the seeds. */
  hostile?: Buffer[];
  /** Throws CpmError for a refused input; a string it returns names what an accepted one came to (e.g. the parser's events). */
  check(input: Buffer, rng: Rng): unknown;
}

/** A broken invariant: counted as an escape like an unexpected exception. */
export class InvariantError extends Error {
  override name = "InvariantError";
}

const b = (s: string) => Buffer.from(s, "utf8");
const dict = (...tokens: string[]) => tokens.map(b);

const MSRP_LIMITS = { maxHeaderBytes: 2048, maxBodyBytes: 4096 };

function msrpSend(tid: string, body: string, flag = "$"): string {
  return [
    `MSRP ${tid} SEND`,
    "To-Path: msrp://127.0.0.1:2855/s1;tcp",
    "From-Path: msrp://127.0.0.1:7394/s2;tcp",
    `Message-ID: m-${tid}`,
    "Byte-Range: 1-*/*",
    "Success-Report: no",
    "Failure-Report: yes",
    "Content-Type: message/cpim",
    "",
    body,
    `-------${tid}${flag}`,
    "",
  ].join("\r\n");
}

const MSRP_SEEDS = [
  b(msrpSend("a786hjs2", chatCpim("hello").toString("utf8"))),
  b(msrpSend("tid00001", "line\r\n-------othertid$\r\n-------tid00001X", "+") + msrpSend("tid00002", "x")),
  b("MSRP d93kswow 200 OK\r\nTo-Path: msrp://127.0.0.1:7394/s2;tcp\r\nFrom-Path: msrp://127.0.0.1:2855/s1;tcp\r\n-------d93kswow$\r\n"),
  b(
    "MSRP dkei38sd REPORT\r\nTo-Path: msrp://127.0.0.1:7394/s2;tcp\r\nFrom-Path: msrp://127.0.0.1:2855/s1;tcp\r\nMessage-ID: 12339sdqwer\r\nByte-Range: 1-106/106\r\nStatus: 000 200 OK\r\n-------dkei38sd$\r\n",
  ),
  b(
    "MSRP e4kd93kf SEND\r\nTo-Path: msrp://127.0.0.1:2855/s1;tcp\r\nFrom-Path: msrp://127.0.0.1:7394/s2;tcp\r\nMessage-ID: x\r\nByte-Range: 1-0/0\r\n-------e4kd93kf$\r\n",
  ),
];

const GSO = serializeGso({
  timestamp: new Date("2026-11-25T10:00:00Z"),
  lastFocusSessionId: "sip:focus@cf.example.net",
  groupType: "Closed",
  participants: [
    { commAddr: "tel:+16135551210", name: "Bob", role: "participant" },
    { commAddr: "tel:+16135551211", name: "", role: "chairman" },
  ],
});

const CONFERENCE_INFO = `<?xml version="1.0" encoding="UTF-8"?>
<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:focus@cf" state="partial" version="7">
<conference-description><subject>Trip</subject></conference-description>
<users><user entity="tel:+1" state="full"><display-text>Bob</display-text><endpoint entity="e1"><status>connected</status></endpoint></user>
<user entity="tel:+2" state="deleted"/></users></conference-info>`;

const XML_DICT = dict(
  "<",
  ">",
  "/>",
  "</",
  "<?xml",
  '<?xml version="1.0"?>',
  "<!--",
  "-->",
  "<![CDATA[",
  "]]>",
  "&amp;",
  "&#x0;",
  "&#1114112;",
  "&lol;",
  'xmlns="urn:x"',
  "xmlns:a=",
  "a:",
  "__proto__",
  "constructor",
  "prototype",
  "@_",
  "#text",
  '="',
  "'",
  "<!DOCTYPE",
  "<!ENTITY",
  "\u0000",
  "\uFEFF",
  "\uD800",
);

/** XXE, billion laughs, deep nesting, prototype names, oversize: refused with CPM_ERR_BAD_XML, never expanded. */
const XML_HOSTILE = [
  '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
  `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">${Array.from({ length: 9 }, (_, i) => `<!ENTITY lol${i + 1} "${`&lol${i === 0 ? "" : i};`.repeat(10)}">`).join("")}]><a>&lol9;</a>`,
  `${"<a>".repeat(5000)}${"</a>".repeat(5000)}`,
  `<resource-lists>${"<list>".repeat(200)}${"</list>".repeat(200)}</resource-lists>`,
  "<__proto__><polluted>yes</polluted></__proto__>",
  '<a __proto__="x" constructor="y"><prototype/></a>',
  '<groupstate timestamp="2026-11-25T10:00:00Z" lastfocussessionid="sip:f"><__proto__ comm-addr="tel:+1"/></groupstate>',
  '<?xml versi0" encoding="UTF-8"?><a/>',
  "<a>&lol;</a>",
  `<a>${"x".repeat(70 * 1024)}</a>`,
  '<a b="1" b="2"/>',
  "<a><b></a></b>",
].map(b);

const SIP_DICT = dict(
  "\r\n",
  ";",
  ",",
  '"',
  "\\",
  "<",
  ">",
  "sip:",
  "tel:",
  "sips:",
  ";tag=",
  ";cause=",
  ";text=",
  "=",
  "%00",
  "\u0000",
  "SIP",
  "Q.850",
  "Content-Length: ",
  "Content-Type: multipart/mixed;boundary=",
  "--",
  "99999999999999999999",
  "-1",
  " ",
  "\t",
);

/** The parser never throws: what it made of the input is told by its events (frames, errors by reason, fatal). */
function msrpCheck(input: Buffer, rng: Rng): string {
  const parser = new MsrpParser(MSRP_LIMITS);
  let outcome = "incomplete";
  const bound = MSRP_LIMITS.maxHeaderBytes + MSRP_LIMITS.maxBodyBytes + MAX_END_LINE_BYTES;
  // slices of every size, down to one byte: framing must not depend on how TCP cuts the stream
  for (let at = 0; at < input.length; ) {
    const n = 1 + rng.int(rng.int(3) === 0 ? 4 : 512);
    for (const ev of parser.push(input.subarray(at, at + n))) {
      if (ev.type === "error") outcome = `${ev.error.fatal ? "fatal" : "error"} ${ev.error.reason}`;
      else if (ev.type === "frame" && outcome === "incomplete") outcome = "frame";
    }
    at += n;
    if (parser.bufferedBytes > bound) throw new InvariantError(`parser holds ${parser.bufferedBytes} bytes > ${bound}`);
  }
  return outcome;
}

const text = (input: Buffer) => input.toString("latin1");

export const TARGETS: FuzzTarget[] = [
  {
    name: "msrp-parser",
    count: 1_000_000,
    seeds: MSRP_SEEDS,
    dictionary: dict(
      "\r\n",
      "-------",
      "$",
      "+",
      "#",
      "MSRP ",
      " SEND",
      " REPORT",
      " 200 OK",
      "Byte-Range: ",
      "1-*/*",
      "To-Path: ",
      "msrp://",
      ";tcp",
      ":",
    ),
    check: msrpCheck,
  },
  {
    name: "sip-message",
    count: 100_000,
    seeds: [inviteFromFocus(), bye(['Reason: SIP;cause=410;text="Gone"', "Referred-By: <sip:admin@example.net>"])],
    dictionary: SIP_DICT,
    check: (input) => void parseSipMessage(input),
  },
  {
    name: "third-party-register",
    count: 100_000,
    seeds: [thirdPartyRegister()],
    dictionary: SIP_DICT,
    check: (input) => void readThirdPartyRegister(parseSipMessage(input)),
  },
  {
    name: "sip-name-addr",
    count: 100_000,
    seeds: dict(
      '"Bob \\"B\\"" <sip:bob@example.net;transport=tcp>;tag=abc;+sip.instance="<urn:uuid:1>"',
      "tel:+16135551210;tag=x",
      "<sips:a@b>",
    ),
    dictionary: SIP_DICT,
    check: (input) => void parseNameAddr(text(input)),
  },
  {
    name: "sip-params",
    count: 100_000,
    seeds: dict(';tag=1;text="a \\" b";lr;+g.oma.sip-im', ";cause=410"),
    dictionary: SIP_DICT,
    check: (input) => void parseParams(text(input)),
  },
  {
    name: "sip-reason",
    count: 100_000,
    seeds: dict('SIP;cause=480;text="Temporarily Unavailable", Q.850;cause=16', 'SIP ;cause=410 ;text="Gone"'),
    dictionary: SIP_DICT,
    check: (input) => {
      parseReasonHeaders(text(input).split("\r\n"));
      parseReasonValue(text(input));
    },
  },
  {
    name: "sip-public-identity",
    count: 100_000,
    seeds: dict("sip:+16135551210@example.net;user=phone", "tel:+1-613-555-1210", "sip:Alice@Example.NET"),
    dictionary: SIP_DICT,
    check: (input) => (normaliseIdentity(text(input)) === undefined ? "unusable" : "accepted"),
  },
  {
    name: "sip-multipart",
    count: 100_000,
    seeds: [inviteFromFocus()],
    dictionary: SIP_DICT,
    check: (input) => {
      const msg = parseSipMessage(input);
      bodyParts(header(msg, "content-type"), msg.body);
    },
  },
  {
    name: "cpim",
    count: 100_000,
    seeds: [
      chatCpim("hello"),
      b(`From: <sip:a@b>\r\nTo: <sip:c@d>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\r\nContent-Type: message/imdn+xml\r\n\r\n${IMDN_XML}`),
    ],
    dictionary: dict("\r\n", ": ", "NS: ", "imdn.", "<", ">", "Content-Type: ", "\r\n\r\n"),
    check: (input) => void parseCpim(input, { maxHeaderBytes: 4096 }),
  },
  {
    name: "xml",
    count: 100_000,
    seeds: [b(RESOURCE_LIST), b(GSO), b(CONFERENCE_INFO), b(IMDN_XML)],
    dictionary: XML_DICT,
    hostile: XML_HOSTILE,
    check: (input) => void parseXml(input),
  },
  {
    name: "xml-resource-lists",
    count: 100_000,
    seeds: [b(RESOURCE_LIST), b(buildResourceLists([{ uri: "tel:+1", displayName: "A & B" }]))],
    dictionary: XML_DICT,
    hostile: XML_HOSTILE,
    check: (input) => void parseResourceLists(input),
  },
  {
    name: "xml-conference-info",
    count: 100_000,
    seeds: [b(CONFERENCE_INFO)],
    dictionary: XML_DICT,
    hostile: XML_HOSTILE,
    check: (input) => void parseConferenceInfo(input),
  },
  {
    name: "xml-gso",
    count: 100_000,
    seeds: [b(GSO), b(GSO_XML)],
    dictionary: XML_DICT,
    hostile: XML_HOSTILE,
    check: (input) => void parseGso(input),
  },
];

/** What a checked input came to: accepted, or refused with a CpmError (by code). Anything else propagates. */
export function classify(target: FuzzTarget, input: Buffer, rng: Rng): string {
  try {
    const outcome = target.check(input, rng);
    return typeof outcome === "string" ? outcome : "accepted";
  } catch (err) {
    if (err instanceof CpmError) return err.code;
    throw err;
  }
}
