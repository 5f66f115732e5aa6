// cpm.pf.v1.AdminService handlers (proto/cpm/pf/v1/admin.proto): the
// operator's view of group session records, deferred queues and the spool,
// through the running sidecar (never behind its back in the store). Every
// request names the served user it is about; nothing else is read.
import { create } from "@bufbuild/protobuf";
import type { UntypedServiceImplementation } from "@grpc/grpc-js";
import { CpmError } from "../errors/catalogue.js";
import {
  type DeliverQueueRequest,
  DeliverQueueResponseSchema,
  DrainResponseSchema,
  type GetSessionRequest,
  GetSessionResponseSchema,
  type ListQueuesRequest,
  ListQueuesResponseSchema,
  type ListSessionsRequest,
  ListSessionsResponseSchema,
  type PurgeQueueRequest,
  PurgeQueueResponseSchema,
  type ReplaySpoolRequest,
  ReplaySpoolResponseSchema,
  type Session,
  SessionSchema,
  type ShowQueueRequest,
  ShowQueueResponseSchema,
  SpoolStatusResponseSchema,
} from "../gen/cpm/pf/v1/admin_pb.js";
import type { Logger } from "../log/logger.js";
import type { Metrics } from "../metrics/metrics.js";
import type { RegistrationResult } from "../pf/participating-function.js";
import { type GroupSession, userKey } from "../session/group-session.js";
import type { SessionStore } from "../session/record-store.js";
import type { DeferredQueue } from "../store/deferred-queue.js";
import type { Mailboxes } from "../store/mailboxes.js";
import { unary } from "./pf-service.js";

export interface AdminDeps {
  sessions: Pick<SessionStore, "all" | "get" | "findByIds">;
  queue: Pick<DeferredQueue, "listSessions" | "read" | "discard" | "spoolPending">;
  store: Pick<Mailboxes, "stats" | "flushSpools">;
  /** Deferred delivery; absent when it is off. */
  deliverTo?: (servedUser: string, contact: string) => Promise<RegistrationResult>;
  /** The record learns that its queue is empty (as after a delivery). */
  queueSettled(servedUser: string, conversationId: string, contributionId: string): Promise<void>;
  /** Starts the drain and the exit (as SIGTERM). */
  drain(): void;
}

const DEFAULT_LIST = 100;
const DEFAULT_SHOW = 20;
const MAX_LIMIT = 10_000;

function need(value: string, what: string): string {
  if (!value || /[\r\n\0]/.test(value)) throw new CpmError("CPM_ERR_BAD_REQUEST", `${what} is required`);
  return value;
}

function limitOf(n: number, fallback: number): number {
  return n === 0 ? fallback : Math.min(n, MAX_LIMIT);
}

function sessionMessage(s: GroupSession): Session {
  return create(SessionSchema, {
    servedUser: s.servedUser,
    conversationId: s.conversationId,
    contributionId: s.contributionId,
    key: s.key,
    lifecycle: s.lifecycle,
    lifecycleAt: BigInt(s.lifecycleAt),
    pendingDeferred: s.pendingDeferred,
    focusUri: s.focusUri,
    groupType: s.groupType,
    participants: s.participants.map((p) => (p.name ? `${p.name} <${p.commAddr}>` : p.commAddr)),
    dialogs: s.dialogs.map((d) => ({
      callId: d.callId,
      cfTag: d.cfTag,
      clientTag: d.clientTag,
      state: d.state,
      clientInstance: d.clientInstance,
    })),
    endCause: s.endCause ?? 0,
  });
}

