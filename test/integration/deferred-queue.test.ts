// The deferred-messages queue against a real Dovecot
// (test/harness/dovecot.ts): folder convention, arrival order, byte-exact
// read-back, read/ack (at-least-once), duplicate MSRP Message-IDs, store outage.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import type { Config } from "../../src/config/config.js";
import type { DeferredItem, GroupSessionRef } from "../../src/media/ports.js";
import { buildDeferredObject } from "../../src/store/deferred-object.js";
import { DeferredQueue } from "../../src/store/deferred-queue.js";
import { decodeFolderComponent } from "../../src/store/folder.js";
import { mailboxNameOf } from "../../src/store/mailbox-name.js";
import { chatCpim, imdnCpim } from "../fixtures/cpim.js";
import { connectImap, listFolderPaths, readFolderRaw } from "../harness/imap-read.js";
import { useStoreEnv } from "../harness/store-env.js";
import { waitFor } from "../harness/wait.js";

const env = useStoreEnv("cpm-deferred-test");

const SERVED_USER = "tel:+33612345678";

/** A queue on the shared login (store.user without "{user}"): every served user in the test user's mailbox. */
async function newQueue(over: Partial<Config["store"]> = {}) {
  const cfg = await env.storeConfig(over);
  const mailboxes = await env.startMailboxes(cfg);
  return { cfg, mailboxes, store: mailboxes.forUser(SERVED_USER), queue: new DeferredQueue(cfg, mailboxes, env.log) };
}

function sessionRef(conversationId: string, contributionId = "c6cca468b4ade657694b9e75baeb9e93"): GroupSessionRef {
  return {
    sessionKey: `cf-leg-${conversationId}@cf.example.net`,
    servedUser: SERVED_USER,
    conversationId,
    contributionId,
    focus: `sip:focus-${contributionId}@cf.example.net`,
  };
}

/** n items as the CF sends them: chat messages with every 3rd an IMDN, every 5th an interim GSO. */
function items(n: number, tag: string, from = 0): DeferredItem[] {
  return Array.from({ length: n }, (_, k) => {
    const i = from + k;
    const msrpMessageId = `${tag}M${String(i).padStart(4, "0")}`;
    const receivedAt = new Date(Date.UTC(2026, 10, 25, 12, 0, i));
    if (i % 5 === 4) {
      const xml = `<?xml version="1.0" encoding="UTF-8"?>\r\n<groupstate timestamp="2026-11-25T12:00:0${i % 10}Z" lastfocussessionid="sip:focus@cf.example.net" group-type="Closed"><participant name="P${i}" comm-addr="tel:+1613555${1000 + i}"/></groupstate>`;
      return { kind: "gso", contentType: "application/group-state-object+xml", body: Buffer.from(xml), msrpMessageId, receivedAt };
    }
    if (i % 3 === 2)
      return { kind: "imdn", contentType: "message/cpim", body: imdnCpim(`imdn-${i - 1}`, `n-${tag}-${i}`), msrpMessageId, receivedAt };
    return {
      kind: "message",
      contentType: "message/cpim",
      body: chatCpim(`message ${i} é`, `imdn-${tag}-${i}`),
      msrpMessageId,
      receivedAt,
    };
  });
}

const msrpIds = (records: { item?: { msrpMessageId: string } | undefined }[]) => records.map((r) => r.item?.msrpMessageId);

test(
  "deferred items land in Deferred/<user>/<Conversation-ID>/<Contribution-ID> (shared login) in arrival order and read back byte-exact",
  { timeout: 30_000 },
  async () => {
    const { queue } = await newQueue();
    const session = sessionRef("conv.order/é");
    const list = items(12, "ord");
    // called back to back without waiting, as the media plane does for SENDs in a row
    await Promise.all(list.map((it) => queue.storeDeferred(session, it)));

    const folder = queue.folderOf(session);
    // the shared login: one level per served user below the root
    const [root, user, conv, contrib, ...more] = folder.split("/");
    assert.equal(root, "Deferred");
    assert.equal(decodeFolderComponent(user as string), mailboxNameOf(session.servedUser));
    assert.equal(more.length, 0);
    assert.equal(decodeFolderComponent(conv as string), "conv.order/é");
    assert.equal(decodeFolderComponent(contrib as string), session.contributionId);
    assert.ok((await listFolderPaths(env.dovecot)).includes(folder));

    // what the server holds, in UID order, is exactly the objects built for the items, in call order
    const raws = await readFolderRaw(env.dovecot, folder);
    const expected = list.map((it) => buildDeferredObject(folder, session, it).raw);
    assert.equal(raws.length, expected.length);
    raws.forEach((raw, i) => {
      assert.ok(raw.equals(expected[i] as Buffer), `object ${i} byte-exact`);
    });

    // the reader gives the same order, the bodies byte for byte, the kinds and Message-IDs
    const records = await queue.read(session, 100);
    assert.deepEqual(
      msrpIds(records),
      list.map((it) => it.msrpMessageId),
    );
    records.forEach((r, i) => {
      const it = list[i] as DeferredItem;
      assert.equal(r.item?.kind, it.kind);
      assert.equal(r.item?.contentType, it.contentType);
      assert.ok(Buffer.from(r.item?.body ?? []).equals(Buffer.from(it.body)), `body ${i} byte-exact`);
      assert.equal(r.item?.receivedAt.getTime(), it.receivedAt.getTime());
    });
    assert.ok(
      records.every((r, i) => i === 0 || r.handle.uid > (records[i - 1]?.handle.uid ?? 0)),
      "UIDs ascend",
    );
    assert.equal(queue.stats().stored, 12);
  },
);

