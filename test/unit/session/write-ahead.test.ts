// The file of record writes held while Redis is away (src/session/redis/write-ahead.ts).
import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { WRITE_AHEAD_FILE, WriteAhead } from "../../../src/session/redis/write-ahead.js";
import { capturingLogger } from "../../harness/log-capture.js";

async function inTemp(fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "cpm-wal-unit-"));
  try {
    await fn(join(dir, WRITE_AHEAD_FILE));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("held writes: the latest of each record counts, a purge drops it, a reopened file gives back what is still held, in order", () =>
  inTemp(async (path) => {
    const { logger } = capturingLogger("warn");
    const wal = new WriteAhead(path, logger);
    assert.deepEqual(await wal.open(), []);
    await wal.hold({ id: "a", base: 1, text: '{"v":1}' });
    await wal.hold({ id: "b", base: 4, text: '{"v":1}', fence: { slot: 3, token: 9 } });
    await wal.hold({ id: "a", base: 1, text: '{"v":2}' });
    await wal.hold({ id: "c", base: 0, text: '{"v":1}' });
    wal.drop("c");
    assert.deepEqual(
      wal.entries().map((w) => [w.id, w.text]),
      [
        ["b", '{"v":1}'],
        ["a", '{"v":2}'],
      ],
    );
    wal.close();
    const again = new WriteAhead(path, logger);
    assert.deepEqual(await again.open(), [
      { id: "b", base: 4, text: '{"v":1}', fence: { slot: 3, token: 9 } },
      { id: "a", base: 1, text: '{"v":2}' },
    ]);
    // settled: an older write of a record that was held again is not forgotten; the file empties with the last one
    const [b, a] = again.entries();
    assert.ok(a && b);
    await again.hold({ id: "b", base: 4, text: '{"v":2}' });
    again.settle(b);
    assert.equal(again.latest("b")?.text, '{"v":2}');
    again.settle(a);
    assert.ok(statSync(path).size > 0);
    again.settle(again.latest("b") ?? assert.fail("b held"));
    assert.equal(again.size, 0);
    assert.equal(statSync(path).size, 0, "nothing held: the file is emptied");
    again.close();
  }));

test("bad input: damaged and torn lines of the file are logged and skipped; the good ones are held", () =>
  inTemp(async (path) => {
    await writeFile(
      path,
      [
        JSON.stringify({ id: "good", base: 2, text: "{}" }),
        "not json",
        JSON.stringify({ id: "", base: 1, text: "{}" }),
        JSON.stringify({ id: "x", base: -1, text: "{}" }),
        JSON.stringify({ id: "y", base: 1, text: "{}", fence: { slot: "3" } }),
        '{"id":"torn","base":1,"te',
      ].join("\n"),
    );
    const { logger, lines } = capturingLogger("warn");
    const wal = new WriteAhead(path, logger);
    assert.deepEqual(await wal.open(), [{ id: "good", base: 2, text: "{}" }]);
    assert.ok(
      lines.some((l) => l.includes("damaged lines skipped") && l.includes('"skipped":5')),
      lines.join("\n"),
    );
    // the next write starts a line of its own after the torn one: the next open reads it
    await wal.hold({ id: "next", base: 0, text: "{}" });
    wal.close();
    assert.match(readFileSync(path, "utf8"), /"te\n\{"id":"next"/);
    const again = new WriteAhead(path, logger);
    assert.deepEqual(
      (await again.open()).map((w) => w.id),
      ["good", "next"],
    );
    again.close();
  }));
