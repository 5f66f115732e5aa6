// The short form of the BYE fault suite (npm run faults, faults/run.ts):
// B2BUA BYEs with cause 480, one group folder per session, over several served
// users' mailboxes, through real Kamailio, sidecar and Dovecot; once without a
// fault, once with the sidecar SIGKILLed mid-burst and restarted on its port
// with the same state, spool and fail-safe directories. Counted from the SIPp
// traces, IMAP and the sidecar's record journal (test/harness/bye-faults.ts).
// No timing assertions beyond generous bounds: the machine is shared.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type FaultCounts, runFaultCase } from "../harness/bye-faults.js";

const BYES = 60;
const USERS = 5;

function report(t: { diagnostic(m: string): void }, c: FaultCounts): void {
  t.diagnostic(
    `${c.fault}: sent ${c.byesSent}, answered ${c.byesAnswered}, expected ${c.gsosExpected}, stored ${c.gsosStored}, missing ${c.gsosMissing}, doubled ${c.gsosDoubled}, fail-safe ${c.failsafeByes} (replayed ${c.replayed}), leaked ${c.recordsLeaked}, past deadline ${c.pastDeadline}, drain ${c.drainMs.toFixed(0)} ms`,
  );
}

function assertNothingLost(c: FaultCounts): void {
  assert.deepEqual(c.notes, []);
  assert.equal(c.dialogs, BYES, "every dialog opened");
  assert.equal(c.byesSent, BYES);
  assert.equal(c.byesAnswered, BYES, "the CF got a final response to every BYE");
  assert.equal(c.byesAnsweredNot200, 0, "every final response a 200 OK");
  assert.equal(c.gsosExpected, BYES, "the sidecar observed every INVITE");
  assert.equal(c.gsosMissing, 0, "no GSO missing");
  assert.equal(c.gsosDoubled, 0, "no GSO stored twice");
  assert.equal(c.gsosStored, BYES, "one GSO per BYE");
  assert.equal(c.recordsLeaked, 0, "every record's lifecycle moved, every dialog terminated");
  assert.equal(c.badRecords, 0);
}

describe("8.3.2.3 2.b under faults: a burst of B2BUA BYEs over several users' mailboxes, one folder per session", () => {
  test(`BYE-B4 BYE-B9: ${BYES} BYEs (cause 480) over ${USERS} users, no fault -> one GSO per BYE in its user's group folder, every CF answered 200`, async (t) => {
    const c = await runFaultCase({ fault: "none", byes: BYES, users: USERS, concurrent: 10, deadlineMs: 1000 });
    report(t, c);
    assertNothingLost(c);
    assert.equal(c.failsafeByes, 0, "no fail-safe");
  });

  test(`BYE-B3 BYE-B4 fail-safe: sidecar SIGKILLed mid-burst, restarted 2 s later -> the fail-safe BYEs are replayed from the journal: 0 GSOs missing, 0 doubled`, async (t) => {
    // slower BYEs (10 in flight) so that the kill lands mid-burst
    const c = await runFaultCase({ fault: "sidecar-kill", byes: BYES, users: USERS, concurrent: 10, faultAt: 0.3 });
    report(t, c);
    assertNothingLost(c);
    assert.ok(c.failsafeByes > 0, "some BYEs went through the fail-safe while the sidecar was down");
    assert.ok(c.replayed >= c.failsafeByes, "every fail-safe BYE replayed (one the dying sidecar decided too is replayed as a duplicate)");
  });

  test(`BYE-B4 BYE-B9 scale-out: 2 Kamailio x 2 sidecars on Redis, one sidecar SIGKILLed mid-burst -> the other decides within the deadline: 0 fail-safe, 0 GSOs missing, 0 doubled`, async (t) => {
    const c = await runFaultCase({
      fault: "sidecar-kill",
      scaleOut: true,
      byes: BYES,
      users: USERS,
      concurrent: 10,
      faultAt: 0.3,
      deadlineMs: 1000,
    });
    report(t, c);
    assertNothingLost(c);
    assert.equal(c.failsafeByes, 0, "no fail-safe: each Kamailio failed over to the live sidecar");
  });

  test(`BYE-B4 scale-out (session.redisWriteAhead): Redis SIGKILLed mid-burst and restarted (AOF) -> the sidecars hold their record writes locally and decide every BYE (0 fail-safes), then replay the writes into Redis: 0 GSOs missing, 0 doubled, 0 records leaked`, async (t) => {
    const c = await runFaultCase({
      fault: "redis-kill",
      scaleOut: true,
      byes: BYES,
      users: USERS,
      concurrent: 10,
      faultAt: 0.3,
      deadlineMs: 1000,
    });
    report(t, c);
    assertNothingLost(c);
    assert.equal(c.failsafeByes, 0, "no BYE waited for Redis: each decision's record write was held locally");
  });
});
