// npm run bench: every figure is printed next to a baseline measured in the
// same run on the same machine, as a ratio. No assertion: numbers, not tests.
import { cpus } from "node:os";
import { startDovecot } from "../test/harness/dovecot.js";
import { benchSip } from "./sip-bench.js";
import { fmt } from "./stats.js";
import { benchStore } from "./store-bench.js";

const N_STORE = Number(process.env.BENCH_STORE_N ?? 500);
const N_CALLS = Number(process.env.BENCH_CALLS ?? 6000);
const CONCURRENT = Number(process.env.BENCH_CONCURRENT ?? 20);

async function main() {
  console.log(`cpm-pf bench on ${cpus().length}x ${cpus()[0]?.model ?? "cpu"}, node ${process.version}`);
  const dovecot = await startDovecot();
  try {
    const s = await benchStore(dovecot, N_STORE);
    console.log("\nGSO writes to Dovecot (one after another, same folder shape, ~0.6 KB objects)");
    console.log("| path | writes/s | p50 ms | p99 ms |");
    console.log("|---|---|---|---|");
    console.log(
      `| bare imapflow APPEND loop (baseline) | ${fmt(s.baseline.perSecond)} | ${fmt(s.baseline.p50, 2)} | ${fmt(s.baseline.p99, 2)} |`,
    );
    console.log(`| MessageStore.append (GSO) | ${fmt(s.pf.perSecond)} | ${fmt(s.pf.p50, 2)} | ${fmt(s.pf.p99, 2)} |`);
    console.log(`ratio GSO/bare = ${fmt(s.ratio, 2)} (target >= 0.9)`);

    const cases = await benchSip(dovecot, N_CALLS, CONCURRENT);
    console.log(
      `\nBYE transactions through Kamailio (${N_CALLS} group-chat calls per case, ${CONCURRENT} at once, BYE with Reason: SIP;cause=480)`,
    );
    console.log("| case | BYE/s | p50 BYE->200 ms | p99 BYE->200 ms | BYEs | SIPp failures |");
    console.log("|---|---|---|---|---|---|");
    for (const c of cases) {
      console.log(`| ${c.name} | ${fmt(c.byesPerSecond)} | ${fmt(c.p50, 0)} | ${fmt(c.p99, 0)} | ${c.byes} | ${c.failed} |`);
    }
    const [a, b, c] = cases;
    if (a && b && c) {
      console.log(
        `ratio b/a = ${fmt(b.byesPerSecond / a.byesPerSecond, 2)} (target >= 0.8); c/a = ${fmt(c.byesPerSecond / a.byesPerSecond, 2)}`,
      );
    }
  } finally {
    await dovecot.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
