// cpm.pf.v1.ParticipatingFunctionService handlers: proto <-> the
// ParticipatingFunction. Every handler catches everything: a bad request gets
// a gRPC status with a clear message and a log line, never a crash.
import { create } from "@bufbuild/protobuf";
import {
  Metadata,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { asCpmError, CpmError } from "../errors/catalogue.js";
import {
  type AnchorMediaRequest,
  AnchorMediaResponseSchema,
  ByeCause,
  type DecideRequest,
  type DecideResponse,
  DecideResponseSchema,
  GsoStorage_State,
  type HandleByeRequest,
  type HandleByeResponse,
  HandleByeResponseSchema,
  Mode,
  type ObserveSessionRequest,
  type ObserveSessionResponse,
  ObserveSessionResponseSchema,
  type ReportByeOutcomeRequest,
  type ReportByeOutcomeResponse,
  ReportByeOutcomeResponseSchema,
  type ReportInviteOutcomeRequest,
  ReportInviteOutcomeResponseSchema,
  type ReportMediaAnswerRequest,
  ReportMediaAnswerResponseSchema,
  type ReportRegistrationRequest,
  ReportRegistrationResponseSchema,
  Side,
  type SipEnvelope,
} from "../gen/cpm/pf/v1/pf_pb.js";
import type { Logger } from "../log/logger.js";
import { type Metrics, noMetrics } from "../metrics/metrics.js";
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

function refused(log: Logger, rpc: string, err: unknown): CpmError {
  const e = asCpmError(err);
  const level = e.grpcStatus === status.INVALID_ARGUMENT ? "warn" : "error";
  log.log(level, "request refused", { rpc, code: e.code, reason: e.message, cause: e.cause ? String(e.cause) : undefined });
  return e;
}

const seconds = (since: number) => (performance.now() - since) / 1000;

/** A unary handler: the answer, or a gRPC status from the error catalogue with a log line (never a crash). */
export function unary<Req, Res>(log: Logger, metrics: Metrics, name: string, fn: (req: Req, answerBy: number | undefined) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    const started = performance.now();
    fn(call.request, onClock(started, call.getDeadline())).then(
      (res) => {
        metrics.decision(name, "ok", seconds(started));
        callback(null, res);
      },
      (err: unknown) => {
        const e = refused(log, name, err);
        metrics.decision(name, e.code, seconds(started));
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

/** When the caller stops waiting, on the performance.now() clock: its gRPC deadline (a Date or ms since the epoch; Infinity: none). */
function onClock(now: number, deadline: Date | number): number | undefined {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? now + (at - Date.now()) : undefined;
}

async function handleBye(
  pf: ParticipatingFunction,
  metrics: Metrics,
  req: HandleByeRequest,
  answerBy: number | undefined,
): Promise<HandleByeResponse> {
  const r = await pf.handleBye(envelope(req.bye), new Date(), answerBy === undefined ? {} : { answerBy });
  metrics.bye(r.mode, r.side, r.side === "network" ? r.cause : "none", r.gso.state);
  return create(HandleByeResponseSchema, {
    mode: r.mode === "b2bua" ? Mode.B2BUA : Mode.PROXY,
    side: r.side === "network" ? Side.NETWORK : Side.CLIENT,
    cause: r.side === "network" ? CAUSE[r.cause] : ByeCause.UNSPECIFIED,
    reasonCause: r.reasonCause,
    clientReason: r.clientReason,
    waitForClients: true,
    reportOutcome: r.reportOutcome,
    relayToUa: r.relayToUa,
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
}

async function observeSession(pf: ParticipatingFunction, req: ObserveSessionRequest): Promise<ObserveSessionResponse> {
  return create(ObserveSessionResponseSchema, await pf.observe(envelope(req.message)));
}

async function reportByeOutcome(pf: ParticipatingFunction, req: ReportByeOutcomeRequest): Promise<ReportByeOutcomeResponse> {
  return create(ReportByeOutcomeResponseSchema, { released: await pf.byeOutcome(req.sessionKey, req.statusCode) });
}

/** One Decide request -> its response: the unary RPC's answer, or what it would have failed with. */
/** The RPC name a Decide request stands for (the metrics' rpc label). */
const DECIDE_RPC: Record<string, string> = {
  handleBye: "HandleBye",
  observeSession: "ObserveSession",
  reportByeOutcome: "ReportByeOutcome",
};

async function decide(pf: ParticipatingFunction, log: Logger, metrics: Metrics, req: DecideRequest): Promise<DecideResponse> {
  const { id, request } = req;
  const started = performance.now();
  const by = req.budgetMs > 0 ? started + req.budgetMs : undefined;
  const rpc = DECIDE_RPC[request.case ?? ""] ?? "Decide";
  try {
    let res: DecideResponse;
    switch (request.case) {
      case "handleBye":
        res = create(DecideResponseSchema, { id, response: { case: "handleBye", value: await handleBye(pf, metrics, request.value, by) } });
        break;
      case "observeSession":
        res = create(DecideResponseSchema, { id, response: { case: "observeSession", value: await observeSession(pf, request.value) } });
        break;
      case "reportByeOutcome":
        res = create(DecideResponseSchema, {
          id,
          response: { case: "reportByeOutcome", value: await reportByeOutcome(pf, request.value) },
        });
        break;
      default:
        throw new CpmError("CPM_ERR_BAD_REQUEST", "Decide request carries no known request");
    }
    metrics.decision(rpc, "ok", seconds(started));
    return res;
  } catch (err) {
    const e = refused(log, `Decide/${request.case ?? "none"}`, err);
    metrics.decision(rpc, e.code, seconds(started));
    return create(DecideResponseSchema, {
      id,
      response: { case: "error", value: { grpcCode: e.grpcStatus, code: e.code, message: e.message, sipStatus: e.sipStatus } },
    });
  }
}

/**
 * What the server's shutdown needs: the Decide streams open now (ended at
 * shutdown: Kamailio keeps them open for good) and the requests being
 * decided (the shutdown waits for those, not for Kamailio to close its
 * connections).
 */
export class CallTracker {
  readonly streams = new Set<ServerDuplexStream<DecideRequest, DecideResponse>>();
  inFlight = 0;

  track<T>(p: Promise<T>): Promise<T> {
    this.inFlight++;
    return p.finally(() => {
      this.inFlight--;
    });
  }
}

export function participatingFunctionHandlers(
  pf: ParticipatingFunction,
  log: Logger,
  metrics: Metrics = noMetrics,
  calls: CallTracker = new CallTracker(),
): UntypedServiceImplementation {
  const streams = calls.streams;
  const u = <Req, Res>(name: string, fn: (req: Req, answerBy: number | undefined) => Promise<Res>) =>
    unary(log, metrics, name, (req: Req, by: number | undefined) => calls.track(fn(req, by)));
  return {
    // Requests are decided concurrently; each response goes out when ready
    // (matched by id). A request that fails gets a DecideError; only a
    // transport error ends the stream.
    decide: (call: ServerDuplexStream<DecideRequest, DecideResponse>) => {
      streams.add(call);
      call.on("close", () => streams.delete(call));
      call.on("data", (req: DecideRequest) => {
        void calls.track(decide(pf, log, metrics, req)).then((res) => {
          if (!call.writableEnded && !call.destroyed) call.write(res);
        });
      });
      call.on("end", () => {
        streams.delete(call);
        if (!call.writableEnded) call.end();
      });
      call.on("error", (err) => log.warn("Decide stream failed", { reason: String(err) }));
    },
    handleBye: u("HandleBye", (req: HandleByeRequest, by: number | undefined) => handleBye(pf, metrics, req, by)),
    observeSession: u("ObserveSession", (req: ObserveSessionRequest) => observeSession(pf, req)),
    anchorMedia: u("AnchorMedia", async (req: AnchorMediaRequest) => {
      const r = await pf.anchorMedia(envelope(req.invite));
      return create(AnchorMediaResponseSchema, {
        sessionKey: r.sessionKey,
        clientBody: r.clientBody,
        clientContentType: r.clientContentType,
        cfLeg: { host: r.cfLeg.host, port: r.cfLeg.port, path: r.cfLeg.path, setup: r.cfLeg.setup, tls: r.cfLeg.tls },
      });
    }),
    reportMediaAnswer: u("ReportMediaAnswer", async (req: ReportMediaAnswerRequest) => {
      const anchored = await pf.mediaAnswer(req.sessionKey, envelope(req.answer), { forked: req.forked });
      return create(ReportMediaAnswerResponseSchema, { anchored });
    }),
    reportInviteOutcome: u("ReportInviteOutcome", async (req: ReportInviteOutcomeRequest) => {
      const released = await pf.inviteOutcome(req.sessionKey, req.statusCode);
      return create(ReportInviteOutcomeResponseSchema, { released });
    }),
    reportByeOutcome: u("ReportByeOutcome", (req: ReportByeOutcomeRequest) => reportByeOutcome(pf, req)),
    // 8.3.2.9.1.2 DD-1: the S-CSCF's third-party REGISTER (TS 24.229 5.4.1.7).
    reportRegistration: u("ReportRegistration", async (req: ReportRegistrationRequest) => {
      if (!req.register?.raw.length) throw new CpmError("CPM_ERR_BAD_REQUEST", "ReportRegistration needs the REGISTER");
      const r = await pf.reportRegistration(envelope(req.register));
      if (r.rejectStatus) log.warn("third-party REGISTER refused", { status: r.rejectStatus, source: req.register.source, notes: r.notes });
      return create(ReportRegistrationResponseSchema, {
        accepted: r.accepted,
        deliveries: r.deliveries,
        notes: r.notes,
        rejectStatus: r.rejectStatus ?? 0,
        rejectReason: r.rejectReason ?? "",
      });
    }),
  };
}
