// The sidecar's Prometheus metrics (prom-client). Components report through
// the small Metrics interface; with metrics off they get noMetrics, whose
// calls do nothing. Names follow the Prometheus naming rules: prefix cpmpf_,
// base units (seconds, bytes), counters end in _total. Levels that live in a
// component (records by lifecycle, anchored sessions, spool depth) are read
// at scrape time from a Sampler; no label names a user or a session.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { MsrpTraffic } from "../msrp/resources.js";

export type DecisionOutcome = "ok" | string;

/** What a scrape reads from the running components. */
export interface Sample {
  recordsByLifecycle: Record<string, number>;
  anchoredSessions: number;
  msrpConnections: { accepted: number; opened: number };
  /** Cumulative since start. */
  msrpTraffic: MsrpTraffic;
  spoolDepth: number;
  /** Record writes held on local disk for Redis (session.redisWriteAhead); 0 with the journal. */
  recordWritesHeld: number;
  /** Cumulative since start. */
  failsafeReplays: { replayed: number; quarantined: number; retried: number };
  /** Group sessions whose records say deferred data is pending. */
  deferredSessions: number;
  /** Actions of a procedure no executor took, cumulative since start, by component ("pf", "delivery") and action kind. */
  unexecutedActions: { component: string; counts: ReadonlyMap<string, number> }[];
  /** The PF's own SIP UA (deferred delivery), cumulative since start; absent when it is off. */
  sipTraffic?: {
    /** First transmissions by "<udp|tcp> <METHOD>". */
    requestsSent: ReadonlyMap<string, number>;
    /** Datagrams (udp) and connections (tcp) refused: not from a trusted Kamailio. */
    refused: { udp: number; tcp: number };
  };
}

export type Sampler = () => Sample;

export interface Metrics {
  /** One decision RPC answered (unary or on the Decide stream). */
  decision(rpc: string, outcome: DecisionOutcome, seconds: number): void;
  /** One BYE decided (8.3.2.3): mode, side, cause class, what happened to its GSO. */
  bye(mode: string, side: string, cause: string, gso: string): void;
  /** One IMAP command (connect and login included), by name. */
  imap(op: string, outcome: "ok" | "error", seconds: number): void;
  /** One group session record change made durable in the record store. */
  recordStored(seconds: number): void;
  /** One MSRP message relayed from leg to leg, from its arrival to the next hop's 2xx. */
  relayed(seconds: number): void;
  /** One deferred delivery over (8.3.2.9.1.2), with its outcome and, when it emptied the queue, how long it took. */
  delivery(outcome: string, seconds: number | undefined): void;
  /** The deferred backlog read from the store: items queued and the oldest one's age. */
  backlog(items: number, oldestAgeSeconds: number): void;
}

export const noMetrics: Metrics = {
  decision() {},
  bye() {},
  imap() {},
  recordStored() {},
  relayed() {},
  delivery() {},
  backlog() {},
};

const SAMPLE_MS = 250;
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5];

/** A counter kept in step with a cumulative count read from a component. */
function follow(counter: Counter<string>, seen: Map<string, number>, key: string, labels: Record<string, string>, total: number): void {
  const delta = total - (seen.get(key) ?? 0);
  if (delta > 0) counter.inc(labels, delta);
  seen.set(key, total);
}

export class PromMetrics implements Metrics {
  readonly registry = new Registry();
  private sampler: Sampler | undefined;
  private readonly decisions: Counter<"rpc" | "outcome">;
  private readonly decisionSeconds: Histogram<"rpc">;
  private readonly byes: Counter<"mode" | "side" | "cause" | "gso">;
  private readonly imapOps: Counter<"op" | "outcome">;
  private readonly imapSeconds: Histogram<"op">;
  private readonly recordSeconds: Histogram<string>;
  private readonly relaySeconds: Histogram<string>;
  private readonly deliveries: Counter<"outcome">;
  private readonly drainSeconds: Histogram<string>;
  private readonly backlogItems: Gauge<string>;
  private readonly backlogAge: Gauge<string>;

