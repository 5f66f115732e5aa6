// `kamailio -c` must accept every shipped configuration, with each switch the
// plugin and the example document (issue: "kamailio -c must accept every
// shipped config"). -c does not run the Python bridge: the other e2e tests
// start Kamailio and send requests for that.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../harness/sidecar.js";

const CFG = join(REPO_ROOT, "kamailio", "kamailio.cfg");
const SCRIPT = join(REPO_ROOT, "kamailio", "python", "cpm_pf_bridge.py");

const VARIANTS: Record<string, string[]> = {
  default: [],
  "all BYEs": ["WITH_CPM_PF_ALL_BYES"],
  "observe without waiting": ["WITH_CPM_PF_OBSERVE_NOWAIT"],
  "anchoring: relay an SDP the sidecar cannot anchor": ["WITH_CPM_PF_ANCHOR_RELAY_BAD_SDP"],
  "all switches of the plugin": [
    "WITH_CPM_PF_ALL_BYES",
    "WITH_CPM_PF_ANCHOR_RELAY_BAD_SDP",
    "CPM_PF_DEADLINE_MS=150",
    "CPM_PF_BYE_CLIENT_TIMEOUT_MS=2000",
    `CPM_PF_DECISION_LOG="L_INFO"`,
  ],
  "bypass (bench baseline)": ["WITH_CPM_PF_BYPASS"],
  "no sidecar health timer": ["WITH_CPM_PF_NO_HEALTH"],
  "health timer every 500 ms, sidecars on two hosts": ["CPM_PF_HEALTH_INTERVAL_MS=500", `CPM_PF_UA_HOSTS="^10\\.0\\.0\\.(7|8)$"`],
  "plugin sets async_workers": ["CPM_PF_ASYNC_WORKERS=2"],
  debug: ["WITH_DEBUG"],
  "Prometheus metrics (xhttp_prom), default port": ["WITH_CPM_PF_METRICS"],
  "RFC 3261 18.1.1 towards UDP next hops (udp_mtu, udp_mtu_try_proto)": ["WITH_UDP_MTU_TCP"],
  "Prometheus metrics (xhttp_prom) on another address and port": [
    "WITH_CPM_PF_METRICS",
    "CPM_PF_METRICS_ADDRESS=0.0.0.0",
    "CPM_PF_METRICS_PORT=19090",
  ],
};

for (const [name, defines] of Object.entries(VARIANTS)) {
  test(`SHAPE-5: kamailio -c accepts kamailio/kamailio.cfg (${name})`, () => {
    const args = ["-c", "-f", CFG, "-A", `CPM_PF_PYTHON_SCRIPT="${SCRIPT}"`, ...defines.flatMap((d) => ["-A", d])];
    const r = spawnSync("kamailio", args, { encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 0, `kamailio -c failed:\n${r.stderr}`);
  });
}

test("SHAPE-5: an operator's own native cfg includes cpm-pf.cfg, loads its own modules first and overrides every hook", async () => {
  const dir = await mkdtemp(join(tmpdir(), "cpm-operator-cfg-"));
  try {
    const cfg = join(dir, "operator.cfg");
    await writeFile(
      cfg,
      `#!KAMAILIO
#!define CPM_PF_CUSTOM_HOOKS
#!define CPM_PF_CUSTOM_HOOK_MEDIA_ANCHORED
#!define CPM_PF_PYTHON_SCRIPT "${SCRIPT}"
children=2
async_workers=2
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "xlog.so"
include_file "${join(REPO_ROOT, "kamailio", "cpm-pf.cfg")}"
request_route {
	route(CPM_PF);
	if (has_totag()) loose_route();
	t_relay();
}
route[CPM_PF_HOOK_IS_CPM] { if (is_present_hf("Contribution-ID")) return(1); return(-1); }
route[CPM_PF_HOOK_BYE_DECIDED] { xlog("L_INFO", "operator: mode=$var(cpm_pf_mode) gso=$var(cpm_pf_gso)\\n"); }
route[CPM_PF_HOOK_FAILSAFE] { xlog("L_WARN", "operator: fail-safe $var(cpm_pf_error)\\n"); }
route[CPM_PF_HOOK_RELAY] { t_relay(); exit; }
route[CPM_PF_HOOK_MEDIA_ANCHORED] { xlog("L_INFO", "operator: anchored $var(cpm_pf_cf_path)\\n"); }
`,
    );
    const r = spawnSync("kamailio", ["-c", "-f", cfg], { encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 0, `kamailio -c failed:\n${r.stderr}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
