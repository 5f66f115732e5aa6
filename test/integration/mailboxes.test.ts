// Per-user Message Store (src/store/mailboxes.ts) against a real Dovecot with
// a master user (test/harness/dovecot.ts): each served user's data in that
// user's own mailbox, per-user spools drained into the right mailbox after a
// restart, idle mailboxes closed, batch retire of delivered deferred items.
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { test } from "node:test";
import { createRootLogger, type Logger } from "../../src/log/logger.js";
import type { DeferredItem, GroupSessionRef } from "../../src/media/ports.js";
import { buildCpmObject } from "../../src/store/cpm-object.js";
import { buildDeferredObject } from "../../src/store/deferred-object.js";
import { DeferredQueue } from "../../src/store/deferred-queue.js";
import { encodeFolderComponent, groupSessionFolder } from "../../src/store/folder.js";
import { spoolDirName } from "../../src/store/mailboxes.js";
import { chatCpim } from "../fixtures/cpim.js";
import { type Login, listFolderPaths, readFolderRaw } from "../harness/imap-read.js";
import { useStoreEnv } from "../harness/store-env.js";
import { waitFor } from "../harness/wait.js";

const env = useStoreEnv("cpm-mailboxes-test");

const ALICE = "sip:alice@example.net";
const BOB = "sips:bob@Example.NET;transport=tls";
const CAROL = "sip:carol@example.net";
const CONV = "conv-shared-7f3a";
const CONTRIB = "c6cca468b4ade657694b9e75baeb9e93";

/** The user's own login (not the master user). */
function own(mailbox: string): Login {
  const u = env.dovecot.users.find((x) => x.user === mailbox);
  assert.ok(u, `test Dovecot has no user ${mailbox}`);
  return u;
}

function ref(servedUser: string, conversationId = CONV, contributionId = CONTRIB): GroupSessionRef {
  return {
    sessionKey: `call-${conversationId}@cf.example.net`,
    servedUser,
    conversationId,
    contributionId,
    focus: "sip:focus@cf.example.net",
  };
}

function items(n: number, tag: string): DeferredItem[] {
  return Array.from({ length: n }, (_, i) => ({
    kind: "message",
    contentType: "message/cpim",
    body: chatCpim(`${tag} message ${i}`, `imdn-${tag}-${i}`),
    msrpMessageId: `${tag}M${String(i).padStart(4, "0")}`,
    receivedAt: new Date(Date.UTC(2026, 11, 2, 12, 0, i)),
  }));
}

function gso(servedUser: string, n: number) {
  const folder = groupSessionFolder("Default", CONV, CONTRIB);
  const messageId = `gso-${n}-${servedUser.replace(/\W/g, "")}@cpm-pf`;
  const raw = buildCpmObject({
    contentType: "application/group-state-object+xml",
    from: "sip:anonymous@anonymous.invalid",
    to: servedUser,
    date: new Date(Date.UTC(2026, 11, 2, 12, 0, n)),
    conversationId: CONV,
    contributionId: CONTRIB,
    imdnMessageId: `gso-${n}`,
    messageId,
    direction: "received",
    body: `<?xml version="1.0" encoding="UTF-8"?>\r\n<groupstate timestamp="2026-12-02T12:00:0${n}Z" lastfocussessionid="sip:focus@cf.example.net" group-type="Closed" contributionid="${CONTRIB}"><participant name="P${n}" comm-addr="${servedUser}"/></groupstate>`,
  });
  return { owner: servedUser, folder, raw, messageId };
}

/** A debug logger that keeps every IMAP command the PF's connections send (imapflow logs them with src "c"). */
function commandLog(): { log: Logger; commands(mailbox?: string): string[] } {
  const lines: { message: string; src?: string; mailbox?: string }[] = [];
  let buf = "";
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      buf += chunk.toString("utf8");
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() !== "") lines.push(JSON.parse(line));
        nl = buf.indexOf("\n");
      }
      done();
    },
  });
  return {
    log: createRootLogger("debug", sink),
    commands: (mailbox) =>
      lines.filter((l) => l.src === "c" && (mailbox === undefined || l.mailbox === mailbox)).map((l) => l.message.replace(/^\S+ /, "")),
  };
}

