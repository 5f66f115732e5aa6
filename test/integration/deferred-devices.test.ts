// DD-1 per device (8.3.2.9.1.2 "for a CPM Client") against a real Dovecot
// (test/harness/dovecot.ts): each device's marks are IMAP keywords on the
// queue's items (src/procedures/device-view.ts), its reads skip what it got,
// listSessions counts for it, an item leaves only once every member device
// has it (or by retention), DD-8 / DD-14 discard one device's view; what
// Dovecot does with many devices' keywords on one item (maildir: 26 in the file name).
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import type { Config } from "../../src/config/config.js";
import type { DeferredItem, GroupSessionRef } from "../../src/media/ports.js";
import { deviceOf, retirable } from "../../src/procedures/device-view.js";
import { DeferredQueue } from "../../src/store/deferred-queue.js";
import { chatCpim } from "../fixtures/cpim.js";
import { readFolderRaw } from "../harness/imap-read.js";
import { useStoreEnv } from "../harness/store-env.js";

const env = useStoreEnv("cpm-deferred-devices-test");

const SERVED_USER = "tel:+33612345678";
const phone = deviceOf("<urn:gsma:imei:35209900-176148-0>").keyword;
const tablet = deviceOf("<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>").keyword;

async function newQueue(over: Partial<Config["store"]> = {}) {
  const cfg = await env.storeConfig(over);
  const mailboxes = await env.startMailboxes(cfg);
  return new DeferredQueue(cfg, mailboxes, env.log);
}

function sessionRef(conversationId: string): GroupSessionRef {
  return {
    sessionKey: `cf-leg-${conversationId}@cf.example.net`,
    servedUser: SERVED_USER,
    conversationId,
    contributionId: "c6cca468b4ade657694b9e75baeb9e93",
    focus: "sip:focus@cf.example.net",
  };
}

function items(n: number, tag: string): DeferredItem[] {
  return Array.from({ length: n }, (_, i) => ({
    kind: "message" as const,
    contentType: "message/cpim",
    body: chatCpim(`${tag} ${i}`, `imdn-${tag}-${i}`),
    msrpMessageId: `${tag}M${i}`,
    receivedAt: new Date(Date.UTC(2026, 10, 25, 12, 0, i)),
  }));
}

const ids = (records: { item?: { msrpMessageId: string } | undefined }[]) => records.map((r) => r.item?.msrpMessageId);

test(
  "DD-1 DD-10: two devices each read every item in order; a device's read skips what it confirmed; an item leaves only once both have it",
  { timeout: 30_000 },
  async () => {
    const queue = await newQueue();
    const session = sessionRef("conv-two-devices");
    for (const it of items(5, "two")) await queue.storeDeferred(session, it);
    const all = ["twoM0", "twoM1", "twoM2", "twoM3", "twoM4"];

    // the phone gets the first three
    const forPhone = await queue.read({ ...session, device: phone }, 3);
    assert.deepEqual(ids(forPhone), all.slice(0, 3));
    const marked = await queue.mark(
      forPhone.map((r) => r.handle),
      phone,
    );
    assert.deepEqual(
      marked.map((m) => m.keywords),
      [[phone], [phone], [phone]],
      "the phone's keyword is on what it confirmed",
    );
    assert.ok(
      marked.every((m) => typeof m.storedAt === "number" && Math.abs((m.storedAt as number) - Date.now()) < 60_000),
      "INTERNALDATE read back",
    );
    // nothing leaves: the tablet is a member and has none of it
    assert.equal(retirable(marked, [phone, tablet], Date.now(), 86_400_000).retire.length, 0);

    // the phone's next read starts after what it has, from the oldest (no cursor) or above a cursor
    assert.deepEqual(ids(await queue.read({ ...session, device: phone }, 10)), all.slice(3));
    const cursor = { afterUid: forPhone[1]?.handle.uid ?? 0, uidValidity: forPhone[0]?.handle.uidValidity ?? "" };
    assert.deepEqual(ids(await queue.read({ ...session, device: phone }, 10, cursor)), all.slice(3));
    // the tablet sees everything, in order
    const forTablet = await queue.read({ ...session, device: tablet }, 10);
    assert.deepEqual(ids(forTablet), all);
    // counted per device
    const listed = (await queue.listSessions(SERVED_USER, phone)).find((s) => s.folder === queue.folderOf(session));
    assert.deepEqual([listed?.count, listed?.total], [2, 5]);
    const listedTablet = (await queue.listSessions(SERVED_USER, tablet)).find((s) => s.folder === queue.folderOf(session));
    assert.deepEqual([listedTablet?.count, listedTablet?.total], [5, 5]);

    // the tablet confirms everything: the three the phone has too leave the queue, two wait for the phone
    const both = await queue.mark(
      forTablet.map((r) => r.handle),
      tablet,
    );
    const decided = retirable(both, [phone, tablet], Date.now(), 86_400_000, tablet);
    assert.equal(decided.retire.length, 3);
    assert.equal(await queue.ack(decided.retire), 3);
    assert.deepEqual(ids(await queue.read(session, 10)), all.slice(3), "the queue as a whole");
    assert.deepEqual(ids(await queue.read({ ...session, device: tablet }, 10)), [], "the tablet has it all");
    assert.deepEqual(ids(await queue.read({ ...session, device: phone }, 10)), all.slice(3));

    // the phone confirms the rest: the queue is empty
    const rest = await queue.mark(
      (await queue.read({ ...session, device: phone }, 10)).map((r) => r.handle),
      phone,
    );
    const last = retirable(rest, [phone, tablet], Date.now(), 86_400_000, phone);
    assert.equal(await queue.ack(last.retire), 2);
    assert.equal((await readFolderRaw(env.dovecot, queue.folderOf(session))).length, 0, "expunged on the server");
  },
);

