#!/usr/bin/env python3
"""Writes ops/grafana/cpm-pf.json, the Grafana dashboard of cpm-pf (sidecar
and Kamailio metrics), from the panel list below: edit here, run it, commit
both. test/e2e/metrics.test.ts checks that every query names a metric that
a scrape of the running parts exports."""
import json
import os

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

# (title, unit, [(expr, legend)]), one row of panels per section
SECTIONS = [
    ("Decisions", [
        ("Decisions by RPC and outcome", "reqps", [
            ('sum by (rpc, outcome) (rate(cpmpf_decisions_total[1m]))', "{{rpc}} {{outcome}}")]),
        ("Decision latency p50 / p99 (sidecar)", "s", [
            ('histogram_quantile(0.5, sum by (le, rpc) (rate(cpmpf_decision_duration_seconds_bucket[5m])))', "p50 {{rpc}}"),
            ('histogram_quantile(0.99, sum by (le, rpc) (rate(cpmpf_decision_duration_seconds_bucket[5m])))', "p99 {{rpc}}")]),
        ("Fail-safes (Kamailio) and their replays (sidecar)", "ops", [
            ('rate(kamailio_script_cpm_pf_failsafe[5m])', "BYE fail-safe"),
            ('rate(kamailio_script_cpm_pf_anchor_failsafe[5m])', "anchor fail-safe"),
            ('rate(kamailio_script_cpm_pf_register_failsafe[5m])', "REGISTER fail-safe"),
            ('sum by (outcome) (rate(cpmpf_failsafe_replays_total[5m]))', "replay {{outcome}}")]),
    ]),
    ("BYE and Group State Objects", [
        ("BYEs by mode and cause", "ops", [
            ('sum by (mode, side, cause) (rate(cpmpf_bye_total[5m]))', "{{mode}} {{side}} {{cause}}")]),
        ("GSO outcomes", "ops", [
            ('sum by (gso) (rate(cpmpf_bye_total{gso!="not-required"}[5m]))', "{{gso}}")]),
        ("Group session records by lifecycle", "short", [
            ('sum by (lifecycle) (cpmpf_group_sessions)', "{{lifecycle}}")]),
    ]),
    ("MSRP", [
        ("Anchored sessions and connections", "short", [
            ('cpmpf_anchored_sessions', "anchored sessions"),
            ('sum by (role) (cpmpf_msrp_connections)', "connections {{role}}")]),
        ("MSRP requests and responses", "reqps", [
            ('sum by (direction, method) (rate(cpmpf_msrp_requests_total[1m]))', "{{direction}} {{method}}"),
            ('sum by (direction, code) (rate(cpmpf_msrp_responses_total[1m]))', "{{direction}} {{code}}")]),
        ("MSRP bytes and relay latency p99", "Bps", [
            ('sum by (direction) (rate(cpmpf_msrp_bytes_total[1m]))', "{{direction}}"),
            ('histogram_quantile(0.99, sum by (le) (rate(cpmpf_msrp_relay_duration_seconds_bucket[5m])))', "relay p99 (s)")]),
    ]),
    ("Deferred data", [
        ("Deferred backlog", "short", [
            ('cpmpf_deferred_items', "items waiting"),
            ('cpmpf_deferred_sessions', "group sessions with data")]),
        ("Oldest deferred item", "s", [
            ('cpmpf_deferred_oldest_age_seconds', "age")]),
        ("Deliveries", "ops", [
            ('sum by (outcome) (rate(cpmpf_deliveries_total[5m]))', "{{outcome}}"),
            ('histogram_quantile(0.9, sum by (le) (rate(cpmpf_delivery_drain_duration_seconds_bucket[15m])))', "drain p90 (s)")]),
    ]),
    ("Message Store", [
        ("IMAP errors by command", "ops", [
            ('sum by (op) (rate(cpmpf_imap_operations_total{outcome="error"}[5m]))', "{{op}}")]),
        ("IMAP latency p99 and record store latency p99", "s", [
            ('histogram_quantile(0.99, sum by (le, op) (rate(cpmpf_imap_operation_duration_seconds_bucket[5m])))', "{{op}}"),
            ('histogram_quantile(0.99, sum by (le) (rate(cpmpf_record_store_duration_seconds_bucket[5m])))', "record store")]),
        ("Spool depth", "short", [
            ('cpmpf_spool_depth', "objects waiting for the store")]),
    ]),
    ("Kamailio", [
        ("SIP requests received", "reqps", [
            ('rate(kamailio_core_rcv_requests[1m])', "requests")]),
        ("Transactions", "short", [
            ('kamailio_tmx_active_transactions', "active")]),
        ("Sidecar process", "percentunit", [
            ('rate(cpmpf_process_cpu_seconds_total[1m])', "sidecar CPU")]),
    ]),
]


def build():
    panels = []
    pid = 1
    y = 0
    for section, row in SECTIONS:
        panels.append({"type": "row", "title": section, "id": pid, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        for i, (title, unit, queries) in enumerate(row):
            panels.append({
                "type": "timeseries", "title": title, "id": pid, "datasource": DS,
                "gridPos": {"h": 8, "w": 8, "x": 8 * i, "y": y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": chr(65 + k), "datasource": DS, "expr": e, "legendFormat": l}
                            for k, (e, l) in enumerate(queries)],
            })
            pid += 1
        y += 8
    return {
        "title": "cpm-pf", "uid": "cpm-pf", "schemaVersion": 39, "version": 1, "editable": True,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "tags": ["cpm-pf", "kamailio", "rcs"],
        "templating": {"list": [{"name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]},
        "panels": panels,
    }


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "grafana"), exist_ok=True)
    with open(os.path.join(here, "grafana", "cpm-pf.json"), "w") as f:
        json.dump(build(), f, indent=2)
        f.write("\n")
