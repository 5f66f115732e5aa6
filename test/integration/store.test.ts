// Message Store against a real Dovecot (test/harness/dovecot.ts, through test/harness/store-env.ts).
import assert from "node:assert/strict";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { ImapFlow } from "imapflow";
import type { Config } from "../../src/config/config.js";
import { CpmError } from "../../src/errors/catalogue.js";
import { buildCpmObject, newMessageId } from "../../src/store/cpm-object.js";
import { decodeFolderComponent, groupSessionFolder } from "../../src/store/folder.js";
import { buildGsoObject } from "../../src/store/gso-object.js";
import { Spool } from "../../src/store/spool.js";
import { startReplyHoldProxy } from "../harness/reply-hold-proxy.js";
import { useStoreEnv } from "../harness/store-env.js";
import { waitFor } from "../harness/wait.js";

const env = useStoreEnv("cpm-store-test");
const { log, storeConfig, newStore } = env;

function gso(conversationId: string, contributionId: string, n = 1) {
  const messageId = newMessageId("cpm-pf.test");
  const raw = buildCpmObject({
    contentType: "application/group-state-object+xml",
    from: "sip:anonymous@anonymous.invalid",
    to: "tel:+33612345678",
    date: new Date(),
    conversationId,
    contributionId,
    imdnMessageId: `imdn-${n}-${messageId}`,
    messageId,
    subject: "Sortie à la plage",
    direction: "received",
    body: `<?xml version="1.0" encoding="UTF-8"?>\n<groupstate timestamp="2016-06-14T12:09:49+02:00" lastfocussessionid="sip:focus@pf.example.net" group-type="Closed"><participant name="Bob é ${n}" comm-addr="tel:+16135551210"/></groupstate>\n`,
  });
  return { folder: groupSessionFolder("Default", conversationId, contributionId), raw, messageId };
}

/** Reads back every message of a folder (UID order) with an independent IMAP client. */
async function readFolder(folder: string): Promise<Buffer[]> {
  const c = new ImapFlow({
    host: env.dovecot.host,
    port: env.dovecot.port,
    auth: { user: env.dovecot.user, pass: env.dovecot.password },
    logger: false,
  });
  c.on("error", () => {});
  await c.connect();
  try {
    const lock = await c.getMailboxLock(folder, { readOnly: true });
    try {
      const out: Buffer[] = [];
      if (c.mailbox && c.mailbox.exists > 0) {
        for await (const m of c.fetch("1:*", { source: true, uid: true })) {
          assert.ok(m.source, "source fetched");
          out.push(m.source);
        }
      }
      return out;
    } finally {
      lock.release();
    }
  } finally {
    await c.logout().catch(() => c.close());
  }
}

async function listFolders(): Promise<string[]> {
  const c = new ImapFlow({
    host: env.dovecot.host,
    port: env.dovecot.port,
    auth: { user: env.dovecot.user, pass: env.dovecot.password },
    logger: false,
  });
  c.on("error", () => {});
  await c.connect();
  try {
    return (await c.list()).map((m) => m.path);
  } finally {
    await c.logout().catch(() => c.close());
  }
}

const spoolFiles = async (cfg: Config["store"]) => (await readdir(cfg.spoolDir)).filter((n) => n.endsWith(".spool"));
const messageIdOf = (raw: Buffer) => /^Message-ID: <([^>]+)>/m.exec(raw.toString("utf8"))?.[1];

test(
  "BYE-B3: GSO folder for a hostile Conversation-ID is <root>/<conv>/<contrib> and the object reads back byte-exact",
  { timeout: 30_000 },
  async () => {
    const conversationId = 'conv/../x.y%z*"~ é';
    const contributionId = "c6cca468b4ade657694b9e75baeb9e93";
    const cfg = await storeConfig();
    const store = newStore(cfg);
    await store.start();
    const obj = gso(conversationId, contributionId);

    const res = await store.append(obj);

    assert.deepEqual(res, { state: "stored", folder: obj.folder, messageId: obj.messageId });
    const [root, conv, contrib, ...more] = obj.folder.split("/");
    assert.equal(root, "Default");
    assert.equal(more.length, 0, "exactly three levels");
    assert.equal(decodeFolderComponent(conv as string), conversationId);
    assert.equal(decodeFolderComponent(contrib as string), contributionId);
    const folders = await listFolders();
    for (const f of ["Default", `Default/${conv}`, obj.folder]) assert.ok(folders.includes(f), `${f} listed in ${JSON.stringify(folders)}`);
    // one directory on disk, i.e. the "/" and "." of the ID did not create extra levels
    assert.ok((await stat(env.dovecot.folderDirOf(env.dovecot.user, obj.folder))).isDirectory());
    const msgs = await readFolder(obj.folder);
    assert.equal(msgs.length, 1);
    assert.ok(msgs[0]?.equals(obj.raw), "byte-exact read-back");
    assert.equal(store.stats().stored, 1);
    assert.equal(store.stats().spoolPending, 0);

    // a second object for the same session lands in the same (existing) folder
    const second = gso(conversationId, contributionId, 2);
    assert.equal((await store.append(second)).state, "stored");
    assert.equal((await readFolder(obj.folder)).length, 2);
    await store.close();
  },
);

