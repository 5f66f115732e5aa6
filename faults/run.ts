// npm run faults: the fault suite. The BYE cases play FAULTS_BYES B2BUA BYEs
// (cause 480, one group folder per session) over FAULTS_USERS served users'
// mailboxes, FAULTS_CONCURRENT in flight, through real Kamailio, sidecar and
// Dovecot, with one fault mid-burst; it prints one row of counts per case and
// exits 1 when a GSO is missing or doubled, a record leaked (any case), or a
// BYE was held past the deadline with no fault (8.3.2.3: the PF SHALL store
// the GSO; the fail-safe never holds a BYE). The delivery cases defer
// FAULTS_MESSAGES chat messages and SIGKILL the delivering sidecar mid-way;
// they fail when a message is lost, out of order or left queued, or more are
// sent twice than the MSRP window and two ack sets. The relay cases send
// FAULTS_RELAY_MESSAGES through an anchored session and SIGKILL its sidecar
// mid-way; they fail when an acknowledged message did not reach the client,
// one arrived twice or out of order, or (two sidecars) the CF's BYE went
// through the fail-safe or left no GSO. Not part of npm test.
import { cpus, loadavg } from "node:os";
import { type Fault, type FaultCounts, runFaultCase } from "../test/harness/bye-faults.js";
import { runDeliveryFault, SENT_TWICE_BOUND, type TakeoverCounts } from "../test/harness/delivery-takeover.js";
import { type RelayCounts, runRelayFault } from "../test/harness/relay-crash.js";

const BYES = Number(process.env.FAULTS_BYES ?? 2000);
const USERS = Number(process.env.FAULTS_USERS ?? 100);
const CONCURRENT = Number(process.env.FAULTS_CONCURRENT ?? 20);
const MESSAGES = Number(process.env.FAULTS_MESSAGES ?? 2000);
const RELAY_MESSAGES = Number(process.env.FAULTS_RELAY_MESSAGES ?? 2000);
/** The sidecars' store.gsoBudgetMs; unset: the sidecar's default. */
const GSO_BUDGET_MS = process.env.FAULTS_GSO_BUDGET_MS ? Number(process.env.FAULTS_GSO_BUDGET_MS) : undefined;
/** Each Kamailio's async workers; unset: the cfg's (4). */
const ASYNC_WORKERS = process.env.FAULTS_ASYNC_WORKERS ? Number(process.env.FAULTS_ASYNC_WORKERS) : undefined;
/** Comma-separated subset of the cases (a, b, c1, c2, d, e, e2, f, g, h, i, j); default all. */
const ONLY = (process.env.FAULTS_ONLY ?? "").split(",").filter(Boolean);

const CASES: { id: string; fault: Fault; what: string; scaleOut?: boolean; restartAfterBurst?: boolean }[] = [
  { id: "a", fault: "none", what: "no fault" },
  { id: "b", fault: "sidecar-kill", what: "sidecar SIGKILL, down 2 s, restarted" },
  { id: "c1", fault: "dovecot-kill", what: "Dovecot SIGKILL, down 2 s, restarted" },
  { id: "c2", fault: "dovecot-stop", what: "Dovecot SIGSTOP 5 s, SIGCONT" },
  { id: "d", fault: "kamailio-kill", what: "Kamailio SIGKILL, restarted on its port, CF retransmits" },
  {
    id: "e",
    fault: "sidecar-kill",
    what: "2 Kamailio x 2 sidecars on Redis: one sidecar SIGKILL, the other takes over (restarted after the burst)",
    scaleOut: true,
    restartAfterBurst: true,
  },
  {
    id: "e2",
    fault: "sidecar-kill",
    what: "2 Kamailio x 2 sidecars on Redis: one sidecar SIGKILL, down 2 s, restarted during the burst",
    scaleOut: true,
  },
  { id: "f", fault: "redis-kill", what: "2 Kamailio x 2 sidecars on Redis: Redis SIGKILL, down 2 s, restarted (AOF)", scaleOut: true },
];

const DELIVERY_CASES: { id: string; what: string; scaleOut: boolean }[] = [
  { id: "g", what: "one sidecar SIGKILLed mid-delivery, restarted: it resumes the delivery itself (no REGISTER)", scaleOut: false },
  {
    id: "h",
    what: "2 Kamailio x 2 sidecars on Redis: the slot's owner SIGKILLed mid-delivery, the REGISTER reaches the other",
    scaleOut: true,
  },
];

const RELAY_CASES: { id: string; what: string; scaleOut: boolean }[] = [
  { id: "i", what: "anchored relay, its sidecar SIGKILLed mid-way", scaleOut: false },
  {
    id: "j",
    what: "2 Kamailio x 2 sidecars on Redis: the sidecar anchoring the relay SIGKILLed, the CF's BYE to the other",
    scaleOut: true,
  },
];

