// The session table's journal (src/session/registry.ts): what survives a
// sidecar restart (issue 2 item 6), a torn write, compaction and the upgrade
// from one file per session.
import assert from "node:assert/strict";
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { silentLogger } from "../../../src/log/logger.js";
import type { GroupSession } from "../../../src/session/group-session.js";
import { JOURNAL_FILE, SessionRegistry } from "../../../src/session/registry.js";

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function freshDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "cpm-registry-"));
  dirs.push(d);
  return d;
}

const DAY = 24 * 3600 * 1000;

function session(key: string, participants: string[] = ["tel:+1"], updatedAt = Date.now()): GroupSession {
  return {
    key,
    conversationId: `conv-${key}`,
    contributionId: `contrib-${key}`,
    focusUri: "sip:focus@cf.example.net",
    networkTag: "cf-tag",
    servedUser: "tel:+16135551200",
    groupType: "Open",
    subject: undefined,
    icon: undefined,
    participants: participants.map((commAddr) => ({ name: "", commAddr })),
    conferenceVersion: 0,
    sdpOffer: "",
    state: "active",
    createdAt: updatedAt,
    updatedAt,
  };
}

async function reopen(dir: string, ttl = 7 * DAY): Promise<SessionRegistry> {
  const r = new SessionRegistry(dir, ttl, silentLogger());
  await r.load();
  return r;
}

test("the latest participant list of each session survives a restart; removed sessions stay removed", async () => {
  const dir = await freshDir();
  const r = await reopen(dir);
  await r.put(session("a", ["tel:+1"]));
  await r.put(session("b"));
  await r.put(session("a", ["tel:+1", "tel:+2"]));
  await r.remove("b");
  await r.close();
  const back = await reopen(dir);
  assert.deepEqual(
    back.get("a")?.participants.map((p) => p.commAddr),
    ["tel:+1", "tel:+2"],
  );
  assert.equal(back.get("b"), undefined);
  assert.equal(back.size, 1);
});

test("changes made back to back are all written, in order (group commit), without awaiting each", async () => {
  const dir = await freshDir();
  const r = await reopen(dir);
  const writes: Promise<void>[] = [];
  for (let i = 0; i < 500; i++) writes.push(r.put(session(`k${i % 50}`, [`tel:+${i}`])));
  for (let i = 0; i < 10; i++) writes.push(r.remove(`k${i}`));
  await Promise.all(writes);
  await r.close();
  const back = await reopen(dir);
  assert.equal(back.size, 40);
  assert.deepEqual(
    back.get("k49")?.participants.map((p) => p.commAddr),
    ["tel:+499"],
  );
});

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
    if (i % 3 !== 0) await r.remove(`churn${i}`);
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

test("sessions idle longer than session.idleTtlMs are forgotten at start-up and by sweep()", async () => {
  const dir = await freshDir();
  const r = await reopen(dir, DAY);
  await r.put(session("old", ["tel:+1"], Date.now() - 2 * DAY));
  await r.put(session("new"));
  await r.close();
  const back = await reopen(dir, DAY);
  assert.deepEqual([back.get("old"), back.get("new")?.key], [undefined, "new"]);
  assert.equal(await back.sweep(Date.now() + 2 * DAY), 1);
  assert.equal(back.size, 0);
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
