import assert from "node:assert/strict";
import { test } from "node:test";
import { SessionRecording } from "../../../src/media/recording.js";
import { capturingLogger } from "../../harness/log-capture.js";

const msg = (text: string) => ({
  direction: "from-network" as const,
  contentType: "message/cpim",
  body: Buffer.from(text),
  msrpMessageId: text,
  at: new Date(0),
});

test("BYE-B8 groundwork: the recording keeps messages up to maxRecordedBytes, then logs once without content", async () => {
  const { logger: log, lines } = capturingLogger();
  const r = new SessionRecording(10, log);
  r.add(msg("12345"));
  r.add(msg("6789"));
  r.add(msg("secret-body"));
  r.add(msg("x"));
  assert.deepEqual(
    r.messages.map((m) => m.msrpMessageId),
    ["12345", "6789"],
  );
  assert.equal(r.bytes, 9);
  assert.equal(r.truncated, 2);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(lines.length, 1, "one log line for the truncation");
  assert.match(lines[0] ?? "", /session recording truncated/);
  assert.doesNotMatch(lines.join(""), /secret-body/);
  assert.equal(r.clear(), 2);
  assert.equal(r.bytes, 0);
  assert.equal(r.messages.length, 0);
});
