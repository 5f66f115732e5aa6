// The sidecar's gRPC service in-process against a real Dovecot: the contract
// Kamailio relies on, bad input, the health service, and a restart.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { credentials, makeGenericClientConstructor, type ServiceError, status } from "@grpc/grpc-js";
import { buildConfig, type Config } from "../../src/config/config.js";
import { ByeCause, GsoStorage_State, Mode, Side } from "../../src/gen/cpm/pf/v1/pf_pb.js";
import { PfClient } from "../../src/grpc/client.js";
import { type GrpcListen, type RunningServer, startGrpcServer } from "../../src/grpc/server.js";
import { silentLogger } from "../../src/log/logger.js";
import { NoMediaPlane } from "../../src/media/media-plane.js";
import { ParticipatingFunction } from "../../src/pf/participating-function.js";
import { SessionRegistry } from "../../src/session/registry.js";
import { Mailboxes } from "../../src/store/mailboxes.js";
import { parseGso } from "../../src/xml/gso.js";
import { bye, inviteFromFocus } from "../fixtures/sip.js";
import { type DovecotInstance, startDovecot } from "../harness/dovecot.js";
import { folderMessages } from "../harness/group-chat.js";
import { healthStatus } from "../harness/health.js";
import { waitFor } from "../harness/wait.js";

let dovecot: DovecotInstance;
let dir: string;
let cfg: Config;

interface Sidecar {
  server: RunningServer;
  store: Mailboxes;
  client: PfClient;
  stop(): Promise<void>;
}

async function startSidecar(listen: GrpcListen = { host: "127.0.0.1", port: 0 }): Promise<Sidecar> {
  const log = silentLogger();
  const sessions = new SessionRegistry(cfg.session.stateDir, cfg.session, log);
  await sessions.load();
  const store = new Mailboxes(cfg.store, log);
  await store.start();
  const pf = new ParticipatingFunction(cfg, sessions, store, new NoMediaPlane(), log);
  const server = await startGrpcServer(pf, listen, log).catch(async (err) => {
    await sessions.close();
    await store.close();
    throw err;
  });
  server.serving();
  const client = new PfClient(server.target);
  return {
    server,
    store,
    client,
    stop: async () => {
      client.close();
      await server.shutdown();
      await sessions.close();
      await store.close();
    },
  };
}

const fetchFolder = (folder: string) => folderMessages(dovecot, folder);

before(async () => {
  dovecot = await startDovecot();
  dir = await mkdtemp(join(tmpdir(), "cpm-pf-grpc-"));
  cfg = buildConfig({
    // these cases are about the answer after the GSO is in the mailbox: no budget on a loaded machine
    store: {
      host: dovecot.host,
      port: dovecot.port,
      user: dovecot.user,
      password: dovecot.password,
      spoolDir: join(dir, "spool"),
      gsoBudgetMs: 10_000,
    },
    session: { stateDir: join(dir, "state") },
  });
});

after(async () => {
  await dovecot?.stop();
  await rm(dir, { recursive: true, force: true });
});

test("BYE-B3: HandleBye over gRPC stores the GSO in Dovecot before it answers", async () => {
  const sc = await startSidecar();
  try {
    const obs = await sc.client.observeSession({ message: { raw: inviteFromFocus({ callId: "g1@cf", conversationId: "conv-g1" }) } });
    assert.equal(obs.updated, true);
    assert.equal(obs.participantCount, 3);
    const res = await sc.client.handleBye({
      bye: { raw: bye(['Reason: SIP;cause=410;text="Gone"', "Referred-By: <sip:admin@example.net>"], { callId: "g1@cf" }) },
    });
    assert.equal(res.mode, Mode.B2BUA);
    assert.equal(res.side, Side.NETWORK);
    assert.equal(res.cause, ByeCause.TERMINATED);
    assert.equal(res.clientReason, 'SIP;cause=410;text="Gone"');
    assert.equal(res.gso?.state, GsoStorage_State.STORED);
    assert.equal(res.gso?.folder, "Default/conv-g1/contrib-1");
    const [raw] = await fetchFolder("Default/conv-g1/contrib-1");
    assert.ok(raw);
    assert.match(raw, /^Content-Type: application\/group-state-object\+xml\r$/m);
    assert.match(raw, /^Conversation-ID: conv-g1\r$/m);
    const gso = parseGso(raw.slice(raw.indexOf("\r\n\r\n") + 4));
    assert.equal(gso.status, "removed");
    assert.equal(gso.referredBy, "sip:admin@example.net");
    assert.equal(gso.participants.length, 3);
  } finally {
    await sc.stop();
  }
});

