// MSRP for the PF's media plane: framing, URIs, chunking, reports, sessions
// and connections (RFC 4975, RFC 4976 frames, RFC 6135 roles).
// No maintained MSRP package exists on npm, so the stack is ours.
//
// Layout, one concern per file:
//   frame.ts        frame model, status codes, ident syntax
//   uri.ts          msrp:// and msrps:// URIs, paths, RFC 4975 6.1 comparison
//   headers.ts      Byte-Range, Status, Success-/Failure-Report values
//   parser.ts       streaming parser with limits (never throws)
//   serializer.ts   wire form, responses (RFC 4975 7.2)
//   ids.ts          session-id / transaction-id / Message-ID from the CSPRNG
//   chunking.ts     outgoing chunks, incoming reassembly, 413 handling
//   reports.ts      response policy (Failure-Report), REPORT frames
//   setup.ts        a=setup roles (RFC 6135)
//   session.ts      one session; session-table.ts: sessions by session-id
//   connection.ts   one connection over any Duplex; server.ts: the listener
//   connection-pool.ts  reuse of the connections we open, per authority (RFC 4975 5.4)
//   deadline-sweeper.ts one timer for every connection's bind / idle deadline
//   limits.ts       limits merged once per options object, shared
//   resources.ts    counters of sockets, sessions, timers, buffered bytes
export {
  chunkMessage,
  DEFAULT_CHUNK_SIZE,
  DEFAULT_REASSEMBLY_LIMITS,
  MessageChunker,
  makeEmptySend,
  type OutgoingMessage,
  Reassembler,
  type ReassemblyLimits,
  type ReassemblyOutcome,
  type ReceivedMessage,
  type RejectReason,
} from "./chunking.js";
export {
  type ConnectionEvents,
  DEFAULT_CONNECTION_TIMEOUTS,
  MsrpConnection,
  type MsrpConnectionOptions,
} from "./connection.js";
export { authorityKey, MsrpConnectionPool } from "./connection-pool.js";
export {
  type ByteRange,
  type ContinuationFlag,
  defaultComment,
  type FailureReport,
  type HeaderField,
  isTransactionId,
  type MsrpFrame,
  type MsrpRequest,
  type MsrpRequestHead,
  type MsrpResponse,
  type MsrpStatus,
  MsrpStatusCode,
  type SuccessReport,
} from "./frame.js";
export { formatByteRange, formatStatus, parseByteRange, parseStatus } from "./headers.js";
export { alnumEntropyBits, newMessageId, newSessionId, newTransactionId } from "./ids.js";
export {
  DEFAULT_PARSER_LIMITS,
  MAX_END_LINE_BYTES,
  type MsrpParseError,
  type MsrpParseErrorReason,
  type MsrpParseEvent,
  MsrpParser,
  type MsrpParserLimits,
  parseFrames,
} from "./parser.js";
export {
  buildReport,
  effectiveFailureReport,
  failureReportFor,
  type ReportSpec,
  type ResponsePolicy,
  responsePolicy,
  shouldRespond,
  successReportFor,
  wantsFailureReport,
  wantsSuccessReport,
} from "./reports.js";
export { type MsrpCounters, type MsrpRefusals, MsrpResources, msrpCounters, msrpResources } from "./resources.js";
export { firstEndLine, makeResponse, type ResponseOptions, serializeFrame, serializeRequest, serializeResponse } from "./serializer.js";
export { createMsrpServer, type MsrpServerOptions } from "./server.js";
export {
  DEFAULT_CHUNK_WINDOW,
  type HoldResponse,
  type IncomingActions,
  MsrpSession,
  type MsrpSessionOptions,
  type SendResult,
  type SessionEvents,
  type SessionState,
  type SessionTransport,
} from "./session.js";
export { MsrpSessionTable } from "./session-table.js";
export { answerSetup, type ConnectionRole, connectionRole, type SetupAttribute } from "./setup.js";
export {
  formatMsrpPath,
  formatMsrpUri,
  type MsrpScheme,
  type MsrpUri,
  type MsrpUriParam,
  msrpUriEquals,
  parseMsrpPath,
  parseMsrpUri,
  tryParseMsrpUri,
} from "./uri.js";
