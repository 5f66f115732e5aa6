// The logger operators read: JSON lines, a child per component with its
// fields, and levels that really filter (a disabled level costs nothing).
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { componentLogger, createRootLogger } from "../../../src/log/logger.js";

function capture(level: "info" | "debug") {
  const stream = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  stream.on("data", (chunk: Buffer) => {
    for (const l of chunk.toString("utf8").split("\n").filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  return { root: createRootLogger(level, stream), lines };
}

const tick = () => new Promise((r) => setImmediate(r));

test("a component logger writes JSON lines with its component and the Call-ID as fields", async () => {
  const { root, lines } = capture("info");
  componentLogger("pf", root).info("BYE decided", { callId: "c1@cf", conversationId: "conv" });
  await tick();
  assert.equal(lines.length, 1);
  assert.deepEqual(
    { msg: lines[0]?.message, component: lines[0]?.component, callId: lines[0]?.callId, level: lines[0]?.level },
    { msg: "BYE decided", component: "pf", callId: "c1@cf", level: "info" },
  );
  assert.ok(typeof lines[0]?.timestamp === "string");
});

test("levels filter: debug is dropped at info (also through log(level, ...)), and appears once the level is debug", async () => {
  const { root, lines } = capture("info");
  const log = componentLogger("msrp", root);
  log.debug("frame in", { bytes: 10 });
  log.log("debug", "frame out");
  log.warn("bad MSRP frame");
  await tick();
  assert.deepEqual(
    lines.map((l) => l.message),
    ["bad MSRP frame"],
  );
  root.level = "debug";
  log.debug("frame in");
  await tick();
  assert.deepEqual(
    lines.map((l) => l.message),
    ["bad MSRP frame", "frame in"],
  );
});
