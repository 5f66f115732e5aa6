#!/usr/bin/env node
// cpm-pf: the operator CLI. Talks to a running sidecar (AdminService and
// health on its gRPC server), never to the store behind its back. Human
// output by default, --json for scripts; exit code 1 with the gRPC status
// and the sidecar's message on an error.
import { toJson } from "@bufbuild/protobuf";
import type { ServiceError } from "@grpc/grpc-js";
import { Command, Option } from "commander";
import {
  DeliverQueueRequestSchema,
  type DeliverQueueResponse,
  DeliverQueueResponseSchema,
  DrainRequestSchema,
  type DrainResponse,
  DrainResponseSchema,
  GetSessionRequestSchema,
  type GetSessionResponse,
  GetSessionResponseSchema,
  ListQueuesRequestSchema,
  type ListQueuesResponse,
  ListQueuesResponseSchema,
  ListSessionsRequestSchema,
  type ListSessionsResponse,
  ListSessionsResponseSchema,
  PurgeQueueRequestSchema,
  type PurgeQueueResponse,
  PurgeQueueResponseSchema,
  ReplaySpoolRequestSchema,
  type ReplaySpoolResponse,
  ReplaySpoolResponseSchema,
  type Session,
  ShowQueueRequestSchema,
  type ShowQueueResponse,
  ShowQueueResponseSchema,
  SpoolStatusRequestSchema,
  type SpoolStatusResponse,
  SpoolStatusResponseSchema,
} from "../gen/cpm/pf/v1/admin_pb.js";
import { AdminClient, type Connection } from "./admin-client.js";

interface Global {
  target: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  timeout: string;
  json?: boolean;
}

const program = new Command()
  .name("cpm-pf")
  .description("Operate a running cpm-pf sidecar: group session records, deferred queues, the spool, health, drain")
  .addOption(
    new Option("--target <target>", "the sidecar's gRPC address: host:port or unix:/path")
      .env("CPM_PF_GRPC_TARGET")
      .default("127.0.0.1:50051"),
  )
  .option("--tls-ca <file>", "CA of the sidecar's certificate (gRPC over TLS)")
  .option("--tls-cert <file>", "client certificate (mutual TLS)")
  .option("--tls-key <file>", "client key (mutual TLS)")
  .option("--timeout <ms>", "deadline of each call", "5000")
  .option("--json", "print JSON (one object) instead of text");

function connection(): Connection {
  const g = program.opts<Global>();
  return {
    target: g.target,
    ...(g.tlsCa ? { tlsCa: g.tlsCa } : {}),
    ...(g.tlsCert ? { tlsCert: g.tlsCert } : {}),
    ...(g.tlsKey ? { tlsKey: g.tlsKey } : {}),
    timeoutMs: Number(g.timeout) || 5000,
  };
}