test(
  "DD-1: retention: an item one device got leaves once older than deviceRetentionMs; the marks of a whole folder are read without bodies",
  { timeout: 30_000 },
  async () => {
    const queue = await newQueue();
    const session = sessionRef("conv-retention");
    for (const it of items(3, "ret")) await queue.storeDeferred(session, it);
    const got = await queue.read({ ...session, device: phone }, 2);
    await queue.mark(
      got.map((r) => r.handle),
      phone,
    );
    const marks = await queue.marks(session);
    assert.deepEqual(
      marks.map((m) => m.keywords.length),
      [1, 1, 0],
    );
    // a day later (INTERNALDATE + retention passed): what the phone got leaves, what nobody got stays
    const later = Date.now() + 86_400_000 + 1000;
    const r = retirable(marks, [phone, tablet], later, 86_400_000);
    assert.deepEqual(
      r.retire.map((h) => h.uid),
      got.map((g) => g.handle.uid),
    );
    assert.equal(await queue.ack(r.retire), 2);
    assert.deepEqual(ids(await queue.read(session, 10)), ["retM2"]);
  },
);

test(
  "DD-8 DD-14: a discard by one device marks every item as its own; the other device still reads all of them",
  { timeout: 30_000 },
  async () => {
    const queue = await newQueue();
    const session = sessionRef("conv-discard-one");
    for (const it of items(4, "dis")) await queue.storeDeferred(session, it);
    const marks = await queue.discardFor({ ...session, device: tablet }, tablet);
    assert.equal(marks.length, 4);
    assert.ok(marks.every((m) => m.keywords.includes(tablet)));
    assert.equal(retirable(marks, [phone, tablet], Date.now(), 86_400_000, tablet).retire.length, 0, "kept for the phone");
    assert.deepEqual(ids(await queue.read({ ...session, device: tablet }, 10)), []);
    assert.deepEqual(ids(await queue.read({ ...session, device: phone }, 10)), ["disM0", "disM1", "disM2", "disM3"]);
    // with the phone the only member (it discards too), everything leaves
    const again = await queue.discardFor({ ...session, device: phone }, phone);
    assert.equal(await queue.ack(retirable(again, [phone, tablet], Date.now(), 86_400_000, phone).retire), 4);
    assert.equal((await queue.read(session, 10)).length, 0);
    // a folder that does not exist: nothing marked, nothing read
    assert.deepEqual(await queue.discardFor({ ...sessionRef("conv-none"), device: phone }, phone), []);
    assert.deepEqual(await queue.marks(sessionRef("conv-none")), []);
    await assert.rejects(queue.mark([], "bad keyword"), /invalid device keyword/);
  },
);

test(
  "DD-1: many devices on one item: each mark is kept, or (a mailbox that takes no new keyword) reported missing so the item leaves as for one device",
  { timeout: 60_000 },
  async () => {
    const queue = await newQueue();
    const session = sessionRef("conv-many-devices");
    for (const it of items(1, "many")) await queue.storeDeferred(session, it);
    const [rec] = await queue.read(session, 1);
    assert.ok(rec);
    let kept = 0;
    let refused = 0;
    for (let i = 0; i < 30; i++) {
      const kw = deviceOf(`<urn:uuid:device-${i}>`).keyword;
      const [m] = await queue.mark([rec.handle], kw);
      assert.ok(m);
      if (m.keywords.includes(kw)) kept++;
      else {
        refused++;
        // the decision for that device: the item leaves (retirable counts it as unmarked)
        assert.equal(retirable([m], [kw], Date.now(), 86_400_000, kw).unmarked, 1);
      }
    }
    // Dovecot 2.3 takes them all (PERMANENTFLAGS \*): sdbox keeps keywords in its index; a maildir file
    // name holds 26 (letters a-z, dovecot-keywords), the others live in dovecot.index only (lost, and the
    // items delivered again to those devices, if the index is rebuilt)
    assert.equal(kept, 30);
    if (env.dovecot.mailFormat === "maildir") {
      const files = await readdir(join(env.dovecot.folderDirOf(env.dovecot.user, queue.folderOf(session)), "cur"));
      assert.equal(files[0]?.split(":2,")[1]?.replace(/[^a-z]/g, "").length, 26);
    }
    assert.equal(kept + refused, 30);
  },
);
