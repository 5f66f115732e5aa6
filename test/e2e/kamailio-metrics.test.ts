// Kamailio's statistics for Prometheus, end to end: kamailio/kamailio.cfg with
// WITH_CPM_PF_METRICS serves every statistic (core, modules, the plugin's
// cpm_pf_*) through xhttp_prom on its own TCP socket of 127.0.0.1. SIPp plays
// the CF and the client (test/scenarios/cf-invite-bye.xml, client-uas.xml)
// through Kamailio with the real sidecar and Dovecot; the scrapes before and
// after must differ by exactly the traffic sent.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type DovecotInstance, startDovecot } from "../harness/dovecot.js";
import { type CallResult, groupChatCall, storeEnv } from "../harness/group-chat.js";
import { type KamailioInstance, sendOptions, startKamailio } from "../harness/kamailio.js";
import { freePort } from "../harness/ports.js";
import { httpGet, type PromText, parsePromText, promValue } from "../harness/prom-text.js";
import { REPO_ROOT, type SidecarInstance, startSidecar } from "../harness/sidecar.js";

const DEADLINE_MS = 1000;
/** xhttp_prom's metric name: "kamailio_" (xhttp_prom_beginning) + group + "_" + statistic. */
const PREFIX = "kamailio_";

/** The statistics cpm-pf.cfg declares (modparam statistics "variable"). */
function pluginStatistics(): string[] {
  const cfg = readFileSync(join(REPO_ROOT, "kamailio", "cpm-pf.cfg"), "utf8");
  return [...cfg.matchAll(/^modparam\("statistics",\s*"variable",\s*"([^"]+)"\)/gm)].map((m) => m[1] as string);
}

async function scrape(k: KamailioInstance): Promise<PromText> {
  const res = await httpGet(k.host, k.metricsPort as number, "/metrics");
  assert.equal(res.status, 200, `GET /metrics: ${res.status}\n${res.body}`);
  return parsePromText(res.body);
}

function value(text: PromText, name: string): number {
  const v = promValue(text, name);
  assert.ok(v !== undefined, `${name} not exported`);
  return v;
}

/** Requests the CF's SIPp sent (retransmissions included), by method. */
function sentByCf(calls: readonly CallResult[], method: string): number {
  return calls.reduce((n, c) => n + c.cf.messages.filter((m) => m.direction === "sent" && m.method === method).length, 0);
}

/** One SIP OPTIONS over TCP to 127.0.0.1:port; resolves with whatever came back within timeoutMs ("" for nothing). */
function tcpOptions(port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = "";
    const sock = connect({ host: "127.0.0.1", port }, () => {
      const lport = sock.localPort;
      sock.write(
        [
          `OPTIONS sip:127.0.0.1:${port} SIP/2.0`,
          `Via: SIP/2.0/TCP 127.0.0.1:${lport};branch=z9hG4bK-metrics-${lport}`,
          "Max-Forwards: 70",
          `From: <sip:probe@127.0.0.1:${lport}>;tag=m${lport}`,
          `To: <sip:127.0.0.1:${port}>`,
          `Call-ID: metrics-probe-${lport}`,
          "CSeq: 1 OPTIONS",
          "Content-Length: 0",
          "",
          "",
        ].join("\r\n"),
      );
    });
    sock.on("data", (d) => {
      got += d.toString("utf8");
    });
    sock.on("error", reject);
    setTimeout(() => {
      sock.destroy();
      resolve(got);
    }, timeoutMs);
  });
}

