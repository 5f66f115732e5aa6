// The gRPC link between Kamailio (cpm_pf_bridge.py, grpcio) and the sidecar
// (grpc-js) over its two secured transports, end to end: a Unix domain
// socket (Kamailio and the sidecar on one host) and mutual TLS. The same
// B2BUA BYE flow as bye.test.ts goes through each: the sidecar decides
// (no fail-safe), the client gets the PF's Reason, the GSO is stored. With
// TLS, a peer without the right certificate gets no decision.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { credentials } from "@grpc/grpc-js";
import { type DovecotInstance, startDovecot } from "../harness/dovecot.js";
import { groupChatCall, storedObjects, storeEnv } from "../harness/group-chat.js";
import { healthStatus } from "../harness/health.js";
import { type KamailioInstance, startKamailio } from "../harness/kamailio.js";
import { type SidecarInstance, startSidecar } from "../harness/sidecar.js";
import { header } from "../harness/sipp.js";
import { makeTestPki, type TestPki } from "../harness/tls.js";

const DEADLINE_MS = 1000;

/** One B2BUA BYE (cause 480) through Kamailio: decided by the sidecar, GSO stored, no fail-safe. */
async function byeDecided(dovecot: DovecotInstance, kamailio: KamailioInstance): Promise<void> {
  const failsafes = await kamailio.stat("cpm_pf_failsafe");
  const call = await groupChatCall(kamailio, ["Reason: SIP;cause=480"]);
  assert.match(header(call.clientBye, "reason") ?? "", /^SIP\s*;\s*cause\s*=\s*480\b/i);
  assert.equal(await kamailio.stat("cpm_pf_failsafe"), failsafes, "the BYE went through the fail-safe");
  const gsos = await storedObjects(dovecot, `Default/${call.conversationId}/${call.contributionId}`);
  assert.equal(gsos.length, 1, "the sidecar decided and stored the GSO");
}

describe("gRPC between Kamailio and the sidecar over a Unix domain socket", () => {
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;

  before(async () => {
    dovecot = await startDovecot();
    sidecar = await startSidecar(storeEnv(dovecot, "b2bua"), { unixSocket: true });
    kamailio = await startKamailio({ grpcTarget: sidecar.target, deadlineMs: DEADLINE_MS });
  });
  after(async () => {
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
  });

  test("BYE-B4 over unix: the BYE is decided by the sidecar through CPM_PF_GRPC_TARGET unix:<grpc.socket>", async () => {
    assert.match((sidecar as SidecarInstance).target, /^unix:\//);
    await byeDecided(dovecot as DovecotInstance, kamailio as KamailioInstance);
  });
});

describe("gRPC between Kamailio and the sidecar over mutual TLS", () => {
  let pki: TestPki | undefined;
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;
  let wrongCa: KamailioInstance | undefined;

  before(async () => {
    pki = makeTestPki();
    dovecot = await startDovecot();
    sidecar = await startSidecar({
      ...storeEnv(dovecot, "b2bua"),
      CPM_PF__GRPC__TLSCERTFILE: pki.serverCert,
      CPM_PF__GRPC__TLSKEYFILE: pki.serverKey,
      CPM_PF__GRPC__TLSCAFILE: pki.caCert,
    });
    const tls = (ca: string) => [
      `CPM_PF_GRPC_TLS_CA="${ca}"`,
      `CPM_PF_GRPC_TLS_CERT="${pki?.clientCert}"`,
      `CPM_PF_GRPC_TLS_KEY="${pki?.clientKey}"`,
    ];
    kamailio = await startKamailio({ grpcTarget: sidecar.target, deadlineMs: DEADLINE_MS, defines: tls(pki.caCert) });
    wrongCa = await startKamailio({ grpcTarget: sidecar.target, deadlineMs: DEADLINE_MS, defines: tls(pki.otherCaCert) });
  });
  after(async () => {
    await wrongCa?.stop();
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
    pki?.remove();
  });

  test("BYE-B4 over mTLS: Kamailio with its client certificate gets the sidecar's decision", async () => {
    await byeDecided(dovecot as DovecotInstance, kamailio as KamailioInstance);
  });

  test("a Kamailio that does not trust the sidecar's CA gets no decision: the BYE goes through the fail-safe", async () => {
    const k = wrongCa as KamailioInstance;
    const call = await groupChatCall(k, ["Reason: SIP;cause=480"]);
    assert.equal(call.clientBye.method, "BYE", "the BYE still reaches the client (no SIP waits)");
    assert.equal(await k.stat("cpm_pf_failsafe"), 1);
  });

  test("a client without a certificate, or without TLS, is refused; with the CA's client certificate it is served", async () => {
    const p = pki as TestPki;
    const target = (sidecar as SidecarInstance).target;
    const ca = readFileSync(p.caCert);
    await assert.rejects(healthStatus(target, credentials.createInsecure()), "plaintext client served");
    await assert.rejects(healthStatus(target, credentials.createSsl(ca)), "client without a certificate served");
    const mutual = credentials.createSsl(ca, readFileSync(p.clientKey), readFileSync(p.clientCert));
    assert.equal(await healthStatus(target, mutual), "SERVING");
  });
});
