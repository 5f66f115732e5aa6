// Session descriptors in the served users' own mailboxes (src/store/session-descriptor.ts)
// against a real Dovecot: written, read back with the latest GSO, and a
// damaged one refused with a log line naming the user and the group, nothing
// deleted, another user's read unaffected.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { createRootLogger } from "../../src/log/logger.js";
import { buildCpmObject } from "../../src/store/cpm-object.js";
import { DESCRIPTOR_CONTENT_TYPE, SessionDescriptors } from "../../src/store/session-descriptor.js";
import { GSO_CONTENT_TYPE, serializeGso } from "../../src/xml/gso.js";
import { groupSession } from "../fixtures/delivery.js";
import { readFolderRaw } from "../harness/imap-read.js";
import { useStoreEnv } from "../harness/store-env.js";

const env = useStoreEnv("cpm-descriptor-test");
const ALICE = "sip:alice@example.net";
const BOB = "sip:bob@example.net";

function capturingLog() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(l));
      done();
    },
  });
  return { log: createRootLogger("debug", sink), lines };
}

/** Per-user mailboxes on the test Dovecot and the descriptors on them, logging into `lines`. */
async function descriptorsOnMailboxes() {
  const { log, lines } = capturingLog();
  const cfg = await env.mailboxConfig();
  const mailboxes = await env.startMailboxes(cfg, log);
  return { lines, mailboxes, descriptors: new SessionDescriptors(cfg, mailboxes, log) };
}

test("DD-1 DD-6: a descriptor and the latest GSO come back from the served user's own mailbox; a damaged descriptor is logged with the user and group and read as absent, nothing deleted, the other user unaffected", async () => {
  const { lines, mailboxes, descriptors } = await descriptorsOnMailboxes();
  const alice = groupSession({ servedUser: ALICE, conversationId: "conv-d1", contributionId: "contrib-d1" });
  const bob = groupSession({ servedUser: BOB, conversationId: "conv-d1", contributionId: "contrib-d1" });
  await descriptors.write(alice, 1000);
  // the CF's BYE stored a GSO later, with a participant change
  const gso = serializeGso({
    timestamp: new Date(2000),
    lastFocusSessionId: "sip:focus-later@cf.example.net",
    groupType: "Closed",
    participants: [{ name: "Dora", commAddr: "tel:+16135551299" }],
  });
  await mailboxes.append({
    owner: ALICE,
    folder: "Default/conv-d1/contrib-d1",
    messageId: "gso-1@cpm-pf",
    raw: buildCpmObject({
      contentType: GSO_CONTENT_TYPE,
      from: "sip:anonymous@anonymous.invalid",
      to: ALICE,
      date: new Date(2000),
      conversationId: "conv-d1",
      contributionId: "contrib-d1",
      messageId: "gso-1@cpm-pf",
      body: gso,
    }),
  });
  const a = await descriptors.read(ALICE, "conv-d1", "contrib-d1");
  assert.equal(a.descriptor?.sdpOffer, alice.sdpOffer);
  assert.equal(a.latestGso?.lastFocusSessionId, "sip:focus-later@cf.example.net");

  // bob's descriptor is damaged (same Message-ID the PF would write, a body that is not one)
  await descriptors.write(bob, 1000);
  const bobFolder = descriptors.folderOf(BOB);
  const before = (await readFolderRaw(env.dovecot, bobFolder, { user: "bob@example.net", password: "bob-pass" })).length;
  const messageId = /^Message-ID:\s*<?([^>\r\n]+)>?/im.exec(
    (await readFolderRaw(env.dovecot, bobFolder, { user: "bob@example.net", password: "bob-pass" }))[0]?.toString("utf8") ?? "",
  )?.[1];
  assert.ok(messageId);
  await mailboxes.append({
    owner: BOB,
    folder: bobFolder,
    messageId: `${messageId}`,
    raw: buildCpmObject({
      contentType: DESCRIPTOR_CONTENT_TYPE,
      from: "sip:x@x",
      to: BOB,
      date: new Date(3000),
      conversationId: "conv-d1",
      contributionId: "contrib-d1",
      messageId,
      body: '{"version":1,"servedUser":',
    }),
  });
  const b = await descriptors.read(BOB, "conv-d1", "contrib-d1");
  assert.equal(b.descriptor, undefined, "the newest descriptor is damaged: no record is built from it");
  const warned = lines.find((l) => l.message === "session descriptor unusable: record not rebuilt, data kept");
  assert.equal(warned?.servedUser, BOB);
  assert.equal(warned?.conversationId, "conv-d1");
  assert.equal(
    (await readFolderRaw(env.dovecot, bobFolder, { user: "bob@example.net", password: "bob-pass" })).length,
    before + 1,
    "nothing deleted",
  );
  assert.equal((await descriptors.read(ALICE, "conv-d1", "contrib-d1")).descriptor?.servedUser, ALICE, "alice unaffected");
});

test("DD-1 DD-2 bad input: a GSO in the group folder that fails to parse is logged with the user and group and read as absent (the descriptor's participants stand), nothing deleted", async () => {
  const { lines, mailboxes, descriptors } = await descriptorsOnMailboxes();
  const alice = groupSession({ servedUser: ALICE, conversationId: "conv-d2", contributionId: "contrib-d2" });
  await descriptors.write(alice, 1000);
  const folder = "Default/conv-d2/contrib-d2";
  await mailboxes.append({
    owner: ALICE,
    folder,
    messageId: "gso-broken@cpm-pf",
    raw: buildCpmObject({
      contentType: GSO_CONTENT_TYPE,
      from: "sip:anonymous@anonymous.invalid",
      to: ALICE,
      date: new Date(2000),
      conversationId: "conv-d2",
      contributionId: "contrib-d2",
      messageId: "gso-broken@cpm-pf",
      body: '<?xml version="1.0"?><groupstate timestamp="never"><participant',
    }),
  });
  const r = await descriptors.read(ALICE, "conv-d2", "contrib-d2");
  assert.equal(r.latestGso, undefined);
  assert.deepEqual(r.descriptor?.participants, alice.participants, "the descriptor's participants stand");
  const warned = lines.find((l) => l.message === "latest GSO unreadable: the descriptor's participants are used");
  assert.equal(warned?.servedUser, ALICE);
  assert.equal(warned?.conversationId, "conv-d2");
  assert.equal(warned?.contributionId, "contrib-d2");
  assert.equal(
    (await readFolderRaw(env.dovecot, folder, { user: "alice@example.net", password: "alice-pass" })).length,
    1,
    "nothing deleted",
  );
});
