// Mailboxes (src/store/mailboxes.ts) without a Message Store: which mailbox a
// served user gets, and that start() never drains a spool into a mailbox its
// owner file does not prove (the Dovecot-backed proof is
// test/integration/mailboxes.test.ts).
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { defaults } from "../../../src/config/config.js";
import { CpmError } from "../../../src/errors/catalogue.js";
import { silentLogger } from "../../../src/log/logger.js";
import { Mailboxes, spoolDirName } from "../../../src/store/mailboxes.js";
import { Spool } from "../../../src/store/spool.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "cpm-mailboxes-unit-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

// nothing listens here: a mailbox that is opened would only spool
const cfg = (spoolDir: string, user: string) => ({ ...defaults.store, host: "127.0.0.1", port: 1, user, timeoutMs: 200, spoolDir });

test("per-user template: served users with the same mailbox name share one MessageStore, others get their own", async () => {
  const m = new Mailboxes(cfg(join(dir, "a"), "{user}*pfmaster"), silentLogger());
  try {
    assert.equal(m.perUser, true);
    assert.equal(m.forUser("sip:alice@example.net"), m.forUser("sips:alice@EXAMPLE.net;transport=tls"));
    assert.notEqual(m.forUser("sip:alice@example.net"), m.forUser("sip:bob@example.net"));
    assert.equal(m.mailboxOf("tel:+1-613-555-1210"), "+16135551210");
    assert.throws(
      () => m.forUser("sip:a*b@example.net"),
      (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_BAD_SERVED_USER",
    );
    await assert.rejects(
      m.append({ owner: "", folder: "Default/x/y", raw: Buffer.from("x"), messageId: "<x@y>" }),
      (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_BAD_SERVED_USER",
    );
    assert.deepEqual(Object.keys(m.stats().mailboxes).sort(), ["alice@example.net", "bob@example.net"]);
  } finally {
    await m.close();
  }
});

test("shared login (store.user without {user}): every served user gets the one MessageStore", async () => {
  const m = new Mailboxes(cfg(join(dir, "b"), "cpm-pf"), silentLogger());
  try {
    assert.equal(m.perUser, false);
    assert.equal(m.forUser("sip:alice@example.net"), m.forUser("tel:+16135551210"));
    assert.equal(m.mailboxOf("sip:alice@example.net"), "");
    assert.equal(m.stats().open, 1);
  } finally {
    await m.close();
  }
});

test("start(): a per-user spool whose owner file is missing or names another mailbox is left alone, never drained elsewhere", async () => {
  const root = join(dir, "c");
  const wrong = join(root, spoolDirName("bob@example.net"));
  const orphan = join(root, "0123456789abcdef");
  for (const d of [wrong, orphan]) {
    await new Spool(d, silentLogger()).put({ folder: "Default/x/y", raw: Buffer.from("object"), messageId: "<o@x>" });
  }
  await writeFile(join(wrong, "owner"), `${JSON.stringify({ mailbox: "alice@example.net" })}\n`);
  await mkdir(join(root, "not-a-spool"), { recursive: true });
  const m = new Mailboxes(cfg(root, "{user}*pfmaster"), silentLogger());
  try {
    await m.start();
    assert.equal(m.stats().open, 0, "no mailbox opened");
    for (const d of [wrong, orphan]) assert.equal((await readdir(d)).filter((f) => f.endsWith(".spool")).length, 1, `${d} kept`);
  } finally {
    await m.close();
  }
});
