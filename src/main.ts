#!/usr/bin/env node
// cpm-pf sidecar entry point: config -> logger -> session table -> Message
// Store -> media plane (MSRP, when media.enabled) -> gRPC server.
// SIGTERM/SIGINT stop it cleanly.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type Config, loadConfig, sipTrustedSources, uaAddress } from "./config/config.js";
import { ConferenceSubscriptions } from "./delivery/conference-subscriptions.js";
import { DeviceDialogs } from "./delivery/device-dialogs.js";
import { GroupDialogs } from "./delivery/group-dialog.js";
import { DeliveryService } from "./delivery/service.js";
import { SessionRefresh } from "./delivery/session-refresh.js";
import { CpmError } from "./errors/catalogue.js";
import { startGrpcServer } from "./grpc/server.js";
import { componentLogger, createRootLogger, type Logger, logsWritten } from "./log/logger.js";
import { DeliveryEndpoint } from "./media/delivery-endpoint.js";
import { type MediaPlane, NoMediaPlane } from "./media/media-plane.js";
import { MsrpMediaPlane } from "./media/msrp-media-plane.js";
import type { DeferredSink } from "./media/ports.js";
import { readBacklog } from "./metrics/backlog.js";
import { type MetricsServer, startMetricsServer } from "./metrics/http.js";
import { type Metrics, noMetrics, PromMetrics } from "./metrics/metrics.js";
import { msrpResources } from "./msrp/resources.js";
import { FailsafeReplay } from "./pf/failsafe-replay.js";
import { ParticipatingFunction } from "./pf/participating-function.js";
import type { GroupSession } from "./session/group-session.js";
import type { SessionStore } from "./session/record-store.js";
import { SlotOwnership } from "./session/redis/ownership.js";
import { RedisRecordStore } from "./session/redis/redis-record-store.js";
import { WRITE_AHEAD_FILE, WriteAhead } from "./session/redis/write-ahead.js";
import { SessionRegistry } from "./session/registry.js";
import { SipUa, uaUriOf } from "./sip/ua.js";
import { DeferredQueue } from "./store/deferred-queue.js";
import { groupSessionFolder } from "./store/folder.js";
import { Mailboxes } from "./store/mailboxes.js";
import { SessionDescriptors } from "./store/session-descriptor.js";
import { MessageStoreSessionRecorder } from "./store/session-record.js";

/**
 * libuv's thread pool (file system, DNS, crypto): UV_THREADPOOL_SIZE, read
 * when the pool first runs, which for an ES module entry is before its first
 * line: it is set by whatever starts the process (npm start, the systemd
 * unit, the Docker image, the test harness), not here.
 */
const RECOMMENDED_THREADPOOL = 16;
function threadpoolSize(): number {
  const n = Number(process.env.UV_THREADPOOL_SIZE);
  return Number.isInteger(n) && n > 0 ? Math.min(n, 1024) : 4;
}

