// The session table's journal (src/session/registry.ts): what only the
// journal does — a torn write, compaction, the upgrade from one file per
// session, records of ended groups on disk only. What every record store does
// (a restart keeps the latest versions, the Call-ID index, retention) is the
// shared contract: test/unit/session/record-store-contract.test.ts.
import assert from "node:assert/strict";
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { silentLogger } from "../../../src/log/logger.js";
import { JOURNAL_FILE, SessionRegistry } from "../../../src/session/registry.js";
import { idOf, POLICY, session } from "../../fixtures/record-store-contract.js";

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function freshDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "cpm-registry-"));
  dirs.push(d);
  return d;
}

async function reopen(dir: string, policy = POLICY): Promise<SessionRegistry> {
  const r = new SessionRegistry(dir, policy, silentLogger());
  await r.load();
  return r;
}

test("a torn last line (sidecar killed mid-write) is skipped; every record before it is kept", async () => {
  const dir = await freshDir();
  const r = await reopen(dir);
  await r.put(session("a"));
  await r.put(session("b"));
  await r.close();
  await appendFile(join(dir, JOURNAL_FILE), '{"op":"put","s":{"key":"c","partic');
  const back = await reopen(dir);
  assert.deepEqual([back.get("a")?.key, back.get("b")?.key, back.get("c")], ["a", "b", undefined]);
});

test("the journal is compacted: it holds one record per live session after a restart and under churn", async () => {
  const dir = await freshDir();
  const r = await reopen(dir);
  for (let i = 0; i < 3000; i++) {
    await r.put(session(`churn${i}`));
    if (i % 3 !== 0) await r.purge(idOf(`churn${i}`));
  }
  await r.flush();
  const lines = (await readFile(join(dir, JOURNAL_FILE), "utf8")).split("\n").filter(Boolean).length;
  assert.ok(lines <= 2 * r.size + 1024 + 1, `journal lines ${lines} for ${r.size} sessions`);
  await r.close();
  const back = await reopen(dir);
  assert.equal(back.size, 1000);
  const after = (await readFile(join(dir, JOURNAL_FILE), "utf8")).split("\n").filter(Boolean).length;
  assert.equal(after, 1000);
});

test("upgrade: a record of an earlier version (state, no lifecycle or dialogs) is read as a re-startable record with data that may be pending", async () => {
  const dir = await freshDir();
  const {
    lifecycle: _l,
    lifecycleAt: _a,
    dialogs: _d,
    pendingDeferred: _p,
    endCause: _e,
    conferenceFactoryUri: _c,
    ...old
  } = session("v1");
  await writeFile(join(dir, JOURNAL_FILE), `${JSON.stringify({ op: "put", s: { ...old, state: "ended" } })}\n`);
  const r = await reopen(dir);
  const s = r.get("v1");
  assert.equal(s?.lifecycle, "inactive");
  assert.equal(s?.pendingDeferred, true);
  assert.deepEqual(
    s?.dialogs.map((d) => d.callId),
    ["v1"],
  );
});

test("upgrade: per-session files of earlier versions are folded into the journal; a damaged one is kept, not deleted", async () => {
  const dir = await freshDir();
  await writeFile(join(dir, "0123abcd.json"), JSON.stringify(session("legacy", ["tel:+7"])));
  await writeFile(join(dir, "damaged.json"), "{not json");
  const r = await reopen(dir);
  assert.deepEqual(
    r.get("legacy")?.participants.map((p) => p.commAddr),
    ["tel:+7"],
  );
  await r.close();
  assert.deepEqual((await readdir(dir)).sort(), ["damaged.json", JOURNAL_FILE]);
  assert.equal((await reopen(dir)).get("legacy")?.key, "legacy");
});

test("records of ended groups (inactive, terminated, left) are index entries only: read from the journal when asked for, also after compaction and a restart", async () => {
  const dir = await freshDir();
  const r = await reopen(dir);
  const ended = (key: string, lifecycle: "inactive" | "terminated" | "left") => ({
    ...session(key, ["tel:+1", `tel:+${key.length}`]),
    lifecycle,
    lifecycleAt: Date.now(),
    pendingDeferred: lifecycle === "inactive",
  });
  await r.put(session("live"));
  const quiet = ended("quiet", "inactive");
  await r.put(quiet);
  await r.put(ended("gone", "terminated"));
  await r.put({ ...session("absent"), lifecycle: "client-absent" });
  assert.equal(r.size, 4);
  assert.equal(r.inMemory, 2, "only the live groups (active, client absent) stay in memory");
  // as put, through JSON (fields set to undefined are absent)
  const asWritten = JSON.parse(JSON.stringify(quiet));
  assert.deepEqual(r.get("quiet"), asWritten, "read back from the journal as it was put");
  assert.deepEqual(r.findByIds("tel:+16135551200", "conv-quiet", "contrib-quiet"), asWritten);
  assert.deepEqual(
    r.get("gone")?.participants.map((p) => p.commAddr),
    ["tel:+1", "tel:+4"],
  );
  // a put on an ended group's record (e.g. its queue settled) replaces it, and it leaves memory again once written
  await r.put({ ...ended("quiet", "inactive"), pendingDeferred: false, subject: "later" });
  assert.equal(r.inMemory, 2);
  assert.equal(r.get("quiet")?.subject, "later");
  // re-join: the record is live again
  await r.put({ ...ended("gone", "terminated"), lifecycle: "active" });
  assert.equal(r.inMemory, 3);
  // churn that compacts the journal moves the lines; every record still reads back
  for (let i = 0; i < 2100; i++) await r.put(ended(`churn${i % 5}`, "left"));
  await r.flush();
  assert.equal(r.get("quiet")?.subject, "later");
  assert.equal(r.get("churn4")?.lifecycle, "left");
  await r.close();
  const back = await reopen(dir);
  assert.equal(back.size, 9);
  assert.equal(back.inMemory, 3);
  assert.equal(back.get("quiet")?.subject, "later");
  assert.deepEqual([...back.all()].map((s) => s.key).sort(), [
    "absent",
    "churn0",
    "churn1",
    "churn2",
    "churn3",
    "churn4",
    "gone",
    "live",
    "quiet",
  ]);
  await back.purge(idOf("quiet"));
  assert.equal(back.get("quiet"), undefined);
  assert.equal(back.size, 8);
});

test("bad input: a record of an ended group whose journal line is damaged on disk reads as absent (logged), the others still read", async () => {
  const dir = await freshDir();
  const r = await reopen(dir);
  const ended = (key: string) => ({ ...session(key), lifecycle: "inactive" as const, lifecycleAt: Date.now() });
  await r.put(ended("hurt"));
  await r.put(ended("fine"));
  const journal = join(dir, JOURNAL_FILE);
  const text = await readFile(journal, "utf8");
  // same length, no longer JSON: what a disk error or an operator's editor leaves
  await writeFile(journal, text.replace('"key":"hurt"', '"key"}"hurt"'));
  assert.equal(r.get("hurt"), undefined);
  assert.equal(r.get("fine")?.key, "fine");
  assert.equal(r.size, 2, "nothing dropped: the index entry stays for an operator to look at");
  await r.close();
});
