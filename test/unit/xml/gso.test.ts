import assert from "node:assert/strict";
import { test } from "node:test";
import { type GroupStateObject, parseGso, serializeGso } from "../../../src/xml/gso.js";
import { parseXml } from "../../../src/xml/parse.js";

const base: GroupStateObject = {
  timestamp: new Date("2026-11-25T10:00:00.000Z"),
  lastFocusSessionId: "sip:focus-7f3a@cf.example.net;transport=udp",
  groupType: "Closed",
  contributionId: "contrib-1",
  participants: [
    { name: "Bob", commAddr: "tel:+16135551210" },
    { name: 'Carol "&" <co>', commAddr: "tel:+16135551212", role: "participant" },
  ],
};

test("BYE-B4: GSO carries timestamp, lastfocussessionid and the participants", () => {
  const xml = serializeGso(base);
  assert.match(
    xml,
    /<groupstate timestamp="2026-11-25T10:00:00\+00:00" lastfocussessionid="sip:focus-7f3a@cf.example.net;transport=udp" group-type="Closed" contributionid="contrib-1">/,
  );
  const back = parseGso(xml);
  assert.deepEqual(back.participants, [
    { name: "Bob", commAddr: "tel:+16135551210", role: undefined },
    { name: 'Carol "&" <co>', commAddr: "tel:+16135551212", role: "participant" },
  ]);
  assert.equal(back.status, undefined);
  assert.equal(back.referredBy, undefined);
});

test("BYE-B3: status removed and referred-by come after the participants", () => {
  const xml = serializeGso({ ...base, status: "removed", referredBy: "sip:admin@example.net" });
  assert.ok(xml.lastIndexOf("<participant") < xml.indexOf("<status>removed</status>"));
  assert.ok(xml.indexOf("<status>") < xml.indexOf("<referred-by>sip:admin@example.net</referred-by>"));
  const back = parseGso(xml);
  assert.equal(back.status, "removed");
  assert.equal(back.referredBy, "sip:admin@example.net");
});

test("BYE-B5: subject and icon only when given (Group Session Data management)", () => {
  assert.doesNotMatch(serializeGso(base), /<subject>|<icon>/);
  const back = parseGso(serializeGso({ ...base, subject: "Trip ✈ & co", icon: "https://x/i.png" }));
  assert.equal(back.subject, "Trip ✈ & co");
  assert.equal(back.icon, "https://x/i.png");
});

test("a GSO without lastfocussessionid is refused, as clients refuse it", () => {
  assert.throws(() => serializeGso({ ...base, lastFocusSessionId: "" }));
  assert.throws(() => parseGso('<groupstate timestamp="2026-11-25T10:00:00Z"/>'));
  assert.throws(() => parseGso('<groupstate lastfocussessionid="sip:f@x"/>'));
});

test("control characters that XML 1.0 forbids are dropped, not emitted", () => {
  const xml = serializeGso({ ...base, participants: [{ name: "a\u0001b\u0000", commAddr: "tel:+1" }] });
  assert.equal(parseGso(xml).participants[0]?.name, "ab");
});

test("hostile XML: DOCTYPE/ENTITY (XXE, billion laughs) and junk are refused", () => {
  const lol =
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><groupstate timestamp="x" lastfocussessionid="&lol2;"/>';
  const xxe = '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><groupstate>&e;</groupstate>';
  for (const bad of [lol, xxe, "<groupstate", "<a></b>", "\u0000", "x".repeat(70 * 1024)]) {
    assert.throws(
      () => parseXml(bad),
      (e: Error & { code?: string }) => e.code === "CPM_ERR_BAD_XML",
    );
  }
});
