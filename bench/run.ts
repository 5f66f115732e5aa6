// npm run bench: every figure is printed next to a baseline measured in the
// same run on the same machine, as a ratio. No assertion: numbers, not tests.
import { cpus } from "node:os";
import { ACK_BATCH, READ_BATCH } from "../src/procedures/delivery-session.js";
import { type DovecotInstance, startDovecot } from "../test/harness/dovecot.js";
import { benchDeferred } from "./deferred-bench.js";
import { benchDelivery, benchRecordMemory, deliveryCorrect } from "./delivery-bench.js";
import { benchRelay, benchSessionRss } from "./media-bench.js";
import { benchRecordStore } from "./record-store-bench.js";
import { benchScale, benchSip } from "./sip-bench.js";
import { fmt } from "./stats.js";
import { benchStore } from "./store-bench.js";

const N_STORE = Number(process.env.BENCH_STORE_N ?? 500);
const N_CALLS = Number(process.env.BENCH_CALLS ?? 6000);
/** BYEs in flight of the SIP cases, comma-separated: (a) and (b) at each, (c) and (d) at the first. */
const CONCURRENT = (process.env.BENCH_CONCURRENT ?? "20,50").split(",").map(Number);
const N_RELAY = Number(process.env.BENCH_RELAY_N ?? 20_000);
const N_DEFERRED = Number(process.env.BENCH_DEFERRED_N ?? 500);
const N_DELIVERY = (process.env.BENCH_DELIVERY_N ?? "1000,10000").split(",").map(Number);
const N_RECORDS = Number(process.env.BENCH_RECORDS ?? 10_000);
const N_RECORD_STORE = Number(process.env.BENCH_RECORD_STORE_N ?? 5000);
const RECORD_STORE_USERS = Number(process.env.BENCH_RECORD_STORE_USERS ?? 100);
const RSS_SESSIONS = (process.env.BENCH_RSS_SESSIONS ?? "1000,10000").split(",").map(Number);
/** Comma-separated subset of the parts to run (store, records, deferred, delivery, media, sip, scale); default all. */
const ONLY = (process.env.BENCH_ONLY ?? "").split(",").filter(Boolean);
const runs = (part: string) => ONLY.length === 0 || ONLY.includes(part);

