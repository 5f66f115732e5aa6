// GSO writes/s through the PF's MessageStore vs a bare imapflow APPEND loop on
// the same Dovecot, same folder shape, same message size, one after another.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ImapFlow } from "imapflow";
import { buildConfig } from "../src/config/config.js";
import { silentLogger } from "../src/log/logger.js";
import { buildCpmObject } from "../src/store/cpm-object.js";
import { groupSessionFolder } from "../src/store/folder.js";
import { MessageStore } from "../src/store/message-store.js";
import { GSO_CONTENT_TYPE, serializeGso } from "../src/xml/gso.js";
import type { DovecotInstance } from "../test/harness/dovecot.js";
import { summarize } from "./stats.js";

/** A GSO as the PF stores it (5 participants, ~0.6 KB), for a bare APPEND baseline. */
export function gsoObject(i: number, folderIds: { conv: string; contrib: string }) {
  const body = serializeGso({
    timestamp: new Date(),
    lastFocusSessionId: "sip:focus-bench@cf.example.net",
    groupType: "Closed",
    contributionId: folderIds.contrib,
    participants: Array.from({ length: 5 }, (_, k) => ({ name: `P${k}`, commAddr: `tel:+1613555${1000 + k}` })),
    status: "removed",
  });
  const messageId = `bench-${i}-${process.hrtime.bigint()}@cpm-pf`;
  const raw = buildCpmObject({
    contentType: GSO_CONTENT_TYPE,
    from: "sip:anonymous@anonymous.invalid",
    to: "tel:+16135551200",
    date: new Date(),
    conversationId: folderIds.conv,
    contributionId: folderIds.contrib,
    imdnMessageId: `imdn-${i}`,
    messageId,
    body,
  });
  return { raw, messageId };
}

export async function benchStore(dovecot: DovecotInstance, n: number) {
  const dir = await mkdtemp(join(tmpdir(), "cpm-pf-bench-"));
  const ids = { conv: "conv-bench", contrib: "contrib-bench" };
  const folder = groupSessionFolder("Default", ids.conv, ids.contrib);
  const baseFolder = groupSessionFolder("Default", "conv-baseline", "contrib-baseline");
  const objects = Array.from({ length: n }, (_, i) => gsoObject(i, ids));

  // Baseline: one imapflow connection, APPEND in a loop. The PF's path:
  // MessageStore.append (folder check, APPEND, spool fallback). Rounds
  // alternate between the two so that both see the same server state.
  const imap = new ImapFlow({
    host: dovecot.host,
    port: dovecot.port,
    secure: false,
    auth: { user: dovecot.user, pass: dovecot.password },
    logger: false,
  });
  await imap.connect();
  await imap.mailboxCreate(baseFolder).catch(() => undefined);
  const cfg = buildConfig({
    store: { host: dovecot.host, port: dovecot.port, user: dovecot.user, password: dovecot.password, spoolDir: join(dir, "spool") },
  });
  const store = new MessageStore(cfg.store, silentLogger());
  await store.start();
  await store.append({ folder, ...gsoObject(-1, ids) }); // warm: folder creation and connection set-up
  const baseLat: number[] = [];
  const pfLat: number[] = [];
  let baseMs = 0;
  let pfMs = 0;
  const ROUND = 50;
  for (let r = 0; r < objects.length; r += ROUND) {
    const batch = objects.slice(r, r + ROUND);
    let t0 = performance.now();
    for (const o of batch) {
      const s = performance.now();
      await imap.append(baseFolder, o.raw);
      baseLat.push(performance.now() - s);
    }
    baseMs += performance.now() - t0;
    t0 = performance.now();
    for (const o of batch) {
      const s = performance.now();
      const res = await store.append({ folder, raw: o.raw, messageId: o.messageId });
      if (res.state !== "stored") throw new Error("bench: store went down during the run");
      pfLat.push(performance.now() - s);
    }
    pfMs += performance.now() - t0;
  }
  const baseline = summarize(baseLat, baseMs);
  const pf = summarize(pfLat, pfMs);
  await imap.logout();
  await store.close();
  await rm(dir, { recursive: true, force: true });
  return { baseline, pf, ratio: pf.perSecond / baseline.perSecond };
}
