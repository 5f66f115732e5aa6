// One typed, validated configuration: a JSON file plus environment overrides.
// Override any key with CPM_PF__<SECTION>__<KEY> (e.g. CPM_PF__STORE__PORT=1143).
// A bad value stops start-up with an error naming the key.
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { CpmError } from "../errors/catalogue.js";
import { type AddressList, parseAddressList } from "../sip/address-list.js";
import { parseTrustedRegistrars } from "../sip/registration-trust.js";

export type PfMode = "proxy" | "b2bua";

export interface Config {
  grpc: {
    /** Address the gRPC server binds. Default 127.0.0.1. */
    host: string;
    /** Port; 0 picks a free one (tests). Default 50051. */
    port: number;
    /**
     * A Unix domain socket path to listen on instead of host:port (Kamailio
     * on the same host: CPM_PF_GRPC_TARGET "unix:<path>"). The socket is made
     * mode 0660: Kamailio's user needs the sidecar's group. Default "".
     */
    socket: string;
    /** TLS certificate chain (PEM) of the gRPC server; with tlsKeyFile, gRPC runs over TLS. Default "". */
    tlsCertFile: string;
    /** Its private key (PEM). Default "". */
    tlsKeyFile: string;
    /** CA (PEM) that signs the clients' certificates: set, a client without one is refused (mutual TLS). Default "". */
    tlsCaFile: string;
  };
  log: {
    /** error | warn | info | debug. Default info. */
    level: "error" | "warn" | "info" | "debug";
  };
  metrics: {
    /** Serve Prometheus metrics (text exposition) on host:port /metrics. Default false. */
    enabled: boolean;
    /** Address the metrics listener binds. Default 127.0.0.1 (loopback only). */
    host: string;
    /** Port; 0 picks a free one (tests). Default 9464. */
    port: number;
    /** How often the deferred backlog (items pending, oldest one's age) is read from the store (ms). Default 30000. */
    backlogIntervalMs: number;
  };
  pf: {
    /** Role of the PF for group sessions it knows (8.3.2.3 1 vs 2). Default b2bua. */
    mode: PfMode;
    /** Role for a BYE whose session the PF never saw (no state to build a GSO from). Default proxy. */
    unknownSessionMode: PfMode;
    /** Group Session Data management (subject, icon) in GSOs: the spec's MAY. Default false. */
    groupSessionDataManagement: boolean;
    /** The served user's address used as GSO `To` when a session does not reveal it. Default "". */
    servedUser: string;
    /**
     * The served user's CPM policy action element <allow-offline-storage>
     * (8.3.2.3 2.d): with it the PF records each B2BUA session it anchored
     * (8.5.2) even when media.recording is off. Default false.
     */
    allowOfflineStorage: boolean;
    /**
     * A BYE decided for a known session whose outcome Kamailio never reports
     * (ReportByeOutcome lost: Kamailio restarted, the task failed): its
     * media is released this long after the decision (ms). Above Kamailio's
     * CPM_PF_BYE_CLIENT_TIMEOUT_MS and RFC 3261's 64*T1 (32 s). Default 40000.
     */
    byeOutcomeTimeoutMs: number;
    /**
     * BYE-B7: how long (ms) the served user's devices of a forked INVITE
     * have to answer the network's BYE that the PF's UA sends on to each,
     * before the UA answers the BYE's sender 200 OK anyway (BYE-B9). Below
     * Kamailio's CPM_PF_BYE_CLIENT_TIMEOUT_MS. Default 4000.
     */
    deviceByeTimeoutMs: number;
    /**
     * SIGTERM drain: how long (ms) the running deferred deliveries may take to
     * finish, and then the spool to reach the store, before the sidecar exits
     * (what is left stays queued / spooled). Keep it under the service
     * manager's stop timeout. Default 10000.
     */
    drainTimeoutMs: number;
  };
  store: {
    /** IMAP Message Store host. Default 127.0.0.1. */
    host: string;
    /** IMAP port. Default 143. */
    port: number;
    /** Implicit TLS (IMAPS). Default false. */
    secure: boolean;
    /**
     * IMAP login of a served user's mailbox. "{user}" is replaced by the
     * mailbox name of the served user's URI (sip:alice@example.net ->
     * alice@example.net, tel:+16135551210 -> +16135551210), so each served
     * user's data goes to that user's mailbox; with a Dovecot master user:
     * "{user}*pfmaster". Without "{user}" every served user shares this one
     * login (single mailbox). Default "".
     */
    user: string;
    /** Password of that login (with a master-user template: the master password). Default "". */
    password: string;
    /** Root folder of CPM objects; deployed RCS stores use "Default". */
    rootFolder: string;
    /**
     * Root folder of the deferred-messages queue (read by
     * deferred delivery 8.3.2.9.1.2): <deferredRootFolder>/<Conversation-ID>/<Contribution-ID>.
     * A sibling of rootFolder, not inside it. Default "Deferred".
     */
    deferredRootFolder: string;
    /** IMAP connections per mailbox. Default 2. */
    poolSize: number;
    /**
     * IMAP connection attempts (connect and login) under way at once over
     * all mailboxes. A burst of first uses (many served users' new group
     * sessions, a restart) then queues in the PF instead of starting a login
     * process per connection in the store at once. Default 4.
     */
    maxConcurrentLogins: number;
    /** Mailboxes (IMAP pools) open at once; beyond it the least recently used idle one is closed. Default 256. */
    maxMailboxes: number;
    /** A mailbox unused this long (ms) with nothing spooled closes its IMAP connections. Default 60000. */
    mailboxIdleMs: number;
    /**
     * How long a BYE decision waits at most for its GSO to reach the mailbox
     * (ms; never more than half of what its caller waits): slower, it is
     * spooled (fsync'd) and stored behind, so the answer to Kamailio stays
     * within its deadline (CPM_PF_DEADLINE_MS, 200). Default 20: a decision
     * holds one of Kamailio's async workers while it waits, and the BYEs
     * behind it queue there, outside the deadline (README "Fault runs").
     */
    gsoBudgetMs: number;
    /** Connect/command timeout in ms. Default 3000. */
    timeoutMs: number;
    /**
     * Directory of the durable spool for objects the store did not take yet;
     * per mailbox a subdirectory <16 hex of SHA-256 of the mailbox name> with
     * an "owner" file (the shared login uses the directory itself). Default var/spool.
     */
    spoolDir: string;
    /**
     * Other PF sidecars append to the same mailboxes (several sidecars on a
     * shared record store): a folder this one CREATEd may hold objects it
     * did not append, so every duplicate check of a `unique` object SEARCHes.
     * Always on with session.store "redis". Default false.
     */
    otherWriters: boolean;
    /** First spool retry delay in ms; doubles up to retryMaxMs. Default 500. */
    retryInitialMs: number;
    /** Longest spool retry delay in ms. Default 30000. */
    retryMaxMs: number;
  };
  media: {
    /** Anchor MSRP in the PF (B2BUA media path); false = NoMediaPlane. Default false. */
    enabled: boolean;
    /** Address the MSRP listener binds. Default 127.0.0.1. */
    host: string;
    /** Address put in a=path / c= (NAT, 0.0.0.0 binds); "" = host. Default "". */
    advertisedHost: string;
    /** MSRP listener port; 0 picks a free one (tests). Default 2855. */
    port: number;
    /** A leg (client or CF) not connected this long after the SDP answer counts as absent (ms). Default 10000. */
    clientLegTimeoutMs: number;
    /** Connections that bind no session this long are closed (RFC 4975 14.1 hygiene, ms). Default 10000. */
    unauthenticatedTimeoutMs: number;
    /** Close a connection after this long without traffic (ms); 0 = never. Default 0. */
    idleTimeoutMs: number;
    /** A request unanswered this long counts as 408 (RFC 4975 7.1.1, ms). Default 30000. */
    transactionTimeoutMs: number;
    /** Record every anchored session (OMA CPM 8.5.2) even without allow-offline-storage. Default false. */
    recording: boolean;
    /** Bytes of relayed messages kept per session for recording; later ones are dropped and logged. Default 1 MiB. */
    maxRecordedBytes: number;
    /** Start line + headers of one frame. Default 16384. */
    maxHeaderBytes: number;
    /** Body of one chunk (413 above). Default 262144. */
    maxChunkBytes: number;
    /** Bytes skipped looking for the end-line of a refused frame before the connection is closed (RFC 4975 9). Default 1048576. */
    maxSkipBytes: number;
    /** Bytes sent to a peer and not taken by it above which its connection is closed (a peer that never reads). Default 8388608. */
    maxWriteQueueBytes: number;
    /** One reassembled message (413 above). Default 1048576. */
    maxMessageBytes: number;
    /** Partially received messages per session (413 above). Default 16. */
    maxMessagesInFlight: number;
    /** Bytes per chunk the PF sends. Default 2048 (RFC 4975 7.1.1). */
    chunkSize: number;
    /** Chunks of one message the PF sends before waiting for the oldest response. Default 4. */
    chunkWindow: number;
    /** Deferred items the PF keeps unanswered on a delivery session (sent in order, pipelined; DD-10). Default 16. */
    deliveryWindow: number;
    /** MSRP over TLS (msrps): PEM certificate and key files; both "" = plain TCP. Default "". */
    tlsCertFile: string;
    tlsKeyFile: string;
    /** PEM CA bundle to verify peers the PF connects to over msrps; "" = system CAs. Default "". */
    tlsCaFile: string;
  };
  delivery: {
    /**
     * CPMDeferredMsgMgmtURI (8.3.2.9.1.2 a.ii, DD-4): the PF's identity in the
     * P-Asserted-Identity of deferred-delivery INVITEs, per operator policy.
     * A SIP/SIPS/TEL URI; "" = deferred delivery after registration is off.
     * Default "".
     */
    deferredMsgMgmtUri: string;
    /**
     * The S-CSCF's URI for the delivery INVITE's terminating processing (TS
     * 24.229 5.7.3: an AS originating a request for a served user sends it to
     * the S-CSCF), e.g. "sip:scscf.ims.example.net:6060". When set, the INVITE
     * is pre-loaded with Route <URI;lr> after Kamailio's, its Request-URI is
     * the served user's public identity and an Accept-Contact with the
     * device's +sip.instance (;require;explicit, RFC 3841) picks the device
     * that registered. "" = straight to the registered contact. Default "".
     */
    terminatingRoute: string;
    /**
     * The S-CSCF's URI for the requests the PF sends for the served user
     * (the DD-13 / RJ-3 re-start INVITE to the focus or the conference
     * factory): TS 24.229 5.7.3, the S-CSCF's originating processing first.
     * When set, they are pre-loaded with Route <URI;lr;orig> after Kamailio's.
     * "" = straight to the focus / factory. Default "".
     */
    originatingRoute: string;
    /**
     * The Contact of the delivery INVITE (DD-3): "focus" names the group
     * session's focus (lastfocussessionid, ;isfocus) as the original
     * invitation did, so the client recognises the group and learns the
     * focus it re-joins (8.2.2.7); "pf" names the PF's own SIP UA (sip.*,
     * the CPM ICSI, no ;isfocus), so the client's in-dialog requests target
     * the PF even where the route set is lost. Either way the INVITE is
     * record-routed through Kamailio to the UA (docs/adr/0002). Default "focus".
     */
    contact: "focus" | "pf";
    /** DD-9 (MAY): re-attempts of a delivery INVITE answered with an error other than 603; 0 = off. Default 3. */
    retryAttempts: number;
    /**
     * DD-1: a registration (or wake-up) that found the served user's deferred
     * queue unreadable (the Message Store down) is tried again after this
     * long, doubling up to retryMaxMs, until the queue can be read or a newer
     * registration of the device comes; 0 = off (the next REGISTER refresh
     * tries). Default 2000.
     */
    storeRetryMs: number;
    /**
     * DD-1 / DD-10 across a crash: a registration's delivery that the
     * sidecar did not see end (SIGKILL, power loss: the group session record
     * still says it was under way) is started again to the same contact when
     * the sidecar starts, behind what the device confirmed, instead of
     * waiting for the device's next REGISTER refresh; false = wait for it.
     * Default true.
     */
    resumeInterrupted: boolean;
    /** DD-9: delay before the first re-attempt (ms). Default 60000. */
    retryInitialMs: number;
    /** DD-9: each further delay is the previous one times this (1 = constant). Default 2. */
    retryFactor: number;
    /** DD-9: longest delay between re-attempts (ms), >= retryInitialMs. Default 900000. */
    retryMaxMs: number;
    /**
     * RJ-1: the PF's UA answers a client's re-join of a group session it
     * holds pending data or a lost client leg for, and delivers in that
     * session (8.3.2.9.1.3). Needs Kamailio to route it there (cpm-pf.cfg
     * route[CPM_PF_REJOIN]; not with WITH_CPM_PF_OBSERVE_NOWAIT): false sends
     * every re-join to the focus, and the data waits for a registration.
     * Default true.
     */
    answerRejoins: boolean;
    /** DD-11 / RJ-3 (MAY): deliver interim Group State Objects (and a final GSO after registration delivery). Default false. */
    sendInterimGsos: boolean;
    /** DD-12 (MAY): unsubscribe from the focus's conference event package after re-joining the conference. Default false. */
    unsubscribeOnRejoin: boolean;
    /**
     * DD-13 / RJ-3: the conference factory URI the PF re-starts a long-lived
     * group session through when its focus is gone (the re-join INVITE to
     * lastfocussessionid answered 404, 410 or 403): a new INVITE with the
     * same Conversation-ID and Contribution-ID and the known participants in
     * an RFC 5366 recipient list. A group the client created uses the URI
     * its own INVITE went to; this one is for the others. A sip: or sips:
     * URI; "" = no factory step (RJ-3 with the focus's code). Default "".
     */
    conferenceFactoryUri: string;
    /**
     * The PF's own subscription to the focus's conference event package
     * (RFC 4575, RFC 6665) while the served user's client is away from an
     * on-going group session (record client-absent): Expires of its
     * SUBSCRIBEs (s), refreshed before they run out; 0 = the PF does not
     * subscribe. Needs the PF's SIP UA (deferred delivery on). Default 3600.
     */
    conferenceSubscriptionExpires: number;
    /** First back-off after a failed SUBSCRIBE (ms), doubling, at most conferenceSubscriptionExpires. Default 30000. */
    conferenceSubscriptionRetryMs: number;
    /** Failed SUBSCRIBEs in a row before the PF gives up on a group session's subscription. Default 5. */
    conferenceSubscriptionRetryAttempts: number;
    /**
     * DD-1 trust: the S-CSCF addresses third-party REGISTERs (TS 24.229
     * 5.4.1.7) may come from, comma-separated IPs or CIDRs, checked against
     * the source Kamailio received the REGISTER from. Any other source:
     * answered 403, nothing started. Kamailio's CPM_PF_SCSCF_ADDRESSES
     * refuses them first; keep both the same. Default "127.0.0.1,::1".
     */
    trustedRegistrars: string;
    /**
     * DD-1 per device: how long a deferred item (since it reached the store,
     * its INTERNALDATE) waits for the served user's other devices once one
     * device got it. An item leaves the queue when every member device
     * (+sip.instance) got it, or when it is older than this and at least one
     * did: a device that never comes back cannot keep data for ever. 0 = an
     * item leaves as soon as one device got it (one delivery per user).
     * Default 604800000 (7 days).
     */
    deviceRetentionMs: number;
  };
  /** The PF's own SIP user agent: requests it originates (deferred delivery INVITE, ACK, BYE) go through Kamailio. */
  sip: {
    /** Address the UA binds on UDP and listens on TCP (Kamailio's CPM_PF_UA_ADDRESS points at it). Default 127.0.0.1:5097. */
    host: string;
    port: number;
    /** Kamailio, the outbound proxy every request the UA originates is sent to (RFC 3261 8.1.2). Default 127.0.0.1:5060. */
    proxyHost: string;
    proxyPort: number;
    /** Kamailio's addresses (comma-separated IPs or CIDRs) the UA takes SIP datagrams and TCP connections from; others are dropped, counted. Default "" = sip.proxyHost. */
    trustedSources: string;
    /**
     * What the requests the UA originates go over, where the next hop's URI
     * names no transport: "udp", "tcp", or "auto" = RFC 3261 18.1.1 (a MUST
     * for a request above 1300 bytes when the path MTU is unknown: TCP then,
     * UDP otherwise, and UDP when Kamailio refuses the TCP connection).
     * Delivery INVITEs are 1.5-9 KB. Default "auto".
     */
    transport: "udp" | "tcp" | "auto";
    /**
     * How long opening a TCP connection to Kamailio may take (ms); longer
     * is a transport error (the delivery attempt fails, DD-9 retries). Two
     * seconds let a lost SYN be sent again once (Linux: after 1 s). Default 2000.
     */
    tcpConnectTimeoutMs: number;
    /**
     * The UA's address as Kamailio reaches it (what CPM_PF_UA_ADDRESS names),
     * given in ObserveSession answers so that any Kamailio of the deployment
     * sends a re-join or a session refresh to the UA that takes it; with
     * several sidecars it is published with the slot leases. "" = sip:<host>:<port>.
     * Default "".
     */
    advertisedAddress: string;
  };
  session: {
    /** Directory where session facts are persisted so they survive a restart. */
    stateDir: string;
    /** A group session record that ended for good (terminated, left) with no pending data is purged this long after it ended (ms). Default 30 days. */
    retentionMs: number;
    /** A record of a group that may come back (active, client absent, inactive) with no pending data is purged this long after its last event (ms). Default 400 days. */
    inactiveRetentionMs: number;
    /**
     * Where Kamailio journals the BYEs it relayed through its fail-safe
     * (CPM_PF_FAILSAFE_DIR, same directory): replayed from here. Default "" (off).
     */
    failsafeDir: string;
    /** How often the fail-safe journal is looked at (ms). Default 500. */
    failsafeReplayMs: number;
    /**
     * Where the group session records live: "journal" (the local journal in
     * stateDir, one sidecar) or "redis" (shared by every sidecar on one
     * Redis / Valkey, src/session/redis/). Default "journal".
     */
    store: "journal" | "redis";
    /** The Redis server of session.store "redis" (redis:// or rediss:// URL, optional user:password@ and /db). Default "". */
    redisUrl: string;
    /**
     * session.store "redis": while Redis cannot be reached, record writes are
     * held in a local file (stateDir/redis-write-ahead.jsonl; each sidecar
     * its own stateDir) and replayed once it answers, so decisions do not
     * wait for Redis; false = a write fails while Redis is away (the BYE goes
     * through Kamailio's fail-safe). Default true.
     */
    redisWriteAhead: boolean;
    /**
     * session.store "redis": about how many record changes Redis keeps in the
     * change log (a stream, XADD MAXLEN ~), so a sidecar whose subscription
     * dropped reads only what it missed; a longer gap means reading every
     * record again. Default 100000 (≈10 MB).
     */
    redisChangeLog: number;
    /** session.store "redis": served-user slots (FNV-1a of the user mod this), one owner each; the same on every sidecar. Default 256. */
    slots: number;
    /** session.store "redis": a slot's lease lapses this long after its holder last renewed it (renewed every third of it, ms). Default 10000. */
    leaseTtlMs: number;
  };
}