test(
  "DD-1 with the shared login (store.user without {user}): two served users of one group chat get one queue each, below a level per user; one's delivery reads, lists and retires only its own",
  { timeout: 30_000 },
  async () => {
    const cfg = await env.storeConfig();
    const mailboxes = await env.startMailboxes(cfg);
    assert.equal(mailboxes.perUser, false);
    const queue = new DeferredQueue(cfg, mailboxes, env.log);
    const a = items(2, "alice");
    const b = items(3, "bob");
    await Promise.all([...a.map((it) => queue.storeDeferred(ref(ALICE), it)), ...b.map((it) => queue.storeDeferred(ref(BOB), it))]);
    const aliceFolder = queue.folderOf(ref(ALICE));
    const bobFolder = queue.folderOf(ref(BOB));
    assert.notEqual(aliceFolder, bobFolder);
    assert.equal(aliceFolder, groupSessionFolder(`Deferred/${encodeFolderComponent("alice@example.net")}`, CONV, CONTRIB));
    assert.equal((await readFolderRaw(env.dovecot, aliceFolder)).length, 2);
    assert.equal((await readFolderRaw(env.dovecot, bobFolder)).length, 3);

    assert.deepEqual(
      (await queue.listSessions(ALICE)).map((s) => [s.conversationId, s.contributionId, s.count]),
      [[CONV, CONTRIB, 2]],
    );
    const aliceRecords = await queue.read(ref(ALICE), 100);
    assert.deepEqual(
      aliceRecords.map((r) => r.item?.msrpMessageId),
      a.map((it) => it.msrpMessageId),
    );
    assert.equal(await queue.ack(aliceRecords.map((r) => r.handle)), 2);
    assert.equal(await queue.discard(ref(ALICE)), 0);
    assert.deepEqual(await queue.listSessions(ALICE), []);
    assert.equal((await queue.read(ref(BOB), 10)).length, 3, "bob's queue untouched by alice's delivery");
    assert.deepEqual(
      (await queue.listSessions(BOB)).map((s) => s.count),
      [3],
    );
  },
);

