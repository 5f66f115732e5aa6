import assert from "node:assert/strict";
import { test } from "node:test";
import { buildConfig, defaults, sipTrustedSources, uaAddress } from "../../../src/config/config.js";

test("defaults, file values and environment overrides", () => {
  const cfg = buildConfig(
    { store: { port: 1143, user: "u" }, pf: { mode: "proxy" } },
    { CPM_PF__STORE__PORT: "2143", CPM_PF__PF__GROUPSESSIONDATAMANAGEMENT: "true" },
  );
  assert.equal(cfg.store.port, 2143);
  assert.equal(cfg.store.user, "u");
  assert.equal(cfg.pf.mode, "proxy");
  assert.equal(cfg.pf.groupSessionDataManagement, true);
  assert.equal(cfg.grpc.port, defaults.grpc.port);
});

test("a bad value stops start-up with an error naming the key", () => {
  const cases: [unknown, NodeJS.ProcessEnv, RegExp][] = [
    [{ pf: { mode: "b2b" } }, {}, /pf\.mode: must be one of proxy, b2bua/],
    [{ store: { port: 70000 } }, {}, /store\.port/],
    [{ store: { prot: 1 } }, {}, /store\.prot: unknown key/],
    [{ stor: {} }, {}, /stor: unknown section/],
    [{}, { CPM_PF__GRPC__PORT: "abc" }, /CPM_PF__GRPC__PORT: must be an integer/],
    [{}, { CPM_PF__NOPE__X: "1" }, /CPM_PF__NOPE__X: unknown configuration key/],
    [{ store: { retryInitialMs: 5000, retryMaxMs: 100 } }, {}, /store\.retryMaxMs/],
  ];
  for (const [file, env, re] of cases) assert.throws(() => buildConfig(file, env), re);
});

test("media section: defaults, overrides and validation", () => {
  assert.equal(defaults.media.enabled, false);
  assert.equal(defaults.media.recording, false);
  const cfg = buildConfig(
    { media: { enabled: true, port: 0, idleTimeoutMs: 0, clientLegTimeoutMs: 500 } },
    { CPM_PF__MEDIA__RECORDING: "true", CPM_PF__MEDIA__MAXRECORDEDBYTES: "4096" },
  );
  assert.equal(cfg.media.enabled, true);
  assert.equal(cfg.media.port, 0);
  assert.equal(cfg.media.idleTimeoutMs, 0);
  assert.equal(cfg.media.clientLegTimeoutMs, 500);
  assert.equal(cfg.media.recording, true);
  assert.equal(cfg.media.maxRecordedBytes, 4096);
  const cases: [unknown, NodeJS.ProcessEnv, RegExp][] = [
    [{ media: { idleTimeoutMs: -1 } }, {}, /media\.idleTimeoutMs: must be an integer >= 0/],
    [{ media: { clientLegTimeoutMs: 0 } }, {}, /media\.clientLegTimeoutMs: must be a positive integer/],
    [{ media: { tlsCertFile: "cert.pem" } }, {}, /media\.tlsKeyFile: msrps needs both/],
    [{ grpc: { tlsCertFile: "cert.pem" } }, {}, /grpc\.tlsKeyFile: gRPC over TLS needs both/],
    [{}, { CPM_PF__GRPC__TLSKEYFILE: "key.pem" }, /grpc\.tlsCertFile: gRPC over TLS needs both/],
    [{ grpc: { tlsCaFile: "ca.pem" } }, {}, /grpc\.tlsCaFile: mutual TLS needs/],
    [{ media: { tlsKeyFile: "key.pem" } }, {}, /media\.tlsCertFile: msrps needs both/],
    [{}, { CPM_PF__MEDIA__ENABLED: "maybe" }, /CPM_PF__MEDIA__ENABLED: must be true or false/],
  ];
  for (const [file, env, re] of cases) assert.throws(() => buildConfig(file, env), re);
});

test("store.deferredRootFolder: default Deferred, a path outside store.rootFolder", () => {
  assert.equal(defaults.store.deferredRootFolder, "Deferred");
  assert.equal(buildConfig({ store: { deferredRootFolder: "PF/Deferred" } }).store.deferredRootFolder, "PF/Deferred");
  for (const bad of ["", "/x", "x/", "a//b", "Default", "Default/Deferred"]) {
    assert.throws(() => buildConfig({ store: { deferredRootFolder: bad } }), /store\.deferredRootFolder/, bad);
  }
  assert.throws(() => buildConfig({ store: { rootFolder: "Q/Default", deferredRootFolder: "Q" } }), /store\.deferredRootFolder/);
});