test("BYE-B3: with the Message Store down the GSO is spooled, stored after restart, once, in order", { timeout: 60_000 }, async () => {
  const cfg = await storeConfig();
  await env.dovecot.kill();
  const store = newStore(cfg);
  await store.start(); // must not fail although the store is down
  const reasons: string[] = [];
  store.on("spooled", (e) => reasons.push(e.reason));

  const first = gso("conv-down", "contrib-down", 1);
  const second = gso("conv-down", "contrib-down", 2);
  const r1 = await store.append(first);
  const r2 = await store.append(second);

  assert.equal(r1.state, "spooled");
  assert.equal(r2.state, "spooled");
  assert.match(reasons[0] ?? "", /store unavailable/);
  assert.match(reasons[1] ?? "", /store unavailable \(spool retrying\)/);
  assert.equal((await spoolFiles(cfg)).length, 2);
  assert.equal(store.stats().storeUp, false);

  await env.dovecot.restart();
  await waitFor(() => store.stats().spoolPending === 0 && store.stats().drained === 2, 15_000, 50, "spool drained");

  assert.deepEqual(await spoolFiles(cfg), []);
  const msgs = await readFolder(first.folder);
  assert.deepEqual(msgs.map(messageIdOf), [first.messageId, second.messageId], "each once, FIFO");
  assert.ok(msgs[0]?.equals(first.raw) && msgs[1]?.equals(second.raw), "byte-exact");
  assert.equal(store.stats().deduplicated, 0);
  assert.equal(store.stats().storeUp, true);

  // the spool is empty again: the next append goes straight to the store
  const third = gso("conv-down", "contrib-down", 3);
  assert.equal((await store.append(third)).state, "stored");
  await store.close();
});

test("BYE-B3: a spooled object already in the store (lost APPEND response) is not stored twice", { timeout: 30_000 }, async () => {
  const cfg = await storeConfig();
  const obj = gso("conv-dup", "contrib-dup");
  // the object reached the store but the PF never saw the tagged OK: it is in both places
  const direct = newStore(await storeConfig());
  await direct.start();
  assert.equal((await direct.append(obj)).state, "stored");
  await direct.close();
  await new Spool(cfg.spoolDir, log).put(obj);

  const store = newStore(cfg);
  await store.start(); // drains spool entries of a previous run
  await waitFor(() => store.stats().spoolPending === 0 && store.stats().drained === 1, 10_000, 50, "spool drained");

  assert.equal(store.stats().deduplicated, 1);
  const msgs = await readFolder(obj.folder);
  assert.equal(msgs.length, 1, "no duplicate");
  assert.deepEqual(await spoolFiles(cfg), []);
  await store.close();
});

test("the pool reconnects after the server dropped its connections", { timeout: 30_000 }, async () => {
  const cfg = await storeConfig({ poolSize: 1 });
  const store = newStore(cfg);
  await store.start();
  const a = gso("conv-reconnect", "contrib-1", 1);
  const b = gso("conv-reconnect", "contrib-1", 2);
  assert.equal((await store.append(a)).state, "stored");
  const connectsBefore = store.stats().pool.connects;

  await env.dovecot.restart(); // SIGTERM: the server closes every client connection

  const res = await store.append(b);
  assert.equal(res.state, "stored");
  assert.ok(store.stats().pool.connects > connectsBefore, "a new connection was opened");
  assert.deepEqual((await readFolder(a.folder)).map(messageIdOf), [a.messageId, b.messageId]);
  await store.close();
});