test(
  "each served user's data in that user's own mailbox: two served users in the same group chat (same Conversation-ID and Contribution-ID) get separate folders in separate mailboxes through the master user",
  { timeout: 30_000 },
  async () => {
    const cfg = await env.mailboxConfig();
    assert.equal(cfg.user, "{user}*pfmaster");
    const mailboxes = await env.startMailboxes(cfg);
    const queue = new DeferredQueue(cfg, mailboxes, env.log);
    const a = items(4, "alice");
    const b = items(3, "bob");
    // interleaved, as the CF's SENDs on the two users' sessions arrive
    await Promise.all([...a.map((it) => queue.storeDeferred(ref(ALICE), it)), ...b.map((it) => queue.storeDeferred(ref(BOB), it))]);
    // the PF's GSO (ObjectStore.append with owner = the served user)
    assert.equal((await mailboxes.append(gso(ALICE, 1))).state, "stored");
    assert.equal((await mailboxes.append(gso(BOB, 2))).state, "stored");

    const folder = queue.folderOf(ref(ALICE));
    assert.equal(folder, queue.folderOf(ref(BOB)), "same group chat, same folder name");
    const history = groupSessionFolder("Default", CONV, CONTRIB);

    // logged in as each user directly: only that user's objects
    const aliceRaw = await readFolderRaw(env.dovecot, folder, own("alice@example.net"));
    const bobRaw = await readFolderRaw(env.dovecot, folder, own("bob@example.net"));
    assert.deepEqual(
      aliceRaw.map((r) => r.toString("utf8")),
      a.map((it) => buildDeferredObject(folder, ref(ALICE), it).raw.toString("utf8")),
    );
    assert.deepEqual(
      bobRaw.map((r) => r.toString("utf8")),
      b.map((it) => buildDeferredObject(folder, ref(BOB), it).raw.toString("utf8")),
    );
    const aliceGso = await readFolderRaw(env.dovecot, history, own("alice@example.net"));
    const bobGso = await readFolderRaw(env.dovecot, history, own("bob@example.net"));
    assert.equal(aliceGso.length, 1);
    assert.equal(bobGso.length, 1);
    assert.match(aliceGso[0]?.toString("utf8") ?? "", /^To: .*alice@example\.net/m);
    assert.match(bobGso[0]?.toString("utf8") ?? "", /^To: .*bob@Example\.NET/m);
    // carol and the shared test user got nothing
    assert.ok(!(await listFolderPaths(env.dovecot, own("carol@example.net"))).includes(folder));
    assert.ok(!(await listFolderPaths(env.dovecot)).includes(folder));
    // and on disk: each user's mailbox has its own folder
    assert.equal(await env.dovecot.messagesOnDisk("alice@example.net", folder), 4);
    assert.equal(await env.dovecot.messagesOnDisk("bob@example.net", folder), 3);
    assert.equal(await env.dovecot.messagesOnDisk("carol@example.net", folder), 0);

    // reading, listing and acking stay in the served user's mailbox; the handle carries the user
    const aliceRecords = await queue.read(ref(ALICE), 100);
    assert.deepEqual(
      aliceRecords.map((r) => r.item?.msrpMessageId),
      a.map((it) => it.msrpMessageId),
    );
    assert.ok(aliceRecords.every((r) => r.handle.servedUser === ALICE));
    assert.deepEqual(
      (await queue.listSessions(BOB)).map((s) => [s.conversationId, s.count]),
      [[CONV, 3]],
    );
    assert.equal(await queue.ack(aliceRecords.map((r) => r.handle)), 4);
    assert.deepEqual(await queue.read(ref(ALICE), 10), []);
    assert.equal((await queue.read(ref(BOB), 10)).length, 3, "bob's queue untouched by alice's ack");
    assert.deepEqual(await queue.listSessions(ALICE), []);

    // one IMAP pool and one spool directory per mailbox
    const st = mailboxes.stats();
    assert.equal(st.perUser, true);
    assert.deepEqual(Object.keys(st.mailboxes).sort(), ["alice@example.net", "bob@example.net"]);
    const spools = (await readdir(cfg.spoolDir)).sort();
    assert.deepEqual(spools, [spoolDirName("alice@example.net"), spoolDirName("bob@example.net")].sort());
    const owner = JSON.parse(await readFile(join(cfg.spoolDir, spoolDirName("bob@example.net"), "owner"), "utf8"));
    assert.equal(owner.mailbox, "bob@example.net");

    // a served user with no usable mailbox name is refused, nothing stored
    await assert.rejects(
      mailboxes.append(gso("sip:ev*il@example.net", 3)),
      (err: unknown) => (err as { code?: string }).code === "CPM_ERR_BAD_SERVED_USER",
    );
    await assert.rejects(
      queue.storeDeferred(ref("sip:ev il@example.net"), items(1, "evil")[0] as DeferredItem),
      (err: unknown) => (err as { code?: string }).code === "CPM_ERR_BAD_SERVED_USER",
    );
  },
);