  constructor(build: { version: string }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "cpmpf_" });
    new Gauge({ name: "cpmpf_build_info", help: "Build of the sidecar (value 1)", labelNames: ["version", "node_version"], registers }).set(
      { version: build.version, node_version: process.version },
      1,
    );
    this.decisions = new Counter({
      name: "cpmpf_decisions_total",
      help: "Decision RPCs answered, by RPC and outcome (ok or the error catalogue code)",
      labelNames: ["rpc", "outcome"],
      registers,
    });
    this.decisionSeconds = new Histogram({
      name: "cpmpf_decision_duration_seconds",
      help: "Time from a decision request to its answer in the sidecar",
      labelNames: ["rpc"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.byes = new Counter({
      name: "cpmpf_bye_total",
      help: "BYEs decided (8.3.2.3), by mode, side, cause class and GSO outcome",
      labelNames: ["mode", "side", "cause", "gso"],
      registers,
    });
    this.imapOps = new Counter({
      name: "cpmpf_imap_operations_total",
      help: "IMAP commands to the Message Store, by command and outcome",
      labelNames: ["op", "outcome"],
      registers,
    });
    this.imapSeconds = new Histogram({
      name: "cpmpf_imap_operation_duration_seconds",
      help: "IMAP command latency",
      labelNames: ["op"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.recordSeconds = new Histogram({
      name: "cpmpf_record_store_duration_seconds",
      help: "Time for a group session record change to reach the record store's journal",
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.relaySeconds = new Histogram({
      name: "cpmpf_msrp_relay_duration_seconds",
      help: "MSRP relay latency: a message's arrival on one leg to the next hop's 2xx on the other",
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.deliveries = new Counter({
      name: "cpmpf_deliveries_total",
      help: "Deferred deliveries over (8.3.2.9.1.2), by outcome",
      labelNames: ["outcome"],
      registers,
    });
    this.drainSeconds = new Histogram({
      name: "cpmpf_delivery_drain_duration_seconds",
      help: "Time from a delivery's start to its queue emptied",
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    });
    this.backlogItems = new Gauge({
      name: "cpmpf_deferred_items",
      help: "Deferred items waiting in the served users' queues (read from the store every metrics.backlogIntervalMs)",
      registers,
    });
    this.backlogAge = new Gauge({
      name: "cpmpf_deferred_oldest_age_seconds",
      help: "Age of the oldest deferred item waiting (0 when none)",
      registers,
    });
    this.sampled(registers);
  }

  /** The components a scrape reads (set once they exist). */
  setSampler(sampler: Sampler): void {
    this.sampler = sampler;
  }

  decision(rpc: string, outcome: DecisionOutcome, seconds: number): void {
    this.decisions.inc({ rpc, outcome });
    this.decisionSeconds.observe({ rpc }, seconds);
  }

  bye(mode: string, side: string, cause: string, gso: string): void {
    this.byes.inc({ mode, side, cause, gso });
  }

  imap(op: string, outcome: "ok" | "error", seconds: number): void {
    this.imapOps.inc({ op, outcome });
    this.imapSeconds.observe({ op }, seconds);
  }

  recordStored(seconds: number): void {
    this.recordSeconds.observe(seconds);
  }

  relayed(seconds: number): void {
    this.relaySeconds.observe(seconds);
  }

  delivery(outcome: string, seconds: number | undefined): void {
    this.deliveries.inc({ outcome });
    if (seconds !== undefined) this.drainSeconds.observe(seconds);
  }

  backlog(items: number, oldestAgeSeconds: number): void {
    this.backlogItems.set(items);
    this.backlogAge.set(oldestAgeSeconds);
  }

  /** Metrics read from the Sampler at scrape time. */
  private sampled(registers: Registry[]): void {
    let sample: Sample | undefined;
    let sampledAt = 0;
    // one sampler call per scrape: the metrics of one scrape share a sample of the last SAMPLE_MS
    const read = (): Sample | undefined => {
      const now = Date.now();
      if (!sample || now - sampledAt > SAMPLE_MS) {
        sample = this.sampler?.();
        sampledAt = now;
      }
      return sample;
    };
    const lifecycles = ["active", "client-absent", "inactive", "terminated", "left"];
    new Gauge({
      name: "cpmpf_group_sessions",
      help: "Group session records, by lifecycle state",
      labelNames: ["lifecycle"],
      registers,
      collect() {
        const s = read();
        for (const l of lifecycles) this.set({ lifecycle: l }, s?.recordsByLifecycle[l] ?? 0);
      },
    });
    new Gauge({
      name: "cpmpf_anchored_sessions",
      help: "Group sessions whose MSRP media the PF anchors",
      registers,
      collect() {
        this.set(read()?.anchoredSessions ?? 0);
      },
    });
    new Gauge({
      name: "cpmpf_msrp_connections",
      help: "Open MSRP connections, by role (accepted by the listener, opened by the PF)",
      labelNames: ["role"],
      registers,
      collect() {
        const c = read()?.msrpConnections;
        this.set({ role: "accepted" }, c?.accepted ?? 0);
        this.set({ role: "opened" }, c?.opened ?? 0);
      },
    });
    new Gauge({
      name: "cpmpf_spool_depth",
      help: "Objects in the durable spool waiting for the Message Store",
      registers,
      collect() {
        this.set(read()?.spoolDepth ?? 0);
      },
    });
    new Gauge({
      name: "cpmpf_record_writes_held",
      help: "Group session record writes held on local disk until Redis takes them (session.redisWriteAhead)",
      registers,
      collect() {
        this.set(read()?.recordWritesHeld ?? 0);
      },
    });
    new Gauge({
      name: "cpmpf_deferred_sessions",
      help: "Group sessions with deferred data pending (their records)",
      registers,
      collect() {
        this.set(read()?.deferredSessions ?? 0);
      },
    });
    const seen = new Map<string, number>();
    new Counter({
      name: "cpmpf_failsafe_replays_total",
      help: "BYEs of Kamailio's fail-safe journal, by what the replay did (replayed, quarantined, retried later)",
      labelNames: ["outcome"],
      registers,
      collect() {
        const r = read()?.failsafeReplays;
        if (!r) return;
        for (const k of ["replayed", "quarantined", "retried"] as const) follow(this, seen, `replay/${k}`, { outcome: k }, r[k]);
      },
    });
    new Counter({
      name: "cpmpf_unexecuted_actions_total",
      help: "Actions a procedure asked for that no executor took (a defect: each is also logged as an error), by component and action kind",
      labelNames: ["component", "action"],
      registers,
      collect() {
        for (const { component, counts } of read()?.unexecutedActions ?? []) {
          for (const [action, n] of counts) follow(this, seen, `unexecuted/${component}/${action}`, { component, action }, n);
        }
      },
    });
    new Counter({
      name: "cpmpf_msrp_requests_total",
      help: "MSRP requests, by direction and method",
      labelNames: ["direction", "method"],
      registers,
      collect() {
        const t = read()?.msrpTraffic;
        if (!t) return;
        for (const [key, n] of t.requests) {
          const [direction = "", method = ""] = key.split(" ");
          follow(this, seen, `req/${key}`, { direction, method }, n);
        }
      },
    });
    new Counter({
      name: "cpmpf_msrp_responses_total",
      help: "MSRP responses, by direction and status code",
      labelNames: ["direction", "code"],
      registers,
      collect() {
        const t = read()?.msrpTraffic;
        if (!t) return;
        for (const [key, n] of t.responses) {
          const [direction = "", code = ""] = key.split(" ");
          follow(this, seen, `res/${key}`, { direction, code }, n);
        }
      },
    });
    new Counter({
      name: "cpmpf_sip_requests_total",
      help: "SIP requests the PF's own UA sent (first transmissions, not retransmissions), by transport and method",
      labelNames: ["transport", "method"],
      registers,
      collect() {
        const t = read()?.sipTraffic;
        if (!t) return;
        for (const [key, n] of t.requestsSent) {
          const [transport = "", method = ""] = key.split(" ");
          follow(this, seen, `sip/${key}`, { transport, method }, n);
        }
      },
    });
    new Counter({
      name: "cpmpf_sip_refused_total",
      help: "SIP datagrams (udp) and TCP connections (tcp) the PF's own UA refused: not from a trusted Kamailio",
      labelNames: ["transport"],
      registers,
      collect() {
        const r = read()?.sipTraffic?.refused;
        if (!r) return;
        for (const k of ["udp", "tcp"] as const) follow(this, seen, `sip-refused/${k}`, { transport: k }, r[k]);
      },
    });
    new Counter({
      name: "cpmpf_msrp_bytes_total",
      help: "MSRP bytes on the wire, by direction",
      labelNames: ["direction"],
      registers,
      collect() {
        const t = read()?.msrpTraffic;
        if (!t) return;
        follow(this, seen, "bytes/in", { direction: "in" }, t.bytesIn);
        follow(this, seen, "bytes/out", { direction: "out" }, t.bytesOut);
      },
    });
  }
}
