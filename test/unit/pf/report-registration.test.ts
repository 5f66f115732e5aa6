// DD-1 trust at the PF (OMA CPM 8.3.2.9.1.2, TS 24.229 5.4.1.7): the
// third-party REGISTER reaches deferred delivery only from a trusted
// registrar (delivery.trustedRegistrars) and for one of the user's own
// identities; over gRPC the refusal is reject_status, which Kamailio answers
// the REGISTER with.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type ServiceError, status } from "@grpc/grpc-js";
import { buildConfig } from "../../../src/config/config.js";
import { CpmError } from "../../../src/errors/catalogue.js";
import { PfClient } from "../../../src/grpc/client.js";
import { type RunningServer, startGrpcServer } from "../../../src/grpc/server.js";
import { silentLogger } from "../../../src/log/logger.js";
import { NoMediaPlane } from "../../../src/media/media-plane.js";
import { type Envelope, ParticipatingFunction, type RegistrationHandler } from "../../../src/pf/participating-function.js";
import { SessionRegistry } from "../../../src/session/registry.js";
import { REGISTRAR_OK, registerAndResponse, thirdPartyRegister } from "../../fixtures/registration.js";
import { inviteFromFocus } from "../../fixtures/sip.js";

describe("DD-1 trust: ParticipatingFunction.reportRegistration and ReportRegistration over gRPC", () => {
  let dir: string;
  let server: RunningServer;
  let client: PfClient;
  let pf: ParticipatingFunction;
  const delivered: Envelope[] = [];
  const handler: RegistrationHandler = {
    onRegistration: async (env) => {
      delivered.push(env);
      return { accepted: true, deliveries: 1, notes: [] };
    },
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "cpm-pf-reg-"));
    const cfg = buildConfig({ delivery: { trustedRegistrars: "192.0.2.10,2001:db8:10::/64" } });
    const sessions = new SessionRegistry(dir, cfg.session, silentLogger());
    await sessions.load();
    const store = { append: async (o: { folder: string; messageId: string }) => ({ state: "stored" as const, ...o }) };
    pf = new ParticipatingFunction(cfg, sessions, store, new NoMediaPlane(), silentLogger(), { registrations: handler, anchorMedia: true });
    server = await startGrpcServer(pf, { host: "127.0.0.1", port: 0 }, silentLogger());
    client = new PfClient(`127.0.0.1:${server.port}`);
  });
  after(async () => {
    client.close();
    await server.shutdown();
    await rm(dir, { recursive: true, force: true });
  });

  test("DD-1 trust: a REGISTER from outside delivery.trustedRegistrars gets reject_status 403 and starts nothing", async () => {
    delivered.length = 0;
    const r = await client.reportRegistration({
      register: { raw: thirdPartyRegister({ to: "sip:mallory@home1.net" }), source: "127.0.0.1:5060", transport: "udp" },
    });
    assert.equal(r.rejectStatus, 403);
    assert.equal(r.rejectReason, "Forbidden");
    assert.equal(r.accepted, false);
    assert.equal(r.deliveries, 0);
    assert.match(r.notes.join(" "), /127\.0\.0\.1:5060, not a trusted registrar/);
    assert.equal(delivered.length, 0, "deferred delivery never saw it");
  });

  test("DD-1 trust: the trusted S-CSCF's REGISTER for one of the user's identities reaches deferred delivery (reject_status 0)", async () => {
    delivered.length = 0;
    const raw = thirdPartyRegister({ to: "tel:+1-212-555-1234", body: registerAndResponse() });
    const r = await client.reportRegistration({ register: { raw, source: "2001:db8:10::7:5060", transport: "udp" } });
    assert.equal(r.rejectStatus, 0);
    assert.equal(r.accepted, true);
    assert.equal(r.deliveries, 1);
    assert.equal(delivered.length, 1);
  });

  test("DD-1 trust: the trusted S-CSCF's REGISTER whose To is not among the P-Associated-URI identities: not accepted, a note, nothing started, 200 OK", async () => {
    delivered.length = 0;
    const raw = thirdPartyRegister({ to: "sip:mallory@home1.net", body: registerAndResponse() });
    const r = await client.reportRegistration({ register: { raw, source: "192.0.2.10:5060", transport: "udp" } });
    assert.equal(r.rejectStatus, 0);
    assert.equal(r.accepted, false);
    assert.match(r.notes.join(" "), /sip:mallory@home1\.net is not among the registered user's identities/);
    assert.equal(delivered.length, 0);
  });

  test("DD-1 trust: a malformed P-Associated-URI from the trusted S-CSCF -> INVALID_ARGUMENT naming it (Kamailio's fail-safe), nothing started", async () => {
    delivered.length = 0;
    const ok = REGISTRAR_OK.replace(/^P-Associated-URI: <sip:\+1.*$/m, "P-Associated-URI: <sip:broken");
    const raw = thirdPartyRegister({ body: registerAndResponse(ok) });
    await assert.rejects(
      client.reportRegistration({ register: { raw, source: "192.0.2.10:5060", transport: "udp" } }),
      (e: ServiceError) => {
        assert.equal(e.code, 3);
        assert.deepEqual(e.metadata.get("cpm-error-code"), ["CPM_ERR_BAD_HEADER"]);
        assert.match(e.details, /P-Associated-URI/);
        return true;
      },
    );
    assert.equal(delivered.length, 0);
  });

  test("drain: once the PF drains, a trusted REGISTER starts no delivery (the data stays for the next registration) and AnchorMedia is refused UNAVAILABLE (Kamailio relays the INVITE unanchored)", async () => {
    delivered.length = 0;
    pf.drain();
    const raw = thirdPartyRegister({ to: "tel:+1-212-555-1234", body: registerAndResponse() });
    const r = await client.reportRegistration({ register: { raw, source: "2001:db8:10::7:5060", transport: "udp" } });
    assert.equal(r.rejectStatus, 0, "the REGISTER itself is answered 200");
    assert.equal(r.deliveries, 0);
    assert.match(r.notes.join(" "), /draining/);
    assert.equal(delivered.length, 0);
    await assert.rejects(
      pf.anchorMedia({ raw: inviteFromFocus(), source: "127.0.0.1:5070" }),
      (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_DRAINING" && err.grpcStatus === status.UNAVAILABLE,
    );
  });
});
