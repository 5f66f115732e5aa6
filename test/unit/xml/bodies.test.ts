import assert from "node:assert/strict";
import { test } from "node:test";
import { parseConferenceInfo } from "../../../src/xml/conference-info.js";
import { buildResourceLists, parseResourceLists } from "../../../src/xml/resource-lists.js";
import { RESOURCE_LIST } from "../../fixtures/sip.js";

test("resource-lists (RFC 4826) entries with display names, any prefix", () => {
  assert.deepEqual(parseResourceLists(RESOURCE_LIST), [
    { uri: "tel:+16135551210", displayName: "Bob" },
    { uri: "tel:+16135551211", displayName: "" },
    { uri: "tel:+16135551212", displayName: "Carol & co" },
  ]);
  const prefixed =
    '<rl:resource-lists xmlns:rl="urn:ietf:params:xml:ns:resource-lists"><rl:list><rl:list><rl:entry uri="sip:a@b"/></rl:list></rl:list></rl:resource-lists>';
  assert.deepEqual(parseResourceLists(prefixed), [{ uri: "sip:a@b", displayName: "" }]);
});

test("conference-info (RFC 4575): users, states, subject", () => {
  const info =
    parseConferenceInfo(`<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:focus@cf" state="partial" version="7">
    <conference-description><subject>Trip</subject></conference-description>
    <users>
      <user entity="tel:+1" state="full"><display-text>Bob</display-text><endpoint entity="e1"><status>connected</status></endpoint></user>
      <user entity="tel:+2" state="deleted"/>
      <user entity="tel:+3"><endpoint><status>disconnected</status></endpoint></user>
    </users></conference-info>`);
  assert.equal(info.version, 7);
  assert.equal(info.state, "partial");
  assert.equal(info.subject, "Trip");
  assert.deepEqual(
    info.users.map((u) => [u.entity, u.state, u.disconnected, u.displayText]),
    [
      ["tel:+1", "full", false, "Bob"],
      ["tel:+2", "deleted", false, ""],
      ["tel:+3", "full", true, ""],
    ],
  );
});

test("conference-info with a bad version or state is refused", () => {
  assert.throws(() => parseConferenceInfo('<conference-info version="-1"/>'));
  assert.throws(() => parseConferenceInfo('<conference-info version="1" state="weird"/>'));
  assert.throws(() => parseConferenceInfo("<other/>"));
});

test("resource-lists builder (RFC 4826 3.2): one <list>, escaped, round-trips through the parser (DD-2)", () => {
  const entries = [
    { uri: "tel:+16135551210", displayName: "Bob" },
    { uri: "sip:carol@example.net;a=b&c", displayName: 'Carol <"co">' },
    { uri: "tel:+16135551211", displayName: "" },
  ];
  const xml = buildResourceLists(entries);
  assert.equal(
    xml,
    '<?xml version="1.0" encoding="UTF-8"?>\n<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">\n <list>\n' +
      '  <entry uri="tel:+16135551210"><display-name>Bob</display-name></entry>\n' +
      '  <entry uri="sip:carol@example.net;a=b&amp;c"><display-name>Carol &lt;&quot;co&quot;&gt;</display-name></entry>\n' +
      '  <entry uri="tel:+16135551211"/>\n </list>\n</resource-lists>\n',
  );
  assert.deepEqual(parseResourceLists(xml), entries);
  assert.deepEqual(parseResourceLists(buildResourceLists([])), []);
});
