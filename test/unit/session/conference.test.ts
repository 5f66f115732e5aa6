// The conference-info rules (RFC 4575 4.1) shared by the client's NOTIFYs
// (observe.ts) and the PF's own subscription (applyConferenceNotify).
import assert from "node:assert/strict";
import { test } from "node:test";
import { conferenceInfoOf, foldConferenceInfo } from "../../../src/session/conference.js";
import { parseSipMessage } from "../../../src/sip/message.js";
import { parseConferenceInfo } from "../../../src/xml/conference-info.js";
import { groupSession, SERVED_USER } from "../../fixtures/delivery.js";
import { conferenceNotify } from "../../fixtures/sip.js";

const doc = (state: "full" | "partial", version: number, users: string) =>
  parseConferenceInfo(
    `<conference-info entity="sip:focus" state="${state}" version="${version}"><users>${users}</users></conference-info>`,
  );
const addrs = (s: { participants: { commAddr: string }[] }) => s.participants.map((p) => p.commAddr);

test("DD-11 RFC 4575 4.1: full replaces the list, partial updates user by user, deleted and disconnected users leave; the version must be newer", () => {
  const s = groupSession({ participants: [{ name: "Bob", commAddr: "tel:+16135551210" }], conferenceVersion: 4 });
  const stale = foldConferenceInfo(s, doc("full", 4, '<user entity="tel:+1"/>'), 10);
  assert.equal(stale.updated, false);
  assert.match(stale.notes[0] ?? "", /version 4 not newer than 4/);
  const partial = foldConferenceInfo(s, doc("partial", 5, '<user entity="tel:+16135551213"><display-text>Dave</display-text></user>'), 10);
  assert.deepEqual(addrs(partial.session), ["tel:+16135551210", "tel:+16135551213"]);
  assert.equal(partial.session.participants[1]?.name, "Dave");
  assert.equal(partial.session.conferenceVersion, 5);
  const left = foldConferenceInfo(
    partial.session,
    doc(
      "partial",
      6,
      '<user entity="tel:+16135551210" state="deleted"/><user entity="tel:+16135551213"><endpoint><status>disconnected</status></endpoint></user>',
    ),
    10,
  );
  assert.deepEqual(addrs(left.session), []);
  const full = foldConferenceInfo(left.session, doc("full", 7, '<user entity="tel:+2"/>'), 10);
  assert.deepEqual(addrs(full.session), ["tel:+2"]);
});

test("DD-11: on the PF's own subscription the served user's own removal is kept out (the CF's BYE ends it for him), the rest applied; lastVersion replaces the record's version", () => {
  const s = groupSession({
    participants: [
      { name: "", commAddr: SERVED_USER },
      { name: "Bob", commAddr: "tel:+16135551210" },
    ],
    conferenceVersion: 40,
  });
  const info = doc("partial", 1, `<user entity="${SERVED_USER}" state="deleted"/><user entity="tel:+16135551213"/>`);
  assert.equal(foldConferenceInfo(s, info, 10).updated, false, "the record's version (another subscription's) would discard it");
  const kept = foldConferenceInfo(s, info, 10, { keepServedUser: true, lastVersion: -1 });
  assert.equal(kept.updated, true);
  assert.equal(kept.servedUserRemoved, true);
  assert.deepEqual(addrs(kept.session), [SERVED_USER, "tel:+16135551210", "tel:+16135551213"]);
  assert.match(kept.notes[0] ?? "", /served user; kept/);
  // sip:+1...;user=phone is the same user (normal forms)
  const fullWithout = doc("full", 2, '<user entity="sip:+16135551200@ims.example.net;user=phone" state="deleted"/><user entity="tel:+3"/>');
  assert.deepEqual(addrs(foldConferenceInfo(s, fullWithout, 10, { keepServedUser: true, lastVersion: -1 }).session), [
    "tel:+3",
    SERVED_USER,
  ]);
  // the client's own subscription (observe): applied as sent
  assert.deepEqual(addrs(foldConferenceInfo(s, info, 10, { lastVersion: -1 }).session), ["tel:+16135551210", "tel:+16135551213"]);
});

test("DD-11 bad input: conferenceInfoOf names what is wrong with a NOTIFY's body instead of throwing", () => {
  assert.match(
    (conferenceInfoOf(parseSipMessage(conferenceNotify("<conference-info version="))) as { note: string }).note,
    /conference-info skipped/,
  );
  const ok = conferenceInfoOf(parseSipMessage(conferenceNotify('<conference-info entity="x" version="3"/>')));
  assert.equal("info" in ok && ok.info.version, 3);
});