export const defaults: Config = {
  grpc: { host: "127.0.0.1", port: 50051, socket: "", tlsCertFile: "", tlsKeyFile: "", tlsCaFile: "" },
  log: { level: "info" },
  metrics: { enabled: false, host: "127.0.0.1", port: 9464, backlogIntervalMs: 30_000 },
  pf: {
    mode: "b2bua",
    unknownSessionMode: "proxy",
    groupSessionDataManagement: false,
    servedUser: "",
    allowOfflineStorage: false,
    byeOutcomeTimeoutMs: 40_000,
    deviceByeTimeoutMs: 4_000,
    drainTimeoutMs: 10_000,
  },
  store: {
    host: "127.0.0.1",
    port: 143,
    secure: false,
    user: "",
    password: "",
    rootFolder: "Default",
    deferredRootFolder: "Deferred",
    poolSize: 2,
    maxConcurrentLogins: 4,
    maxMailboxes: 256,
    mailboxIdleMs: 60_000,
    gsoBudgetMs: 20,
    timeoutMs: 3000,
    spoolDir: "var/spool",
    otherWriters: false,
    retryInitialMs: 500,
    retryMaxMs: 30000,
  },
  media: {
    enabled: false,
    host: "127.0.0.1",
    advertisedHost: "",
    port: 2855,
    clientLegTimeoutMs: 10_000,
    unauthenticatedTimeoutMs: 10_000,
    idleTimeoutMs: 0,
    transactionTimeoutMs: 30_000,
    recording: false,
    maxRecordedBytes: 1024 * 1024,
    maxHeaderBytes: 16 * 1024,
    maxChunkBytes: 256 * 1024,
    maxSkipBytes: 1024 * 1024,
    maxWriteQueueBytes: 8 * 1024 * 1024,
    maxMessageBytes: 1024 * 1024,
    maxMessagesInFlight: 16,
    chunkSize: 2048,
    chunkWindow: 4,
    deliveryWindow: 16,
    tlsCertFile: "",
    tlsKeyFile: "",
    tlsCaFile: "",
  },
  delivery: {
    deferredMsgMgmtUri: "",
    terminatingRoute: "",
    contact: "focus",
    originatingRoute: "",
    retryAttempts: 3,
    storeRetryMs: 2000,
    resumeInterrupted: true,
    retryInitialMs: 60_000,
    retryFactor: 2,
    retryMaxMs: 900_000,
    answerRejoins: true,
    sendInterimGsos: false,
    unsubscribeOnRejoin: false,
    conferenceFactoryUri: "",
    conferenceSubscriptionExpires: 3600,
    conferenceSubscriptionRetryMs: 30_000,
    conferenceSubscriptionRetryAttempts: 5,
    trustedRegistrars: "127.0.0.1,::1",
    deviceRetentionMs: 604_800_000,
  },
  sip: {
    host: "127.0.0.1",
    port: 5097,
    proxyHost: "127.0.0.1",
    proxyPort: 5060,
    trustedSources: "",
    transport: "auto",
    tcpConnectTimeoutMs: 2000,
    advertisedAddress: "",
  },
  session: {
    stateDir: "var/state",
    retentionMs: 30 * 24 * 3600 * 1000,
    inactiveRetentionMs: 400 * 24 * 3600 * 1000,
    failsafeDir: "",
    failsafeReplayMs: 500,
    store: "journal",
    redisUrl: "",
    redisWriteAhead: true,
    redisChangeLog: 100_000,
    slots: 256,
    leaseTtlMs: 10_000,
  },
};

