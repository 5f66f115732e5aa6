// Deferred-store rate (target >= 0.9 of a bare APPEND loop): 1 KB
// CPIM chat messages of one group session stored through
// DeferredQueue.storeDeferred (object building, per-session ordering,
// duplicate check, MessageStore.append with its spool fallback) vs a bare
// imapflow APPEND loop of the same objects on the same Dovecot. Rounds of 50
// alternate between the two paths so that both see the same server state.
// Each storeDeferred is awaited before the next, as the CF's SEND waits for
// its 200 (the queue serialises a session's items anyway).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildConfig } from "../src/config/config.js";
import { silentLogger } from "../src/log/logger.js";
import type { DeferredItem, GroupSessionRef } from "../src/media/ports.js";
import { buildDeferredObject } from "../src/store/deferred-object.js";
import { DeferredQueue } from "../src/store/deferred-queue.js";
import { Mailboxes } from "../src/store/mailboxes.js";
import { chatCpimOfSize } from "../test/fixtures/cpim.js";
import type { DovecotInstance } from "../test/harness/dovecot.js";
import { connectImap } from "../test/harness/imap-read.js";
import { summarize } from "./stats.js";

export interface DeferredBenchResult {
  /** Bare imapflow APPEND loop of the same objects (baseline). */
  baseline: ReturnType<typeof summarize>;
  /** DeferredQueue.storeDeferred. */
  deferred: ReturnType<typeof summarize>;
  /** deferred.perSecond / baseline.perSecond (target >= 0.9). */
  ratio: number;
  /** Size of one CPIM body in bytes. */
  messageBytes: number;
}

export async function benchDeferred(dovecot: DovecotInstance, n = 500): Promise<DeferredBenchResult> {
  const dir = await mkdtemp(join(tmpdir(), "cpm-pf-deferred-bench-"));
  const run = `${process.pid}-${Date.now()}`;
  const session: GroupSessionRef = {
    sessionKey: `bench-cf-leg-${run}@cf.example.net`,
    servedUser: "tel:+16135551200",
    conversationId: `conv-deferred-bench-${run}`,
    contributionId: `contrib-deferred-bench-${run}`,
    focus: "sip:focus-bench@cf.example.net",
  };
  const items: DeferredItem[] = Array.from({ length: n + 1 }, (_, i) => ({
    kind: "message",
    contentType: "message/cpim",
    body: chatCpimOfSize(1024, i),
    msrpMessageId: `bench${String(i).padStart(8, "0")}`,
    receivedAt: new Date(),
  }));

  const cfg = buildConfig({
    store: { host: dovecot.host, port: dovecot.port, user: dovecot.user, password: dovecot.password, spoolDir: join(dir, "spool") },
  });
  const store = new Mailboxes(cfg.store, silentLogger());
  await store.start();
  const queue = new DeferredQueue(cfg.store, store, silentLogger());
  // the baseline APPENDs the very objects the queue builds, into a folder of the same shape
  const baseSession = { ...session, conversationId: `conv-deferred-baseline-${run}` };
  const baseFolder = queue.folderOf(baseSession);
  const baseObjects = items.map((it) => buildDeferredObject(baseFolder, baseSession, it).raw);

  const imap = await connectImap(dovecot);
  try {
    await imap.mailboxCreate(baseFolder).catch(() => undefined);
    // warm-up: folder creation, the duplicate index read, connection set-up
    await queue.storeDeferred(session, items[n] as DeferredItem);
    await imap.append(baseFolder, baseObjects[n] as Buffer);

    const baseLat: number[] = [];
    const pfLat: number[] = [];
    let baseMs = 0;
    let pfMs = 0;
    const ROUND = 50;
    for (let r = 0; r < n; r += ROUND) {
      const end = Math.min(n, r + ROUND);
      let t0 = performance.now();
      for (let i = r; i < end; i++) {
        const s = performance.now();
        await imap.append(baseFolder, baseObjects[i] as Buffer);
        baseLat.push(performance.now() - s);
      }
      baseMs += performance.now() - t0;
      t0 = performance.now();
      for (let i = r; i < end; i++) {
        const s = performance.now();
        await queue.storeDeferred(session, items[i] as DeferredItem);
        pfLat.push(performance.now() - s);
      }
      pfMs += performance.now() - t0;
    }
    if (queue.stats().spooled > 0) throw new Error("bench: the store went down during the run");
    const baseline = summarize(baseLat, baseMs);
    const deferred = summarize(pfLat, pfMs);
    return { baseline, deferred, ratio: deferred.perSecond / baseline.perSecond, messageBytes: (items[0] as DeferredItem).body.length };
  } finally {
    await imap.logout().catch(() => imap.close());
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}