/** Runs one call, prints JSON (--json) or the text `human` makes of the answer. */
async function run<T>(call: (c: AdminClient) => Promise<T>, json: (r: T) => unknown, human: (r: T) => string): Promise<void> {
  const client = new AdminClient(connection());
  try {
    const r = await call(client);
    process.stdout.write(program.opts<Global>().json ? `${JSON.stringify(json(r), null, 2)}\n` : `${human(r)}\n`);
  } catch (err) {
    const e = err as ServiceError;
    process.stderr.write(`cpm-pf: ${e.code !== undefined ? `gRPC ${e.code}: ` : ""}${e.details || e.message || String(err)}\n`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

function when(ms: bigint): string {
  return ms > 0n ? new Date(Number(ms)).toISOString() : "-";
}

function table(rows: string[][]): string {
  if (rows.length === 0) return "";
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

function sessionText(s: Session): string {
  const lines = [
    `served user      ${s.servedUser}`,
    `conversation     ${s.conversationId}`,
    `contribution     ${s.contributionId}`,
    `lifecycle        ${s.lifecycle} since ${when(s.lifecycleAt)}${s.endCause ? ` (cause ${s.endCause})` : ""}`,
    `deferred data    ${s.pendingDeferred ? "pending" : "none"}`,
    `focus            ${s.focusUri || "-"}`,
    `group type       ${s.groupType}`,
    `participants     ${s.participants.join(", ") || "-"}`,
    "dialogs",
    table(s.dialogs.map((d) => [`  ${d.callId}`, d.state, `cf ${d.cfTag || "-"}`, `client ${d.clientTag || "-"}`])),
  ];
  return lines.join("\n");
}

const ids = (cmd: Command) =>
  cmd
    .requiredOption("--user <uri>", "the served user (sip: or tel: URI)")
    .requiredOption("--conversation <id>", "Conversation-ID")
    .requiredOption("--contribution <id>", "Contribution-ID");

const sessions = program.command("sessions").description("group session records");
sessions
  .command("list")
  .description("records, newest lifecycle change first")
  .option("--user <uri>", "only this served user's")
  .option("--conversation <id>", "only this Conversation-ID's")
  .option("--limit <n>", "at most this many", "100")
  .action((o: { user?: string; conversation?: string; limit: string }) =>
    run(
      (c) =>
        c.call<typeof ListSessionsRequestSchema, ListSessionsResponse>("listSessions", ListSessionsRequestSchema, {
          servedUser: o.user ?? "",
          conversationId: o.conversation ?? "",
          limit: Number(o.limit) || 0,
        }),
      (r) => toJson(ListSessionsResponseSchema, r),
      (r) =>
        `${table([
          ["SERVED USER", "CONVERSATION-ID", "CONTRIBUTION-ID", "LIFECYCLE", "SINCE", "DEFERRED"],
          ...r.sessions.map((s) => [
            s.servedUser,
            s.conversationId,
            s.contributionId,
            s.lifecycle,
            when(s.lifecycleAt),
            s.pendingDeferred ? "pending" : "-",
          ]),
        ])}\n${r.sessions.length} of ${r.total}`,
    ),
  );
ids(sessions.command("show").description("one record with its dialogs")).action(
  (o: { user: string; conversation: string; contribution: string }) =>
    run(
      (c) =>
        c.call<typeof GetSessionRequestSchema, GetSessionResponse>("getSession", GetSessionRequestSchema, {
          servedUser: o.user,
          conversationId: o.conversation,
          contributionId: o.contribution,
        }),
      (r) => toJson(GetSessionResponseSchema, r),
      (r) => (r.session ? sessionText(r.session) : "no record"),
    ),
);

const queue = program.command("queue").description("a served user's deferred queues");
queue
  .command("list")
  .description("the user's queues with their item counts")
  .requiredOption("--user <uri>", "the served user")
  .action((o: { user: string }) =>
    run(
      (c) => c.call<typeof ListQueuesRequestSchema, ListQueuesResponse>("listQueues", ListQueuesRequestSchema, { servedUser: o.user }),
      (r) => toJson(ListQueuesResponseSchema, r),
      (r) =>
        `${table([["CONVERSATION-ID", "CONTRIBUTION-ID", "ITEMS"], ...r.queues.map((q) => [q.conversationId, q.contributionId, String(q.count)])])}\n${r.queues.length} queue(s), ${r.spooled} object(s) of the user still in the spool`,
    ),
  );
ids(queue.command("show").description("the oldest items of one queue (not removed)"))
  .option("--limit <n>", "at most this many", "20")
  .action((o: { user: string; conversation: string; contribution: string; limit: string }) =>
    run(
      (c) =>
        c.call<typeof ShowQueueRequestSchema, ShowQueueResponse>("showQueue", ShowQueueRequestSchema, {
          servedUser: o.user,
          conversationId: o.conversation,
          contributionId: o.contribution,
          limit: Number(o.limit) || 0,
        }),
      (r) => toJson(ShowQueueResponseSchema, r),
      (r) =>
        table([
          ["UID", "KIND", "CONTENT-TYPE", "RECEIVED", "BYTES", "MSRP MESSAGE-ID"],
          ...r.items.map((i) => [
            String(i.uid),
            i.kind || "?",
            i.contentType || i.error,
            when(i.receivedAt),
            String(i.bytes),
            i.msrpMessageId,
          ]),
        ]),
    ),
  );
queue
  .command("deliver")
  .description("start deferred delivery as if the user registered at --contact")
  .requiredOption("--user <uri>", "the served user")
  .requiredOption("--contact <uri>", "the contact the delivery INVITE goes to")
  .action((o: { user: string; contact: string }) =>
    run(
      (c) =>
        c.call<typeof DeliverQueueRequestSchema, DeliverQueueResponse>("deliverQueue", DeliverQueueRequestSchema, {
          servedUser: o.user,
          contact: o.contact,
        }),
      (r) => toJson(DeliverQueueResponseSchema, r),
      (r) => [`${r.deliveries} delivery session(s) started`, ...r.notes.map((n) => `  ${n}`)].join("\n"),
    ),
  );
ids(queue.command("purge").description("discard one queue (its items are removed from the store)")).action(
  (o: { user: string; conversation: string; contribution: string }) =>
    run(
      (c) =>
        c.call<typeof PurgeQueueRequestSchema, PurgeQueueResponse>("purgeQueue", PurgeQueueRequestSchema, {
          servedUser: o.user,
          conversationId: o.conversation,
          contributionId: o.contribution,
        }),
      (r) => toJson(PurgeQueueResponseSchema, r),
      (r) => `${r.discarded} item(s) discarded`,
    ),
);

const spool = program.command("spool").description("the durable spool (objects waiting for the Message Store)");
spool.command("status").action(() =>
  run(
    (c) => c.call<typeof SpoolStatusRequestSchema, SpoolStatusResponse>("spoolStatus", SpoolStatusRequestSchema, {}),
    (r) => toJson(SpoolStatusResponseSchema, r),
    (r) =>
      `${table([["MAILBOX", "PENDING", "STORE", "LAST ERROR"], ...r.mailboxes.map((m) => [m.mailbox || "(shared)", String(m.pending), m.storeUp ? "up" : "down", m.lastError || "-"])])}\n${r.pending} object(s) pending`,
  ),
);
spool
  .command("replay")
  .description("drain the spools into the store now")
  .option("--wait <ms>", "how long to wait for the store", "5000")
  .action((o: { wait: string }) =>
    run(
      (c) =>
        c.call<typeof ReplaySpoolRequestSchema, ReplaySpoolResponse>("replaySpool", ReplaySpoolRequestSchema, {
          timeoutMs: Number(o.wait) || 0,
        }),
      (r) => toJson(ReplaySpoolResponseSchema, r),
      (r) => `${r.left} object(s) left in the spool`,
    ),
  );

program
  .command("health")
  .description("grpc.health.v1 status of the sidecar (exit 1 unless SERVING)")
  .action(() =>
    run(
      async (c) => {
        const status = await c.healthStatus();
        if (status !== "SERVING") process.exitCode = 1;
        return status;
      },
      (s) => ({ status: s }),
      (s) => s,
    ),
  );
program
  .command("drain")
  .description("start the drain: no new sessions or deliveries, running ones finish, then the sidecar exits")
  .action(() =>
    run(
      (c) => c.call<typeof DrainRequestSchema, DrainResponse>("drain", DrainRequestSchema, {}),
      (r) => toJson(DrainResponseSchema, r),
      (r) => (r.started ? "drain started" : "drain not started"),
    ),
  );

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`cpm-pf: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(2);
});
