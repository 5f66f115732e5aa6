// The bridge's check of ObserveSession's ua_address (kamailio/python/
// cpm_pf_bridge.py _sip_uri_or_empty), run with Debian's python3 and a
// stand-in KSR module: what becomes $du of a re-join or a session refresh is
// a plain sip:host:port URI, or nothing (the cfg's CPM_PF_UA_ADDRESS), with a
// warning naming the bad value.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../../harness/sidecar.js";

const PY = process.env.KAMAILIO_PYTHON ?? "/usr/bin/python3";

function checked(values: string[]): { out: string[]; warnings: string[] } {
  const script = `
import json, sys, types
ksr = types.ModuleType("KSR")
warnings = []
ksr.warn = lambda text: warnings.append(text)
sys.modules["KSR"] = ksr
sys.path.insert(0, ${JSON.stringify(join(REPO_ROOT, "kamailio", "python"))})
import cpm_pf_bridge as b
values = json.load(sys.stdin)
print(json.dumps({"out": [b._sip_uri_or_empty(v) for v in values], "warnings": warnings}))
`;
  const r = spawnSync(PY, ["-c", script], { input: JSON.stringify(values), encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { out: string[]; warnings: string[] };
}

test("RJ-1 scale-out: ua_address from the sidecar is taken as $du only as sip:host:port[;params]; CR/LF, a display name, another scheme or no port -> CPM_PF_UA_ADDRESS, a warning", () => {
  const good = ["sip:127.0.0.1:6097", "sip:[::1]:5097", "sip:10.0.0.7:5097;transport=tcp"];
  const bad = [
    "sip:127.0.0.1:6097\r\nX-Injected: 1",
    "<sip:127.0.0.1:6097>",
    "sips:127.0.0.1:5061",
    "sip:127.0.0.1",
    "tel:+1613",
    "sip:a b:1",
  ];
  const r = checked(["", ...good, ...bad]);
  assert.deepEqual(r.out, ["", ...good, ...bad.map(() => "")]);
  assert.equal(r.warnings.length, bad.length, "one warning per bad value, none for an empty one");
  assert.match(r.warnings[0] ?? "", /is no sip:host:port URI/);
});
