// How the bridge shares one decision's deadline among the sidecars it tries
// (kamailio/python/cpm_pf_bridge.py _share), run with Debian's python3 and a
// stand-in KSR module: a sidecar that hangs leaves time for the next up one,
// and the one up sidecar is never cut short for one that is down.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../../harness/sidecar.js";

const PY = process.env.KAMAILIO_PYTHON ?? "/usr/bin/python3";

/** Runs `expr` of the bridge module `b` over each case (`c`), with Debian's python3 and a stand-in KSR. */
function bridge<T>(expr: string, cases: unknown[]): T[] {
  const script = `
import json, sys, types
sys.modules["KSR"] = types.ModuleType("KSR")
sys.path.insert(0, ${JSON.stringify(join(REPO_ROOT, "kamailio", "python"))})
import cpm_pf_bridge as b
print(json.dumps([${expr} for c in json.load(sys.stdin)]))
`;
  const r = spawnSync(PY, ["-c", script], { input: JSON.stringify(cases), encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as T[];
}

/** _share(remaining, i, up) for each [remaining, i, up]. */
const shares = (cases: [number, number, number][]) => bridge<number>("b._share(*c)", cases);

/** _failure_text(failures, up) for each [failures, up]. */
const failureTexts = (cases: [[number, string][], number][]) => bridge<string>("b._failure_text([tuple(f) for f in c[0]], c[1])", cases);

test("SHAPE-1 failover budget: of two sidecars up, the first gets half of the deadline and the second what is left; one up and one down (failed lately or marked by the health timer): the up one gets all of it, the down one only what remains after", () => {
  assert.deepEqual(
    shares([
      [0.2, 0, 2], // both up: the first
      [0.1, 1, 2], // both up: the second, after the first used its half
      [0.2, 0, 1], // the up one, a down one after it
      [0.05, 1, 1], // the down one, with what the up one left
      [0.2, 0, 0], // all marked: the first gets everything
      [0.2, 1, 3], // three up: the middle one halves too
    ]),
    [0.1, 0.1, 0.2, 0.05, 0.2, 0.1],
  );
});

test("SHAPE-1 fail-safe reason: when no sidecar answered, the reason logged and counted is the up sidecar's failure, not the 'connection refused' of a down one tried after it", () => {
  assert.deepEqual(
    failureTexts([
      // one up (timed out), one down after it (refused at once): the up one's
      [
        [
          [0, "DEADLINE_EXCEEDED: no answer on the Decide stream"],
          [1, "UNAVAILABLE: failed to connect to all addresses"],
        ],
        1,
      ],
      // both up: the first one's
      [
        [
          [0, "UNAVAILABLE: Decide stream ended by the sidecar"],
          [1, "DEADLINE_EXCEEDED: no answer on the Decide stream"],
        ],
        2,
      ],
      // none up: the last one's
      [
        [
          [0, "UNAVAILABLE: a"],
          [1, "UNAVAILABLE: b"],
        ],
        0,
      ],
    ]),
    ["DEADLINE_EXCEEDED: no answer on the Decide stream", "UNAVAILABLE: Decide stream ended by the sidecar", "UNAVAILABLE: b"],
  );
});
