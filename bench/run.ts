// npm run bench: every figure is printed next to a baseline measured in the
// same run on the same machine, as a ratio. No assertion: numbers, not tests.
import { cpus } from "node:os";
import { type DovecotInstance, startDovecot } from "../test/harness/dovecot.js";
import { benchDeferred } from "./deferred-bench.js";
import { benchRelay, benchSessionRss } from "./media-bench.js";
import { benchSip } from "./sip-bench.js";
import { fmt } from "./stats.js";
import { benchStore } from "./store-bench.js";

const N_STORE = Number(process.env.BENCH_STORE_N ?? 500);
const N_CALLS = Number(process.env.BENCH_CALLS ?? 6000);
const CONCURRENT = Number(process.env.BENCH_CONCURRENT ?? 20);
const N_RELAY = Number(process.env.BENCH_RELAY_N ?? 20_000);
const N_DEFERRED = Number(process.env.BENCH_DEFERRED_N ?? 500);
const RSS_SESSIONS = (process.env.BENCH_RSS_SESSIONS ?? "1000,10000").split(",").map(Number);
/** Comma-separated subset of the parts to run (store, sip, media, deferred); default all. */
const ONLY = (process.env.BENCH_ONLY ?? "").split(",").filter(Boolean);
const runs = (part: string) => ONLY.length === 0 || ONLY.includes(part);

async function main() {
  console.log(`cpm-pf bench on ${cpus().length}x ${cpus()[0]?.model ?? "cpu"}, node ${process.version}`);
  const dovecot = await startDovecot();
  try {
    if (runs("store")) await printStore(dovecot);
    if (runs("deferred")) await printDeferred(dovecot);
    if (runs("media")) await printMedia();
    if (runs("sip")) await printSip(dovecot);
  } finally {
    await dovecot.stop();
  }
}

async function printStore(dovecot: DovecotInstance) {
  const s = await benchStore(dovecot, N_STORE);
  console.log("\nGSO writes to Dovecot (one after another, same folder shape, ~0.6 KB objects)");
  console.log("| path | writes/s | p50 ms | p99 ms |");
  console.log("|---|---|---|---|");
  console.log(
    `| bare imapflow APPEND loop (baseline) | ${fmt(s.baseline.perSecond)} | ${fmt(s.baseline.p50, 2)} | ${fmt(s.baseline.p99, 2)} |`,
  );
  console.log(`| MessageStore.append (GSO) | ${fmt(s.pf.perSecond)} | ${fmt(s.pf.p50, 2)} | ${fmt(s.pf.p99, 2)} |`);
  console.log(`ratio GSO/bare = ${fmt(s.ratio, 2)} (target >= 0.9)`);
}

async function printDeferred(dovecot: DovecotInstance) {
  const d = await benchDeferred(dovecot, N_DEFERRED);
  console.log(`\nDeferred storage: ${N_DEFERRED} CPIM messages of ${d.messageBytes} B from the CF, one group session, one after another`);
  console.log("| path | messages/s | p50 ms | p99 ms |");
  console.log("|---|---|---|---|");
  console.log(
    `| bare imapflow APPEND loop (baseline) | ${fmt(d.baseline.perSecond)} | ${fmt(d.baseline.p50, 2)} | ${fmt(d.baseline.p99, 2)} |`,
  );
  console.log(`| DeferredQueue.storeDeferred | ${fmt(d.deferred.perSecond)} | ${fmt(d.deferred.p50, 2)} | ${fmt(d.deferred.p99, 2)} |`);
  console.log(`ratio deferred/bare = ${fmt(d.ratio, 2)} (target >= 0.9)`);
}

async function printMedia() {
  const r = await benchRelay(N_RELAY);
  console.log(
    `\nMSRP relay: ${r.messages} messages of ${r.messageBytes} B, CF peer -> relay -> client peer, ${r.window} SENDs outstanding`,
  );
  console.log("| relay | messages/s | MB/s |");
  console.log("|---|---|---|");
  console.log(
    `| plain TCP pass-through of the same bytes (baseline) | ${fmt(r.baseline.messagesPerSecond)} | ${fmt(r.baseline.mbPerSecond, 2)} |`,
  );
  console.log(`| sidecar media plane (two MSRP sessions, per-hop 200s) | ${fmt(r.pf.messagesPerSecond)} | ${fmt(r.pf.mbPerSecond, 2)} |`);
  console.log(`ratio relay/pass-through = ${fmt(r.ratio, 2)} (target >= 0.5)`);
  const m = await benchSessionRss(RSS_SESSIONS, "realistic");
  console.log("\nSidecar RSS per idle anchored session (CF legs over one connection the PF opened, one client connection per session)");
  console.log("| sessions | RSS MB | RSS per session KB | heap per session KB |");
  console.log("|---|---|---|---|");
  for (const p of m.points) {
    console.log(
      `| ${p.sessions} | ${fmt(p.rssBytes / 1048576, 1)} | ${fmt(p.rssPerSessionBytes / 1024, 2)} | ${fmt(p.heapPerSessionBytes / 1024, 2)} |`,
    );
  }
  console.log(`marginal RSS per session between the points = ${fmt(m.marginalRssPerSessionBytes / 1024, 2)} KB (target <= 10 KB, linear)`);
}

async function printSip(dovecot: DovecotInstance) {
  const cases = await benchSip(dovecot, N_CALLS, CONCURRENT);
  console.log(
    `\nBYE transactions through Kamailio (${N_CALLS} group-chat dialogs per case opened first, then ended with BYE, ${CONCURRENT} at once, Reason: SIP;cause=480)`,
  );
  console.log(
    "| case | BYE/s | p50 BYE->200 ms | p99 BYE->200 ms | BYEs | SIPp failures | (phase 1 INVITE/s) | CPU µs per BYE: Kamailio / sidecar |",
  );
  console.log("|---|---|---|---|---|---|---|---|");
  for (const c of cases) {
    const cpu = c.cpuPerBye;
    console.log(
      `| ${c.name} | ${fmt(c.byesPerSecond)} | ${fmt(c.p50, 0)} | ${fmt(c.p99, 0)} | ${c.byes} | ${c.failed} | ${fmt(c.invitesPerSecond)} | ` +
        `${fmt(cpu.kamailio, 0)} / ${fmt(cpu.sidecar, 0)} |`,
    );
  }
  const [a, b, c] = cases;
  if (a && b && c) {
    console.log(
      `ratio b/a = ${fmt(b.byesPerSecond / a.byesPerSecond, 2)} (target >= 0.8); c/a = ${fmt(c.byesPerSecond / a.byesPerSecond, 2)}`,
    );
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