describe("Kamailio metrics: xhttp_prom on 127.0.0.1:CPM_PF_METRICS_PORT (WITH_CPM_PF_METRICS; SIPp CF + client, Kamailio, sidecar, Dovecot)", () => {
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;

  before(async () => {
    dovecot = await startDovecot();
    sidecar = await startSidecar(storeEnv(dovecot, "b2bua"));
    kamailio = await startKamailio({ grpcTarget: sidecar.target, deadlineMs: DEADLINE_MS, metricsPort: 0 });
  });
  after(async () => {
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
  });

  test("Kamailio metrics: GET /metrics is Prometheus text exposition 0.0.4 with the core, tm, sl statistics and every cpm_pf_* one of cpm-pf.cfg", async () => {
    const k = kamailio as KamailioInstance;
    assert.ok(k.metricsPort && k.metricsPort !== k.sipPort, "a metrics port of its own");
    const res = await httpGet(k.host, k.metricsPort, "/metrics");
    assert.equal(res.status, 200);
    assert.match(String(res.headers["content-type"]), /^text\/plain;\s*version=0\.0\.4/);
    const text = parsePromText(res.body);
    assert.ok(text.samples.length > 50, `${text.samples.length} samples`);
    for (const name of ["core_rcv_requests", "core_rcv_requests_bye", "tmx_UAS_transactions", "sl_sent_replies", "shmem_used_size"]) {
      value(text, `${PREFIX}${name}`);
    }
    const declared = pluginStatistics();
    assert.ok(declared.includes("cpm_pf_failsafe") && declared.length >= 10, `cpm-pf.cfg declares ${declared.join(", ")}`);
    // the statistics module's variables are in group "script"
    const exported = text.samples.filter((s) => s.name.startsWith(`${PREFIX}script_cpm_pf_`)).map((s) => s.name.slice(PREFIX.length + 7));
    assert.deepEqual(exported.sort(), [...declared].sort());
    for (const name of declared) assert.equal(value(text, `${PREFIX}script_${name}`), 0, `${name} before any traffic`);
  });

  test("Kamailio metrics: the metrics socket answers /metrics only (404 elsewhere) and never routes SIP", async () => {
    const k = kamailio as KamailioInstance;
    const port = k.metricsPort as number;
    for (const path of ["/", "/metric", "/stats", "/metricsx", "/favicon.ico"]) {
      const res = await httpGet(k.host, port, path);
      assert.equal(res.status, 404, `GET ${path}: ${res.status}`);
    }
    const before = await scrape(k);
    // the same keepalive OPTIONS the SIP port answers 200 (route KEEPALIVE)
    const overUdp = await sendOptions(k.sipPort, { timeoutMs: 2000 });
    assert.match(overUdp, /^SIP\/2\.0 200 /, "the SIP port answers the probe");
    assert.equal(await tcpOptions(port, 1500), "", "SIP over the metrics socket got an answer");
    const afterProbe = await scrape(k);
    const delta = (n: string) => value(afterProbe, `${PREFIX}${n}`) - value(before, `${PREFIX}${n}`);
    assert.equal(delta("core_rcv_requests_options"), 2, "both OPTIONS reached Kamailio");
    assert.equal(delta("sl_200_replies"), 1 + 1, "one 200 for the UDP OPTIONS, one for the scrape; none for the TCP one");
  });

  test("Kamailio metrics: the counters move by exactly the traffic: 3 BYEs decided (cpm_pf_bye_b2bua +3), 1 BYE with the sidecar down (cpm_pf_failsafe +1), core and tm counters", async () => {
    const k = kamailio as KamailioInstance;
    const declared = pluginStatistics();
    const before = await scrape(k);
    const decided: CallResult[] = [];
    for (let i = 0; i < 3; i++) decided.push(await groupChatCall(k, ["Reason: SIP;cause=200"]));
    const mid = await scrape(k);
    await (sidecar as SidecarInstance).stop();
    const failsafe = await groupChatCall(k, ["Reason: SIP;cause=480"]);
    assert.deepEqual(failsafe.clientBye.headers.get("reason"), ["SIP;cause=480"], "relayed unchanged (fail-safe)");
    const end = await scrape(k);

    const delta = (a: PromText, b: PromText, name: string) => value(b, `${PREFIX}${name}`) - value(a, `${PREFIX}${name}`);
    const expected: Record<string, [number, number]> = { cpm_pf_bye_b2bua: [3, 0], cpm_pf_failsafe: [0, 1] };
    for (const name of declared) {
      const [first, second] = expected[name] ?? [0, 0];
      assert.equal(delta(before, mid, `script_${name}`), first, `${name} over the 3 decided BYEs`);
      assert.equal(delta(mid, end, `script_${name}`), second, `${name} over the fail-safe BYE`);
    }
    // the exported values are Kamailio's own statistics
    assert.equal(value(end, `${PREFIX}script_cpm_pf_failsafe`), await k.stat("cpm_pf_failsafe"));
    assert.equal(value(end, `${PREFIX}script_cpm_pf_bye_b2bua`), await k.stat("cpm_pf_bye_b2bua"));

    const all = [...decided, failsafe];
    for (const [calls, a, b] of [
      [decided, before, mid],
      [[failsafe], mid, end],
    ] as const) {
      assert.equal(delta(a, b, "core_rcv_requests_invite"), sentByCf(calls, "INVITE"));
      assert.equal(delta(a, b, "core_rcv_requests_ack"), sentByCf(calls, "ACK"));
      assert.equal(delta(a, b, "core_rcv_requests_bye"), sentByCf(calls, "BYE"));
      // one INVITE and one BYE server transaction per call
      assert.equal(delta(a, b, "tmx_UAS_transactions"), 2 * calls.length);
    }
    assert.equal(delta(before, end, "core_rcv_requests_bye"), sentByCf(all, "BYE"));
    assert.ok(sentByCf(all, "BYE") >= 4);
  });
});