test(
  "per-user spools: objects spooled while Dovecot is down are drained into the right user's mailbox after a restart of the Mailboxes object (a mailbox with a non-empty spool is never closed as idle)",
  { timeout: 60_000 },
  async () => {
    const cfg = await env.mailboxConfig({ mailboxIdleMs: 100 });
    const first = await env.startMailboxes(cfg);
    const queue = new DeferredQueue(cfg, first, env.log);
    const folder = queue.folderOf(ref(ALICE, "conv-outage"));
    await env.dovecot.kill();
    let down = true;
    try {
      const a = items(3, "alice-out");
      const c = items(2, "carol-out");
      for (const it of a) await queue.storeDeferred(ref(ALICE, "conv-outage"), it);
      for (const it of c) await queue.storeDeferred(ref(CAROL, "conv-outage"), it);
      assert.equal(queue.stats().spooled, 5);
      assert.equal(
        (await first.append({ ...gso(CAROL, 4), folder: groupSessionFolder("Default", "conv-outage", CONTRIB) })).state,
        "spooled",
      );
      // idle for longer than mailboxIdleMs, but with objects spooled: kept open
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(first.sweep(Date.now() + 60_000), 0);
      assert.deepEqual(Object.keys(first.stats().mailboxes).sort(), ["alice@example.net", "carol@example.net"]);
      await first.close();

      // each spool directory names its owner
      for (const [name, n] of [
        ["alice@example.net", 3],
        ["carol@example.net", 3],
      ] as const) {
        const dir = join(cfg.spoolDir, spoolDirName(name));
        assert.equal(JSON.parse(await readFile(join(dir, "owner"), "utf8")).mailbox, name);
        assert.equal((await readdir(dir)).filter((f) => f.endsWith(".spool")).length, n, `${name} spooled`);
      }

      await env.dovecot.restart();
      down = false;
      // a new process: nothing in memory, only the spool directories
      const second = await env.startMailboxes(cfg);
      await waitFor(() => second.stats().spoolPending === 0 && second.stats().open === 0, 20_000, 50, "spools drained, then idle");
      const again = new DeferredQueue(cfg, second, env.log);
      const aliceRaw = await readFolderRaw(env.dovecot, folder, own("alice@example.net"));
      assert.deepEqual(
        aliceRaw.map((r) => r.toString("utf8")),
        a.map((it) => buildDeferredObject(folder, ref(ALICE, "conv-outage"), it).raw.toString("utf8")),
        "alice's items in alice's mailbox, in order",
      );
      const carolRaw = await readFolderRaw(env.dovecot, folder, own("carol@example.net"));
      assert.deepEqual(
        carolRaw.map((r) => r.toString("utf8")),
        c.map((it) => buildDeferredObject(folder, ref(CAROL, "conv-outage"), it).raw.toString("utf8")),
        "carol's items in carol's mailbox, in order",
      );
      assert.equal(
        (await readFolderRaw(env.dovecot, groupSessionFolder("Default", "conv-outage", CONTRIB), own("carol@example.net"))).length,
        1,
      );
      assert.equal(
        (await readFolderRaw(env.dovecot, groupSessionFolder("Default", "conv-outage", CONTRIB), own("alice@example.net"))).length,
        0,
      );
      assert.equal((await again.read(ref(ALICE, "conv-outage"), 10)).length, 3);
      for (const name of ["alice@example.net", "carol@example.net"]) {
        const left = (await readdir(join(cfg.spoolDir, spoolDirName(name)))).filter((f) => f.endsWith(".spool"));
        assert.deepEqual(left, [], `${name}'s spool empty`);
      }
    } finally {
      if (down) await env.dovecot.restart();
    }
  },
);

test(
  "idle mailboxes close their IMAP connections; at store.maxMailboxes the least recently used idle one is closed",
  { timeout: 30_000 },
  async () => {
    const cfg = await env.mailboxConfig({ mailboxIdleMs: 300 });
    const mailboxes = await env.startMailboxes(cfg);
    const alice = mailboxes.forUser(ALICE);
    assert.equal((await alice.append(gso(ALICE, 5))).state, "stored");
    assert.ok(alice.stats().pool.open >= 1, "connected while in use");
    await waitFor(() => mailboxes.stats().open === 0, 5000, 25, "idle mailbox closed");
    assert.equal(alice.stats().pool.open, 0, "its IMAP connections logged out");
    assert.ok(mailboxes.stats().idleClosed >= 1);
    // used again: opened again, lazily
    assert.equal((await mailboxes.append(gso(ALICE, 6))).state, "stored");
    assert.equal(mailboxes.stats().open, 1);

    const limited = await env.startMailboxes(await env.mailboxConfig({ maxMailboxes: 2, mailboxIdleMs: 60_000 }));
    await limited.append(gso(ALICE, 7));
    await limited.append(gso(BOB, 7));
    const bobStore = limited.forUser(BOB);
    await limited.append(gso(ALICE, 8)); // alice used last: bob is the least recently used
    await waitFor(() => bobStore.idle(), 5000, 25, "bob's mailbox idle");
    await limited.append(gso(CAROL, 7));
    assert.deepEqual(Object.keys(limited.stats().mailboxes).sort(), ["alice@example.net", "carol@example.net"]);
    assert.equal(limited.stats().evicted, 1);
    await waitFor(() => bobStore.stats().pool.open === 0, 5000, 25, "evicted mailbox logged out");
    assert.equal((await readFolderRaw(env.dovecot, groupSessionFolder("Default", CONV, CONTRIB), own("carol@example.net"))).length, 1);
  },
);