test("read / ack: unacked items stay and are read again (at-least-once); acked ones are gone", { timeout: 30_000 }, async () => {
  const { queue } = await newQueue();
  const session = sessionRef("conv-ack");
  const list = items(6, "ack");
  for (const it of list) await queue.storeDeferred(session, it);

  const first = await queue.read(session, 3);
  assert.deepEqual(msrpIds(first), ["ackM0000", "ackM0001", "ackM0002"]);
  // not acked (e.g. the delivery session broke): the same items come again
  assert.deepEqual(msrpIds(await queue.read(session, 3)), msrpIds(first));

  assert.equal(await queue.ack(first.slice(0, 2).map((r) => r.handle)), 2);
  assert.deepEqual(msrpIds(await queue.read(session, 10)), ["ackM0002", "ackM0003", "ackM0004", "ackM0005"]);

  // a handle from another UIDVALIDITY does not remove anything
  const stale = { ...(first[2]?.handle as NonNullable<(typeof first)[2]>["handle"]), uidValidity: "1" };
  assert.equal(await queue.ack([stale]), 0);
  assert.equal((await queue.read(session, 10)).length, 4);

  const listed = await queue.listSessions(SERVED_USER);
  const mine = listed.find((s) => s.folder === queue.folderOf(session));
  assert.deepEqual(mine, {
    folder: queue.folderOf(session),
    conversationId: "conv-ack",
    contributionId: session.contributionId,
    count: 4,
    total: 4,
  });

  const rest = await queue.read(session, 10);
  assert.equal(await queue.ack(rest.map((r) => r.handle)), 4);
  assert.deepEqual(await queue.read(session, 10), []);
  assert.equal((await readFolderRaw(env.dovecot, queue.folderOf(session))).length, 0, "expunged on the server");
  assert.ok(!(await queue.listSessions(SERVED_USER)).some((s) => s.folder === queue.folderOf(session)), "an empty queue is not listed");
  // a session that never had items reads as empty
  assert.deepEqual(await queue.read(sessionRef("conv-never"), 5), []);
});

test(
  "a read returns each object byte for byte, leaves it unseen, and skips an item flagged \\Deleted but not expunged",
  { timeout: 30_000 },
  async () => {
    const { queue, mailboxes } = await newQueue();
    after(() => mailboxes.close());
    const session = sessionRef("conv-flagged");
    for (const it of items(5, "flg")) await queue.storeDeferred(session, it);
    const folder = queue.folderOf(session);
    const stored = await readFolderRaw(env.dovecot, folder);
    const all = await queue.read(session, 10);
    assert.deepEqual(
      all.map((r) => r.raw),
      stored,
      "byte for byte",
    );
    // an ack whose UID EXPUNGE never ran (e.g. the PF died between the two commands)
    const c = await connectImap(env.dovecot);
    try {
      const lock = await c.getMailboxLock(folder);
      try {
        await c.messageFlagsAdd(String(all[1]?.handle.uid), ["\\Deleted"], { uid: true });
        const seen: boolean[] = [];
        for await (const m of c.fetch("1:*", { uid: true, flags: true })) seen.push(m.flags?.has("\\Seen") ?? false);
        assert.deepEqual(seen, [false, false, false, false, false], "BODY.PEEK[]: nothing marked \\Seen");
      } finally {
        lock.release();
      }
    } finally {
      await c.logout().catch(() => c.close());
    }
    assert.deepEqual(msrpIds(await queue.read(session, 10)), ["flgM0000", "flgM0002", "flgM0003", "flgM0004"]);
    const cursor = { afterUid: all[0]?.handle.uid as number, uidValidity: all[0]?.handle.uidValidity as string };
    assert.deepEqual(
      msrpIds(await queue.read(session, 2, cursor)),
      ["flgM0002", "flgM0003"],
      "above the cursor, the flagged item left out",
    );
    // ack of the rest (UID STORE +FLAGS.SILENT, UID EXPUNGE): the folder is empty, the flagged item went with its set
    assert.equal(await queue.ack(all.map((r) => r.handle)), 5);
    assert.equal((await readFolderRaw(env.dovecot, folder)).length, 0);
  },
);

