#!/usr/bin/env node
// The sidecar (config, session table, Message Store, gRPC) with
// test/fixtures/stub-media-plane.ts instead of the MSRP media plane, for
// end-to-end tests of the SIP side of anchoring: Kamailio's body rewrite, the
// 488 and fail-safe paths. STUB_MEDIA_MODE=ok|bad-sdp|slow,
// STUB_MEDIA_DELAY_MS, STUB_MEDIA_PORT. Every media-plane call is logged as
// {"message":"stub media","op":...,"callId":...}. Start it with
// startSidecar(env, { entry: STUB_MEDIA_SIDECAR }).
import { fileURLToPath } from "node:url";
import { loadConfig } from "../../src/config/config.js";
import { startGrpcServer } from "../../src/grpc/server.js";
import { componentLogger, createRootLogger } from "../../src/log/logger.js";
import type { MediaPlane } from "../../src/media/media-plane.js";
import { ParticipatingFunction } from "../../src/pf/participating-function.js";
import { SessionRegistry } from "../../src/session/registry.js";
import { Mailboxes } from "../../src/store/mailboxes.js";
import { StubMediaPlane } from "../fixtures/stub-media-plane.js";

export const STUB_MEDIA_SIDECAR = fileURLToPath(import.meta.url);

async function main(): Promise<void> {
  const cfg = loadConfig();
  const root = createRootLogger(cfg.log.level);
  const log = componentLogger("main", root);
  const sessions = new SessionRegistry(cfg.session.stateDir, cfg.session, componentLogger("session", root));
  await sessions.load();
  const store = new Mailboxes(cfg.store, componentLogger("store", root));
  await store.start();
  const stub = new StubMediaPlane({
    mode: (process.env.STUB_MEDIA_MODE as "ok" | "bad-sdp" | "slow" | undefined) ?? "ok",
    delayMs: Number(process.env.STUB_MEDIA_DELAY_MS ?? 1000),
    port: Number(process.env.STUB_MEDIA_PORT ?? 40000),
  });
  const media: MediaPlane = new Proxy(stub, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        const first = args[0];
        const callId = typeof first === "string" ? first : (first as { session?: { sessionKey?: string } })?.session?.sessionKey;
        log.info("stub media", { op: String(prop), callId, sdp: typeof args[1] === "string" ? args[1] : undefined });
        return v.apply(target, args);
      };
    },
  });
  const pf = new ParticipatingFunction(cfg, sessions, store, media, componentLogger("pf", root), { anchorMedia: true });
  const server = await startGrpcServer(pf, cfg.grpc, componentLogger("grpc", root));
  server.serving();
  log.info("sidecar ready", { port: server.port, stub: true, pid: process.pid });
  const stop = async () => {
    await server.shutdown();
    await sessions.close();
    await store.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop());
  process.on("SIGINT", () => void stop());
}

if (process.argv[1] === STUB_MEDIA_SIDECAR) {
  main().catch((err) => {
    process.stderr.write(`stub sidecar: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