async function main() {
  console.log(`cpm-pf bench on ${cpus().length}x ${cpus()[0]?.model ?? "cpu"}, node ${process.version}`);
  const dovecot = await startDovecot();
  try {
    if (runs("store")) await printStore(dovecot);
    if (runs("records")) await printRecordStore();
    if (runs("deferred")) await printDeferred(dovecot);
    if (runs("delivery")) await printDelivery(dovecot);
    if (runs("media")) await printMedia();
    if (runs("sip")) await printSip(dovecot);
    if (runs("scale")) await printScale();
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

async function printRecordStore() {
  const r = await benchRecordStore(N_RECORD_STORE, RECORD_STORE_USERS);
  console.log(
    `\nGroup session record store: ${r.records} records (${r.recordBytes} B of JSON each: 5 participants, SDP offer, one dialog) over ${r.users} served users; put awaited one after another, get by Call-ID (x5); Redis on 127.0.0.1, one round trip per put, none per get`,
  );
  console.log("| engine | put p50 / p99 µs | puts/s | get p50 / p99 µs | seen by a 2nd sidecar p50 / p99 µs |");
  console.log("|---|---|---|---|---|");
  for (const e of r.runs) {
    const seen = e.visible ? `${fmt(e.visible.p50, 0)} / ${fmt(e.visible.p99, 0)}` : "(one sidecar)";
    console.log(
      `| ${e.engine} | ${fmt(e.put.p50, 0)} / ${fmt(e.put.p99, 0)} | ${fmt(e.put.perSecond, 0)} | ${fmt(e.get.p50, 2)} / ${fmt(e.get.p99, 2)} | ${seen} |`,
    );
  }
  const journal = r.runs[0];
  for (const e of r.runs.slice(1)) {
    if (journal) console.log(`put p50 ${e.engine} / journal = ${fmt(e.put.p50 / journal.put.p50, 1)}`);
  }
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

async function printDelivery(dovecot: DovecotInstance) {
  const d = await benchDelivery(
    dovecot,
    [...N_DELIVERY].sort((a, b) => a - b),
  );
  console.log(
    `\nDeferred delivery after registration: DeliveryService -> DeliveryEndpoint -> MSRP client, FETCH of ${READ_BATCH}, ${d.window} SENDs outstanding, sets of ${ACK_BATCH} retired (SIP UA in-process stub: one INVITE/ACK per run)`,
  );
  console.log(
    "| layout | fill (storeDeferred) msg/s | bare FETCH msg/s | peer-to-peer MSRP msg/s | PF delivery msg/s | PF µs/msg | PF/peer-to-peer | queue empty after ms |",
  );
  console.log("|---|---|---|---|---|---|---|---|");
  let ok = true;
  for (const r of d.runs) {
    const rate = (ms: number) => (r.n * 1000) / ms;
    console.log(
      `| 1 group session folder, ${r.n} queued ~1 KB messages, mailbox ${r.mailbox} via master user | ${fmt(r.fillPerSecond)} | ` +
        `${fmt(rate(r.fetchMs))} | ${fmt(rate(r.peerMs))} | ${fmt(rate(r.pfMs))} | ${fmt((r.pfMs * 1000) / r.n, 0)} | ` +
        `**${fmt(r.peerMs / r.pfMs, 2)}** | ${fmt(r.drainedMs, 0)} |`,
    );
    console.log(
      `  N=${r.n}: delivered ${r.delivered} / duplicates ${r.duplicates} / reordered ${r.reordered} / left in queue ${r.leftInQueue} (SENDs answered 200: ${r.answered200}, INVITEs: ${r.invites}); first SEND answered after ${fmt(r.firstMs, 0)} ms; ` +
        `queue I/O: ${r.io.reads} reads ${fmt(r.io.readMs, 0)} ms, ${r.io.acks} acks ${fmt(r.io.ackMs, 0)} ms; ` +
        `CPU of the PF + client peer process ${fmt(r.cpuMs, 0)} ms`,
    );
    if (!deliveryCorrect(r)) ok = false;
  }
  const first = d.runs[0];
  const last = d.runs[d.runs.length - 1];
  console.log("ratio PF/peer-to-peer: target >= 0.5");
  if (first && last && last !== first) {
    const cost = (r: typeof first) => (r.pfMs * 1000) / r.n;
    console.log(
      `per-message cost ${first.n}: ${fmt(cost(first), 0)} µs, ${last.n}: ${fmt(cost(last), 0)} µs, ratio ${fmt(cost(last) / cost(first), 2)} (target: about 1)`,
    );
  }
  if (!ok) {
    console.error("bench: deferred delivery lost, duplicated, reordered or left messages");
    process.exitCode = 1;
  }
  const { put, restart } = await benchRecordMemory(N_RECORDS);
  console.log(
    `\nGroup session records in memory: ${put.records} inactive records in a SessionRegistry (SDP offer ${put.sdpBytes} B, 5 participants, one terminated dialog; journal ${fmt(put.journalBytesPerRecord, 0)} B per record), child processes, after gc${put.gcExposed ? "" : " (gc not exposed!)"}`,
  );
  console.log("| | records in memory | RSS MB (base) | heap used MB (base) | RSS per record | heap per record |");
  console.log("|---|---|---|---|---|---|");
  for (const [what, m] of [
    ["the sidecar that put them", put],
    ["a sidecar started on their journal", restart],
  ] as const) {
    console.log(
      `| ${what} | ${m.inMemory} of ${m.records} | ${fmt(m.rssBytes / 1048576, 1)} (${fmt(m.baseRssBytes / 1048576, 1)}) | ${fmt(m.heapUsedBytes / 1048576, 1)} (${fmt(m.baseHeapUsedBytes / 1048576, 1)}) | ${fmt(m.rssPerRecordBytes, 0)} B | ${fmt(m.heapPerRecordBytes, 0)} B |`,
    );
  }
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
  const r = await benchSip(dovecot, N_CALLS, CONCURRENT);
  console.log(
    `\nBYE transactions through Kamailio (${N_CALLS} group-chat dialogs per case opened first, then ended with BYE, Reason: SIP;cause=480; Kamailio -x ${r.memoryManager}, ${process.env.BENCH_ASYNC_WORKERS ?? 4} async workers)`,
  );
  console.log(
    "| case | in flight | BYE/s | p50 BYE->200 ms | p99 BYE->200 ms | BYEs | fail-safes | SIPp failures | (phase 1 INVITE/s) | CPU µs per BYE: Kamailio / sidecar |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const c of r.cases) {
    const cpu = c.cpuPerBye;
    console.log(
      `| ${c.name} | ${c.concurrent} | ${fmt(c.byesPerSecond)} | ${fmt(c.p50, 0)} | ${fmt(c.p99, 0)} | ${c.byes} | ${c.failsafes} | ${c.failed} | ${fmt(c.invitesPerSecond)} | ` +
        `${fmt(cpu.kamailio, 0)} / ${fmt(cpu.sidecar, 0)} |`,
    );
  }
  const d = r.bareAppend;
  console.log(
    `| (d) bare imapflow APPEND loop, same GSOs and layout (${r.users} users, 1 folder per session) | ${CONCURRENT[0]} | ${fmt(d.appendsPerSecond)} APPEND/s | ${fmt(d.p50, 1)} | ${fmt(d.p99, 1)} | ${d.appends} | | | | |`,
  );
  for (const n of CONCURRENT) {
    const a = r.cases.find((c) => c.concurrent === n && c.name.startsWith("(a)"));
    const b = r.cases.find((c) => c.concurrent === n && c.name.startsWith("(b)"));
    if (a && b)
      console.log(`ratio b/a at ${n} in flight = ${fmt(b.byesPerSecond / a.byesPerSecond, 2)} (target >= ${n <= 20 ? "0.9" : "0.8"})`);
  }
  if (r.metricsPairs.length > 0) {
    console.log(
      `\nMetrics cost: (b) at ${CONCURRENT[0]} in flight, sidecar metrics off then on, ${r.metricsPairs.length} pairs back to back`,
    );
    console.log("| pair | off BYE/s | on BYE/s | on/off | sidecar CPU µs per BYE off / on |");
    console.log("|---|---|---|---|---|");
    const ratios = r.metricsPairs.map((p, i) => {
      const ratio = p.on.byesPerSecond / p.off.byesPerSecond;
      console.log(
        `| ${i + 1} | ${fmt(p.off.byesPerSecond)} | ${fmt(p.on.byesPerSecond)} | ${fmt(ratio, 3)} | ${fmt(p.off.cpuPerBye.sidecar, 0)} / ${fmt(p.on.cpuPerBye.sidecar, 0)} |`,
      );
      return ratio;
    });
    const median = [...ratios].sort((x, y) => x - y)[Math.floor(ratios.length / 2)] ?? Number.NaN;
    console.log(`metrics on/off, median of the pairs = ${fmt(median, 3)} (target >= 0.98)`);
  }
  const c = r.cases.find((x) => x.name.startsWith("(c)"));
  if (c) {
    console.log(
      `ratio c/d = ${fmt(c.byesPerSecond / d.appendsPerSecond, 2)} (target >= 0.8); (c) fail-safes ${c.failsafes} (target 0), p99 ${fmt(c.p99, 0)} ms (target <= half the deadline)`,
    );
  }
}

async function printScale() {
  const concurrent = CONCURRENT[0] ?? 20;
  const r = await benchScale(N_CALLS, concurrent);
  console.log(
    `\nScale-out: (c)'s B2BUA case (a GSO per BYE, 1 folder per session, ${r.users} users' mailboxes, cause 480) with the records on Redis (AOF everysec, MONITOR attached to count round trips), ${N_CALLS} calls, ${concurrent} BYEs in flight, one Kamailio; with two sidecars the bridge spreads the dialogs by Call-ID (CPM_PF_GRPC_AFFINITY call-id)`,
  );
  console.log(
    "| case | INVITEs/s (decisions of phase 1) | BYE/s | p50 ms | p99 ms | fail-safes | CPU µs per BYE Kamailio / sidecars | Redis round trips per INVITE / per BYE |",
  );
  console.log("|---|---|---|---|---|---|---|---|");
  for (const c of r.cases) {
    console.log(
      `| ${c.name} | ${fmt(c.invitesPerSecond)} | ${fmt(c.byesPerSecond)} | ${fmt(c.p50, 0)} | ${fmt(c.p99, 0)} | ${c.failsafes} | ${fmt(c.cpuPerBye.kamailio, 0)} / ${fmt(c.cpuPerBye.sidecar, 0)} | ${fmt(c.roundTripsPerInvite, 1)} / ${fmt(c.roundTripsPerBye, 1)} |`,
    );
  }
  const [one, two] = r.cases;
  if (one && two) {
    console.log(
      `ratio 2 sidecars / 1: BYE/s ${fmt(two.byesPerSecond / one.byesPerSecond, 2)}, INVITEs/s ${fmt(two.invitesPerSecond / one.invitesPerSecond, 2)} (on 2 cores the point is that the second sidecar costs little)`,
    );
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