test(
  "DD-10: a read from a cursor returns the items above it in order, skips a gap, and starts over after UIDVALIDITY changed",
  { timeout: 30_000 },
  async () => {
    const { queue, mailboxes } = await newQueue();
    after(() => mailboxes.close());
    const session = sessionRef("conv-cursor");
    const list = items(12, "cur");
    for (const it of list) await queue.storeDeferred(session, it);
    const all = await queue.read(session, 100);
    const uid = (i: number) => all[i]?.handle.uid as number;
    const cursor = (i: number) => ({ afterUid: uid(i), uidValidity: all[0]?.handle.uidValidity as string });

    // above the cursor, not the oldest: what the delivery took is never returned, acked or not
    assert.deepEqual(msrpIds(await queue.read(session, 3, cursor(1))), ["curM0002", "curM0003", "curM0004"]);
    // a gap above the cursor (items 3..8 removed, e.g. by another delivery) is skipped, the window filled
    assert.equal(await queue.ack(all.slice(3, 9).map((r) => r.handle)), 6);
    assert.deepEqual(msrpIds(await queue.read(session, 3, cursor(1))), ["curM0002", "curM0009", "curM0010"]);
    assert.deepEqual(msrpIds(await queue.read(session, 10, cursor(2))), ["curM0009", "curM0010", "curM0011"]);
    assert.deepEqual(await queue.read(session, 10, cursor(11)), [], "nothing above the newest item");
    // a cursor of another folder incarnation (UIDVALIDITY) reads from the oldest item
    assert.deepEqual(msrpIds(await queue.read(session, 2, { afterUid: uid(10), uidValidity: "1" })), ["curM0000", "curM0001"]);
    await assert.rejects(queue.read(session, 2, { afterUid: -1, uidValidity: "1" }), { code: "CPM_ERR_BAD_REQUEST" });
  },
);

test("a retried SEND (same MSRP Message-ID) is stored once, also after a restart of the PF", { timeout: 30_000 }, async () => {
  const { queue } = await newQueue();
  const session = sessionRef("conv-dup");
  const [a, b] = items(2, "dup");
  await queue.storeDeferred(session, a as DeferredItem);
  await queue.storeDeferred(session, a as DeferredItem); // retry after the original was stored
  await Promise.all([queue.storeDeferred(session, b as DeferredItem), queue.storeDeferred(session, b as DeferredItem)]); // retry racing the original
  assert.equal(queue.stats().duplicates, 2);

  // a new PF process (empty memory) sees the retry too
  const again = await newQueue();
  await again.queue.storeDeferred(session, a as DeferredItem);
  assert.equal(again.queue.stats().duplicates, 1);

  assert.deepEqual(msrpIds(await queue.read(session, 10)), ["dupM0000", "dupM0001"]);
});

test(
  "Dovecot stopped mid-stream: later items do not overtake spooled ones; all land once after it returns",
  { timeout: 90_000 },
  async () => {
    // no automatic drain during the test (flushSpool below), so that the order question is really asked
    const { store, queue } = await newQueue({ retryInitialMs: 60_000, retryMaxMs: 60_000 });
    const session = sessionRef("conv-outage");
    const other = sessionRef("conv-outage-2");
    const list = items(12, "out");

    for (const it of list.slice(0, 3)) await queue.storeDeferred(session, it);
    assert.equal(queue.stats().stored, 3);

    await env.dovecot.kill();
    // items 3..6 arrive while the store is down: each resolves (spooled), none is lost
    await Promise.all(list.slice(3, 7).map((it) => queue.storeDeferred(session, it)));
    await queue.storeDeferred(other, items(1, "oth")[0] as DeferredItem);
    assert.equal(queue.stats().spooled, 5);
    await queue.storeDeferred(session, list[4] as DeferredItem); // a retry of a spooled item
    assert.equal(queue.stats().duplicates, 1);

    await env.dovecot.restart();
    assert.ok(queue.spoolPending(SERVED_USER) > 0, "spool not drained yet");
    // the store is back, but items 7..11 must queue behind the spooled 3..6
    await Promise.all(list.slice(7).map((it) => queue.storeDeferred(session, it)));
    assert.equal(queue.stats().spooled, 10, "spooled behind the earlier items, not APPENDed ahead of them");

    await store.flushSpool();
    await waitFor(() => queue.spoolPending(SERVED_USER) === 0, 20_000, 50, "spool drained");

    const folder = queue.folderOf(session);
    const raws = await readFolderRaw(env.dovecot, folder);
    assert.equal(raws.length, 12, "each item once");
    raws.forEach((raw, i) => {
      assert.ok(raw.equals(buildDeferredObject(folder, session, list[i] as DeferredItem).raw), `item ${i} in place`);
    });
    assert.deepEqual(msrpIds(await queue.read(other, 5)), ["othM0000"]);

    // spool empty again: the next item goes straight to the store
    await queue.storeDeferred(session, items(1, "out", 12)[0] as DeferredItem);
    assert.equal(queue.stats().stored, 4);
    assert.equal((await readFolderRaw(env.dovecot, folder)).length, 13);
  },
);

test("DD-8 / DD-14: discard removes everything queued for the session", { timeout: 30_000 }, async () => {
  const { queue } = await newQueue();
  const session = sessionRef("conv-discard");
  for (const it of items(3, "dis")) await queue.storeDeferred(session, it);
  assert.equal(await queue.discard(session), 3);
  assert.deepEqual(await queue.read(session, 10), []);
  assert.equal(await queue.discard(sessionRef("conv-none")), 0);
});