test(
  "batch retire of delivered deferred items: ack removes N items with one UID STORE and one UID EXPUNGE per folder, read is one FETCH per window in UID order",
  { timeout: 60_000 },
  async () => {
    const capture = commandLog();
    const cfg = await env.mailboxConfig();
    const mailboxes = await env.startMailboxes(cfg, capture.log);
    const queue = new DeferredQueue(cfg, mailboxes, env.log);
    const s1 = ref(ALICE, "conv-batch-1");
    const s2 = ref(ALICE, "conv-batch-2");
    const n = 150;
    const list = items(n, "batch");
    for (const it of list) await queue.storeDeferred(s1, it);
    for (const it of list.slice(0, 20)) await queue.storeDeferred(s2, it);

    const before = capture.commands("alice@example.net").length;
    const window1 = await queue.read(s1, 100);
    const window2 = await queue.read(s2, 100);
    const reads = capture.commands("alice@example.net").slice(before);
    assert.equal(reads.filter((c) => /^(UID )?FETCH\b/.test(c)).length, 2, `one FETCH per window: ${reads.join(" | ")}`);
    assert.ok(!reads.some((c) => /\bSEARCH\b/.test(c)), "no SEARCH of the whole folder");
    assert.deepEqual(
      window1.map((r) => r.item?.msrpMessageId),
      list.slice(0, 100).map((it) => it.msrpMessageId),
    );
    assert.ok(
      window1.every((r, i) => i === 0 || r.handle.uid > (window1[i - 1]?.handle.uid ?? 0)),
      "UID order",
    );

    const mark = capture.commands("alice@example.net").length;
    // both folders' handles in one call, shuffled
    const handles = [...window1, ...window2].map((r) => r.handle).sort(() => Math.random() - 0.5);
    assert.equal(await queue.ack(handles), 120);
    const sent = capture.commands("alice@example.net").slice(mark);
    assert.equal(sent.filter((c) => /^UID EXPUNGE\b/.test(c)).length, 2, `one UID EXPUNGE per folder: ${sent.join(" | ")}`);
    assert.equal(sent.filter((c) => /^UID STORE\b/.test(c)).length, 2, "one UID STORE per folder");
    assert.ok(!sent.some((c) => /^EXPUNGE\b/.test(c)), "no plain EXPUNGE (it would remove other \\Deleted items)");
    assert.ok(sent.length <= 10, `a constant number of commands per folder: ${sent.join(" | ")}`);
    assert.ok(
      sent.some((c) => c.includes("1:100")),
      "the UID set as a range",
    );

    const rest = await queue.read(s1, 100);
    assert.deepEqual(
      rest.map((r) => r.item?.msrpMessageId),
      list.slice(100).map((it) => it.msrpMessageId),
    );
    assert.deepEqual(await queue.read(s2, 10), []);
    assert.equal((await readFolderRaw(env.dovecot, queue.folderOf(s1), own("alice@example.net"))).length, 50, "expunged on the server");
    assert.equal(queue.stats().acked, 120);
  },
);

test(
  "batch retire with moveTo (8.5.2 recording applies): one UID MOVE puts the delivered items into the group session folder, in order",
  { timeout: 30_000 },
  async () => {
    const capture = commandLog();
    const cfg = await env.mailboxConfig();
    const mailboxes = await env.startMailboxes(cfg, capture.log);
    const queue = new DeferredQueue(cfg, mailboxes, env.log);
    const s = ref(BOB, "conv-move");
    const list = items(12, "move");
    for (const it of list) await queue.storeDeferred(s, it);
    const records = await queue.read(s, 100);
    const history = groupSessionFolder(cfg.rootFolder, "conv-move", CONTRIB);

    const mark = capture.commands("bob@example.net").length;
    assert.equal(await queue.ack(records.map((r) => r.handle).reverse(), { moveTo: history }), 12);
    const sent = capture.commands("bob@example.net").slice(mark);
    assert.equal(sent.filter((c) => /^UID MOVE\b/.test(c)).length, 1, `one UID MOVE: ${sent.join(" | ")}`);
    assert.ok(!sent.some((c) => /EXPUNGE|UID STORE/.test(c)), "MOVE, not STORE + EXPUNGE");

    const moved = await readFolderRaw(env.dovecot, history, own("bob@example.net"));
    assert.deepEqual(
      moved.map((r) => r.toString("utf8")),
      records.map((r) => r.raw.toString("utf8")),
      "the group folder holds the items byte for byte, in arrival order",
    );
    assert.deepEqual(await queue.read(s, 10), [], "the queue is empty");
    assert.equal(queue.stats().moved, 12);
    assert.equal((await readFolderRaw(env.dovecot, history, own("alice@example.net"))).length, 0, "nothing in another user's mailbox");
  },
);
