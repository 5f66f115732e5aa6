// The mailbox of a served user (src/store/mailbox-name.ts) and the UID sets of
// batch ack (src/store/deferred-queue.ts): pure functions, no IMAP.
import assert from "node:assert/strict";
import { test } from "node:test";
import { buildConfig } from "../../../src/config/config.js";
import { CpmError } from "../../../src/errors/catalogue.js";
import { uidSet } from "../../../src/store/deferred-queue.js";
import { isPerUserTemplate, mailboxLogin, mailboxNameOf } from "../../../src/store/mailbox-name.js";
import { spoolDirName } from "../../../src/store/mailboxes.js";

test("each served user's mailbox name is the URI without scheme, parameters and headers, host lowercased", () => {
  const cases: [string, string][] = [
    ["sip:alice@example.net", "alice@example.net"],
    ["sips:alice@example.net", "alice@example.net"],
    ["SIP:Alice@Example.NET", "Alice@example.net"],
    ["sip:alice@example.net;transport=tcp?Subject=x", "alice@example.net"],
    ["sip:alice@example.net:5061;gr=urn:uuid:1", "alice@example.net"],
    ["<sip:bob@example.net>", "bob@example.net"],
    ["sip:alice%2Bwork@example.net", "alice+work@example.net"],
    ["sip:alice:secret@example.net", "alice@example.net"],
    ["sip:+16135551210@ims.example.net;user=phone", "+16135551210@ims.example.net"],
    ["tel:+16135551210", "+16135551210"],
    ["tel:+1-613-555-1210;phone-context=example.net", "+16135551210"],
    ["sip:alice@[2001:DB8::1]", "alice@[2001:db8::1]"],
  ];
  for (const [uri, name] of cases) assert.equal(mailboxNameOf(uri), name, uri);
});

test("a served user with no usable mailbox name is refused with CPM_ERR_BAD_SERVED_USER", () => {
  const bad = [
    "",
    "alice@example.net", // no scheme
    "mailto:alice@example.net",
    "sip:example.net", // no user part
    "sip:@example.net",
    "tel:",
    "tel:;phone-context=x",
    "sip:al*ice@example.net", // the master-user separator
    "sip:al%2Aice@example.net",
    "sip:al%20ice@example.net",
    "sip:al%22ice@example.net",
    "sip:al'ice@example.net",
    "sip:al%5Cice@example.net",
    "sip:al%2Fice@example.net",
    "sip:al%0D%0Aice@example.net",
    "sip:al%00ice@example.net",
    "sip:al%C3%A9ice@example.net", // non-ASCII
    "sip:al%ZZice@example.net",
    "sip:alice@exa mple.net",
    "tel:+1613 5551210",
  ];
  for (const uri of bad) {
    assert.throws(
      () => mailboxNameOf(uri),
      (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_BAD_SERVED_USER",
      JSON.stringify(uri),
    );
  }
  assert.throws(() => mailboxNameOf(undefined as unknown as string), CpmError);
});

test("the login template replaces {user}; without it every served user shares one login", () => {
  assert.equal(mailboxLogin("{user}*pfmaster", "alice@example.net"), "alice@example.net*pfmaster");
  assert.equal(mailboxLogin("{user}", "+16135551210"), "+16135551210");
  assert.ok(isPerUserTemplate("{user}*pfmaster"));
  assert.ok(!isPerUserTemplate("cpm-pf"));
  assert.equal(mailboxLogin("cpm-pf", "alice@example.net"), "cpm-pf");
});

test("per-user spool directories: 16 hex digits of the SHA-256 of the mailbox name", () => {
  assert.match(spoolDirName("alice@example.net"), /^[0-9a-f]{16}$/);
  assert.notEqual(spoolDirName("alice@example.net"), spoolDirName("bob@example.net"));
  assert.equal(spoolDirName("alice@example.net"), spoolDirName("alice@example.net"));
});

test("batch ack: a UID set in ascending order with runs as ranges (RFC 9051 sequence-set)", () => {
  assert.equal(uidSet([5, 1, 2, 3, 3, 9, 10, 7]), "1:3,5,7,9:10");
  assert.equal(uidSet([42]), "42");
  assert.equal(uidSet(Array.from({ length: 10_000 }, (_, i) => i + 1)), "1:10000");
});

test("config: store.maxMailboxes and store.mailboxIdleMs have defaults and are validated", () => {
  const cfg = buildConfig(undefined, {});
  assert.equal(cfg.store.maxMailboxes, 256);
  assert.equal(cfg.store.mailboxIdleMs, 60_000);
  const set = buildConfig(
    { store: { user: "{user}*pfmaster" } },
    { CPM_PF__STORE__MAXMAILBOXES: "8", CPM_PF__STORE__MAILBOXIDLEMS: "500" },
  );
  assert.equal(set.store.maxMailboxes, 8);
  assert.equal(set.store.mailboxIdleMs, 500);
  assert.throws(() => buildConfig({ store: { maxMailboxes: 0 } }), /store\.maxMailboxes/);
});