describe("Kamailio metrics: an operator's own cfg that includes only cpm-pf.cfg adds the README's xhttp_prom lines (sidecar unreachable)", () => {
  let dir: string | undefined;
  let kamailio: KamailioInstance | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "cpm-operator-metrics-"));
    const cfg = join(dir, "operator.cfg");
    // the README's snippet; KAMAILIO_INSTANCE / the OPTIONS answer only for the harness's readiness check
    await writeFile(
      cfg,
      `#!KAMAILIO
children=2
async_workers=2
listen=tcp:127.0.0.1:CPM_PF_METRICS_PORT name "cpm_pf_metrics"
tcp_accept_no_cl=yes
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "xhttp.so"
loadmodule "xhttp_prom.so"
modparam("xhttp_prom", "xhttp_prom_stats", "script:")
include_file "${join(REPO_ROOT, "kamailio", "cpm-pf.cfg")}"
request_route {
	if ($Rn == "cpm_pf_metrics") drop;
	if (is_method("OPTIONS") && $rU == $null) {
		append_to_reply("X-Instance: " + KAMAILIO_INSTANCE + "\\r\\n");
		sl_send_reply("200", "Keepalive");
		exit;
	}
	if (!is_method("ACK") && t_precheck_trans()) { t_check_trans(); exit; }
	route(CPM_PF);
	if (has_totag()) loose_route();
	if (is_method("INVITE")) record_route();
	t_relay();
}
event_route[xhttp:request] {
	if ($Rn == "cpm_pf_metrics" && prom_check_uri()) {
		prom_dispatch();
		exit;
	}
	xhttp_reply("404", "Not Found", "text/plain", "Not Found\\n");
}
`,
    );
    kamailio = await startKamailio({ cfg, grpcTarget: `127.0.0.1:${await freePort()}`, deadlineMs: DEADLINE_MS, metricsPort: 0 });
  });
  after(async () => {
    await kamailio?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("Kamailio metrics: the operator's /metrics has every cpm_pf_* statistic; a BYE with no sidecar moves kamailio_script_cpm_pf_failsafe by 1; other paths 404, SIP on it unanswered", async () => {
    const k = kamailio as KamailioInstance;
    const before = await scrape(k);
    const declared = pluginStatistics();
    assert.deepEqual(
      before.samples.map((s) => s.name.slice(PREFIX.length + 7)).sort(),
      [...declared].sort(),
      '"script:": the plugin\'s only',
    );
    const call = await groupChatCall(k, ["Reason: SIP;cause=480"]);
    assert.deepEqual(call.clientBye.headers.get("reason"), ["SIP;cause=480"], "relayed unchanged (fail-safe)");
    const end = await scrape(k);
    assert.equal(value(end, `${PREFIX}script_cpm_pf_failsafe`) - value(before, `${PREFIX}script_cpm_pf_failsafe`), 1);
    assert.equal((await httpGet(k.host, k.metricsPort as number, "/")).status, 404);
    assert.equal(await tcpOptions(k.metricsPort as number, 1500), "", "SIP over the metrics socket got an answer");
  });
});
