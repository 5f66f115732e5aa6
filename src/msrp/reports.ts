// Transaction responses and REPORTs (RFC 4975 7.1.1-7.1.4, 7.2).
// - Failure-Report (absent = "yes") decides the hop-by-hop responses a SEND
//   gets: "yes" every response, "partial" only negative ones, "no" none.
// - REPORT requests never get a response (7.1.2).
// - Success-Report "yes": once the whole message is received, one REPORT with
//   `Status: 000 200` and the Byte-Range of the bytes received (7.1.3).
// - Failure REPORTs (7.1.4): for failures a response cannot carry (e.g. the
//   message was accepted chunk by chunk and later could not be delivered),
//   unless Failure-Report is "no"; "partial" and "yes" both want them.

import type { ByteRange } from "./frame.js";
import { defaultComment, type FailureReport, type MsrpRequest } from "./frame.js";
import { newTransactionId } from "./ids.js";
import type { MsrpUri } from "./uri.js";

/** Which transaction responses a request gets. */
export type ResponsePolicy = "all" | "errors-only" | "none";

export function effectiveFailureReport(req: Pick<MsrpRequest, "failureReport">): FailureReport {
  return req.failureReport ?? "yes";
}

export function responsePolicy(req: Pick<MsrpRequest, "method" | "failureReport">): ResponsePolicy {
  if (req.method === "REPORT") return "none";
  switch (effectiveFailureReport(req)) {
    case "no":
      return "none";
    case "partial":
      return "errors-only";
    default:
      return "all";
  }
}

/** Whether a response with `code` goes back for this request. */
export function shouldRespond(req: Pick<MsrpRequest, "method" | "failureReport">, code: number): boolean {
  const policy = responsePolicy(req);
  return policy === "all" || (policy === "errors-only" && code >= 300);
}

/** 7.1.3: a success REPORT is due once the whole message has arrived and Success-Report is "yes". */
export function wantsSuccessReport(req: Pick<MsrpRequest, "method" | "successReport">): boolean {
  return req.method === "SEND" && req.successReport === "yes";
}

/** 7.1.4: failure REPORTs are wanted unless Failure-Report is "no" (never for a REPORT). */
export function wantsFailureReport(req: Pick<MsrpRequest, "method" | "failureReport">): boolean {
  return req.method === "SEND" && effectiveFailureReport(req) !== "no";
}

export interface ReportSpec {
  /** The From-Path of the SEND as received: the way back to its sender. */
  toPath: readonly MsrpUri[];
  /** Our URI. */
  fromPath: readonly MsrpUri[];
  messageId: string;
  byteRange: ByteRange;
  code: number;
  /** Default: the RFC 4975 10 words for the code; null: none. */
  comment?: string | null;
}

/** A REPORT request (7.1.2): no Success-Report / Failure-Report, a Status, the Message-ID and Byte-Range reported on. */
export function buildReport(spec: ReportSpec): MsrpRequest {
  const comment = spec.comment === undefined ? defaultComment(spec.code) : spec.comment;
  const report: MsrpRequest = {
    kind: "request",
    method: "REPORT",
    transactionId: newTransactionId(),
    toPath: spec.toPath,
    fromPath: spec.fromPath,
    messageId: spec.messageId,
    byteRange: spec.byteRange,
    status:
      comment === null || comment === undefined ? { namespace: "000", code: spec.code } : { namespace: "000", code: spec.code, comment },
    headers: [],
    continuation: "$",
  };
  return report;
}

/** 7.1.3: the success REPORT for a whole message, or undefined when the sender did not ask for one. */
export function successReportFor(
  message: { messageId: string; byteRange: ByteRange; fromPath: readonly MsrpUri[]; successReport: "yes" | "no" },
  localUri: MsrpUri,
): MsrpRequest | undefined {
  if (message.successReport !== "yes") return undefined;
  return buildReport({
    toPath: message.fromPath,
    fromPath: [localUri],
    messageId: message.messageId,
    byteRange: message.byteRange,
    code: 200,
  });
}

/**
 * 7.1.4: a failure REPORT for a SEND (or for a message it belongs to), or
 * undefined when Failure-Report is "no" or the request was not a SEND.
 * `byteRange` defaults to the request's own.
 */
export function failureReportFor(
  req: Pick<MsrpRequest, "method" | "failureReport" | "messageId" | "byteRange" | "fromPath">,
  code: number,
  localUri: MsrpUri,
  options: { comment?: string | null; byteRange?: ByteRange } = {},
): MsrpRequest | undefined {
  if (!wantsFailureReport(req) || req.messageId === undefined || code < 300) return undefined;
  const byteRange = options.byteRange ?? req.byteRange ?? { start: 1, end: "*", total: "*" };
  const spec: ReportSpec = { toPath: req.fromPath, fromPath: [localUri], messageId: req.messageId, byteRange, code };
  if (options.comment !== undefined) spec.comment = options.comment;
  return buildReport(spec);
}
