import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { silentLogger } from "../../../src/log/logger.js";
import { Spool } from "../../../src/store/spool.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tempSpoolDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "cpm-spool-test-"));
  dirs.push(d);
  return join(d, "spool");
}

const entry = (n: number) => ({
  folder: `Default/c/${n}`,
  raw: Buffer.from(`Message-ID: <m${n}@t>\r\n\r\nbody ${n}\u0000\xff`, "latin1"),
  messageId: `m${n}@t`,
});

test("entries come back in FIFO order, byte-exact", async () => {
  const spool = new Spool(await tempSpoolDir(), silentLogger());
  const ids: string[] = [];
  for (let i = 0; i < 25; i++) ids.push(await spool.put(entry(i)));
  assert.deepEqual(await spool.list(), ids);
  for (let i = 0; i < 25; i++) {
    const e = await spool.read(ids[i] as string);
    assert.ok(e);
    assert.equal(e.folder, entry(i).folder);
    assert.equal(e.messageId, entry(i).messageId);
    assert.ok(e.raw.equals(entry(i).raw));
  }
  await spool.remove(ids[0] as string);
  await spool.remove(ids[0] as string); // idempotent
  assert.deepEqual(await spool.list(), ids.slice(1));
});

test("concurrent puts get distinct ids", async () => {
  const spool = new Spool(await tempSpoolDir(), silentLogger());
  const ids = await Promise.all(Array.from({ length: 50 }, (_, i) => spool.put(entry(i))));
  assert.equal(new Set(ids).size, 50);
  assert.equal((await spool.list()).length, 50);
});

test("BYE-B5 spool group commit: puts and removes made while a directory fsync runs share the next one; every one resolves, and a new instance on the directory sees exactly what is left", async () => {
  const dir = await tempSpoolDir();
  const spool = new Spool(dir, silentLogger());
  const ids = await Promise.all(Array.from({ length: 200 }, (_, i) => spool.put(entry(i))));
  const gone = ids.filter((_, i) => i % 3 === 0);
  // removals of the first wave interleaved with a second wave of puts
  const [, more] = await Promise.all([
    Promise.all(gone.map((id) => spool.remove(id))),
    Promise.all(Array.from({ length: 100 }, (_, i) => spool.put(entry(200 + i)))),
  ]);
  const left = [...ids.filter((id) => !gone.includes(id)), ...more].sort();
  assert.deepEqual(await spool.list(), left);
  assert.deepEqual(await new Spool(dir, silentLogger()).list(), left);
});

test("survives re-open: entries kept, new ids sort after old ones, temp files cleaned", async () => {
  const dir = await tempSpoolDir();
  const first = new Spool(dir, silentLogger());
  const a = await first.put(entry(1));
  const b = await first.put(entry(2));
  // a write interrupted by a crash leaves only a temp file
  await writeFile(join(dir, ".tmp-0000000000000000-00000000.spool-dead"), "half");
  const second = new Spool(dir, silentLogger());
  assert.deepEqual(await second.list(), [a, b]);
  const c = await second.put(entry(3));
  assert.ok(c > b, `${c} sorts after ${b}`);
  assert.deepEqual(await second.list(), [a, b, c]);
  assert.equal(
    (await readdir(dir)).some((n) => n.startsWith(".tmp-")),
    false,
  );
  const e = await second.read(a);
  assert.ok(e?.raw.equals(entry(1).raw));
});

test("ids continue after a future-dated entry (clock went backwards)", async () => {
  const dir = await tempSpoolDir();
  const s1 = new Spool(dir, silentLogger());
  await s1.open();
  const future = "0004102444800000-00000005.spool"; // year 2100
  const good = await s1.put(entry(1));
  const content = await readFile(join(dir, good));
  await writeFile(join(dir, future), content);
  const s2 = new Spool(dir, silentLogger());
  const next = await s2.put(entry(2));
  assert.equal(next, "0004102444800000-00000006.spool");
});

test("corrupt or unreadable entries are moved to bad/ and do not stop the others", async () => {
  const dir = await tempSpoolDir();
  const spool = new Spool(dir, silentLogger());
  const ok1 = await spool.put(entry(1));
  const truncated = await spool.put(entry(2));
  const flipped = await spool.put(entry(3));
  const ok2 = await spool.put(entry(4));
  const t = await readFile(join(dir, truncated));
  await writeFile(join(dir, truncated), t.subarray(0, t.length - 3));
  const f = await readFile(join(dir, flipped));
  f[f.length - 1] = (f[f.length - 1] as number) ^ 0xff;
  await writeFile(join(dir, flipped), f);
  const garbage = "0000000000000001-00000000.spool";
  await writeFile(join(dir, garbage), "not a spool file at all");

  const out: string[] = [];
  for (const id of await spool.list()) {
    const e = await spool.read(id);
    if (e) out.push(e.messageId);
  }
  assert.deepEqual(out, ["m1@t", "m4@t"]);
  assert.deepEqual((await readdir(join(dir, "bad"))).sort(), [garbage, truncated, flipped].sort());
  assert.deepEqual(await spool.list(), [ok1, ok2]);
  assert.equal(await spool.read("0000000000000002-00000000.spool"), undefined, "missing id");
  await assert.rejects(spool.read("../../etc/passwd"));
});

test("the spool knows which objects it holds, also after a restart, until they are removed", async () => {
  const dir = await tempSpoolDir();
  const spool = new Spool(dir, silentLogger());
  assert.equal(await spool.has(entry(1).folder, entry(1).messageId), false);
  const id = await spool.put(entry(1));
  await spool.put(entry(2));
  assert.equal(await spool.has(entry(1).folder, entry(1).messageId), true);
  assert.equal(await spool.has(entry(1).folder, `<${entry(1).messageId}>`), true, "with or without brackets");
  assert.equal(await spool.has(entry(2).folder, entry(1).messageId), false, "the same id in another folder is another object");
  const reopened = new Spool(dir, silentLogger());
  assert.equal(await reopened.has(entry(1).folder, entry(1).messageId), true, "read from the entries at open");
  await reopened.remove(id);
  assert.equal(await reopened.has(entry(1).folder, entry(1).messageId), false);
  assert.equal(await reopened.has(entry(2).folder, entry(2).messageId), true);
});

test("a damaged entry is not in the spool's index and does not stop open()", async () => {
  const dir = await tempSpoolDir();
  const spool = new Spool(dir, silentLogger());
  const id = await spool.put(entry(3));
  await writeFile(join(dir, id), "CPMSPOOL1\n{not json");
  const reopened = new Spool(dir, silentLogger());
  assert.equal(await reopened.has(entry(3).folder, entry(3).messageId), false);
  assert.deepEqual(await reopened.list(), [id]);
});