type Kind = "string" | "port" | "posint" | "nonnegint" | "bool" | { oneOf: readonly string[] };

const schema: { [S in keyof Config]: { [K in keyof Config[S]]: Kind } } = {
  grpc: { host: "string", port: "port", socket: "string", tlsCertFile: "string", tlsKeyFile: "string", tlsCaFile: "string" },
  log: { level: { oneOf: ["error", "warn", "info", "debug"] } },
  metrics: { enabled: "bool", host: "string", port: "port", backlogIntervalMs: "posint" },
  pf: {
    mode: { oneOf: ["proxy", "b2bua"] },
    unknownSessionMode: { oneOf: ["proxy", "b2bua"] },
    groupSessionDataManagement: "bool",
    servedUser: "string",
    allowOfflineStorage: "bool",
    byeOutcomeTimeoutMs: "posint",
    deviceByeTimeoutMs: "posint",
    drainTimeoutMs: "posint",
  },
  store: {
    host: "string",
    port: "port",
    secure: "bool",
    user: "string",
    password: "string",
    rootFolder: "string",
    deferredRootFolder: "string",
    poolSize: "posint",
    maxConcurrentLogins: "posint",
    maxMailboxes: "posint",
    mailboxIdleMs: "posint",
    gsoBudgetMs: "posint",
    timeoutMs: "posint",
    spoolDir: "string",
    otherWriters: "bool",
    retryInitialMs: "posint",
    retryMaxMs: "posint",
  },
  media: {
    enabled: "bool",
    host: "string",
    advertisedHost: "string",
    port: "port",
    clientLegTimeoutMs: "posint",
    unauthenticatedTimeoutMs: "posint",
    idleTimeoutMs: "nonnegint",
    transactionTimeoutMs: "posint",
    recording: "bool",
    maxRecordedBytes: "posint",
    maxHeaderBytes: "posint",
    maxChunkBytes: "posint",
    maxSkipBytes: "posint",
    maxWriteQueueBytes: "posint",
    maxMessageBytes: "posint",
    maxMessagesInFlight: "posint",
    chunkSize: "posint",
    chunkWindow: "posint",
    deliveryWindow: "posint",
    tlsCertFile: "string",
    tlsKeyFile: "string",
    tlsCaFile: "string",
  },
  delivery: {
    deferredMsgMgmtUri: "string",
    terminatingRoute: "string",
    originatingRoute: "string",
    contact: { oneOf: ["focus", "pf"] },
    retryAttempts: "nonnegint",
    storeRetryMs: "nonnegint",
    resumeInterrupted: "bool",
    retryInitialMs: "posint",
    retryFactor: "posint",
    retryMaxMs: "posint",
    answerRejoins: "bool",
    sendInterimGsos: "bool",
    unsubscribeOnRejoin: "bool",
    conferenceFactoryUri: "string",
    conferenceSubscriptionExpires: "nonnegint",
    conferenceSubscriptionRetryMs: "posint",
    conferenceSubscriptionRetryAttempts: "nonnegint",
    trustedRegistrars: "string",
    deviceRetentionMs: "nonnegint",
  },
  sip: {
    host: "string",
    port: "port",
    proxyHost: "string",
    proxyPort: "port",
    trustedSources: "string",
    transport: { oneOf: ["udp", "tcp", "auto"] },
    tcpConnectTimeoutMs: "posint",
    advertisedAddress: "string",
  },
  session: {
    stateDir: "string",
    retentionMs: "posint",
    inactiveRetentionMs: "posint",
    failsafeDir: "string",
    failsafeReplayMs: "posint",
    store: { oneOf: ["journal", "redis"] },
    redisUrl: "string",
    redisWriteAhead: "bool",
    redisChangeLog: "posint",
    slots: "posint",
    leaseTtlMs: "posint",
  },
};