function relayFailures(id: string, scaleOut: boolean, c: RelayCounts): string[] {
  const out: string[] = [];
  if (c.lost > 0) out.push(`(${id}) ${c.lost} acknowledged messages lost`);
  if (c.doubled > 0) out.push(`(${id}) ${c.doubled} messages at the client twice`);
  if (c.reordered > 0) out.push(`(${id}) ${c.reordered} messages out of order`);
  if (c.acknowledged >= c.sent) out.push(`(${id}) the kill came after the relay's end`);
  if (scaleOut && c.failsafes > 0) out.push(`(${id}) ${c.failsafes} fail-safe BYEs from the kill on`);
  if (scaleOut && c.decidedBy === "") out.push(`(${id}) the CF's BYE was not decided by the other sidecar`);
  if (c.gsos !== 1) out.push(`(${id}) ${c.gsos} GSOs for the CF's BYE`);
  return out;
}

function deliveryFailures(id: string, c: TakeoverCounts): string[] {
  const out: string[] = [];
  if (c.lost > 0) out.push(`(${id}) ${c.lost} messages lost`);
  if (c.reordered > 0) out.push(`(${id}) ${c.reordered} messages out of order`);
  if (c.left > 0) out.push(`(${id}) ${c.left} objects left in the deferred queue`);
  if (!c.gso) out.push(`(${id}) no GSO after the rest`);
  if (c.twice > SENT_TWICE_BOUND) out.push(`(${id}) ${c.twice} sent twice (more than ${SENT_TWICE_BOUND})`);
  if (c.twiceUnmarked > 0)
    out.push(`(${id}) ${c.twiceUnmarked} copies with another IMDN Message-ID than the first (a client cannot drop them)`);
  if (c.before >= c.sent) out.push(`(${id}) the kill came after the delivery's end`);
  return out;
}

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
const ms = (q: { p50: number; p99: number; max: number }) => `${q.p50.toFixed(0)} / ${q.p99.toFixed(0)} / ${q.max.toFixed(0)}`;

function failures(id: string, c: FaultCounts): string[] {
  const out: string[] = [];
  if (c.gsosMissing > 0) out.push(`(${id}) ${c.gsosMissing} GSOs missing`);
  if (c.gsosDoubled > 0) out.push(`(${id}) ${c.gsosDoubled} GSOs doubled`);
  if (c.recordsLeaked > 0) out.push(`(${id}) ${c.recordsLeaked} records leaked`);
  if (c.byesSent < c.dialogs) out.push(`(${id}) ${c.dialogs - c.byesSent} dialogs without a BYE sent`);
  if (id === "a" && c.pastDeadline > 0) out.push(`(a) ${c.pastDeadline} BYEs past the deadline`);
  // scale-out: the other sidecar decides within the deadline, nothing goes through the fail-safe
  // (the BYEs in flight at the kill are the failover's own: counted apart, not a failure)
  if ((id === "e" || id === "e2") && c.replayedReceivedAfterFault > 0)
    out.push(`(${id}) ${c.replayedReceivedAfterFault} fail-safe BYEs sent by the CF after the kill`);
  return out;
}

