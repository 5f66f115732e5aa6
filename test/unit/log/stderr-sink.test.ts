// The log sink writes what it is given, in order, without blocking the caller.
import assert from "node:assert/strict";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { StderrSink } from "../../../src/log/stderr-sink.js";

test("log lines pushed over many turns reach the fd complete and in order; drained() resolves after the last", async () => {
  const dir = await mkdtemp(join(tmpdir(), "cpm-sink-"));
  const path = join(dir, "log");
  const fd = openSync(path, "w");
  try {
    const sink = new StderrSink(fd);
    const lines = Array.from({ length: 5000 }, (_, i) => `{"n":${i},"pad":"${"x".repeat(i % 200)}"}\n`);
    for (let i = 0; i < lines.length; i++) {
      sink.push(lines[i] as string);
      if (i % 97 === 0) await new Promise((r) => setImmediate(r));
    }
    await sink.drained();
    assert.equal(readFileSync(path, "utf8"), lines.join(""));
    await sink.drained(); // nothing pending: at once
  } finally {
    closeSync(fd);
    await rm(dir, { recursive: true, force: true });
  }
});