function bad(key: string, why: string): never {
  throw new CpmError("CPM_ERR_CONFIG", `${key}: ${why}`);
}

function coerce(key: string, kind: Kind, value: unknown, fromEnv: boolean): unknown {
  if (typeof kind === "object") {
    if (typeof value !== "string" || !kind.oneOf.includes(value)) bad(key, `must be one of ${kind.oneOf.join(", ")}`);
    return value;
  }
  switch (kind) {
    case "string":
      if (typeof value !== "string") bad(key, "must be a string");
      return value;
    case "bool":
      if (fromEnv && typeof value === "string") {
        if (value === "true" || value === "1") return true;
        if (value === "false" || value === "0") return false;
      }
      if (typeof value !== "boolean") bad(key, "must be true or false");
      return value;
    case "port":
    case "posint":
    case "nonnegint": {
      const n = fromEnv && typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isInteger(n)) bad(key, "must be an integer");
      if (kind === "port" && (n < 0 || n > 65535)) bad(key, "must be a port number 0-65535");
      if (kind === "posint" && n < 1) bad(key, "must be a positive integer");
      if (kind === "nonnegint" && n < 0) bad(key, "must be an integer >= 0");
      return n;
    }
  }
}

/** store.deferredRootFolder: a "/"-separated path outside rootFolder (so no Conversation-ID folder can clash with it). */
function checkDeferredRoot(root: string, deferred: string): void {
  const key = "store.deferredRootFolder";
  if (deferred === "" || deferred.startsWith("/") || deferred.endsWith("/") || deferred.includes("//")) {
    bad(key, 'must be a non-empty "/"-separated path');
  }
  if (deferred === root || deferred.startsWith(`${root}/`) || root.startsWith(`${deferred}/`)) {
    bad(key, `must not be store.rootFolder (${root}), inside it or contain it`);
  }
}

