// A typed client of cpm.pf.v1 for tools, tests and benchmarks (Kamailio uses
// the Python stubs generated from the same proto).
import type { MessageInitShape } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import { type Client, type ClientDuplexStream, credentials, makeGenericClientConstructor, type ServiceError } from "@grpc/grpc-js";
import {
  type AnchorMediaRequestSchema,
  type AnchorMediaResponse,
  AnchorMediaRequestSchema as AnchorReq,
  DecideRequestSchema as DecideReq,
  type DecideRequestSchema,
  type DecideResponse,
  HandleByeRequestSchema as HandleByeReq,
  type HandleByeRequestSchema,
  type HandleByeResponse,
  ObserveSessionRequestSchema as ObserveReq,
  type ObserveSessionRequestSchema,
  type ObserveSessionResponse,
  ParticipatingFunctionService,
  ReportMediaAnswerRequestSchema as ReportAnswerReq,
  type ReportByeOutcomeRequestSchema,
  type ReportByeOutcomeResponse,
  type ReportInviteOutcomeRequestSchema,
  type ReportInviteOutcomeResponse,
  ReportInviteOutcomeRequestSchema as ReportInviteReq,
  type ReportMediaAnswerRequestSchema,
  type ReportMediaAnswerResponse,
  ReportRegistrationRequestSchema as ReportRegistrationReq,
  type ReportRegistrationRequestSchema,
  type ReportRegistrationResponse,
  ReportByeOutcomeRequestSchema as ReportReq,
} from "../gen/cpm/pf/v1/pf_pb.js";
import { grpcServiceDefinition } from "./service-definition.js";

type Unary = (req: unknown, opts: { deadline: number }, cb: (err: ServiceError | null, res: unknown) => void) => void;

export class PfClient {
  private readonly client: Client & Record<string, Unary>;

  constructor(target: string) {
    const Ctor = makeGenericClientConstructor(grpcServiceDefinition(ParticipatingFunctionService), "ParticipatingFunctionService");
    this.client = new Ctor(target, credentials.createInsecure()) as unknown as Client & Record<string, Unary>;
  }

  private call<T>(method: string, req: unknown, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const fn = this.client[method] as Unary;
      fn.call(this.client, req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as T)));
    });
  }

  handleBye(req: MessageInitShape<typeof HandleByeRequestSchema>, timeoutMs = 2000): Promise<HandleByeResponse> {
    return this.call("handleBye", create(HandleByeReq, req), timeoutMs);
  }

  observeSession(req: MessageInitShape<typeof ObserveSessionRequestSchema>, timeoutMs = 2000): Promise<ObserveSessionResponse> {
    return this.call("observeSession", create(ObserveReq, req), timeoutMs);
  }

  reportByeOutcome(req: MessageInitShape<typeof ReportByeOutcomeRequestSchema>, timeoutMs = 2000): Promise<ReportByeOutcomeResponse> {
    return this.call("reportByeOutcome", create(ReportReq, req), timeoutMs);
  }

  anchorMedia(req: MessageInitShape<typeof AnchorMediaRequestSchema>, timeoutMs = 2000): Promise<AnchorMediaResponse> {
    return this.call("anchorMedia", create(AnchorReq, req), timeoutMs);
  }

  reportMediaAnswer(req: MessageInitShape<typeof ReportMediaAnswerRequestSchema>, timeoutMs = 2000): Promise<ReportMediaAnswerResponse> {
    return this.call("reportMediaAnswer", create(ReportAnswerReq, req), timeoutMs);
  }

  reportInviteOutcome(
    req: MessageInitShape<typeof ReportInviteOutcomeRequestSchema>,
    timeoutMs = 2000,
  ): Promise<ReportInviteOutcomeResponse> {
    return this.call("reportInviteOutcome", create(ReportInviteReq, req), timeoutMs);
  }

  reportRegistration(req: MessageInitShape<typeof ReportRegistrationRequestSchema>, timeoutMs = 2000): Promise<ReportRegistrationResponse> {
    return this.call("reportRegistration", create(ReportRegistrationReq, req), timeoutMs);
  }

  /**
   * Sends `reqs` on one Decide stream (ids as given) and resolves with the
   * responses in the order they came, once there is one per request.
   */
  decide(reqs: MessageInitShape<typeof DecideRequestSchema>[], timeoutMs = 2000): Promise<DecideResponse[]> {
    const open = this.client.decide as unknown as (opts: { deadline: number }) => ClientDuplexStream<unknown, DecideResponse>;
    const stream = open.call(this.client, { deadline: Date.now() + timeoutMs });
    return new Promise((resolve, reject) => {
      const out: DecideResponse[] = [];
      stream.on("data", (res: DecideResponse) => {
        out.push(res);
        if (out.length === reqs.length) {
          stream.end();
          resolve(out);
        }
      });
      stream.on("error", (err) => {
        if (out.length < reqs.length) reject(err);
      });
      for (const r of reqs) stream.write(create(DecideReq, r));
    });
  }

  close(): void {
    this.client.close();
  }
}
