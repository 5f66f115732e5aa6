// Operations: the sidecar's Prometheus metrics and gRPC server reflection, on
// the wire. SIPp plays the CF and the client through Kamailio (kamailio.cfg
// with the cpm-pf plugin), the real sidecar decides and writes GSOs to a real
// Dovecot; the test scrapes /metrics before and after a known amount of
// traffic and asserts the counters moved by exactly that traffic.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { credentials, loadPackageDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { type DovecotInstance, startDovecot } from "../harness/dovecot.js";
import { groupChatCall, storeEnv } from "../harness/group-chat.js";
import { type KamailioInstance, startKamailio } from "../harness/kamailio.js";
import { freePort } from "../harness/ports.js";
import { familyNames, scrape, value } from "../harness/prometheus.js";
import { inFamilies, metricNames, opsQueries } from "../harness/promql.js";
import { REPO_ROOT, type SidecarInstance, startSidecar } from "../harness/sidecar.js";

const BYES = 3;

describe("sidecar metrics (prom-client) and gRPC reflection, from the wire (SIPp CF + client, Kamailio, sidecar, Dovecot)", () => {
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;
  let url = "";

  before(async () => {
    dovecot = await startDovecot();
    const port = await freePort();
    sidecar = await startSidecar({
      ...storeEnv(dovecot, "b2bua"),
      CPM_PF__METRICS__ENABLED: "true",
      CPM_PF__METRICS__PORT: String(port),
      // the label counted below is a GSO's that reached the mailbox: a loaded machine would spool some within the default budget
      CPM_PF__STORE__GSOBUDGETMS: "2000",
    });
    kamailio = await startKamailio({ grpcTarget: sidecar.target, deadlineMs: 1000, metricsPort: 0 });
    url = `http://127.0.0.1:${port}/metrics`;
  });
  after(async () => {
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
  });

  test("metrics: 3 B2BUA BYEs with cause 480 move cpmpf_bye_total, the HandleBye decisions, the GSO APPENDs and the inactive records by exactly 3", async () => {
    // one call first: the folders, connections and streams of a first use are not counted below
    await groupChatCall(kamailio as KamailioInstance, ["Reason: SIP;cause=480"]);
    const before = (await scrape(url)).samples;
    for (let i = 0; i < BYES; i++) await groupChatCall(kamailio as KamailioInstance, ["Reason: SIP;cause=480"]);
    const after = (await scrape(url)).samples;
    const moved = (name: string, labels: Record<string, string> = {}) => value(after, name, labels) - value(before, name, labels);
    assert.equal(moved("cpmpf_bye_total", { mode: "b2bua", side: "network", cause: "inactivity", gso: "stored" }), BYES);
    assert.equal(moved("cpmpf_bye_total", { mode: "proxy", side: "network", cause: "inactivity", gso: "not-required" }), 0);
    assert.equal(moved("cpmpf_decisions_total", { rpc: "HandleBye", outcome: "ok" }), BYES);
    assert.equal(moved("cpmpf_decision_duration_seconds_count", { rpc: "HandleBye" }), BYES);
    assert.equal(
      moved("cpmpf_decisions_total", { rpc: "ReportByeOutcome", outcome: "ok" }),
      BYES,
      "the client's 200 reported once per BYE",
    );
    assert.equal(moved("cpmpf_imap_operations_total", { op: "APPEND", outcome: "ok" }), BYES, "one GSO APPEND per BYE");
    assert.equal(moved("cpmpf_group_sessions", { lifecycle: "inactive" }), BYES, "480: each record left inactive (re-startable)");
    assert.ok(moved("cpmpf_record_store_duration_seconds_count") >= BYES, "every record change reached the journal");
    assert.equal(
      [...after.keys()].filter((k) => k.startsWith("cpmpf_decisions_total") && !k.includes('outcome="ok"')).length,
      0,
      "no decision failed",
    );
  });

  test("metrics: the exposition parses, every family is named cpmpf_*, build info and Node's default metrics are there; other paths 404, other methods 405", async () => {
    const { text, samples, contentType } = await scrape(url);
    assert.match(contentType, /^text\/plain; version=0\.0\.4/);
    const families = familyNames(text);
    for (const f of families) assert.match(f, /^cpmpf_/, `family ${f}`);
    for (const f of [
      "cpmpf_build_info",
      "cpmpf_process_cpu_seconds_total",
      "cpmpf_nodejs_heap_size_used_bytes",
      "cpmpf_decisions_total",
      "cpmpf_bye_total",
      "cpmpf_imap_operations_total",
      "cpmpf_group_sessions",
      "cpmpf_anchored_sessions",
      "cpmpf_msrp_connections",
      "cpmpf_spool_depth",
      "cpmpf_deferred_items",
      "cpmpf_deferred_oldest_age_seconds",
      "cpmpf_failsafe_replays_total",
      "cpmpf_record_store_duration_seconds",
    ]) {
      assert.ok(families.has(f), `${f} exported`);
    }
    const build = [...samples.keys()].find((k) => k.startsWith("cpmpf_build_info{"));
    assert.match(build ?? "", /version="\d+\.\d+\.\d+"/);
    assert.equal((await fetch(url.replace("/metrics", "/other"))).status, 404);
    assert.equal((await fetch(url, { method: "POST", body: "x" })).status, 405);
  });

  test("dashboard and alerts: every query of ops/grafana/cpm-pf.json and ops/prometheus/cpm-pf-alerts.yml names a metric that the running sidecar or Kamailio exports", async () => {
    const k = kamailio as KamailioInstance;
    const families = new Set([
      ...familyNames((await scrape(url)).text),
      ...familyNames((await scrape(`http://127.0.0.1:${k.metricsPort}/metrics`)).text),
      "up", // Prometheus's own, per scrape target
    ]);
    const { dashboard, alerts } = opsQueries();
    const missing = [...dashboard, ...alerts].flatMap((e) =>
      metricNames(e)
        .filter((n) => !inFamilies(n, families))
        .map((n) => `${n} (${e})`),
    );
    assert.deepEqual(missing, [], "queries naming metrics nobody exports");
  });

  test("reflection: a gRPC client lists the PF and health services and gets the PF's file descriptor by symbol", async () => {
    const def = loadSync(join(REPO_ROOT, "node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto"), {
      keepCase: true,
      longs: String,
      defaults: true,
    });
    // biome-ignore lint/suspicious/noExplicitAny: the loaded package is untyped
    const pkg = loadPackageDefinition(def) as any;
    const client = new pkg.grpc.reflection.v1.ServerReflection((sidecar as SidecarInstance).target, credentials.createInsecure());
    try {
      const ask = (req: Record<string, unknown>) =>
        // biome-ignore lint/suspicious/noExplicitAny: untyped response
        new Promise<any>((resolve, reject) => {
          const call = client.ServerReflectionInfo();
          call.on("data", (res: unknown) => {
            resolve(res);
            call.end();
          });
          call.on("error", reject);
          call.write(req);
        });
      const listed = await ask({ list_services: "" });
      const names = (listed.list_services_response?.service ?? []).map((s: { name: string }) => s.name).sort();
      assert.ok(names.includes("cpm.pf.v1.ParticipatingFunctionService"), JSON.stringify(names));
      assert.ok(names.includes("grpc.health.v1.Health"), JSON.stringify(names));
      const file = await ask({ file_containing_symbol: "cpm.pf.v1.ParticipatingFunctionService" });
      const protos: Buffer[] = file.file_descriptor_response?.file_descriptor_proto ?? [];
      assert.ok(protos.length >= 1);
      assert.ok(
        protos.some((b) => Buffer.from(b).includes("HandleBye")),
        "the descriptor names the service's methods",
      );
    } finally {
      client.close();
    }
  });
});
