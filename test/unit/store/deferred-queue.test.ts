// DeferredQueue ordering and duplicate rules with a scripted MessageStore (no
// IMAP): the Dovecot-backed proof is test/integration/deferred-queue.test.ts.
import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CpmError } from "../../../src/errors/catalogue.js";
import { silentLogger } from "../../../src/log/logger.js";
import type { DeferredItem } from "../../../src/media/ports.js";
import { msrpIdOfStoredMessageId } from "../../../src/store/deferred-object.js";
import { DeferredQueue } from "../../../src/store/deferred-queue.js";
import type { MessageStore, StoreObject } from "../../../src/store/message-store.js";
import { chatCpim, groupSession } from "../../fixtures/cpim.js";

/** A MessageStore stand-in whose appends take `delay(obj)` (ms or a promise) and may fail. */
function fakeStore(delay: (o: StoreObject) => number | Promise<void>, fail: (o: StoreObject) => boolean = () => false) {
  const started: string[] = [];
  const done: string[] = [];
  const events: string[] = [];
  const store = {
    stats: () => ({ spoolPending: 0 }),
    withConnection: async () => [],
    append: async (o: StoreObject) => {
      const id = msrpIdOfStoredMessageId(o.messageId)?.msrpMessageId ?? "?";
      started.push(id);
      events.push(`start ${id}`);
      const d = delay(o);
      await (typeof d === "number" ? sleep(d) : d);
      events.push(`end ${id}`);
      if (fail(o)) throw new CpmError("CPM_ERR_STORE_REJECTED", `refused ${id}`);
      done.push(id);
      return { state: "stored" as const, folder: o.folder, messageId: o.messageId };
    },
  };
  // one mailbox for every served user, the queues at the root
  const mailboxes = { forUser: () => store as unknown as MessageStore, mailboxOf: () => "", privateRootOf: (root: string) => root };
  return { store: mailboxes, started, done, events };
}

const item = (id: string): DeferredItem => ({
  kind: "message",
  contentType: "message/cpim",
  body: chatCpim(id),
  msrpMessageId: id,
  receivedAt: new Date(),
});

test("items of one session are stored one after another in call order, even when earlier APPENDs are slower", async () => {
  // the first items are the slowest: without the per-session chain they would finish last
  const f = fakeStore((o) => 40 - 10 * Number(msrpIdOfStoredMessageId(o.messageId)?.msrpMessageId.slice(-1)));
  const q = new DeferredQueue({ deferredRootFolder: "Deferred" }, f.store, silentLogger());
  const ids = ["item0", "item1", "item2", "item3"];
  await Promise.all(ids.map((id) => q.storeDeferred(groupSession, item(id))));
  // each APPEND starts only after the previous one of the session ended
  assert.deepEqual(
    f.events,
    ids.flatMap((id) => [`start ${id}`, `end ${id}`]),
  );
});

test("sessions do not wait for each other", async () => {
  const slow = { ...groupSession, contributionId: "slow" };
  let release = () => {};
  const gate = new Promise<void>((r) => {
    release = r;
  });
  const f = fakeStore((o) => (o.folder.endsWith("/slow") ? gate : 0));
  const q = new DeferredQueue({ deferredRootFolder: "Deferred" }, f.store, silentLogger());
  const slowDone = q.storeDeferred(slow, item("slow0"));
  await q.storeDeferred(groupSession, item("fast0")); // resolves while slow0 is still held
  assert.deepEqual(f.done, ["fast0"]);
  release();
  await slowDone;
  assert.deepEqual(f.done, ["fast0", "slow0"]);
});

test("a refused item fails alone; the next item of the session is still stored", async () => {
  const f = fakeStore(
    () => 1,
    (o) => msrpIdOfStoredMessageId(o.messageId)?.msrpMessageId === "bad1",
  );
  const q = new DeferredQueue({ deferredRootFolder: "Deferred" }, f.store, silentLogger());
  const results = await Promise.allSettled(["ok00", "bad1", "ok02"].map((id) => q.storeDeferred(groupSession, item(id))));
  assert.deepEqual(
    results.map((r) => r.status),
    ["fulfilled", "rejected", "fulfilled"],
  );
  assert.deepEqual(f.done, ["ok00", "ok02"]);
  assert.equal(q.stats().failed, 1);
  // the refused one was not remembered: a retry of it is tried again
  await q.storeDeferred(groupSession, item("bad1")).catch(() => {});
  assert.equal(f.started.filter((id) => id === "bad1").length, 2);
});

test("a retried MSRP Message-ID is not stored again; an unusable item is refused before anything is stored", async () => {
  const f = fakeStore(() => 1);
  const q = new DeferredQueue({ deferredRootFolder: "Deferred" }, f.store, silentLogger());
  await Promise.all([q.storeDeferred(groupSession, item("dup1")), q.storeDeferred(groupSession, item("dup1"))]);
  await q.storeDeferred(groupSession, item("dup1"));
  assert.deepEqual(f.done, ["dup1"]);
  assert.equal(q.stats().duplicates, 2);
  await assert.rejects(q.storeDeferred(groupSession, item("")), (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_BAD_REQUEST");
  await assert.rejects(q.storeDeferred({ ...groupSession, conversationId: "x\r\ny" }, item("inj1")), CpmError);
  assert.deepEqual(f.started, ["dup1"]);
});

test("session state is bounded and never evicted while an item of it is pending", async () => {
  const f = fakeStore(() => 5);
  const q = new DeferredQueue({ deferredRootFolder: "Deferred" }, f.store, silentLogger(), { maxSessions: 2 });
  const sessions = ["a", "b", "c", "d"].map((c) => ({ ...groupSession, contributionId: c }));
  await Promise.all(sessions.map((s) => q.storeDeferred(s, item(`it-${s.contributionId}`))));
  assert.ok(q.stats().sessions <= 4);
  await q.storeDeferred({ ...groupSession, contributionId: "e" }, item("it-e"));
  assert.ok(q.stats().sessions <= 2, `bounded: ${q.stats().sessions}`);
});
