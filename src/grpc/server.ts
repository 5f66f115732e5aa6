// The gRPC server: the PF service plus the standard gRPC health service
// (grpc.health.v1.Health), SERVING once the PF is ready.
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { ParticipatingFunctionService } from "../gen/cpm/pf/v1/pf_pb.js";
import type { Logger } from "../log/logger.js";
import type { ParticipatingFunction } from "../pf/participating-function.js";
import { participatingFunctionHandlers } from "./pf-service.js";
import { grpcServiceDefinition } from "./service-definition.js";

export interface RunningServer {
  port: number;
  health: HealthImplementation;
  shutdown(): Promise<void>;
}

export async function startGrpcServer(pf: ParticipatingFunction, host: string, port: number, log: Logger): Promise<RunningServer> {
  // channelz bookkeeping costs CPU on every call and nothing here reads it.
  const server = new Server({ "grpc.max_receive_message_length": 1024 * 1024, "grpc.enable_channelz": 0 });
  server.addService(grpcServiceDefinition(ParticipatingFunctionService), participatingFunctionHandlers(pf, log));
  const health = new HealthImplementation({ "": "NOT_SERVING", [ParticipatingFunctionService.typeName]: "NOT_SERVING" });
  health.addToServer(server);
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  health.setStatus("", "SERVING");
  health.setStatus(ParticipatingFunctionService.typeName, "SERVING");
  return {
    port: bound,
    health,
    shutdown: () =>
      new Promise<void>((resolve) => {
        health.setStatus("", "NOT_SERVING");
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000).unref();
      }),
  };
}