test("delivery section (8.3.2.9.1.2 / .3): defaults, overrides and validation", () => {
  assert.deepEqual(defaults.delivery, {
    deferredMsgMgmtUri: "",
    terminatingRoute: "",
    originatingRoute: "",
    contact: "focus",
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
  });
  assert.equal(buildConfig({}, { CPM_PF__DELIVERY__ANSWERREJOINS: "false" }).delivery.answerRejoins, false);
  assert.equal(buildConfig({}, { CPM_PF__DELIVERY__RESUMEINTERRUPTED: "false" }).delivery.resumeInterrupted, false);
  assert.equal(buildConfig({}, { CPM_PF__DELIVERY__CONTACT: "pf" }).delivery.contact, "pf");
  assert.throws(() => buildConfig({ delivery: { contact: "client" } }), /delivery\.contact: must be one of focus, pf/);
  const cfg = buildConfig(
    { delivery: { deferredMsgMgmtUri: "sip:deferred@pf.example.net", retryAttempts: 0, sendInterimGsos: true } },
    { CPM_PF__DELIVERY__RETRYFACTOR: "3", CPM_PF__DELIVERY__UNSUBSCRIBEONREJOIN: "1" },
  );
  assert.equal(cfg.delivery.deferredMsgMgmtUri, "sip:deferred@pf.example.net");
  assert.equal(cfg.delivery.retryAttempts, 0);
  assert.equal(cfg.delivery.retryFactor, 3);
  assert.equal(cfg.delivery.sendInterimGsos, true);
  assert.equal(cfg.delivery.unsubscribeOnRejoin, true);
  // a registration that found the store down is tried again; 0 = off
  assert.equal(buildConfig({}, { CPM_PF__DELIVERY__STORERETRYMS: "0" }).delivery.storeRetryMs, 0);
  // the PF's own conference subscription: 0 = off
  assert.equal(buildConfig({}, { CPM_PF__DELIVERY__CONFERENCESUBSCRIPTIONEXPIRES: "0" }).delivery.conferenceSubscriptionExpires, 0);
  assert.throws(() => buildConfig({ delivery: { conferenceSubscriptionRetryMs: 0 } }), /delivery\.conferenceSubscriptionRetryMs/);
  assert.equal(buildConfig({ delivery: { deferredMsgMgmtUri: "tel:+16135550000" } }).delivery.deferredMsgMgmtUri, "tel:+16135550000");
  // DD-13 / RJ-3: the conference factory a gone focus's group is re-started through
  assert.equal(
    buildConfig({}, { CPM_PF__DELIVERY__CONFERENCEFACTORYURI: "sip:factory@cf.example.net" }).delivery.conferenceFactoryUri,
    "sip:factory@cf.example.net",
  );
  const cases: [unknown, NodeJS.ProcessEnv, RegExp][] = [
    [{ delivery: { deferredMsgMgmtUri: "deferred@pf" } }, {}, /delivery\.deferredMsgMgmtUri: must be a sip:, sips: or tel: URI/],
    [{ delivery: { deferredMsgMgmtUri: "sip:a b" } }, {}, /delivery\.deferredMsgMgmtUri/],
    [{ delivery: { terminatingRoute: "scscf.example.net" } }, {}, /delivery\.terminatingRoute: must be a sip: or sips: URI/],
    [{ delivery: { originatingRoute: "<sip:scscf.example.net>" } }, {}, /delivery\.originatingRoute: must be a sip: or sips: URI/],
    [{ delivery: { conferenceFactoryUri: "tel:+16135550000" } }, {}, /delivery\.conferenceFactoryUri: must be a sip: or sips: URI/],
    [{ delivery: { retryAttempts: -1 } }, {}, /delivery\.retryAttempts: must be an integer >= 0/],
    [{ delivery: { retryFactor: 0 } }, {}, /delivery\.retryFactor: must be a positive integer/],
    [{ delivery: { retryInitialMs: 5000, retryMaxMs: 100 } }, {}, /delivery\.retryMaxMs: must be >= delivery\.retryInitialMs/],
    [{ delivery: { retries: 1 } }, {}, /delivery\.retries: unknown key/],
    [{}, { CPM_PF__DELIVERY__SENDINTERIMGSOS: "yes" }, /CPM_PF__DELIVERY__SENDINTERIMGSOS: must be true or false/],
  ];
  for (const [file, env, re] of cases) assert.throws(() => buildConfig(file, env), re);
});