test("bad input gets INVALID_ARGUMENT with a reason, and the sidecar keeps serving", async () => {
  const sc = await startSidecar();
  try {
    await assert.rejects(sc.client.handleBye({ bye: { raw: Buffer.from("\u0000garbage") } }), (e: ServiceError) => {
      assert.equal(e.code, status.INVALID_ARGUMENT);
      assert.match(e.details, /CPM_ERR_BAD_SIP/);
      return true;
    });
    await assert.rejects(sc.client.handleBye({ bye: { raw: inviteFromFocus() } }), (e: ServiceError) => e.code === status.INVALID_ARGUMENT);
    // Undecodable protobuf on the wire.
    const Raw = makeGenericClientConstructor(
      {
        handleBye: {
          path: "/cpm.pf.v1.ParticipatingFunctionService/HandleBye",
          requestStream: false,
          responseStream: false,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      "Raw",
    );
    const raw = new Raw(`127.0.0.1:${sc.server.port}`, credentials.createInsecure()) as unknown as {
      handleBye(b: Buffer, cb: (e: ServiceError | null) => void): void;
      close(): void;
    };
    const err = await new Promise<ServiceError | null>((resolve) => raw.handleBye(Buffer.from([0x0a, 0xff, 0xff, 0xff]), resolve));
    raw.close();
    assert.ok(err);
    assert.notEqual(err.code, status.OK);
    // Still serving, and the standard health service says so.
    assert.equal(await healthStatus(`127.0.0.1:${sc.server.port}`, credentials.createInsecure()), "SERVING");
    const ok = await sc.client.handleBye({ bye: { raw: bye([], { callId: "unknown@cf" }) } });
    assert.equal(ok.mode, Mode.PROXY);
  } finally {
    await sc.stop();
  }
});

test("SHAPE-1: the Decide stream answers HandleBye / ObserveSession like the unary RPCs, each response by id, a bad request with a DecideError", async () => {
  const sc = await startSidecar();
  try {
    const callId = "decide-1@cf";
    const res = await sc.client.decide([
      { id: 7n, request: { case: "observeSession", value: { message: { raw: inviteFromFocus({ callId }) } } } },
      { id: 8n, request: { case: "handleBye", value: { bye: { raw: Buffer.from("\u0000garbage") } } } },
      { id: 9n, request: { case: undefined } },
    ]);
    const byId = new Map(res.map((r) => [r.id, r.response]));
    const observed = byId.get(7n);
    assert.equal(observed?.case, "observeSession");
    assert.equal(observed?.value.sessionKey, callId);
    const bad = byId.get(8n);
    assert.equal(bad?.case, "error");
    assert.equal(bad?.value.grpcCode, status.INVALID_ARGUMENT);
    assert.equal(bad?.value.code, "CPM_ERR_BAD_SIP");
    const empty = byId.get(9n);
    assert.equal(empty?.case, "error");
    assert.equal(empty?.value.code, "CPM_ERR_BAD_REQUEST");
    // the stream carried on after the errors: the observed session's BYE (cause 480 -> B2BUA, GSO)
    const [decided] = await sc.client.decide([
      { id: 1n, request: { case: "handleBye", value: { bye: { raw: bye(["Reason: SIP;cause=480"], { callId }) } } } },
    ]);
    assert.equal(decided?.response.case, "handleBye");
    if (decided?.response.case === "handleBye") {
      assert.equal(decided.response.value.mode, Mode.B2BUA);
      assert.equal(decided.response.value.cause, ByeCause.INACTIVITY);
      assert.equal(decided.response.value.gso?.state, GsoStorage_State.STORED);
    }
  } finally {
    await sc.stop();
  }
});

test("BYE-B4: the participant list survives a sidecar restart", async () => {
  const first = await startSidecar();
  await first.client.observeSession({ message: { raw: inviteFromFocus({ callId: "g2@cf", conversationId: "conv-g2" }) } });
  await first.stop();
  const second = await startSidecar();
  try {
    const res = await second.client.handleBye({ bye: { raw: bye(["Reason: SIP;cause=480"], { callId: "g2@cf" }) } });
    assert.equal(res.cause, ByeCause.INACTIVITY);
    assert.equal(res.gso?.state, GsoStorage_State.STORED);
    const [raw] = await fetchFolder("Default/conv-g2/contrib-1");
    assert.equal(parseGso((raw ?? "").split("\r\n\r\n")[1] ?? "").participants.length, 3);
    const out = await second.client.reportByeOutcome({ sessionKey: "g2@cf", statusCode: 200, mode: Mode.B2BUA });
    assert.equal(out.released, true);
  } finally {
    await second.stop();
  }
});

test("BYE-B5: Message Store down during a BYE -> the GSO is spooled, HandleBye answers, and it lands once Dovecot is back", async () => {
  const sc = await startSidecar();
  try {
    await sc.client.observeSession({ message: { raw: inviteFromFocus({ callId: "g3@cf", conversationId: "conv-g3" }) } });
    await dovecot.kill();
    const res = await sc.client.handleBye(
      { bye: { raw: bye(['Reason: SIP;cause=503;text="Service Unavailable"'], { callId: "g3@cf" }) } },
      10_000,
    );
    assert.equal(res.cause, ByeCause.NETWORK);
    assert.equal(res.gso?.state, GsoStorage_State.SPOOLED);
    assert.equal(res.gso?.folder, "Default/conv-g3/contrib-1");
    await dovecot.restart();
    const [raw] = await waitFor(
      async () => {
        const msgs = await fetchFolder("Default/conv-g3/contrib-1").catch(() => []);
        return msgs.length > 0 ? msgs : undefined;
      },
      15_000,
      200,
      "spooled GSO stored after Dovecot returned",
    );
    assert.ok(raw?.includes(`Message-ID: <${res.gso?.messageId}>`));
    assert.equal(parseGso((raw ?? "").split("\r\n\r\n")[1] ?? "").participants.length, 3);
    // the spool entry goes once the APPEND is confirmed (just after the object is visible)
    await waitFor(() => sc.store.stats().spoolPending === 0, 5000, 20, "spool drained");
  } finally {
    await sc.stop();
  }
});

test("BYE-B5: a HandleBye waits for a frozen Message Store no longer than half of what its caller waits (the Decide request's budget_ms, a unary call's deadline), not store.gsoBudgetMs: the GSO is spooled, answered in time, stored once after", async () => {
  const sc = await startSidecar();
  try {
    for (const id of ["g5", "g6"]) {
      await sc.client.observeSession({ message: { raw: inviteFromFocus({ callId: `${id}@cf`, conversationId: `conv-${id}` }) } });
    }
    await dovecot.signal("SIGSTOP");
    let decided: Awaited<ReturnType<typeof sc.client.decide>>;
    let unary: Awaited<ReturnType<typeof sc.client.handleBye>>;
    try {
      // the cap here is 10 s: without the caller's budget both would outwait their 2 s deadlines
      decided = await sc.client.decide(
        [
          {
            id: 1n,
            budgetMs: 400,
            request: { case: "handleBye", value: { bye: { raw: bye(["Reason: SIP;cause=480"], { callId: "g5@cf" }) } } },
          },
        ],
        2000,
      );
      unary = await sc.client.handleBye({ bye: { raw: bye(["Reason: SIP;cause=480"], { callId: "g6@cf" }) } }, 2000);
    } finally {
      await dovecot.signal("SIGCONT");
    }
    const [d] = decided;
    assert.equal(d?.response.case, "handleBye");
    if (d?.response.case === "handleBye") assert.equal(d.response.value.gso?.state, GsoStorage_State.SPOOLED);
    assert.equal(unary.gso?.state, GsoStorage_State.SPOOLED);
    await waitFor(() => sc.store.stats().spoolPending === 0, 15_000, 50, "spool drained");
    for (const id of ["g5", "g6"]) assert.equal((await fetchFolder(`Default/conv-${id}/contrib-1`)).length, 1, id);
  } finally {
    await sc.stop();
  }
});

test("grpc.socket: the sidecar serves on a Unix domain socket (mode 0660); a stale socket file is replaced, a served one refused", async () => {
  const socket = join(dir, "grpc.sock");
  const first = await startSidecar({ host: "127.0.0.1", port: 0, socket });
  try {
    assert.equal(first.server.target, `unix:${socket}`);
    assert.equal(statSync(socket).mode & 0o777, 0o660);
    const ok = await first.client.handleBye({ bye: { raw: bye([], { callId: "unix@cf" }) } });
    assert.equal(ok.mode, Mode.PROXY);
    await assert.rejects(startSidecar({ host: "127.0.0.1", port: 0, socket }), /served by another process/);
  } finally {
    await first.stop();
  }
  // what a SIGKILLed sidecar leaves behind: the socket file, nobody listening
  execFileSync("python3", ["-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", join(dir, "stale.sock")]);
  const second = await startSidecar({ host: "127.0.0.1", port: 0, socket: join(dir, "stale.sock") });
  try {
    assert.equal(await healthStatus(second.server.target, credentials.createInsecure()), "SERVING");
  } finally {
    await second.stop();
  }
});
