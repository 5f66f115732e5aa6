// grpc.health.v1 on the PF's gRPC server: NOT_SERVING until the PF says it
// is ready (while it already answers calls), SERVING then, NOT_SERVING
// (overall and the PF service) from the start of a shutdown, seen by a
// client that watches (what a load balancer or Kamailio's probe relies on).
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { credentials, makeGenericClientConstructor } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { buildConfig } from "../../../src/config/config.js";
import { DecideRequestSchema, ParticipatingFunctionService } from "../../../src/gen/cpm/pf/v1/pf_pb.js";
import { type RunningServer, startGrpcServer } from "../../../src/grpc/server.js";
import { grpcServiceDefinition } from "../../../src/grpc/service-definition.js";
import { silentLogger } from "../../../src/log/logger.js";
import { NoMediaPlane } from "../../../src/media/media-plane.js";
import { ParticipatingFunction } from "../../../src/pf/participating-function.js";
import { SessionRegistry } from "../../../src/session/registry.js";
import { healthStatus } from "../../harness/health.js";

/** A PF gRPC server on a free port for `body`; the PF and its records are closed after it. */
async function withServer(body: (server: RunningServer) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "cpm-grpc-"));
  const cfg = buildConfig({});
  const sessions = new SessionRegistry(dir, cfg.session, silentLogger());
  const store = { append: async (o: { folder: string; messageId: string }) => ({ state: "stored" as const, ...o }) };
  const pf = new ParticipatingFunction(cfg, sessions, store, new NoMediaPlane(), silentLogger());
  try {
    await body(await startGrpcServer(pf, { host: "127.0.0.1", port: 0 }, silentLogger()));
  } finally {
    pf.close();
    await sessions.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test("SHAPE-1 health: NOT_SERVING while the sidecar is not ready yet (Kamailio's health timer sends decisions to another sidecar first), SERVING once it is; a watching client sees NOT_SERVING for the PF service as soon as the shutdown starts", async () => {
  await withServer(async (server) => {
    assert.equal(await healthStatus(server.target, credentials.createInsecure()), "NOT_SERVING");
    server.serving();
    assert.equal(await healthStatus(server.target, credentials.createInsecure()), "SERVING");
    const Health = makeGenericClientConstructor(healthService as never, "Health");
    const client = new Health(server.target, credentials.createInsecure()) as unknown as {
      Watch(req: { service: string }): NodeJS.EventEmitter & { cancel(): void };
      close(): void;
    };
    const seen: string[] = [];
    const call = client.Watch({ service: ParticipatingFunctionService.typeName });
    const notServing = new Promise<void>((resolve) => {
      call.on("data", (r: { status: string }) => {
        seen.push(r.status);
        if (r.status === "NOT_SERVING") resolve();
      });
      call.on("error", () => {});
    });
    while (seen.length === 0) await new Promise((r) => setTimeout(r, 10));
    const down = server.shutdown();
    await notServing;
    assert.deepEqual(seen, ["SERVING", "NOT_SERVING"]);
    call.cancel();
    client.close();
    await down;
  });
});

test("shutdown: the server ends Kamailio's open Decide streams (status OK) instead of waiting for Kamailio to close them", async () => {
  await withServer(async (server) => {
    const Ctor = makeGenericClientConstructor(grpcServiceDefinition(ParticipatingFunctionService), "ParticipatingFunctionService");
    const client = new Ctor(server.target, credentials.createInsecure()) as unknown as {
      decide(): NodeJS.EventEmitter & { write(m: unknown): void };
      close(): void;
    };
    const stream = client.decide();
    const answered = new Promise((resolve) => stream.once("data", resolve));
    // one request answered: the stream is up, as Kamailio's are between decisions
    stream.write(
      create(DecideRequestSchema, { id: 1n, request: { case: "observeSession", value: { message: { raw: Buffer.from("x") } } } }),
    );
    await answered;
    const status = new Promise<{ code: number }>((resolve) => stream.once("status", resolve));
    stream.on("error", () => {});
    await server.shutdown();
    assert.equal((await status).code, 0, "ended by the server with OK, not cut");
    client.close();
  });
});