test("DD-1 trust: delivery.trustedRegistrars, comma-separated IPs or CIDRs, default loopback; a bad entry names the key", () => {
  assert.equal(defaults.delivery.trustedRegistrars, "127.0.0.1,::1");
  assert.equal(
    buildConfig({ delivery: { trustedRegistrars: "10.0.0.5, 10.0.1.0/24,2001:db8::/32" } }).delivery.trustedRegistrars,
    "10.0.0.5, 10.0.1.0/24,2001:db8::/32",
  );
  assert.equal(buildConfig({}, { CPM_PF__DELIVERY__TRUSTEDREGISTRARS: "192.0.2.1" }).delivery.trustedRegistrars, "192.0.2.1");
  const cases: [unknown, NodeJS.ProcessEnv, RegExp][] = [
    [{ delivery: { trustedRegistrars: "" } }, {}, /delivery\.trustedRegistrars: must list at least one IP address or CIDR/],
    [
      { delivery: { trustedRegistrars: "scscf.home1.net" } },
      {},
      /delivery\.trustedRegistrars: "scscf\.home1\.net" is not an IP address or CIDR/,
    ],
    [{ delivery: { trustedRegistrars: "10.0.0.0/33" } }, {}, /delivery\.trustedRegistrars: "10\.0\.0\.0\/33"/],
    [{ delivery: { trustedRegistrars: "10.0.0.1,10.0.0.0/8/1" } }, {}, /delivery\.trustedRegistrars/],
    [{ delivery: { trustedRegistrars: 17 } }, {}, /delivery\.trustedRegistrars: must be a string/],
    [{}, { CPM_PF__DELIVERY__TRUSTEDREGISTRARS: "::1/129" }, /delivery\.trustedRegistrars: "::1\/129"/],
  ];
  for (const [file, env, re] of cases) assert.throws(() => buildConfig(file, env), re);
});

test("DD-1 per device: delivery.deviceRetentionMs, default 7 days, 0 = one delivery per user; a negative or fractional value names the key", () => {
  assert.equal(defaults.delivery.deviceRetentionMs, 7 * 86_400_000);
  assert.equal(buildConfig({}, { CPM_PF__DELIVERY__DEVICERETENTIONMS: "0" }).delivery.deviceRetentionMs, 0);
  assert.throws(() => buildConfig({ delivery: { deviceRetentionMs: -1 } }), /delivery\.deviceRetentionMs/);
  assert.throws(() => buildConfig({}, { CPM_PF__DELIVERY__DEVICERETENTIONMS: "1.5" }), /DEVICERETENTIONMS|deviceRetentionMs/);
});

test("UA source check: sip.trustedSources defaults to sip.proxyHost; a list of IPs or CIDRs; a bad entry or a proxy host name names the key", () => {
  assert.equal(defaults.sip.trustedSources, "");
  const dflt = sipTrustedSources(buildConfig({}).sip);
  assert.deepEqual(dflt.entries, ["127.0.0.1"]);
  const listed = sipTrustedSources(buildConfig({}, { CPM_PF__SIP__TRUSTEDSOURCES: "10.0.0.5, 10.0.1.0/24" }).sip);
  assert.deepEqual(listed.entries, ["10.0.0.5", "10.0.1.0/24"]);
  assert.deepEqual(sipTrustedSources(buildConfig({ sip: { proxyHost: "kamailio.example.net", trustedSources: "10.0.0.5" } }).sip).entries, [
    "10.0.0.5",
  ]);
  const cases: [unknown, RegExp][] = [
    [{ sip: { trustedSources: "kamailio" } }, /sip\.trustedSources: "kamailio" is not an IP address or CIDR/],
    [{ sip: { proxyHost: "kamailio.example.net" } }, /sip\.trustedSources: sip\.proxyHost "kamailio\.example\.net" is no IP address/],
  ];
  for (const [file, re] of cases) assert.throws(() => buildConfig(file), re);
});