export function adminHandlers(deps: AdminDeps, log: Logger, metrics: Metrics): UntypedServiceImplementation {
  const rpc = <Req, Res>(name: string, fn: (req: Req) => Promise<Res>) => unary(log, metrics, `Admin/${name}`, fn);
  const target = (r: { servedUser: string; conversationId: string; contributionId: string }) => ({
    servedUser: need(r.servedUser, "served_user"),
    conversationId: need(r.conversationId, "conversation_id"),
    contributionId: need(r.contributionId, "contribution_id"),
  });
  return {
    listSessions: rpc("ListSessions", async (req: ListSessionsRequest) => {
      const user = req.servedUser ? userKey(req.servedUser) : undefined;
      const matching = [...deps.sessions.all()].filter(
        (s) => (user === undefined || userKey(s.servedUser) === user) && (!req.conversationId || s.conversationId === req.conversationId),
      );
      matching.sort((a, b) => b.lifecycleAt - a.lifecycleAt);
      return create(ListSessionsResponseSchema, {
        sessions: matching.slice(0, limitOf(req.limit, DEFAULT_LIST)).map(sessionMessage),
        total: matching.length,
      });
    }),
    getSession: rpc("GetSession", async (req: GetSessionRequest) => {
      let s: GroupSession | undefined;
      if (req.callId) s = deps.sessions.get(req.callId);
      else {
        const t = target(req);
        s = deps.sessions.findByIds(t.servedUser, t.conversationId, t.contributionId);
      }
      if (!s) throw new CpmError("CPM_ERR_NOT_FOUND", req.callId ? `no group session has a dialog ${req.callId}` : "no such group session");
      return create(GetSessionResponseSchema, { session: sessionMessage(s) });
    }),
    listQueues: rpc("ListQueues", async (req: ListQueuesRequest) => {
      const user = need(req.servedUser, "served_user");
      const queues = await deps.queue.listSessions(user);
      return create(ListQueuesResponseSchema, {
        queues: queues.map((q) => ({
          folder: q.folder,
          conversationId: q.conversationId ?? "",
          contributionId: q.contributionId ?? "",
          count: q.count,
        })),
        spooled: deps.queue.spoolPending(user),
      });
    }),
    showQueue: rpc("ShowQueue", async (req: ShowQueueRequest) => {
      const records = await deps.queue.read(target(req), limitOf(req.limit, DEFAULT_SHOW));
      return create(ShowQueueResponseSchema, {
        items: records.map((r) => ({
          uid: r.handle.uid,
          kind: r.item?.kind ?? "",
          contentType: r.item?.contentType ?? "",
          msrpMessageId: r.item?.msrpMessageId ?? "",
          receivedAt: BigInt(r.item?.receivedAt.getTime() ?? 0),
          bytes: r.raw.length,
          error: r.error ?? "",
        })),
      });
    }),
    deliverQueue: rpc("DeliverQueue", async (req: DeliverQueueRequest) => {
      const user = need(req.servedUser, "served_user");
      const contact = need(req.contact, "contact");
      if (!/^<?sips?:[^\s<>]+>?$/i.test(contact))
        throw new CpmError("CPM_ERR_BAD_REQUEST", `contact ${JSON.stringify(contact)} is not a SIP URI`);
      if (!deps.deliverTo)
        throw new CpmError("CPM_ERR_BAD_REQUEST", "deferred delivery is off (delivery.deferredMsgMgmtUri, media.enabled)");
      const r = await deps.deliverTo(user, contact);
      log.info("operator started a deferred delivery", { servedUser: user, contact, deliveries: r.deliveries });
      return create(DeliverQueueResponseSchema, { deliveries: r.deliveries, notes: r.notes });
    }),
    purgeQueue: rpc("PurgeQueue", async (req: PurgeQueueRequest) => {
      const t = target(req);
      const discarded = await deps.queue.discard(t);
      await deps.queueSettled(t.servedUser, t.conversationId, t.contributionId);
      log.info("operator purged a deferred queue", { ...t, discarded });
      return create(PurgeQueueResponseSchema, { discarded });
    }),
    spoolStatus: rpc("SpoolStatus", async () => {
      const st = deps.store.stats();
      return create(SpoolStatusResponseSchema, {
        pending: st.spoolPending,
        mailboxes: Object.entries(st.mailboxes).map(([mailbox, m]) => ({
          mailbox,
          pending: m.spoolPending,
          storeUp: m.storeUp,
          lastError: m.lastError ?? "",
        })),
      });
    }),
    replaySpool: rpc("ReplaySpool", async (req: ReplaySpoolRequest) => {
      const left = await deps.store.flushSpools(req.timeoutMs || 5000);
      return create(ReplaySpoolResponseSchema, { left });
    }),
    drain: rpc("Drain", async () => {
      log.warn("operator asked for the drain");
      // after this answer has left (the drain ends this server)
      setTimeout(() => deps.drain(), 100);
      return create(DrainResponseSchema, { started: true });
    }),
  };
}