/** session.redisUrl: a redis:// or rediss:// URL with a host, needed by session.store "redis" only. */
function checkRedisUrl(session: Config["session"]): void {
  const key = "session.redisUrl";
  if (session.redisUrl === "") {
    if (session.store === "redis") bad(key, 'session.store "redis" needs a redis:// or rediss:// URL');
    return;
  }
  let url: URL;
  try {
    url = new URL(session.redisUrl);
  } catch {
    bad(key, "must be a redis:// or rediss:// URL");
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") bad(key, "must be a redis:// or rediss:// URL");
  if (url.hostname === "") bad(key, "names no host");
  if (url.pathname !== "" && url.pathname !== "/" && !/^\/\d+$/.test(url.pathname)) bad(key, "path must be a database number (/0)");
}

/**
 * Validates a partial configuration object (from a file) and environment
 * overrides on top of the defaults. Unknown keys are errors too: a typo must
 * not silently fall back to a default.
 */
export function buildConfig(file: unknown, env: NodeJS.ProcessEnv = {}): Config {
  const out = structuredClone(defaults) as unknown as Record<string, Record<string, unknown>>;
  if (file !== undefined) {
    if (typeof file !== "object" || file === null || Array.isArray(file)) bad("(root)", "must be a JSON object");
    for (const [section, values] of Object.entries(file as Record<string, unknown>)) {
      const sectionSchema = (schema as Record<string, Record<string, Kind>>)[section];
      if (!sectionSchema) bad(section, "unknown section");
      if (typeof values !== "object" || values === null || Array.isArray(values)) bad(section, "must be an object");
      for (const [key, value] of Object.entries(values as Record<string, unknown>)) {
        const kind = sectionSchema[key];
        if (!kind) bad(`${section}.${key}`, "unknown key");
        (out[section] as Record<string, unknown>)[key] = coerce(`${section}.${key}`, kind, value, false);
      }
    }
  }
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("CPM_PF__") || value === undefined) continue;
    const [sectionRaw, keyRaw, ...rest] = name.slice("CPM_PF__".length).split("__");
    const section = Object.keys(schema).find((s) => s.toUpperCase() === sectionRaw);
    const sectionSchema = section ? (schema as Record<string, Record<string, Kind>>)[section] : undefined;
    const key = sectionSchema ? Object.keys(sectionSchema).find((k) => k.toUpperCase() === keyRaw) : undefined;
    if (!section || !sectionSchema || !key || rest.length > 0) bad(name, "unknown configuration key");
    (out[section] as Record<string, unknown>)[key] = coerce(name, sectionSchema[key] as Kind, value, true);
  }
  const cfg = out as unknown as Config;
  if (cfg.store.retryMaxMs < cfg.store.retryInitialMs) bad("store.retryMaxMs", "must be >= store.retryInitialMs");
  checkDeferredRoot(cfg.store.rootFolder, cfg.store.deferredRootFolder);
  if (cfg.delivery.retryMaxMs < cfg.delivery.retryInitialMs) bad("delivery.retryMaxMs", "must be >= delivery.retryInitialMs");
  if (cfg.delivery.deferredMsgMgmtUri !== "" && !/^(sips?|tel):[^\s<>"]+$/i.test(cfg.delivery.deferredMsgMgmtUri)) {
    bad("delivery.deferredMsgMgmtUri", "must be a sip:, sips: or tel: URI (or empty: delivery off)");
  }
  if (cfg.delivery.conferenceFactoryUri !== "" && !/^sips?:[^\s<>"]+$/i.test(cfg.delivery.conferenceFactoryUri)) {
    bad("delivery.conferenceFactoryUri", "must be a sip: or sips: URI (or empty: no re-start via the conference factory)");
  }
  if (cfg.delivery.terminatingRoute !== "" && !/^sips?:[^\s<>"]+$/i.test(cfg.delivery.terminatingRoute)) {
    bad("delivery.terminatingRoute", "must be a sip: or sips: URI (or empty: straight to the registered contact)");
  }
  if (cfg.delivery.originatingRoute !== "" && !/^sips?:[^\s<>"]+$/i.test(cfg.delivery.originatingRoute)) {
    bad("delivery.originatingRoute", "must be a sip: or sips: URI (or empty: straight to the focus or the conference factory)");
  }
  try {
    parseTrustedRegistrars(cfg.delivery.trustedRegistrars);
  } catch (err) {
    bad("delivery.trustedRegistrars", err instanceof CpmError ? err.detail : String(err));
  }
  if ((cfg.grpc.tlsCertFile === "") !== (cfg.grpc.tlsKeyFile === ""))
    bad(
      cfg.grpc.tlsCertFile === "" ? "grpc.tlsCertFile" : "grpc.tlsKeyFile",
      "gRPC over TLS needs both grpc.tlsCertFile and grpc.tlsKeyFile",
    );
  if (cfg.grpc.tlsCaFile !== "" && cfg.grpc.tlsCertFile === "")
    bad("grpc.tlsCaFile", "mutual TLS needs grpc.tlsCertFile and grpc.tlsKeyFile");
  try {
    sipTrustedSources(cfg.sip);
  } catch (err) {
    bad("sip.trustedSources", err instanceof CpmError ? err.detail : String(err));
  }
  if ((cfg.media.tlsCertFile === "") !== (cfg.media.tlsKeyFile === ""))
    bad(cfg.media.tlsCertFile === "" ? "media.tlsCertFile" : "media.tlsKeyFile", "msrps needs both media.tlsCertFile and media.tlsKeyFile");
  if (cfg.sip.advertisedAddress !== "" && !/^sip:[^\s<>";]+:\d+(;[^\s<>"]*)?$/i.test(cfg.sip.advertisedAddress)) {
    bad("sip.advertisedAddress", 'must be "sip:host:port" (optionally ;transport=...), or empty: sip:<sip.host>:<sip.port>');
  }
  checkRedisUrl(cfg.session);
  // renewed every third of the TTL: below 300 ms a Redis round trip under load is a missed renewal
  if (cfg.session.leaseTtlMs < 300) bad("session.leaseTtlMs", "must be >= 300");
  return cfg;
}

/** The sources the SIP UA takes datagrams and TCP connections from: sip.trustedSources, or the outbound proxy (sip.proxyHost) when empty. */
export function sipTrustedSources(sip: Config["sip"]): AddressList {
  if (sip.trustedSources.trim() !== "") return parseAddressList(sip.trustedSources, "Kamailio's");
  if (isIP(sip.proxyHost) === 0) throw new CpmError("CPM_ERR_CONFIG", `sip.proxyHost "${sip.proxyHost}" is no IP address: list Kamailio's`);
  return parseAddressList(sip.proxyHost, "Kamailio's");
}

/** The UA's address as Kamailio reaches it (sip.advertisedAddress, else sip:<host>:<port>); "" when sip.host binds every address and nothing is advertised. */
export function uaAddress(sip: Config["sip"]): string {
  if (sip.advertisedAddress !== "") return sip.advertisedAddress;
  if (sip.host === "0.0.0.0" || sip.host === "::") return "";
  return `sip:${isIP(sip.host) === 6 ? `[${sip.host}]` : sip.host}:${sip.port}`;
}

/** Loads the file named by CPM_PF_CONFIG (if any) and applies the environment. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const path = env.CPM_PF_CONFIG;
  let file: unknown;
  if (path) {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw new CpmError("CPM_ERR_CONFIG", `CPM_PF_CONFIG: cannot read ${path}`, { cause: err });
    }
    try {
      file = JSON.parse(text);
    } catch (err) {
      throw new CpmError("CPM_ERR_CONFIG", `CPM_PF_CONFIG: ${path} is not valid JSON`, { cause: err });
    }
  }
  return buildConfig(file, env);
}
