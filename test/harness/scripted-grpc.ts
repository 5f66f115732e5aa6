// A gRPC server in the test process standing in for the sidecar: the test
// scripts the ParticipatingFunctionService handlers it needs (Kamailio
// bridge tests). Bound on a free 127.0.0.1 port.
import { create } from "@bufbuild/protobuf";
import {
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServiceError,
  type sendUnaryData,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import {
  type DecideRequest,
  type DecideResponse,
  DecideResponseSchema,
  type HandleByeRequest,
  type HandleByeResponse,
  type ObserveSessionRequest,
  type ObserveSessionResponse,
  ParticipatingFunctionService,
  type ReportByeOutcomeRequest,
  type ReportByeOutcomeResponse,
} from "../../src/gen/cpm/pf/v1/pf_pb.js";
import { grpcServiceDefinition } from "../../src/grpc/service-definition.js";
import { freePort } from "./ports.js";

export interface ScriptedGrpc {
  /** "127.0.0.1:<port>", for Kamailio's CPM_PF_GRPC_TARGET. */
  target: string;
  /** Graceful shutdown, forced after 1 s. */
  stop(): Promise<void>;
}

/** Serves `handlers` (a method left out answers UNIMPLEMENTED, as an older sidecar would). */
export async function startScriptedGrpc(handlers: UntypedServiceImplementation): Promise<ScriptedGrpc> {
  const server = new Server();
  server.addService(grpcServiceDefinition(ParticipatingFunctionService), handlers);
  const port = await freePort();
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  return {
    target: `127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1000).unref();
      }),
  };
}

/** A unary handler from an async function (a rejection becomes the call's error status). */
export function unaryHandler<Req, Res>(fn: (req: Req) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) =>
    void fn(call.request).then(
      (r) => cb(null, r),
      (e: Partial<ServiceError>) => cb(e),
    );
}

/** A Decide stream handler answering HandleBye and ObserveSession requests by id with `handlers`. */
export function decideHandler(handlers: {
  handleBye: (req: HandleByeRequest) => Promise<HandleByeResponse>;
  observeSession: (req: ObserveSessionRequest) => Promise<ObserveSessionResponse>;
  reportByeOutcome?: (req: ReportByeOutcomeRequest) => Promise<ReportByeOutcomeResponse>;
  onStream?: () => void;
}) {
  return (call: ServerDuplexStream<DecideRequest, DecideResponse>) => {
    handlers.onStream?.();
    call.on("data", async (req: DecideRequest) => {
      const r = req.request;
      if (r.case === "handleBye")
        call.write(create(DecideResponseSchema, { id: req.id, response: { case: "handleBye", value: await handlers.handleBye(r.value) } }));
      else if (r.case === "observeSession")
        call.write(
          create(DecideResponseSchema, {
            id: req.id,
            response: { case: "observeSession", value: await handlers.observeSession(r.value) },
          }),
        );
      else if (r.case === "reportByeOutcome" && handlers.reportByeOutcome)
        call.write(
          create(DecideResponseSchema, {
            id: req.id,
            response: { case: "reportByeOutcome", value: await handlers.reportByeOutcome(r.value) },
          }),
        );
    });
    call.on("end", () => call.end());
  };
}