test(
  "BYE-B3: a folder the server refuses is rejected, not spooled, and the object kept in the spool's bad/",
  { timeout: 30_000 },
  async () => {
    const cfg = await storeConfig();
    const store = newStore(cfg);
    await store.start();
    const obj = { ...gso("c", "d"), folder: `Default/${"x".repeat(300)}` }; // Dovecot: "Mailbox name too long"
    await assert.rejects(store.append(obj), (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_STORE_REJECTED");
    assert.equal(store.stats().spooled, 0);
    assert.deepEqual(await spoolFiles(cfg), []);
    // not lost either: kept aside with the reason in the log, for an operator
    assert.equal((await readdir(join(cfg.spoolDir, "bad"))).length, 1);
    await store.close();
  },
);

test("after close, appends are spooled for the next run", { timeout: 30_000 }, async () => {
  const cfg = await storeConfig();
  const store = newStore(cfg);
  await store.start();
  await store.close();
  const obj = gso("conv-closed", "contrib-closed");
  assert.equal((await store.append(obj)).state, "spooled");
  const next = newStore(cfg);
  await next.start();
  await waitFor(() => next.stats().drained === 1, 10_000, 50, "drained by the next run");
  assert.equal((await readFolder(obj.folder)).length, 1);
  await next.close();
});

/** The GSO of one BYE (its identity: Call-ID, CSeq, the CF's tag), as the PF stores it. */
function gsoOfBye(conversationId: string, contributionId: string, callId: string) {
  const { raw, messageId } = buildGsoObject({
    gso: {
      timestamp: new Date(),
      lastFocusSessionId: "sip:focus@cf.example.net",
      groupType: "Closed",
      contributionId,
      participants: [{ name: "Bob", commAddr: "tel:+16135551210" }],
    },
    bye: { callId, cseq: 2, fromTag: "cf-tag" },
    to: "tel:+16135551200",
    conversationId,
    contributionId,
  });
  return { folder: groupSessionFolder("Default", conversationId, contributionId), raw, messageId, unique: true };
}

test(
  "BYE-B4: the GSO of one BYE stored twice by one process is one object; no SEARCH in a folder it created",
  { timeout: 30_000 },
  async () => {
    const store = newStore(await storeConfig());
    await store.start();
    const obj = gsoOfBye("conv-once", "contrib-once", "once-1@cf");
    assert.deepEqual(await store.append(obj), { state: "stored", folder: obj.folder, messageId: obj.messageId });
    assert.deepEqual(await store.append(obj), { state: "stored", folder: obj.folder, messageId: obj.messageId, duplicate: true });
    assert.deepEqual((await readFolder(obj.folder)).map(messageIdOf), [obj.messageId]);
    // another BYE of the same session is another GSO
    const other = gsoOfBye("conv-once", "contrib-once", "once-2@cf");
    assert.equal((await store.append(other)).duplicate, undefined);
    assert.equal((await readFolder(obj.folder)).length, 2);
    const st = store.stats();
    assert.equal(st.stored, 2);
    assert.equal(st.deduplicated, 1);
    assert.equal(st.duplicateSearches, 0, "the folder was created by this process: what it holds is known");
    await store.close();
  },
);

test(
  "BYE-B4: the GSO of one BYE stored again by another process (restart, a second sidecar) is found by SEARCH, not stored twice",
  { timeout: 30_000 },
  async () => {
    const obj = gsoOfBye("conv-replay", "contrib-replay", "replay-1@cf");
    const first = newStore(await storeConfig());
    await first.start();
    assert.equal((await first.append(obj)).duplicate, undefined);
    await first.close();

    const second = newStore(await storeConfig());
    await second.start();
    assert.equal((await second.append(obj)).duplicate, true);
    assert.equal(second.stats().duplicateSearches, 1, "the folder existed: SEARCH HEADER Message-ID");
    // once found, the id is known: no second SEARCH
    assert.equal((await second.append(obj)).duplicate, true);
    assert.equal(second.stats().duplicateSearches, 1);
    assert.deepEqual((await readFolder(obj.folder)).map(messageIdOf), [obj.messageId]);
    await second.close();
  },
);

test(
  "BYE-B4 scale-out: a folder one sidecar CREATEd, the GSO appended by another sidecar first: with store.otherWriters the first one's append SEARCHes and finds it",
  { timeout: 30_000 },
  async () => {
    const obj = gsoOfBye("conv-two-writers", "contrib-two-writers", "two-writers-1@cf");
    const a = newStore({ ...(await storeConfig()), otherWriters: true });
    const b = newStore(await storeConfig());
    await a.start();
    await b.start();
    // A observed the session (its folder made ahead of need); B decided the BYE (the failover) and stored the GSO
    await a.prepareFolder(obj.folder);
    assert.equal((await b.append(obj)).duplicate, undefined);
    // A's own decision of the same BYE comes late (or its spool drains): found, not stored twice
    assert.equal((await a.append(obj)).duplicate, true);
    assert.equal(a.stats().duplicateSearches, 1, "a folder it created is searched all the same");
    assert.deepEqual((await readFolder(obj.folder)).map(messageIdOf), [obj.messageId]);
    await a.close();
    await b.close();
  },
);

test(
  "BYE-B4 scale-out: two sidecars store the GSO of the same BYE at the same moment (both SEARCH before either APPENDs): with store.otherWriters the later copy is expunged, one object stays",
  { timeout: 30_000 },
  async () => {
    const obj = gsoOfBye("conv-both-at-once", "contrib-both-at-once", "both-1@cf");
    const a = newStore({ ...(await storeConfig()), otherWriters: true, timeoutMs: 500 });
    const b = newStore({ ...(await storeConfig()), otherWriters: true, timeoutMs: 500 });
    await a.start();
    await b.start();
    await Promise.all([a.prepareFolder(obj.folder), b.prepareFolder(obj.folder)]);
    const [ra, rb] = await Promise.all([a.append(obj), b.append(obj)]);
    assert.equal(ra.state, "stored");
    assert.equal(rb.state, "stored");
    // both checked after the others had store.timeoutMs; close() runs a pending check at once
    await a.close();
    await b.close();
    assert.deepEqual((await readFolder(obj.folder)).map(messageIdOf), [obj.messageId], "one copy in the group folder");
  },
);

test(
  "BYE-B4: a GSO stored while the CREATE of its folder ahead of need is still unanswered is known as stored: stored again (the spool's drain of a GSO spooled over the budget, a replayed BYE) it is not a second copy",
  { timeout: 30_000 },
  async () => {
    const cfg = await storeConfig();
    // the server carries out the CREATE at once; its answer reaches the store after the GSO's APPEND
    const proxy = await startReplyHoldProxy({ host: cfg.host, port: cfg.port }, /\bCREATE\b/);
    try {
      const store = newStore({ ...cfg, host: proxy.host, port: proxy.port, poolSize: 2 });
      await store.start();
      const obj = gsoOfBye("conv-late-create", "contrib-late-create", "late-create-1@cf");
      const prepared = store.prepareFolder(obj.folder);
      await proxy.holding;
      assert.equal((await store.append(obj)).duplicate, undefined, "the decision's append, on the other pooled connection");
      proxy.release();
      await prepared;
      assert.equal((await store.append(obj)).duplicate, true, "the same GSO again is found");
      assert.deepEqual((await readFolder(obj.folder)).map(messageIdOf), [obj.messageId], "one copy in the group folder");
      await store.close();
    } finally {
      await proxy.close();
    }
  },
);

test(
  "BYE-B4: with the Message Store down the GSO of one BYE is spooled once (also across a restart) and stored once",
  { timeout: 60_000 },
  async () => {
    const cfg = await storeConfig();
    const obj = gsoOfBye("conv-spool-once", "contrib-spool-once", "spool-1@cf");
    await env.dovecot.kill();
    try {
      const store = newStore(cfg);
      await store.start();
      assert.equal((await store.append(obj)).state, "spooled");
      assert.deepEqual(await store.append(obj), { state: "spooled", folder: obj.folder, messageId: obj.messageId, duplicate: true });
      assert.equal((await spoolFiles(cfg)).length, 1, "no second copy in the spool");
      await store.close();
      const restarted = newStore(cfg);
      await restarted.start();
      assert.equal((await restarted.append(obj)).duplicate, true, "the restarted process finds it in the spool");
      assert.equal((await spoolFiles(cfg)).length, 1);
      // one process per spool: this one goes before the next drains it
      await restarted.close();
    } finally {
      await env.dovecot.restart();
    }
    const drainer = newStore(cfg);
    await drainer.start();
    await waitFor(() => drainer.stats().spoolPending === 0, 15_000, 50, "spool drained");
    assert.deepEqual((await readFolder(obj.folder)).map(messageIdOf), [obj.messageId]);
    await drainer.close();
  },
);

test(
  "BYE-B4: a store slower than the caller's budget (Dovecot frozen): the GSO is spooled within the budget, then stored once when the store is back",
  { timeout: 60_000 },
  async () => {
    const cfg = await storeConfig();
    const store = newStore(cfg);
    await store.start();
    // the connection is open and the folder known: only the APPEND is in the way
    const warm = gsoOfBye("conv-budget", "contrib-budget", "budget-0@cf");
    assert.equal((await store.append(warm)).state, "stored");
    const obj = { ...gsoOfBye("conv-budget", "contrib-budget", "budget-1@cf"), budgetMs: 100 };
    process.kill(-env.dovecot.pid, "SIGSTOP");
    let answeredInMs = 0;
    try {
      const t0 = performance.now();
      const r = await store.append(obj);
      answeredInMs = performance.now() - t0;
      assert.equal(r.state, "spooled");
      assert.equal((await spoolFiles(cfg)).length, 1, "durable before the answer");
    } finally {
      process.kill(-env.dovecot.pid, "SIGCONT");
    }
    // the budget plus one spool write (fsync), not the store's 3 s timeout
    assert.ok(answeredInMs < 1000, `answered after ${answeredInMs.toFixed(0)} ms`);
    assert.equal(store.stats().overBudget, 1);
    await waitFor(() => store.stats().spoolPending === 0, 15_000, 50, "spool drained");
    // the APPEND under way and the drain: one object
    assert.deepEqual((await readFolder(obj.folder)).map(messageIdOf).sort(), [warm.messageId, obj.messageId].sort());
    await store.close();
  },
);

test(
  "BYE-B4: an APPEND that timed out while Dovecot was frozen and is carried out after all leaves one GSO, not two (the later copy is expunged)",
  { timeout: 60_000 },
  async () => {
    const cfg = await storeConfig({ timeoutMs: 600, retryInitialMs: 100 });
    const store = newStore(cfg);
    await store.start();
    const warm = gsoOfBye("conv-late", "contrib-late", "late-0@cf");
    assert.equal((await store.append(warm)).state, "stored");
    const obj = { ...gsoOfBye("conv-late", "contrib-late", "late-1@cf"), budgetMs: 50 };
    process.kill(-env.dovecot.pid, "SIGSTOP");
    try {
      assert.equal((await store.append(obj)).state, "spooled");
      // the APPEND sent to the frozen server times out (store.timeoutMs) with its bytes already on the wire
      await new Promise((r) => setTimeout(r, cfg.timeoutMs * 2));
    } finally {
      process.kill(-env.dovecot.pid, "SIGCONT");
    }
    await waitFor(() => store.stats().spoolPending === 0, 15_000, 50, "spool drained");
    // settled once the server had store.timeoutMs to carry out the unanswered APPEND
    await new Promise((r) => setTimeout(r, cfg.timeoutMs * 3));
    assert.deepEqual((await readFolder(obj.folder)).map(messageIdOf).sort(), [warm.messageId, obj.messageId].sort());
    await store.close();
  },
);

test(
  "BYE-B4: a GSO spooled for its budget holds back only its own folder: another session's GSO is stored at once, the same session's next one goes behind it, each once, in arrival order",
  { timeout: 60_000 },
  async () => {
    const cfg = await storeConfig();
    const store = newStore(cfg);
    await store.start();
    const warm = [gsoOfBye("conv-order-a", "contrib-a", "order-0@cf"), gsoOfBye("conv-order-b", "contrib-b", "order-0b@cf")];
    for (const w of warm) assert.equal((await store.append(w)).state, "stored");
    // Dovecot frozen for a1 alone: its APPEND is overtaken by the budget, the GSO spooled
    const a1 = { ...gsoOfBye("conv-order-a", "contrib-a", "order-1@cf"), budgetMs: 50 };
    const a2 = gsoOfBye("conv-order-a", "contrib-a", "order-2@cf");
    const b1 = gsoOfBye("conv-order-b", "contrib-b", "order-1b@cf");
    const reasons: string[] = [];
    store.on("spooled", (e) => reasons.push(e.reason));
    process.kill(-env.dovecot.pid, "SIGSTOP");
    try {
      assert.equal((await store.append(a1)).state, "spooled");
    } finally {
      process.kill(-env.dovecot.pid, "SIGCONT");
    }
    const [r2, rb] = await Promise.all([store.append(a2), store.append(b1)]);
    assert.equal(rb.state, "stored", "another session's folder is not held back");
    assert.equal(r2.state, "spooled", "the same folder keeps arrival order");
    assert.match(reasons[1] ?? "", /spool holds this folder/);
    await waitFor(() => store.stats().spoolPending === 0, 15_000, 50, "spool drained");
    const a = (await readFolder(a1.folder)).map(messageIdOf);
    assert.deepEqual(
      a,
      [warm[0], a1, a2].map((o) => o?.messageId),
      "once each, in arrival order",
    );
    assert.deepEqual(
      (await readFolder(b1.folder)).map(messageIdOf),
      [warm[1], b1].map((o) => o?.messageId),
    );
    await store.close();
  },
);