async function main(): Promise<void> {
  let cfg: ReturnType<typeof loadConfig>;
  try {
    cfg = loadConfig();
  } catch (err) {
    process.stderr.write(`cpm-pf: ${err instanceof CpmError ? err.message : String(err)}\n`);
    process.exit(2);
  }
  const root = createRootLogger(cfg.log.level);
  const log = componentLogger("main", root);
  const prom = cfg.metrics.enabled ? new PromMetrics({ version: packageVersion() }) : undefined;
  const metrics: Metrics = prom ?? noMetrics;
  const sessionLog = componentLogger("session", root);
  // session.store: the local journal (one sidecar), or Redis shared by several
  const sessions: SessionStore =
    cfg.session.store === "redis"
      ? new RedisRecordStore({
          url: cfg.session.redisUrl,
          retention: cfg.session,
          log: sessionLog,
          metrics,
          ...(cfg.session.redisWriteAhead ? { writeAhead: new WriteAhead(join(cfg.session.stateDir, WRITE_AHEAD_FILE), sessionLog) } : {}),
          changeLogLength: cfg.session.redisChangeLog,
        })
      : new SessionRegistry(cfg.session.stateDir, cfg.session, sessionLog, metrics);
  const restored = await sessions.load();
  // each served user's mailbox (store.user "{user}" template) with its own IMAP pool and spool
  // with shared records, other sidecars append to the same folders (a GSO's duplicate check always SEARCHes)
  const storeCfg = { ...cfg.store, otherWriters: cfg.store.otherWriters || cfg.session.store === "redis" };
  const store = new Mailboxes(storeCfg, componentLogger("store", root), metrics);
  await store.start();
  // B2BUA in the MSRP media path: the deferred queue and the 8.5.2
  // recorder write to the served user's mailbox (and spool) like the GSOs.
  let msrp: MsrpMediaPlane | undefined;
  let media: MediaPlane = new NoMediaPlane();
  const deferred = new DeferredQueue(cfg.store, store, componentLogger("store", root));
  // the PF's record learns of each deferral (client absent, data pending) once it is stored
  let pfRef: ParticipatingFunction | undefined;
  const deferredSink: DeferredSink = {
    async storeDeferred(ref, item) {
      await deferred.storeDeferred(ref, item);
      await pfRef
        ?.deferredStored(ref)
        .catch((err) => log.error("group session record not updated", { callId: ref.sessionKey, reason: String(err) }));
    },
  };
  if (cfg.media.enabled) {
    const storeLog = componentLogger("store", root);
    msrp = new MsrpMediaPlane({
      config: cfg.media,
      deferredSink,
      recorder: new MessageStoreSessionRecorder(cfg.store, store, storeLog),
      logger: componentLogger("media", root),
      ...(prom ? { metrics } : {}),
    });
    await msrp.start();
    media = msrp;
  }
  // 8.3.2.9.1.2 deferred delivery: on with a CPMDeferredMsgMgmtURI (DD-4) and the media plane (the delivery session is MSRP)
  let ua: SipUa | undefined;
  let delivery: DeliveryService | undefined;
  let subscriptions: ConferenceSubscriptions | undefined;
  let refresh: SessionRefresh | undefined;
  let devices: DeviceDialogs | undefined;
  let ownership: SlotOwnership | undefined;
  if (cfg.delivery.deferredMsgMgmtUri && !msrp) {
    log.warn("deferred delivery off: it needs media.enabled=true", { key: "delivery.deferredMsgMgmtUri" });
  } else if (cfg.delivery.deferredMsgMgmtUri && msrp) {
    const share = msrp.listenerShare;
    ua = await SipUa.start({
      host: cfg.sip.host,
      port: cfg.sip.port,
      outboundProxy: { host: cfg.sip.proxyHost, port: cfg.sip.proxyPort },
      trustedSources: sipTrustedSources(cfg.sip),
      transport: cfg.sip.transport,
      tcpConnectTimeoutMs: cfg.sip.tcpConnectTimeoutMs,
      routeParams: ";cpmpfuac",
      log: componentLogger("sip", root),
    });
    // several sidecars on one Redis: the holder of a served user's slot delivers, the others wake it
    if (sessions instanceof RedisRecordStore) {
      ownership = new SlotOwnership({
        url: cfg.session.redisUrl,
        redis: sessions.connection,
        keyspace: sessions.keys,
        holder: sessions.writer,
        slots: cfg.session.slots,
        ttlMs: cfg.session.leaseTtlMs,
        uaAddress: uaAddress(cfg.sip),
        log: componentLogger("session", root),
      });
    }
    // the PF's own conference subscription while the client is away (RFC 4575; DD-8 ii b, DD-12 end it)
    subscriptions = new ConferenceSubscriptions({
      ua,
      ...(ownership ? { ownership } : {}),
      policy: {
        expiresS: cfg.delivery.conferenceSubscriptionExpires,
        retryInitialMs: cfg.delivery.conferenceSubscriptionRetryMs,
        retryAttempts: cfg.delivery.conferenceSubscriptionRetryAttempts,
        lingerMs: SUBSCRIPTION_LINGER_MS,
      },
      unsubscribeOnRejoin: cfg.delivery.unsubscribeOnRejoin,
      originatingRoute: cfg.delivery.originatingRoute,
      sessions,
      apply: (id, info) => pfRef?.applyConferenceNotify(id, info) ?? Promise.resolve({ applied: false, notes: ["the PF is not up"] }),
      log: componentLogger("delivery", root),
    });
    // the CF's session refreshes while the client is away (its re-INVITE / UPDATE would reach a dead Contact)
    refresh = new SessionRefresh({
      sessions,
      answeredCf: (callId, cseq) => pfRef?.cfRequest(callId, cseq) ?? Promise.resolve(),
      media: msrp,
      uaUri: uaUriOf(ua.address),
      log: componentLogger("delivery", root),
    });
    // BYE-B7: the further devices of a forked INVITE, whose dialogs the UA holds
    devices = new DeviceDialogs({
      ua,
      sessions,
      media: msrp,
      byeTimeoutMs: cfg.pf.deviceByeTimeoutMs,
      log: componentLogger("delivery", root),
    });
    delivery = new DeliveryService({
      policy: { ...cfg.delivery, groupSessionDataManagement: cfg.pf.groupSessionDataManagement, uaUri: uaUriOf(ua.address) },
      ...(ownership ? { ownership } : {}),
      servedUser: cfg.pf.servedUser,
      ua,
      refresh,
      devices,
      openLeg: async (sessionKey, originalSdp) => {
        const { endpoint, offerSdp } = await DeliveryEndpoint.create({ sessionKey, originalSdp, msrp: share });
        return { leg: endpoint, offerSdp };
      },
      answerLeg: async (sessionKey, offerSdp) => {
        const { endpoint, answerSdp } = await DeliveryEndpoint.answer({ sessionKey, offerSdp, msrp: share });
        return { leg: endpoint, answerSdp };
      },
      queue: deferred,
      sessions,
      ...(cfg.pf.allowOfflineStorage || cfg.media.recording
        ? { retireFolder: (s: GroupSession) => groupSessionFolder(cfg.store.rootFolder, s.conversationId, s.contributionId) }
        : {}),
      rebuild: (user, conv, contrib) => pfRef?.rebuild(user, conv, contrib) ?? Promise.resolve(undefined),
      queueSettled: (user, conv, contrib, fence) => pfRef?.queueSettled(user, conv, contrib, fence) ?? Promise.resolve(),
      deviceSeen: (user, conv, contrib, keyword, fence) => pfRef?.deviceSeen(user, conv, contrib, keyword, fence) ?? Promise.resolve(),
      deviceDelivered: (user, conv, contrib, keyword, through, fence) =>
        pfRef?.deviceDelivered(user, conv, contrib, keyword, through, fence) ?? Promise.resolve(),
      delivering: (user, conv, contrib, keyword, to, fence) =>
        pfRef?.delivering(user, conv, contrib, keyword, to, fence) ?? Promise.resolve(),
      // 8.3.2.3 for a BYE on a group session dialog the UA set up (a re-start): as Kamailio's, the outcome at once
      networkBye: async (raw) => {
        const pf = pfRef;
        if (!pf) return;
        const r = await pf.handleBye({ raw, source: "sip-ua" });
        await pf.byeOutcome(r.sessionKey, 200);
      },
      group: new GroupDialogs({
        userLeaves: (sessionKey) => pfRef?.userLeaves(sessionKey) ?? Promise.resolve(undefined),
        clientJoined: (sessionKey) => pfRef?.clientJoined(sessionKey) ?? Promise.resolve(),
        restarted: (sessionKey, dialog, focusUri) => pfRef?.restarted(sessionKey, dialog, focusUri) ?? Promise.resolve(),
        subscriptions,
        ua,
        originatingRoute: cfg.delivery.originatingRoute,
        media: msrp,
        log: componentLogger("delivery", root),
      }),
      subscriptions,
      metrics,
      log: componentLogger("delivery", root),
    });
  }
  if (ownership && delivery) {
    const d = delivery;
    await ownership.start((wake) => d.woken(wake));
  }
  const pf = new ParticipatingFunction(cfg, sessions, store, media, componentLogger("pf", root), {
    anchorMedia: cfg.media.enabled,
    ...(delivery ? { registrations: delivery } : {}),
    descriptors: new SessionDescriptors(cfg.store, store, componentLogger("store", root)),
    ...(subscriptions ? { lifecycleListener: subscriptions.onLifecycle.bind(subscriptions) } : {}),
    ...(refresh ? { refreshes: refresh } : {}),
    ...(devices ? { devices } : {}),
    uaAddress: uaAddress(cfg.sip),
  });
  pfRef = pf;
  // stop() is defined below; the admin Drain RPC calls it like SIGTERM
  let stopRef: ((signal: string) => Promise<void>) | undefined;
  const server = await startGrpcServer(pf, cfg.grpc, componentLogger("grpc", root), metrics, {
    sessions,
    queue: deferred,
    store,
    ...(delivery ? { deliverTo: (user: string, contact: string) => (delivery as DeliveryService).deliverTo(user, contact) } : {}),
    queueSettled: (user, conv, contrib) => pf.queueSettled(user, conv, contrib),
    drain: () => void stopRef?.("admin Drain"),
  });
  // the BYEs Kamailio relayed while this sidecar could not decide (CPM_PF_FAILSAFE_DIR)
  const replay = cfg.session.failsafeDir
    ? new FailsafeReplay(cfg.session.failsafeDir, pf, componentLogger("pf", root), cfg.session.failsafeReplayMs)
    : undefined;
  await replay?.start();
  // the retention policy of the group session records (session.retentionMs, session.inactiveRetentionMs)
  // (a shared store can be unreachable for a while: the next sweep tries again)
  const sweeper = setInterval(
    () => pf.sweep().catch((err) => log.warn("retention sweep failed", { reason: err instanceof CpmError ? err.detail : String(err) })),
    60_000,
  );
  sweeper.unref();
  const metricsServer = prom
    ? await startMetrics(prom, cfg.metrics, { sessions, store, deferred, media: msrp, replay, ua, pf, delivery }, log)
    : undefined;
  server.serving();
  const threads = threadpoolSize();
  // the spool's writes and fsyncs, the journals' and every other file operation share libuv's pool
  if (threads < RECOMMENDED_THREADPOOL)
    log.warn("libuv thread pool small for the spool's fsyncs under load: start the sidecar with UV_THREADPOOL_SIZE=16", {
      threadpool: threads,
    });
  log.info("sidecar ready", {
    threadpool: threads,
    grpc: server.target,
    mode: cfg.pf.mode,
    media: msrp ? `${msrp.address.host}:${msrp.address.port}` : "off",
    deferredDelivery: ua ? `${ua.address.host}:${ua.address.port}` : "off",
    sessionStore: cfg.session.store,
    sessionsRestored: restored,
    ...(ownership ? { owner: ownership.self, slots: cfg.session.slots, leaseTtlMs: cfg.session.leaseTtlMs } : {}),
    pid: process.pid,
  });
  // What the records say was this process's live work goes on: the conference subscriptions of the
  // users still away, and (delivery.resumeInterrupted) the deliveries a SIGKILL interrupted, not at each
  // device's next REGISTER. Several sidecars: on a scan every lease TTL, for the slots each holds or
  // takes over (a dead holder's, once its lease lapsed).
  const takeOver = () => {
    void subscriptions?.resume(sessions.all()).then(
      (n) => {
        if (n > 0) log.info("conference subscriptions made again for the group sessions whose client is away", { resumed: n });
      },
      (err) => log.error("conference subscriptions not made again", { reason: String(err) }),
    );
    if (cfg.delivery.resumeInterrupted) {
      void delivery?.resumeInterrupted().catch((err) => log.error("interrupted deliveries not resumed", { reason: String(err) }));
    }
  };
  takeOver();
  const takeOverScan = ownership ? setInterval(takeOver, cfg.session.leaseTtlMs) : undefined;
  takeOverScan?.unref();

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("stopping", { signal });
    // drain: health NOT_SERVING, no new sessions or deliveries, the running deliveries finish (pf.drainTimeoutMs)
    server.notServing();
    clearInterval(takeOverScan);
    pf.drain();
    await ownership?.stopWakes();
    const until = Date.now() + cfg.pf.drainTimeoutMs;
    if (delivery && delivery.running > 0) {
      const ended = await delivery.drain(cfg.pf.drainTimeoutMs);
      log.info(
        ended === 0 ? "drain: deliveries finished" : "drain: deliveries still running were ended, what they did not deliver stays queued",
        {
          ended,
        },
      );
    }
    await server.shutdown();
    await metricsServer?.close();
    await replay?.close();
    pf.close();
    delivery?.close(); // after drain() a no-op
    // the slots go at once (before the records' connection closes): the next registration's sidecar takes them
    await ownership?.release();
    subscriptions?.close();
    await ua?.close();
    // media before the store: its last deferred items and recordings go to the store or spool
    await msrp?.close();
    await sessions.close();
    const spooled = await store.flushSpools(Math.max(0, until - Date.now()));
    if (spooled > 0) log.warn("drain: objects left in the spool, stored after the next start", { spooled });
    await store.close();
    await logsWritten();
    process.exit(0);
  };
  stopRef = stop;
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  // A bug must not take the PF down silently: log it; the health service and
  // Kamailio's fail-safe cover the gap while it restarts if it exits.
  process.on("unhandledRejection", (reason) => log.error("unhandled rejection", { reason: String(reason) }));
}

