// One catalogue of the PF's errors (STYLE: fastify lib/errors.js, connect-es
// ConnectError). Each entry has a product-prefixed code, the gRPC status it maps
// to, and, where the error reaches a SIP peer, the SIP status the peer sees.
// The cause is kept for logs and never put on the wire.
import { status as GrpcStatus } from "@grpc/grpc-js";

export const ErrorCodes = {
  CPM_ERR_CONFIG: { grpc: GrpcStatus.FAILED_PRECONDITION, sip: 500, message: "invalid configuration" },
  CPM_ERR_BAD_SIP: { grpc: GrpcStatus.INVALID_ARGUMENT, sip: 400, message: "malformed SIP message" },
  CPM_ERR_BAD_HEADER: { grpc: GrpcStatus.INVALID_ARGUMENT, sip: 400, message: "malformed SIP header value" },
  CPM_ERR_BAD_XML: { grpc: GrpcStatus.INVALID_ARGUMENT, sip: 400, message: "malformed XML body" },
  CPM_ERR_BAD_SDP: { grpc: GrpcStatus.INVALID_ARGUMENT, sip: 488, message: "unusable SDP body" },
  CPM_ERR_BAD_REQUEST: { grpc: GrpcStatus.INVALID_ARGUMENT, sip: 400, message: "malformed request" },
  CPM_ERR_STORE_UNAVAILABLE: { grpc: GrpcStatus.UNAVAILABLE, sip: 503, message: "Message Store unavailable" },
  CPM_ERR_STORE_REJECTED: { grpc: GrpcStatus.INTERNAL, sip: 500, message: "Message Store rejected the object" },
  CPM_ERR_SPOOL: { grpc: GrpcStatus.INTERNAL, sip: 500, message: "durable spool write failed" },
  // A served user whose URI gives no usable mailbox name (src/store/mailbox-name.ts).
  CPM_ERR_BAD_SERVED_USER: { grpc: GrpcStatus.INVALID_ARGUMENT, sip: 400, message: "served user has no usable mailbox" },
  CPM_ERR_INTERNAL: { grpc: GrpcStatus.INTERNAL, sip: 500, message: "internal error" },
  // The PF's own SIP UA could not send, or lost the TCP connection of a
  // transaction before its final response (RFC 3261 17.1.4, 8.1.3.1: a 503).
  CPM_ERR_SIP_TRANSPORT: { grpc: GrpcStatus.UNAVAILABLE, sip: 503, message: "SIP transport failed" },
  /** An operator asked for a record or queue that does not exist (admin RPCs). */
  CPM_ERR_NOT_FOUND: { grpc: GrpcStatus.NOT_FOUND, sip: 404, message: "no such group session" },
  /** The sidecar is draining (SIGTERM): no new anchored session; Kamailio's fail-safe relays the INVITE unanchored. */
  CPM_ERR_DRAINING: { grpc: GrpcStatus.UNAVAILABLE, sip: 503, message: "the PF is draining: no new sessions" },
  // A message/cpim body (RFC 3862) whose header blocks do not parse. The PF
  // relays and stores such bodies unchanged; only header extraction fails.
  CPM_ERR_BAD_CPIM: { grpc: GrpcStatus.INVALID_ARGUMENT, sip: 400, message: "malformed message/cpim body" },
  // AnchorMedia / ReportMediaAnswer while config media.enabled is false: Kamailio
  // relays the INVITE unchanged (the PF stays out of the media path).
  CPM_ERR_MEDIA_DISABLED: { grpc: GrpcStatus.FAILED_PRECONDITION, sip: 500, message: "media anchoring is not enabled" },
  // ReportMediaAnswer for a session that was never anchored (or already released).
  CPM_ERR_MEDIA_NOT_ANCHORED: { grpc: GrpcStatus.NOT_FOUND, sip: 481, message: "session is not anchored" },
  // MSRP (RFC 4975 10): `msrp` is the response code the MSRP peer sees.
  CPM_ERR_MSRP_FRAME: { grpc: GrpcStatus.INVALID_ARGUMENT, sip: 400, msrp: 400, message: "malformed MSRP frame" },
  CPM_ERR_MSRP_URI: { grpc: GrpcStatus.INVALID_ARGUMENT, sip: 400, msrp: 400, message: "malformed MSRP URI" },
  CPM_ERR_MSRP_TOO_LARGE: { grpc: GrpcStatus.RESOURCE_EXHAUSTED, sip: 413, msrp: 413, message: "MSRP message or chunk too large" },
  CPM_ERR_MSRP_NO_SESSION: { grpc: GrpcStatus.NOT_FOUND, sip: 481, msrp: 481, message: "MSRP session does not exist" },
  CPM_ERR_MSRP_SESSION_IN_USE: {
    grpc: GrpcStatus.ALREADY_EXISTS,
    sip: 500,
    msrp: 506,
    message: "MSRP session bound to another connection",
  },
  CPM_ERR_MSRP_METHOD: { grpc: GrpcStatus.UNIMPLEMENTED, sip: 500, msrp: 501, message: "MSRP method not understood" },
  CPM_ERR_MSRP_TIMEOUT: { grpc: GrpcStatus.DEADLINE_EXCEEDED, sip: 408, msrp: 408, message: "MSRP transaction timed out" },
  CPM_ERR_MSRP_SETUP: { grpc: GrpcStatus.INVALID_ARGUMENT, sip: 488, msrp: 400, message: "incompatible MSRP a=setup roles" },
  CPM_ERR_MSRP_CONNECTION: { grpc: GrpcStatus.UNAVAILABLE, sip: 500, msrp: 481, message: "MSRP connection closed" },
  // Media plane (src/media): `msrp` is what the MSRP peer of the failing leg sees.
  CPM_ERR_MEDIA_NOT_STARTED: { grpc: GrpcStatus.UNAVAILABLE, sip: 503, message: "MSRP media plane not listening" },
  CPM_ERR_MEDIA_SESSION_EXISTS: { grpc: GrpcStatus.ALREADY_EXISTS, sip: 500, message: "media session already anchored" },
  // The shared group session record store (session.store "redis", src/session/redis/).
  /** Compare-and-set: the record changed since this sidecar read it (another sidecar wrote it); nothing was written. */
  CPM_ERR_RECORD_STALE: { grpc: GrpcStatus.ABORTED, sip: 500, message: "group session record changed since it was read" },
  /** Fencing: the write's lease token is older than the slot's newest lease (ownership moved); nothing was written. */
  CPM_ERR_RECORD_FENCED: { grpc: GrpcStatus.FAILED_PRECONDITION, sip: 500, message: "group session owned by another sidecar" },
  CPM_ERR_RECORD_STORE_UNAVAILABLE: { grpc: GrpcStatus.UNAVAILABLE, sip: 503, message: "group session record store unavailable" },
  CPM_ERR_MEDIA_DEFER_FAILED: { grpc: GrpcStatus.UNAVAILABLE, sip: 500, msrp: 403, message: "deferred storage of an MSRP message failed" },
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class CpmError extends Error {
  readonly code: ErrorCode;
  readonly detail: string;

  constructor(code: ErrorCode, detail: string, options?: { cause?: unknown }) {
    super(`${code}: ${ErrorCodes[code].message}: ${detail}`, options);
    this.name = "CpmError";
    this.code = code;
    this.detail = detail;
  }

  get grpcStatus(): GrpcStatus {
    return ErrorCodes[this.code].grpc;
  }

  get sipStatus(): number {
    return ErrorCodes[this.code].sip;
  }
}

/** Wraps anything thrown into a CpmError, keeping the original as cause. */
export function asCpmError(err: unknown, fallback: ErrorCode = "CPM_ERR_INTERNAL"): CpmError {
  if (err instanceof CpmError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new CpmError(fallback, detail, { cause: err });
}
