// BYE-B8: OMA CPM 8.5.2 "Record CPM Session" against a real Dovecot.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { GroupSessionRef, RecordedMessage } from "../../src/media/ports.js";
import { parseStoredObject } from "../../src/store/deferred-object.js";
import {
  buildRecordedMessageObject,
  buildSessionInfoObject,
  MessageStoreSessionRecorder,
  SESSION_INFO_CONTENT_TYPE,
} from "../../src/store/session-record.js";
import { chatCpim, imdnCpim, isComposingCpim } from "../fixtures/cpim.js";
import { readFolderRaw } from "../harness/imap-read.js";
import { useStoreEnv } from "../harness/store-env.js";
import { waitFor } from "../harness/wait.js";

const env = useStoreEnv("cpm-record-test");

async function newRecorder() {
  const cfg = await env.storeConfig();
  // the shared login (store.user without "{user}"): one mailbox for every served user
  const mailboxes = await env.startMailboxes(cfg);
  return { store: mailboxes.forUser("tel:+33612345678"), recorder: new MessageStoreSessionRecorder(cfg, mailboxes, env.log) };
}

function sessionRef(conversationId: string): GroupSessionRef {
  return {
    sessionKey: `cf-leg-${conversationId}@cf.example.net`,
    servedUser: "tel:+33612345678",
    conversationId,
    contributionId: `contrib-${conversationId}`,
    focus: "sip:focus-1@cf.example.net",
  };
}

const info = {
  startedAt: new Date(Date.UTC(2026, 10, 25, 12, 0, 0)),
  endedAt: new Date(Date.UTC(2026, 10, 25, 12, 30, 0)),
  participants: ["tel:+16135551210", "tel:+16135551211", "tel:+33612345678"],
  subject: "Weekend trip",
};

function relayed(): RecordedMessage[] {
  const at = (s: number) => new Date(Date.UTC(2026, 10, 25, 12, 1, s));
  return [
    { direction: "from-network", contentType: "message/cpim", body: chatCpim("hello all", "imdn-a"), msrpMessageId: "netA0001", at: at(0) },
    { direction: "from-network", contentType: "message/cpim", body: isComposingCpim(), msrpMessageId: "netA0002", at: at(1) },
    {
      direction: "from-client",
      contentType: "message/cpim",
      body: imdnCpim("imdn-a", "imdn-b", "tel:+33612345678"),
      msrpMessageId: "cliB0001",
      at: at(2),
    },
    {
      direction: "from-client",
      contentType: "message/cpim",
      body: chatCpim("hi, I am in", "imdn-c", "tel:+33612345678"),
      msrpMessageId: "cliB0002",
      at: at(3),
    },
    { direction: "from-network", contentType: "message/cpim", body: chatCpim("see you", "imdn-d"), msrpMessageId: "netA0003", at: at(4) },
  ];
}

test(
  "BYE-B8: the session is recorded in Default/<conv>/<contrib>: session-info object, then the messages as message/cpim",
  { timeout: 30_000 },
  async () => {
    const { recorder } = await newRecorder();
    const session = sessionRef("conv-rec");
    const messages = relayed();
    const result = await recorder.record(session, info, messages);

    const folder = recorder.folderOf(session);
    assert.equal(folder, "Default/conv-rec/contrib-conv-rec");
    assert.deepEqual(result, { folder, stored: 5, spooled: 0, duplicates: 0, skipped: 1 });

    const raws = await readFolderRaw(env.dovecot, folder);
    const kept = messages.filter((_, i) => i !== 1); // isComposing is not history
    const expected = [
      buildSessionInfoObject(folder, session, info).raw,
      ...kept.map((m) => buildRecordedMessageObject(folder, session, m).raw),
    ];
    assert.equal(raws.length, expected.length);
    raws.forEach((raw, i) => {
      assert.ok(raw.equals(expected[i] as Buffer), `object ${i} byte-exact and in order`);
    });

    const objs = raws.map((r) => parseStoredObject(r));
    assert.equal(objs[0]?.header("Content-Type"), SESSION_INFO_CONTENT_TYPE);
    assert.match(
      objs[0]?.body.toString("utf8") ?? "",
      /Content-Type: Application\/X-CPM-Session\r\n[\s\S]*<session-type>Group<\/session-type>/,
    );
    assert.equal(objs[0]?.header("Subject"), "Weekend trip");
    for (const o of objs.slice(1)) assert.equal(o.header("Content-Type"), "message/cpim");
    assert.deepEqual(
      objs.slice(1).map((o) => o.header("Message-Direction")),
      ["received", "sent", "sent", "received"],
    );
    assert.deepEqual(
      objs.slice(1).map((o) => o.header("IMDN-Message-ID")),
      ["imdn-a", "imdn-b", "imdn-c", "imdn-d"],
    );
    objs.slice(1).forEach((o, i) => {
      assert.ok(o.body.equals(Buffer.from(kept[i]?.body ?? [])), `CPIM body ${i} unchanged`);
    });
  },
);

test("BYE-B8: recording the same session again adds nothing", { timeout: 30_000 }, async () => {
  const { recorder } = await newRecorder();
  const session = sessionRef("conv-twice");
  await recorder.recordSession(session, info, relayed());
  const again = await recorder.record(session, info, relayed());
  assert.equal(again.stored, 0);
  assert.equal(again.duplicates, 5);
  assert.equal((await readFolderRaw(env.dovecot, recorder.folderOf(session))).length, 5);
});

test("BYE-B8: with the Message Store down the recording is spooled and lands in order when it returns", { timeout: 60_000 }, async () => {
  const { store, recorder } = await newRecorder();
  const session = sessionRef("conv-rec-down");
  await env.dovecot.kill();
  try {
    const result = await recorder.record(session, info, relayed());
    assert.equal(result.spooled, 5);
  } finally {
    await env.dovecot.restart();
  }
  await waitFor(() => store.stats().spoolPending === 0, 20_000, 50, "spool drained");
  const folder = recorder.folderOf(session);
  const raws = await readFolderRaw(env.dovecot, folder);
  assert.equal(raws.length, 5);
  assert.ok(raws[0]?.equals(buildSessionInfoObject(folder, session, info).raw), "session info first");
  assert.deepEqual(
    raws.slice(1).map((r) => parseStoredObject(r).header("IMDN-Message-ID")),
    ["imdn-a", "imdn-b", "imdn-c", "imdn-d"],
  );
});