test("RFC 3261 18.1.1: sip.transport defaults to auto; udp / tcp from the file or CPM_PF__SIP__TRANSPORT; anything else names the key", () => {
  assert.equal(defaults.sip.transport, "auto");
  assert.equal(defaults.sip.tcpConnectTimeoutMs, 2000);
  assert.equal(buildConfig({ sip: { transport: "udp" } }).sip.transport, "udp");
  const env = buildConfig({}, { CPM_PF__SIP__TRANSPORT: "tcp", CPM_PF__SIP__TCPCONNECTTIMEOUTMS: "500" }).sip;
  assert.deepEqual([env.transport, env.tcpConnectTimeoutMs], ["tcp", 500]);
  assert.throws(() => buildConfig({ sip: { transport: "TCP" } }), /sip\.transport: must be one of udp, tcp, auto/);
  assert.throws(() => buildConfig({}, { CPM_PF__SIP__TRANSPORT: "tls" }), /CPM_PF__SIP__TRANSPORT: must be one of udp, tcp, auto/);
  assert.throws(() => buildConfig({ sip: { tcpConnectTimeoutMs: 0 } }), /sip\.tcpConnectTimeoutMs: must be a positive integer/);
});

test("session.store defaults to the journal; redis needs session.redisUrl, a redis:// or rediss:// URL; a bad one names the key", () => {
  assert.deepEqual([defaults.session.store, defaults.session.redisUrl], ["journal", ""]);
  const redis = buildConfig({ session: { store: "redis", redisUrl: "redis://127.0.0.1:6379/2" } }).session;
  assert.deepEqual([redis.store, redis.redisUrl], ["redis", "redis://127.0.0.1:6379/2"]);
  const env = buildConfig(
    {},
    { CPM_PF__SESSION__STORE: "redis", CPM_PF__SESSION__REDISURL: "rediss://pf:secret@valkey.example.net" },
  ).session;
  assert.deepEqual([env.store, env.redisUrl], ["redis", "rediss://pf:secret@valkey.example.net"]);
  const cases: [unknown, RegExp][] = [
    [{ session: { store: "valkey" } }, /session\.store: must be one of journal, redis/],
    [{ session: { store: "redis" } }, /session\.redisUrl: session\.store "redis" needs a redis:\/\/ or rediss:\/\/ URL/],
    [{ session: { store: "redis", redisUrl: "127.0.0.1:6379" } }, /session\.redisUrl: must be a redis:\/\/ or rediss:\/\/ URL/],
    [{ session: { store: "redis", redisUrl: "http://127.0.0.1:6379" } }, /session\.redisUrl: must be a redis:\/\/ or rediss:\/\/ URL/],
    [{ session: { store: "redis", redisUrl: "redis://127.0.0.1/db" } }, /session\.redisUrl: path must be a database number/],
  ];
  for (const [file, re] of cases) assert.throws(() => buildConfig(file), re);
  // a URL set with the journal is checked too (a typo must not wait for the switch to redis)
  assert.throws(() => buildConfig({ session: { redisUrl: "redis//x" } }), /session\.redisUrl/);
});

test("session.redisChangeLog: about 100000 changes kept by default; a positive count from the file or CPM_PF__SESSION__REDISCHANGELOG, else the key is named", () => {
  assert.equal(defaults.session.redisChangeLog, 100_000);
  assert.equal(buildConfig({ session: { redisChangeLog: 5000 } }).session.redisChangeLog, 5000);
  assert.equal(buildConfig({}, { CPM_PF__SESSION__REDISCHANGELOG: "250000" }).session.redisChangeLog, 250_000);
  for (const bad of [0, -1, 1.5, "many"]) assert.throws(() => buildConfig({ session: { redisChangeLog: bad } }), /session\.redisChangeLog/);
});

test("RJ-1 scale-out: sip.advertisedAddress, the UA as Kamailio reaches it: default sip:<host>:<port> (none for a wildcard bind); a sip:host:port URI, else the key is named", () => {
  assert.equal(uaAddress(buildConfig({}).sip), "sip:127.0.0.1:5097");
  assert.equal(uaAddress(buildConfig({ sip: { host: "::1", port: 6000 } }).sip), "sip:[::1]:6000");
  assert.equal(uaAddress(buildConfig({ sip: { host: "0.0.0.0" } }).sip), "", "a wildcard bind names no address");
  const advertised = "sip:10.0.0.7:5097;transport=tcp";
  assert.equal(uaAddress(buildConfig({ sip: { host: "0.0.0.0", advertisedAddress: advertised } }).sip), advertised);
  for (const bad of ["10.0.0.7:5097", "sip:10.0.0.7", "sips:10.0.0.7:5061", "sip:a b:1"]) {
    assert.throws(() => buildConfig({ sip: { advertisedAddress: bad } }), /sip\.advertisedAddress/, bad);
  }
});
