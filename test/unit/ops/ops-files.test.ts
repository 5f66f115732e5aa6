// The operator files in ops/: the Grafana dashboard and the Prometheus alert
// rules parse and every query names metrics (checked against a live scrape in
// test/e2e/metrics.test.ts); the systemd unit passes `systemd-analyze verify`
// and its hardening scores "OK" in `systemd-analyze security`.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { metricNames, opsQueries } from "../../harness/promql.js";
import { REPO_ROOT } from "../../harness/sidecar.js";

const OPS = join(REPO_ROOT, "ops");

test("ops: the dashboard has a query in every panel; the alert rules each have a name, an expression and a severity; every query reads cpm-pf or Kamailio metrics", () => {
  const dash = JSON.parse(readFileSync(join(OPS, "grafana", "cpm-pf.json"), "utf8")) as {
    panels: { type: string; title: string; targets?: { expr: string }[] }[];
  };
  const graphs = dash.panels.filter((p) => p.type !== "row");
  assert.ok(graphs.length >= 12);
  for (const p of graphs) assert.ok((p.targets ?? []).length > 0, `panel "${p.title}" has a query`);
  const rules = parse(readFileSync(join(OPS, "prometheus", "cpm-pf-alerts.yml"), "utf8")) as {
    groups: { rules: { alert: string; expr: string; labels?: { severity?: string } }[] }[];
  };
  const all = rules.groups.flatMap((g) => g.rules);
  assert.ok(all.length >= 5);
  for (const r of all) {
    assert.match(r.alert, /^CpmPf[A-Za-z]+$/);
    assert.ok(r.labels?.severity, `${r.alert} has a severity`);
  }
  const { dashboard, alerts } = opsQueries();
  for (const e of [...dashboard, ...alerts]) {
    const names = metricNames(e);
    assert.ok(names.length > 0, `query ${e} names a metric`);
    for (const n of names) assert.match(n, /^(cpmpf_|kamailio_|up$)/, `${n} in ${e}`);
  }
});

test("ops: metricNames finds the metrics of a query, not its functions, labels, ranges or grouping", () => {
  assert.deepEqual(
    metricNames('histogram_quantile(0.99, sum by (le, rpc) (rate(cpmpf_decision_duration_seconds_bucket{rpc="HandleBye"}[5m])))'),
    ["cpmpf_decision_duration_seconds_bucket"],
  );
  assert.deepEqual(metricNames("cpmpf_spool_depth > 0 and deriv(cpmpf_spool_depth[10m]) > 0"), ["cpmpf_spool_depth"]);
  assert.deepEqual(metricNames('up{job="cpm-pf-sidecar"} == 0'), ["up"]);
});

test("ops: the sidecar's systemd unit passes systemd-analyze verify and its exposure is OK (hardened)", () => {
  const unit = join(OPS, "systemd", "cpm-pf-sidecar.service");
  execFileSync("systemd-analyze", ["verify", unit], { stdio: "pipe" });
  const out = execFileSync("systemd-analyze", ["security", "--offline=yes", unit], { encoding: "utf8" });
  const m = /Overall exposure level for \S+: (\d+(?:\.\d+)?) (\S+)/.exec(out);
  assert.ok(m, out.slice(-300));
  assert.ok(Number(m[1]) <= 2.0, `exposure ${m[1]} ${m[2]}`);
});
