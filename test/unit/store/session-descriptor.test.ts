// The session descriptor (src/store/session-descriptor.ts) and the record
// rebuilt from it and the latest GSO (src/session/rebuild.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import { descriptorOf, rebuildRecord } from "../../../src/session/rebuild.js";
import { buildCpmObject } from "../../../src/store/cpm-object.js";
import { DESCRIPTOR_CONTENT_TYPE, parseDescriptorObject } from "../../../src/store/session-descriptor.js";
import { groupSession } from "../../fixtures/delivery.js";

const AT = 1_800_000_000_000;

function object(body: string, contentType = DESCRIPTOR_CONTENT_TYPE): Buffer {
  return buildCpmObject({
    contentType,
    from: "sip:focus@cf",
    to: "tel:+16135551200",
    date: new Date(AT),
    conversationId: "conv-7f3a",
    contributionId: "contrib-1",
    messageId: "desc.0011223344556677@cpm-pf.invalid",
    body,
  });
}

test("DD-2 DD-6: a descriptor keeps what a delivery INVITE needs (original offer, participants, focus, IDs) and reads back as written", () => {
  const s = groupSession();
  const d = parseDescriptorObject(object(JSON.stringify(descriptorOf(s, AT))));
  assert.deepEqual(d, descriptorOf(s, AT));
  const r = rebuildRecord(d, undefined, AT + 1);
  assert.equal(r.sdpOffer, s.sdpOffer);
  assert.deepEqual(r.participants, s.participants);
  assert.equal(r.focusUri, s.focusUri);
  assert.equal(r.lifecycle, "inactive", "no dialog state: re-startable");
  assert.equal(r.pendingDeferred, true);
});

test("BYE-B3 BYE-B4: a GSO newer than the descriptor gives the latest participants and focus; <status>removed</status> -> terminated", () => {
  const d = descriptorOf(groupSession(), AT);
  const gso = {
    timestamp: new Date(AT + 5000),
    lastFocusSessionId: "sip:focus-new@cf.example.net",
    groupType: "Closed" as const,
    participants: [{ name: "Carol", commAddr: "tel:+16135551299" }],
  };
  const r = rebuildRecord(d, gso, AT + 6000);
  assert.equal(r.focusUri, "sip:focus-new@cf.example.net");
  assert.deepEqual(r.participants, gso.participants);
  assert.equal(r.lifecycle, "inactive");
  assert.equal(rebuildRecord(d, { ...gso, status: "removed" }, AT + 6000).lifecycle, "terminated");
  const older = rebuildRecord(d, { ...gso, timestamp: new Date(AT - 1) }, AT + 6000);
  assert.deepEqual(older.participants, d.participants, "an older GSO does not override the descriptor");
});

test("bad input: a damaged descriptor is a CpmError naming what is wrong, never a raw exception", () => {
  const good = descriptorOf(groupSession(), AT);
  const cases: Buffer[] = [
    object("{not json"),
    object("[]"),
    object(JSON.stringify({ ...good, version: 2 })),
    object(JSON.stringify({ ...good, sdpOffer: 7 })),
    object(JSON.stringify({ ...good, groupType: "Secret" })),
    object(JSON.stringify({ ...good, participants: [{ commAddr: 1 }] })),
    object(JSON.stringify(good), "text/plain"),
    Buffer.from("no header block at all"),
    Buffer.alloc(300 * 1024, 0x20),
  ];
  for (const raw of cases) assert.throws(() => parseDescriptorObject(raw), CpmError);
});

test("bad input: a __proto__ key in a descriptor pollutes nothing; only the known fields are taken", () => {
  const good = JSON.stringify(descriptorOf(groupSession(), AT));
  const d = parseDescriptorObject(object(good.replace('"version"', '"__proto__":{"polluted":1},"version"')));
  assert.equal(Object.getPrototypeOf(d), Object.prototype);
  assert.equal((d as unknown as { polluted?: unknown }).polluted, undefined);
  assert.equal(({} as { polluted?: unknown }).polluted, undefined);
});

test("DD-3: the invitation's Referred-By survives the descriptor and the rebuild; a non-string one is refused", () => {
  const s = groupSession({ referredBy: '"Alice" <sip:alice@example.net>' });
  const d = parseDescriptorObject(object(JSON.stringify(descriptorOf(s, AT))));
  assert.equal(d.referredBy, '"Alice" <sip:alice@example.net>');
  assert.equal(rebuildRecord(d, undefined, AT + 1).referredBy, '"Alice" <sip:alice@example.net>');
  assert.throws(
    () => parseDescriptorObject(object(JSON.stringify({ ...descriptorOf(s, AT), referredBy: 7 }))),
    (e: unknown) => e instanceof CpmError && /referredBy/.test(e.message),
  );
});
