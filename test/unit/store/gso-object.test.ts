import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import type { ByeIdentity } from "../../../src/procedures/handle-bye.js";
import { buildGsoObject, gsoIdentity, gsoMessageId } from "../../../src/store/gso-object.js";
import type { GroupStateObject } from "../../../src/xml/gso.js";

const bye: ByeIdentity = { callId: "1-4711@127.0.0.1", cseq: 2, fromTag: "4711CF1" };
const gso: GroupStateObject = {
  timestamp: new Date(Date.UTC(2026, 11, 3, 10, 0, 0)),
  lastFocusSessionId: "sip:focus@cf.example.net",
  groupType: "Closed",
  contributionId: "contrib-1",
  participants: [{ name: "Bob", commAddr: "tel:+16135551210" }],
};
const input = { gso, bye, to: "tel:+16135551200", conversationId: "conv-1", contributionId: "contrib-1" };
const badRequest = (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_BAD_REQUEST";

test("BYE-B4: the GSO's Message-ID comes from the BYE: the same BYE (a retransmission, a replay) gives the same id", () => {
  const id = gsoMessageId(bye);
  assert.match(id, /^gso\.[0-9a-f]{32}@cpm-pf\.invalid$/);
  assert.equal(gsoMessageId({ ...bye }), id);
  // a later timestamp (the replay is received later) does not change it
  const again = buildGsoObject({ ...input, gso: { ...gso, timestamp: new Date(gso.timestamp.getTime() + 5000) } });
  assert.equal(again.messageId, buildGsoObject(input).messageId);
  assert.equal(again.messageId, id);
});

test("BYE-B4: another BYE (Call-ID, CSeq or From tag differs) gives another Message-ID", () => {
  const id = gsoIdentity(bye);
  assert.notEqual(gsoIdentity({ ...bye, callId: "2-4711@127.0.0.1" }), id);
  assert.notEqual(gsoIdentity({ ...bye, cseq: 3 }), id);
  assert.notEqual(gsoIdentity({ ...bye, fromTag: "4711CF2" }), id);
  // no ambiguity where one value ends and the next begins
  assert.notEqual(gsoIdentity({ callId: "a", cseq: 1, fromTag: "2b" }), gsoIdentity({ callId: "a1", cseq: 2, fromTag: "b" }));
});

test("BYE-B4: the stored GSO carries that Message-ID, its IMDN-Message-ID the same digits", () => {
  const { raw, messageId } = buildGsoObject(input);
  const text = raw.toString("utf8");
  const hex = gsoIdentity(bye);
  assert.match(text, new RegExp(`^Message-ID: <${messageId.replace(/\./g, "\\.")}>\\r$`, "m"));
  assert.match(text, new RegExp(`^IMDN-Message-ID: ${hex}\\r$`, "m"));
  assert.match(text, /^Content-Type: application\/group-state-object\+xml\r$/m);
  assert.match(text, /^From: sip:anonymous@anonymous\.invalid\r$/m);
  assert.match(text, /^Message-Direction: received\r$/m);
});

test("an unusable BYE identity is a CPM_ERR_BAD_REQUEST, not a random id", () => {
  assert.throws(() => gsoIdentity({ ...bye, callId: "" }), badRequest);
  assert.throws(() => gsoIdentity({ ...bye, cseq: Number.NaN }), badRequest);
  assert.throws(() => gsoIdentity({ ...bye, cseq: -1 }), badRequest);
  assert.throws(() => gsoIdentity({ ...bye, fromTag: undefined as unknown as string }), badRequest);
});