async function main() {
  const machine = `${cpus().length}x ${cpus()[0]?.model ?? "cpu"}, node ${process.version}`;
  console.log(`cpm-pf faults: ${BYES} B2BUA BYEs over ${USERS} users, ${CONCURRENT} in flight, on ${machine}; load ${load()}`);
  const rows: [string, string, FaultCounts][] = [];
  const crashed: string[] = [];
  /** Runs one case; one that throws is reported, the others go on. */
  const attempt = async <T>(id: string, run: () => Promise<T>, into: [string, string, T][], what: string) => {
    try {
      into.push([id, what, await run()]);
    } catch (err) {
      crashed.push(`(${id}) did not complete: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}`);
    }
    console.error(`  (${id}) done, load ${load()}`);
  };
  for (const c of CASES.filter((x) => ONLY.length === 0 || ONLY.includes(x.id))) {
    const run = () =>
      runFaultCase({
        fault: c.fault,
        ...(c.scaleOut ? { scaleOut: true } : {}),
        ...(c.restartAfterBurst ? { restartAfterBurst: true } : {}),
        byes: BYES,
        users: USERS,
        concurrent: CONCURRENT,
        ...(ASYNC_WORKERS === undefined ? {} : { asyncWorkers: ASYNC_WORKERS }),
        ...(GSO_BUDGET_MS === undefined ? {} : { gsoBudgetMs: GSO_BUDGET_MS }),
        progress: (l) => console.error(`  ${l}`),
      });
    await attempt(c.id, run, rows, c.what);
  }
  if (rows.length > 0) {
    console.log(
      "\n| case | BYEs sent | answered (not 200) | GSOs expected | stored | missing | doubled | fail-safe BYEs (replayed) [before the fault] {sent after it} | records leaked | outcomes pending | past deadline | CF BYE→client BYE ms p50/p99/max | CF BYE→CF answer ms p50/p99/max | drain ms |",
    );
    console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (const [id, what, c] of rows) {
      console.log(
        `| (${id}) ${what} | ${c.byesSent} | ${c.byesAnswered} (${c.byesAnsweredNot200}) | ${c.gsosExpected} | ${c.gsosStored} | ${c.gsosMissing} | ${c.gsosDoubled} | ${c.failsafeByes} (${c.replayed}) [${c.failsafeBeforeFault}] {${c.replayedReceivedAfterFault}} | ${c.recordsLeaked} | ${c.outcomesPending} | ${c.pastDeadline} | ${ms(c.relayMs)} | ${ms(c.answerMs)} | ${c.drainMs.toFixed(0)} |`,
      );
    }
  }
  for (const [id, , c] of rows)
    for (const n of [...c.notes, ...(c.badRecords ? [`${c.badRecords} records in bad/`] : [])]) console.log(`(${id}) ${n}`);
  for (const [id, , c] of rows) for (const r of c.failsafeReasons.slice(0, 5)) console.log(`(${id}) fail-safe: ${r}`);
  /** The selected cases of `cases`, each run with `run` (as attempt() does). */
  const runSelected = async <C extends { id: string; what: string }, T>(cases: C[], run: (c: C) => Promise<T>) => {
    const out: [string, string, T][] = [];
    for (const c of cases.filter((x) => ONLY.length === 0 || ONLY.includes(x.id))) await attempt(c.id, () => run(c), out, c.what);
    return out;
  };
  const table = (title: string, columns: string[], lines: string[][]) => {
    if (lines.length === 0) return;
    console.log(`\n${title}`);
    console.log(`| ${columns.join(" | ")} |`);
    console.log(`|${columns.map(() => "---|").join("")}`);
    for (const l of lines) console.log(`| ${l.join(" | ")} |`);
  };
  const progress = (id: string) => (l: string) => console.error(`  (${id}) ${l}`);
  const deliveries = await runSelected(DELIVERY_CASES, (c) =>
    runDeliveryFault({ messages: MESSAGES, scaleOut: c.scaleOut, progress: progress(c.id) }),
  );
  table(
    `deferred delivery under SIGKILL: ${MESSAGES} chat messages deferred (each SEND answered 200 once stored), one group session`,
    [
      "case",
      "sent",
      "delivered before the kill",
      "after",
      "lost",
      "sent twice",
      "of those, another IMDN Message-ID",
      "out of order",
      "left queued",
      "GSO",
      "ms",
    ],
    deliveries.map(([id, what, c]) =>
      [`(${id}) ${what}`, c.sent, c.before, c.after, c.lost, c.twice, c.twiceUnmarked, c.reordered, c.left, c.gso ? "yes" : "no", c.ms].map(
        String,
      ),
    ),
  );
  const relays = await runSelected(RELAY_CASES, (c) =>
    runRelayFault({ messages: RELAY_MESSAGES, scaleOut: c.scaleOut, progress: progress(c.id) }),
  );
  table(
    `anchored relay under SIGKILL: the CF sends ${RELAY_MESSAGES} chat messages, 16 unanswered, its sidecar killed a quarter in`,
    [
      "case",
      "sent",
      "acknowledged",
      "not answered",
      "at the client",
      "acknowledged and lost",
      "twice",
      "out of order",
      "fail-safe BYEs from the kill",
      "BYE decided by",
      "GSOs",
    ],
    relays.map(([id, what, c]) =>
      [
        `(${id}) ${what}`,
        c.sent,
        c.acknowledged,
        c.unanswered,
        c.delivered,
        c.lost,
        c.doubled,
        c.reordered,
        c.failsafes,
        c.decidedBy || "—",
        c.gsos,
      ].map(String),
    ),
  );
  console.log(`machine: ${machine}; load average at the end ${load()}`);
  const failed = [
    ...crashed,
    ...rows.flatMap(([id, , c]) => failures(id, c)),
    ...deliveries.flatMap(([id, , c]) => deliveryFailures(id, c)),
    ...relays.flatMap(([id, , c]) => relayFailures(id, RELAY_CASES.find((x) => x.id === id)?.scaleOut === true, c)),
  ];
  for (const f of failed) console.log(`FAIL ${f}`);
  process.exitCode = failed.length > 0 ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
