// cpm.pf.v1.ParticipatingFunctionService handlers: proto <-> the
// ParticipatingFunction. Every handler catches everything: a bad request gets
// a gRPC status with a clear message and a log line, never a crash.
import { create } from "@bufbuild/protobuf";
import { Metadata, type ServerUnaryCall, type sendUnaryData, status, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { asCpmError } from "../errors/catalogue.js";
import {
  type AnchorMediaRequest,
  AnchorMediaResponseSchema,
  ByeCause,
  GsoStorage_State,
  type HandleByeRequest,
  HandleByeResponseSchema,
  Mode,
  type ObserveSessionRequest,
  ObserveSessionResponseSchema,
  type ReportByeOutcomeRequest,
  ReportByeOutcomeResponseSchema,
  type ReportInviteOutcomeRequest,
  ReportInviteOutcomeResponseSchema,
  type ReportMediaAnswerRequest,
  ReportMediaAnswerResponseSchema,
  Side,
  type SipEnvelope,
} from "../gen/cpm/pf/v1/pf_pb.js";
import type { Logger } from "../log/logger.js";
import type { Envelope, ParticipatingFunction } from "../pf/participating-function.js";
import type { ByeCause as Cause } from "../procedures/handle-bye.js";

const CAUSE: Record<Cause, ByeCause> = {
  "participant-left": ByeCause.PARTICIPANT_LEFT,
  terminated: ByeCause.TERMINATED,
  inactivity: ByeCause.INACTIVITY,
  network: ByeCause.NETWORK,
};

function envelope(e: SipEnvelope | undefined): Envelope {
  return { raw: e?.raw ?? new Uint8Array(), source: e?.source ?? "" };
}

function unary<Req, Res>(log: Logger, name: string, fn: (req: Req) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    fn(call.request).then(
      (res) => callback(null, res),
      (err: unknown) => {
        const e = asCpmError(err);
        const level = e.grpcStatus === status.INVALID_ARGUMENT ? "warn" : "error";
        log.log(level, "request refused", { rpc: name, code: e.code, reason: e.message, cause: e.cause ? String(e.cause) : undefined });
        // Trailers name the catalogue entry and the SIP status a peer should
        // see (e.g. AnchorMedia + CPM_ERR_BAD_SDP -> Kamailio answers 488).
        const metadata = new Metadata();
        metadata.set("cpm-error-code", e.code);
        metadata.set("cpm-sip-status", String(e.sipStatus));
        callback({ code: e.grpcStatus, details: e.message, metadata });
      },
    );
  };
}

export function participatingFunctionHandlers(pf: ParticipatingFunction, log: Logger): UntypedServiceImplementation {
  return {
    handleBye: unary(log, "HandleBye", async (req: HandleByeRequest) => {
      const r = await pf.handleBye(envelope(req.bye));
      return create(HandleByeResponseSchema, {
        mode: r.mode === "b2bua" ? Mode.B2BUA : Mode.PROXY,
        side: r.side === "network" ? Side.NETWORK : Side.CLIENT,
        cause: r.side === "network" ? CAUSE[r.cause] : ByeCause.UNSPECIFIED,
        reasonCause: r.reasonCause,
        clientReason: r.clientReason,
        waitForClients: true,
        sessionKey: r.sessionKey,
        notes: r.notes,
        gso:
          r.gso.state === "not-required"
            ? { state: GsoStorage_State.NOT_REQUIRED }
            : {
                state: r.gso.state === "stored" ? GsoStorage_State.STORED : GsoStorage_State.SPOOLED,
                folder: r.gso.folder,
                messageId: r.gso.messageId,
              },
      });
    }),
    observeSession: unary(log, "ObserveSession", async (req: ObserveSessionRequest) => {
      const r = await pf.observe(envelope(req.message));
      return create(ObserveSessionResponseSchema, r);
    }),
    anchorMedia: unary(log, "AnchorMedia", async (req: AnchorMediaRequest) => {
      const r = await pf.anchorMedia(envelope(req.invite));
      return create(AnchorMediaResponseSchema, {
        sessionKey: r.sessionKey,
        clientBody: r.clientBody,
        clientContentType: r.clientContentType,
        cfLeg: { host: r.cfLeg.host, port: r.cfLeg.port, path: r.cfLeg.path, setup: r.cfLeg.setup, tls: r.cfLeg.tls },
      });
    }),
    reportMediaAnswer: unary(log, "ReportMediaAnswer", async (req: ReportMediaAnswerRequest) => {
      const anchored = await pf.mediaAnswer(req.sessionKey, envelope(req.answer));
      return create(ReportMediaAnswerResponseSchema, { anchored });
    }),
    reportInviteOutcome: unary(log, "ReportInviteOutcome", async (req: ReportInviteOutcomeRequest) => {
      const released = await pf.inviteOutcome(req.sessionKey, req.statusCode);
      return create(ReportInviteOutcomeResponseSchema, { released });
    }),
    reportByeOutcome: unary(log, "ReportByeOutcome", async (req: ReportByeOutcomeRequest) => {
      const released = await pf.byeOutcome(req.sessionKey, req.statusCode);
      return create(ReportByeOutcomeResponseSchema, { released });
    }),
  };
}
