// The sidecar's metrics (src/metrics/metrics.ts) and the MSRP traffic counts
// they read: counters follow the components' cumulative counts exactly, and
// a peer cannot grow the label set.
import assert from "node:assert/strict";
import { test } from "node:test";
import { PromMetrics, type Sample } from "../../../src/metrics/metrics.js";
import { MsrpResources } from "../../../src/msrp/resources.js";
import { parseExposition, value } from "../../harness/prometheus.js";

function sample(resources: MsrpResources, replayed: number): Sample {
  return {
    recordsByLifecycle: { active: 2, inactive: 5 },
    anchoredSessions: 1,
    msrpConnections: { accepted: 3, opened: 1 },
    msrpTraffic: resources.traffic,
    spoolDepth: 4,
    recordWritesHeld: 7,
    failsafeReplays: { replayed, quarantined: 0, retried: 1 },
    deferredSessions: 2,
    unexecutedActions: [],
  };
}

test("metrics: counters read from cumulative counts move by exactly what happened between scrapes; levels are read at scrape time", async () => {
  const resources = new MsrpResources();
  const m = new PromMetrics({ version: "1.2.3" });
  let replayed = 0;
  m.setSampler(() => sample(resources, replayed));
  resources.frame("in", { kind: "request", method: "SEND" }, 0);
  resources.frame("out", { kind: "response", code: 200 }, 30);
  replayed = 2;
  const first = parseExposition(await m.registry.metrics());
  assert.equal(value(first, "cpmpf_msrp_requests_total", { direction: "in", method: "SEND" }), 1);
  assert.equal(value(first, "cpmpf_msrp_responses_total", { direction: "out", code: "200" }), 1);
  assert.equal(value(first, "cpmpf_msrp_bytes_total", { direction: "out" }), 30);
  assert.equal(value(first, "cpmpf_failsafe_replays_total", { outcome: "replayed" }), 2);
  assert.equal(value(first, "cpmpf_group_sessions", { lifecycle: "inactive" }), 5);
  assert.equal(value(first, "cpmpf_group_sessions", { lifecycle: "terminated" }), 0, "every lifecycle state has a series");
  assert.equal(value(first, "cpmpf_spool_depth"), 4);
  assert.equal(value(first, "cpmpf_record_writes_held"), 7);
  await new Promise((r) => setTimeout(r, 300)); // past the sample's reuse window
  resources.frame("in", { kind: "request", method: "SEND" }, 0);
  replayed = 3;
  const second = parseExposition(await m.registry.metrics());
  assert.equal(value(second, "cpmpf_msrp_requests_total", { direction: "in", method: "SEND" }), 2);
  assert.equal(value(second, "cpmpf_failsafe_replays_total", { outcome: "replayed" }), 3);
});

test("metrics bad input: MSRP methods a peer makes up are counted as OTHER, so a peer cannot grow the label set", async () => {
  const resources = new MsrpResources();
  for (let i = 0; i < 100; i++) resources.frame("in", { kind: "request", method: `X${i}` }, 0);
  resources.frame("in", { kind: "request", method: "REPORT" }, 0);
  assert.deepEqual([...resources.traffic.requests.entries()].sort(), [
    ["in OTHER", 100],
    ["in REPORT", 1],
  ]);
});

test("metrics: decisions, BYEs, IMAP commands and the backlog as reported", async () => {
  const m = new PromMetrics({ version: "1.2.3" });
  m.decision("HandleBye", "ok", 0.002);
  m.decision("HandleBye", "CPM_ERR_BAD_HEADER", 0.001);
  m.bye("b2bua", "network", "inactivity", "stored");
  m.imap("APPEND", "ok", 0.01);
  m.backlog(7, 42);
  const s = parseExposition(await m.registry.metrics());
  assert.equal(value(s, "cpmpf_decisions_total", { rpc: "HandleBye", outcome: "ok" }), 1);
  assert.equal(value(s, "cpmpf_decisions_total", { rpc: "HandleBye", outcome: "CPM_ERR_BAD_HEADER" }), 1);
  assert.equal(value(s, "cpmpf_decision_duration_seconds_count", { rpc: "HandleBye" }), 2);
  assert.equal(value(s, "cpmpf_decision_duration_seconds_bucket", { rpc: "HandleBye", le: "0.001" }), 1);
  assert.equal(value(s, "cpmpf_bye_total", { mode: "b2bua", side: "network", cause: "inactivity", gso: "stored" }), 1);
  assert.equal(value(s, "cpmpf_imap_operations_total", { op: "APPEND", outcome: "ok" }), 1);
  assert.equal(value(s, "cpmpf_deferred_items"), 7);
  assert.equal(value(s, "cpmpf_deferred_oldest_age_seconds"), 42);
  assert.equal(value(s, "cpmpf_build_info", { version: "1.2.3", node_version: process.version }), 1);
});

test("metrics: the PF's SIP UA requests by transport and method, and what it refused, follow its counts (RFC 3261 18.1.1 on the wire)", async () => {
  const m = new PromMetrics({ version: "1.2.3" });
  const requestsSent = new Map([
    ["tcp INVITE", 1],
    ["udp BYE", 2],
  ]);
  const refused = { udp: 3, tcp: 1 };
  m.setSampler(() => ({ ...sample(new MsrpResources(), 0), sipTraffic: { requestsSent, refused } }));
  const first = parseExposition(await m.registry.metrics());
  assert.equal(value(first, "cpmpf_sip_requests_total", { transport: "tcp", method: "INVITE" }), 1);
  assert.equal(value(first, "cpmpf_sip_requests_total", { transport: "udp", method: "BYE" }), 2);
  assert.equal(value(first, "cpmpf_sip_refused_total", { transport: "tcp" }), 1);
  await new Promise((r) => setTimeout(r, 300));
  requestsSent.set("tcp INVITE", 4);
  refused.udp = 5;
  const second = parseExposition(await m.registry.metrics());
  assert.equal(value(second, "cpmpf_sip_requests_total", { transport: "tcp", method: "INVITE" }), 4);
  assert.equal(value(second, "cpmpf_sip_refused_total", { transport: "udp" }), 5);
});