/** How long the focus's terminating NOTIFY is awaited after an unsubscribe or the group's end (RFC 3261 64*T1). */
const SUBSCRIPTION_LINGER_MS = 32_000;

function packageVersion(): string {
  try {
    // dist/src/main.js or dist/bundle/sidecar.mjs (scripts/bundle.mjs) -> the package's root
    return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string }).version ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** The metrics listener, what a scrape samples, and the periodic read of the deferred backlog. */
async function startMetrics(
  prom: PromMetrics,
  cfg: Config["metrics"],
  parts: {
    sessions: SessionStore;
    store: Mailboxes;
    deferred: DeferredQueue;
    media: MsrpMediaPlane | undefined;
    replay: FailsafeReplay | undefined;
    ua: SipUa | undefined;
    pf: Pick<ParticipatingFunction, "unexecutedActions">;
    delivery: Pick<DeliveryService, "unexecutedActions"> | undefined;
  },
  log: Logger,
): Promise<MetricsServer> {
  const { sessions, store, deferred, media, replay, ua, pf, delivery } = parts;
  prom.setSampler(() => {
    const counts = sessions.counts();
    const m = media?.stats();
    return {
      recordsByLifecycle: counts.byLifecycle,
      deferredSessions: counts.pendingDeferred,
      anchoredSessions: m?.sessions ?? 0,
      msrpConnections: { accepted: m?.acceptedConnections ?? 0, opened: m?.openedConnections ?? 0 },
      msrpTraffic: msrpResources.traffic,
      spoolDepth: store.stats().spoolPending,
      recordWritesHeld: sessions instanceof RedisRecordStore ? sessions.heldWrites : 0,
      failsafeReplays: replay?.counts ?? { replayed: 0, quarantined: 0, retried: 0 },
      unexecutedActions: [
        { component: "pf", counts: pf.unexecutedActions },
        ...(delivery ? [{ component: "delivery", counts: delivery.unexecutedActions }] : []),
      ],
      ...(ua ? { sipTraffic: { requestsSent: ua.requestsSent, refused: { udp: ua.refusedDatagrams, tcp: ua.refusedConnections } } } : {}),
    };
  });
  let reading = false;
  const backlog = setInterval(() => {
    if (reading) return;
    reading = true;
    readBacklog(sessions.pendingUsers(), deferred)
      .then((b) => prom.backlog(b.items, b.oldestAgeSeconds))
      .catch((err) => log.warn("deferred backlog not read for the metrics", { reason: err instanceof CpmError ? err.detail : String(err) }))
      .finally(() => {
        reading = false;
      });
  }, cfg.backlogIntervalMs);
  backlog.unref();
  const server = await startMetricsServer(prom, cfg.host, cfg.port, log);
  return {
    ...server,
    close: async () => {
      clearInterval(backlog);
      await server.close();
    },
  };
}

main().catch((err) => {
  process.stderr.write(`cpm-pf: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
