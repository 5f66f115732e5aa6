// The gRPC server: the PF service plus the standard gRPC health service
// (grpc.health.v1.Health), SERVING once the PF is ready and NOT_SERVING from
// the start of a shutdown, and server reflection. It listens on TCP
// (host:port) or on a Unix domain socket (the choice where Kamailio runs on
// the same host: no port, file permissions decide who may connect), in
// either case optionally with TLS; with a CA file the client must present a
// certificate signed by it (mutual TLS).
import { chmodSync, lstatSync, readFileSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { CpmError } from "../errors/catalogue.js";
import { AdminService } from "../gen/cpm/pf/v1/admin_pb.js";
import { ParticipatingFunctionService } from "../gen/cpm/pf/v1/pf_pb.js";
import type { Logger } from "../log/logger.js";
import { type Metrics, noMetrics } from "../metrics/metrics.js";
import type { ParticipatingFunction } from "../pf/participating-function.js";
import { type AdminDeps, adminHandlers } from "./admin-service.js";
import { CallTracker, participatingFunctionHandlers } from "./pf-service.js";
import { addReflection } from "./reflection.js";
import { grpcServiceDefinition } from "./service-definition.js";

/** How long a shutdown waits for the requests being decided. */
const SHUTDOWN_GRACE_MS = 2000;

/** Where and how the server listens (config section `grpc`). */
export interface GrpcListen {
  host: string;
  port: number;
  /** A Unix domain socket path; when set, host and port are not used. */
  socket?: string;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** Clients must present a certificate signed by this CA (mutual TLS). */
  tlsCaFile?: string;
}

export interface RunningServer {
  /** The TCP port bound (0 on a Unix domain socket). */
  port: number;
  /** What a client dials: "host:port" or "unix:/path". */
  target: string;
  health: HealthImplementation;
  /**
   * Health SERVING (overall and the PF service). The server starts
   * NOT_SERVING and answers calls meanwhile: the caller says when the PF is
   * ready (after the fail-safe journal's first pass), so that Kamailio's
   * health timer sends decisions to another sidecar first until then.
   */
  serving(): void;
  /** Health NOT_SERVING (overall and the PF service) while calls are still served: the start of a drain. */
  notServing(): void;
  shutdown(): Promise<void>;
}

/** Resolves true when something accepts connections on the socket path. */
function listening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}

/** The address to bind; a socket file left by a process that died is removed, one still served is refused. */
async function bindAddress(listen: GrpcListen): Promise<string> {
  if (!listen.socket) return `${listen.host}:${listen.port}`;
  const path = listen.socket;
  let stale = false;
  try {
    stale = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw new CpmError("CPM_ERR_CONFIG", `grpc.socket: ${String(err)}`);
  }
  if (stale) {
    if (await listening(path)) throw new CpmError("CPM_ERR_CONFIG", `grpc.socket: ${path} is served by another process`);
    unlinkSync(path);
  }
  return `unix:${path}`;
}

function read(key: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new CpmError("CPM_ERR_CONFIG", `${key}: ${(err as Error).message}`);
  }
}

export function serverCredentials(listen: GrpcListen): ServerCredentials {
  if (!listen.tlsCertFile) return ServerCredentials.createInsecure();
  const ca = listen.tlsCaFile ? read("grpc.tlsCaFile", listen.tlsCaFile) : null;
  const pair = { cert_chain: read("grpc.tlsCertFile", listen.tlsCertFile), private_key: read("grpc.tlsKeyFile", listen.tlsKeyFile ?? "") };
  return ServerCredentials.createSsl(ca, [pair], ca !== null);
}

export async function startGrpcServer(
  pf: ParticipatingFunction,
  listen: GrpcListen,
  log: Logger,
  metrics: Metrics = noMetrics,
  admin?: AdminDeps,
): Promise<RunningServer> {
  // channelz bookkeeping costs CPU on every call and nothing here reads it.
  const server = new Server({ "grpc.max_receive_message_length": 1024 * 1024, "grpc.enable_channelz": 0 });
  const calls = new CallTracker();
  server.addService(grpcServiceDefinition(ParticipatingFunctionService), participatingFunctionHandlers(pf, log, metrics, calls));
  // the operator's RPCs: same server, same transport security
  if (admin) server.addService(grpcServiceDefinition(AdminService), adminHandlers(admin, log, metrics));
  const health = new HealthImplementation({ "": "NOT_SERVING", [ParticipatingFunctionService.typeName]: "NOT_SERVING" });
  health.addToServer(server);
  addReflection(server);
  const credentials = serverCredentials(listen);
  const address = await bindAddress(listen);
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, credentials, (err, p) => (err ? reject(err) : resolve(p)));
  });
  // owner and group only: Kamailio's user joins the sidecar's group to connect
  if (listen.socket) chmodSync(listen.socket, 0o660);
  const target = listen.socket ? address : `${listen.host}:${bound}`;
  const status = (s: "SERVING" | "NOT_SERVING") => {
    health.setStatus("", s);
    health.setStatus(ParticipatingFunctionService.typeName, s);
  };
  const notServing = () => status("NOT_SERVING");
  log.info("gRPC listening", { target, tls: listen.tlsCertFile ? (listen.tlsCaFile ? "mutual" : "server") : "off" });
  return {
    port: listen.socket ? 0 : bound,
    target,
    health,
    serving: () => status("SERVING"),
    notServing,
    shutdown: async () => {
      notServing();
      // Kamailio keeps its Decide streams and connections open for good: end the streams, let the
      // requests being decided finish (at most SHUTDOWN_GRACE_MS), then close what is left
      for (const call of calls.streams) if (!call.writableEnded) call.end();
      const until = Date.now() + SHUTDOWN_GRACE_MS;
      while (calls.inFlight > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      server.forceShutdown();
    },
  };
}
