// The PF's own SIP UA against a far end scripted on a raw UDP socket
// (Kamailio as outbound proxy, the client's device, a Record-Route hop).
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { type TestContext, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import winston from "winston";
import { CpmError } from "../../../src/errors/catalogue.js";
import { silentLogger } from "../../../src/log/logger.js";
import { parseAddressList } from "../../../src/sip/address-list.js";
import { header, headerValues, type SipMessage } from "../../../src/sip/message.js";
import { tagOf } from "../../../src/sip/name-addr.js";
import { type Dialog, SipUa, type SipUaOptions } from "../../../src/sip/ua.js";
import { branchOf, CALLER_HEADERS, capturedLog, HOST, Peer, response, SDP, startUa } from "../../fixtures/sip-ua.js";

/** A UA bug that loses a callback fails the test instead of hanging it. */
const LIMIT = { timeout: 3000 };

function inviteFrom(ua: SipUa, onProvisional?: (status: number, res: SipMessage) => void) {
  return ua.invite({ requestUri: "sip:+15551234@ims.example.com", headers: CALLER_HEADERS, body: SDP }, onProvisional);
}

test(
  "INVITE: Via with branch and rport, Route to the outbound proxy with routeParams, Max-Forwards, CSeq, Call-ID, From tag, byte Content-Length, caller headers in order",
  LIMIT,
  async (t) => {
    const proxy = await Peer.open(t);
    const ua = await startUa(t, proxy.port);
    const call = ua.invite({ requestUri: "sip:+15551234@ims.example.com", headers: CALLER_HEADERS, body: SDP, callId: "given@pf" });
    const { msg, raw } = await proxy.next("INVITE");
    assert.equal(raw.split("\r\n")[0], "INVITE sip:+15551234@ims.example.com SIP/2.0");
    assert.match(header(msg, "via") ?? "", new RegExp(`^SIP/2\\.0/UDP 127\\.0\\.0\\.1:${ua.address.port};branch=z9hG4bK[0-9a-f]+;rport$`));
    assert.equal(header(msg, "route"), `<sip:127.0.0.1:${proxy.port};lr;cpmpfuac>`);
    assert.equal(header(msg, "max-forwards"), "70");
    assert.equal(header(msg, "cseq"), "1 INVITE");
    assert.equal(header(msg, "call-id"), "given@pf");
    assert.equal(call.callId, "given@pf");
    assert.match(header(msg, "from") ?? "", /^"Group" <sip:conf-1@pf\.example\.com>;tag=[0-9a-f]+$/);
    assert.equal(header(msg, "content-length"), "11");
    assert.equal(msg.body.toString("utf8"), SDP);
    const names = raw
      .split("\r\n\r\n")[0]
      ?.split("\r\n")
      .slice(1)
      .map((l) => l.slice(0, l.indexOf(":")));
    assert.deepEqual(
      names?.filter((n) => CALLER_HEADERS.some(([c]) => c === n)),
      CALLER_HEADERS.map(([n]) => n),
    );
    proxy.send(response(msg, "486 Busy Here"), { host: HOST, port: ua.address.port });
    assert.equal((await call.outcome).status, 486);
  },
);

test("a generated Call-ID is random @ the UA host; headers the UA writes itself are refused", LIMIT, async (t) => {
  const proxy = await Peer.open(t);
  const ua = await startUa(t, proxy.port);
  const call = inviteFrom(ua);
  assert.match(call.callId, /^[0-9a-f]{16}@127\.0\.0\.1$/);
  call.outcome.catch(() => {});
  for (const bad of [
    ["Via", "x"],
    ["CSeq", "1 INVITE"],
    ["l", "0"],
    ["Route", "<sip:x;lr>"],
  ] as [string, string][]) {
    assert.throws(
      () => ua.invite({ requestUri: "sip:a@b", headers: [...CALLER_HEADERS, bad], body: "" }),
      (err) => err instanceof CpmError && err.code === "CPM_ERR_BAD_REQUEST",
    );
  }
  assert.throws(() => ua.invite({ requestUri: "sip:a@b", headers: [["To", "<sip:a@b>"]], body: "" }), /From and To/);
});

/** Plays 180 then 200 with Contact and two Record-Routes; the first route (after reversal) is `hop`. */
async function establish(t: TestContext, extra: Partial<SipUaOptions> = {}) {
  const proxy = await Peer.open(t);
  const hop = await Peer.open(t);
  const device = await Peer.open(t);
  const ua = await startUa(t, proxy.port, extra);
  const provisional: number[] = [];
  const call = inviteFrom(ua, (status) => provisional.push(status));
  const invite = (await proxy.next("INVITE")).msg;
  const uaAddr = { host: HOST, port: ua.address.port };
  proxy.send(response(invite, "180 Ringing"), uaAddr);
  const ok = response(invite, "200 OK", [
    `Contact: <${device.uri};ob>;+g.oma.sip-im`,
    `Record-Route: <sip:${HOST}:${proxy.port};lr;second>`,
    `Record-Route: <sip:${HOST}:${hop.port};lr;first>`,
  ]);
  await sleep(20);
  proxy.send(ok, uaAddr);
  const outcome = await call.outcome;
  return { proxy, hop, device, ua, uaAddr, invite, ok, outcome, provisional };
}

test(
  "180 then 200: onProvisional sees 180; the outcome has the dialog (remote tag, Contact as remote target, Record-Route reversed)",
  LIMIT,
  async (t) => {
    const { outcome, provisional, invite, device, hop, proxy } = await establish(t);
    assert.deepEqual(provisional, [180]);
    assert.equal(outcome.status, 200);
    assert.equal(outcome.reason, "OK");
    const d = outcome.dialog as Dialog;
    assert.equal(d.callId, header(invite, "call-id"));
    assert.equal(d.localTag, tagOf(header(invite, "from")));
    assert.equal(d.remoteTag, "uas-tag");
    assert.equal(d.localUri, '"Group" <sip:conf-1@pf.example.com>');
    assert.equal(d.remoteUri, "<sip:+15551234@ims.example.com>");
    assert.equal(d.remoteTarget, `${device.uri};ob`);
    assert.deepEqual(d.routeSet, [`<sip:${HOST}:${hop.port};lr;first>`, `<sip:${HOST}:${proxy.port};lr;second>`]);
    assert.equal(d.localCSeq, 1);
  },
);

test(
  "ack(): same CSeq number, new branch, R-URI = remote target, Route = route set, sent to the first route; a retransmitted 200 is ACKed again",
  LIMIT,
  async (t) => {
    const { outcome, invite, ok, hop, proxy, device, ua, uaAddr } = await establish(t);
    const d = outcome.dialog as Dialog;
    ua.ack(d);
    const ack = (await hop.next("ACK")).msg;
    assert.equal(ack.method, "ACK");
    assert.equal(ack.requestUri, `${device.uri};ob`);
    assert.equal(header(ack, "cseq"), "1 ACK");
    assert.notEqual(branchOf(ack), branchOf(invite));
    assert.match(branchOf(ack), /^z9hG4bK/);
    assert.deepEqual(headerValues(ack, "route"), d.routeSet);
    assert.equal(tagOf(header(ack, "to")), "uas-tag");
    assert.equal(tagOf(header(ack, "from")), d.localTag);
    assert.equal(header(ack, "call-id"), d.callId);
    assert.equal(header(ack, "content-length"), "0");
    proxy.send(ok, uaAddr); // 13.3.1.4: the UAS retransmits the 2xx
    const again = (await hop.next("re-ACK")).msg;
    assert.equal(header(again, "cseq"), "1 ACK");
    assert.equal(branchOf(again), branchOf(ack));
    assert.deepEqual(await proxy.drain(30), []);
  },
);

test("ack() without a route set goes to the remote target", LIMIT, async (t) => {
  const proxy = await Peer.open(t);
  const device = await Peer.open(t);
  const ua = await startUa(t, proxy.port);
  const call = inviteFrom(ua);
  const invite = (await proxy.next("INVITE")).msg;
  proxy.send(response(invite, "200 OK", [`Contact: <${device.uri}>`]), { host: HOST, port: ua.address.port });
  const d = (await call.outcome).dialog as Dialog;
  assert.deepEqual(d.routeSet, []);
  ua.ack(d);
  const ack = (await device.next("ACK")).msg;
  assert.equal(ack.requestUri, device.uri);
  assert.deepEqual(headerValues(ack, "route"), []);
});

test(
  "BYE-B7 ack() of a dialog the UA did not INVITE (a further device of a forked INVITE): each retransmitted 2xx gets the same ACK (13.2.2.4)",
  LIMIT,
  async (t) => {
    const device = await Peer.open(t);
    const ua = await startUa(t, device.port);
    const dialog: Dialog = {
      callId: "fork-1@cf.example.com",
      localTag: "cf-tag",
      remoteTag: "tablet-tag",
      localUri: "sip:focus@cf.example.com",
      remoteUri: "tel:+16135551200",
      remoteTarget: device.uri,
      routeSet: [],
      localCSeq: 7,
    };
    ua.ack(dialog);
    const first = (await device.next("ACK")).msg;
    assert.equal(header(first, "cseq"), "7 ACK");
    ua.ack(dialog); // the device's 2xx again
    const again = (await device.next("ACK to the retransmitted 2xx")).msg;
    assert.equal(branchOf(again), branchOf(first), "the same ACK, not a new transaction");
    ua.ack({ ...dialog, remoteTag: "phone-tag" });
    const other = (await device.next("ACK of another device")).msg;
    assert.notEqual(branchOf(other), branchOf(first), "another dialog, its own ACK");
  },
);

test(
  "486: the transaction ACKs it itself (same branch, response To tag, INVITE R-URI and Route) and resolves 486; a retransmitted 486 is ACKed again",
  LIMIT,
  async (t) => {
    const proxy = await Peer.open(t);
    const ua = await startUa(t, proxy.port);
    const call = inviteFrom(ua);
    const invite = (await proxy.next("INVITE")).msg;
    const busy = response(invite, "486 Busy Here", [], "busy-tag");
    proxy.send(busy, { host: HOST, port: ua.address.port });
    const outcome = await call.outcome;
    assert.deepEqual([outcome.status, outcome.reason, outcome.dialog], [486, "Busy Here", undefined]);
    const ack = (await proxy.next("ACK")).msg;
    assert.equal(ack.method, "ACK");
    assert.equal(ack.requestUri, invite.requestUri);
    assert.equal(branchOf(ack), branchOf(invite));
    assert.equal(header(ack, "cseq"), "1 ACK");
    assert.equal(tagOf(header(ack, "to")), "busy-tag");
    assert.equal(header(ack, "from"), header(invite, "from"));
    assert.equal(header(ack, "route"), header(invite, "route"));
    proxy.send(busy, { host: HOST, port: ua.address.port });
    assert.equal((await proxy.next("second ACK")).msg.method, "ACK");
  },
);

test("Timer A retransmits the INVITE (doubling) until a provisional response, then stops", LIMIT, async (t) => {
  const proxy = await Peer.open(t);
  const ua = await startUa(t, proxy.port, { t1Ms: 20 });
  const call = inviteFrom(ua);
  const first = (await proxy.next("INVITE")).msg;
  const copies = await proxy.drain(130); // retransmissions at 20, 60, 140 ms
  assert.ok(copies.length >= 2 && copies.length <= 3, `${copies.length} retransmissions`);
  for (const c of copies) assert.equal(branchOf(c.msg), branchOf(first));
  proxy.send(response(first, "100 Trying"), { host: HOST, port: ua.address.port });
  await proxy.drain(20);
  assert.deepEqual(await proxy.drain(200), []);
  proxy.send(response(first, "480 Temporarily Unavailable"), { host: HOST, port: ua.address.port });
  assert.equal((await call.outcome).status, 480);
});

test("no answer: Timer B (64*T1) rejects the outcome with a CpmError", LIMIT, async (t) => {
  const proxy = await Peer.open(t);
  const ua = await startUa(t, proxy.port);
  const started = Date.now();
  const call = inviteFrom(ua);
  await assert.rejects(call.outcome, (err) => err instanceof CpmError && /Timer B/.test(err.message));
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 630 && elapsed < 1500, `Timer B after ${elapsed} ms`);
  assert.ok((await proxy.drain(0)).length >= 5, "INVITE retransmitted");
});

test(
  "cancel() before a provisional waits for it; then CANCEL (same branch, CSeq 1 CANCEL); the 487 is ACKed and resolves",
  LIMIT,
  async (t) => {
    const proxy = await Peer.open(t);
    const ua = await startUa(t, proxy.port, { t1Ms: 200 });
    const uaAddr = { host: HOST, port: ua.address.port };
    const call = inviteFrom(ua);
    const invite = (await proxy.next("INVITE")).msg;
    call.cancel();
    assert.deepEqual(await proxy.drain(50), [], "no CANCEL before a provisional response (9.1)");
    proxy.send(response(invite, "180 Ringing"), uaAddr);
    const cancel = (await proxy.next("CANCEL")).msg;
    assert.equal(cancel.method, "CANCEL");
    assert.equal(cancel.requestUri, invite.requestUri);
    assert.equal(branchOf(cancel), branchOf(invite));
    assert.equal(header(cancel, "cseq"), "1 CANCEL");
    assert.equal(header(cancel, "call-id"), header(invite, "call-id"));
    assert.equal(header(cancel, "route"), header(invite, "route"));
    proxy.send(response(cancel, "200 OK"), uaAddr);
    proxy.send(response(invite, "487 Request Terminated"), uaAddr);
    assert.equal((await call.outcome).status, 487);
    assert.equal((await proxy.next("ACK")).msg.method, "ACK");
  },
);

test("bye(): Reason and CSeq 2 BYE to the first route; 200 resolves 200", LIMIT, async (t) => {
  const { outcome, hop, ua, device } = await establish(t);
  const d = outcome.dialog as Dialog;
  ua.ack(d);
  await hop.next("ACK");
  const status = ua.bye(d, [["Reason", 'SIP;cause=200;text="Call completed"']]);
  const { msg: bye, from } = await hop.next("BYE");
  assert.equal(bye.requestUri, `${device.uri};ob`);
  assert.equal(header(bye, "cseq"), "2 BYE");
  assert.equal(header(bye, "reason"), 'SIP;cause=200;text="Call completed"');
  assert.equal(tagOf(header(bye, "to")), "uas-tag");
  assert.deepEqual(headerValues(bye, "route"), d.routeSet);
  hop.send(response(bye, "200 OK"), from);
  assert.equal(await status, 200);
  assert.equal(d.localCSeq, 2);
});

test("BYE without an answer: Timer E retransmits, Timer F resolves 408", LIMIT, async (t) => {
  const { outcome, hop, ua } = await establish(t);
  const started = Date.now();
  const status = await ua.bye(outcome.dialog as Dialog);
  assert.equal(status, 408);
  assert.ok(Date.now() - started >= 630, "Timer F is 64*T1");
  const byes = (await hop.drain(0)).filter((r) => r.msg.method === "BYE");
  assert.ok(byes.length >= 5, `${byes.length} BYEs`);
});

test(
  "an incoming BYE reaches onRequest once; the reply copies Via/From/To/Call-ID/CSeq; its retransmission gets the same response",
  LIMIT,
  async (t) => {
    const { ua, uaAddr, hop, outcome } = await establish(t);
    const d = outcome.dialog as Dialog;
    const seen: SipMessage[] = [];
    ua.onRequest((req, reply) => {
      seen.push(req);
      reply(200, "OK");
    });
    const bye = [
      `BYE sip:conf-1@127.0.0.1:${ua.address.port} SIP/2.0`,
      `Via: SIP/2.0/UDP ${HOST}:${hop.port};branch=z9hG4bKkam1`,
      `Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKdev1, SIP/2.0/UDP 10.0.0.8;branch=z9hG4bKdev0`,
      "Max-Forwards: 69",
      `From: <sip:+15551234@ims.example.com>;tag=${d.remoteTag}`,
      `To: "Group" <sip:conf-1@pf.example.com>;tag=${d.localTag}`,
      `Call-ID: ${d.callId}`,
      "CSeq: 7 BYE",
      "Content-Length: 0",
      "",
      "",
    ].join("\r\n");
    hop.send(bye, uaAddr);
    const first = await hop.next("200 to BYE");
    assert.equal(first.msg.statusCode, 200);
    assert.deepEqual(headerValues(first.msg, "via"), [
      `SIP/2.0/UDP ${HOST}:${hop.port};branch=z9hG4bKkam1`,
      "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKdev1, SIP/2.0/UDP 10.0.0.8;branch=z9hG4bKdev0",
    ]);
    assert.equal(header(first.msg, "from"), `<sip:+15551234@ims.example.com>;tag=${d.remoteTag}`);
    assert.equal(header(first.msg, "to"), `"Group" <sip:conf-1@pf.example.com>;tag=${d.localTag}`);
    assert.equal(header(first.msg, "call-id"), d.callId);
    assert.equal(header(first.msg, "cseq"), "7 BYE");
    assert.equal(header(first.msg, "content-length"), "0");
    hop.send(bye, uaAddr);
    const second = await hop.next("retransmitted 200");
    assert.equal(second.raw, first.raw);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.method, "BYE");
  },
);

test("a request nobody answers gets 500 after 1 s, with a To tag added", LIMIT, async (t) => {
  const peer = await Peer.open(t);
  const ua = await startUa(t, peer.port);
  const options = [
    `OPTIONS sip:pf@${HOST} SIP/2.0`,
    `Via: SIP/2.0/UDP ${HOST}:${peer.port};branch=z9hG4bKopt1`,
    "From: <sip:probe@example.com>;tag=p1",
    "To: <sip:pf@example.com>",
    "Call-ID: opt-1",
    "CSeq: 1 OPTIONS",
    "",
    "",
  ].join("\r\n");
  const started = Date.now();
  peer.send(options, { host: HOST, port: ua.address.port });
  const res = (await peer.next("500", 2000)).msg;
  assert.ok(Date.now() - started >= 950);
  assert.equal(res.statusCode, 500);
  assert.match(header(res, "to") ?? "", /^<sip:pf@example\.com>;tag=[0-9a-f]+$/);
});

test("a garbage datagram is dropped and logged at warn; the UA keeps working", LIMIT, async (t) => {
  const stream = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  stream.on("data", (chunk: Buffer) => {
    for (const l of chunk.toString("utf8").split("\n").filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  const log = winston.createLogger({
    level: "debug",
    format: winston.format.json(),
    transports: [new winston.transports.Stream({ stream })],
  });
  const peer = await Peer.open(t);
  const ua = await startUa(t, peer.port, { log });
  const uaAddr = { host: HOST, port: ua.address.port };
  peer.send("\x00\x01 not SIP at all", uaAddr);
  peer.send("SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n", uaAddr); // no Via / CSeq
  const call = inviteFrom(ua);
  const invite = (await peer.next("INVITE")).msg;
  peer.send(response(invite, "603 Decline"), uaAddr);
  assert.equal((await call.outcome).status, 603);
  const warnings = lines.filter((l) => l.level === "warn");
  assert.equal(warnings.length, 2);
  assert.match(String(warnings[0]?.reason), /neither a request nor a status line/);
  assert.match(String(warnings[1]?.reason), /no via header/);
  assert.equal(warnings[0]?.from, `${HOST}:${peer.port}`);
});

/** Another loopback address (127.0.0.0/8 is all local on Linux): a source that is not Kamailio. */
const INTRUDER = "127.0.0.2";

function byeOf(d: Dialog, uaPort: number, via: string): string {
  return [
    `BYE sip:conf-1@127.0.0.1:${uaPort} SIP/2.0`,
    `Via: ${via}`,
    `From: <sip:+15551234@ims.example.com>;tag=${d.remoteTag}`,
    `To: "Group" <sip:conf-1@pf.example.com>;tag=${d.localTag}`,
    `Call-ID: ${d.callId}`,
    "CSeq: 7 BYE",
    "Reason: SIP;cause=200",
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
}

test(
  "UA source check: a BYE and a forged final response from a source that is not the trusted Kamailio get no answer, reach no handler, are counted and logged; Kamailio's still work",
  LIMIT,
  async (t) => {
    const { log, lines } = capturedLog();
    const { ua, uaAddr, proxy, hop, outcome } = await establish(t, { log });
    const intruder = await Peer.open(t, INTRUDER);
    const d = outcome.dialog as Dialog;
    const seen: SipMessage[] = [];
    ua.onRequest((req, reply) => {
      seen.push(req);
      reply(200, "OK");
    });
    intruder.send(byeOf(d, ua.address.port, `SIP/2.0/UDP ${INTRUDER}:${intruder.port};branch=z9hG4bKevil1`), uaAddr);
    // a second INVITE in flight, and a 603 for it from the intruder (DD-8 would discard the deferred data)
    const call = inviteFrom(ua);
    const invite = (await proxy.next("INVITE")).msg;
    intruder.send(response(invite, "603 Decline"), uaAddr);
    assert.deepEqual(await intruder.drain(150), [], "no answer to the intruder, not even a 500");
    assert.equal(seen.length, 0, "the BYE reached no handler");
    assert.equal(ua.refusedDatagrams, 2);
    const refused = lines.filter((l) => l.level === "warn" && String(l.message).includes("not a trusted Kamailio"));
    assert.equal(refused.length, 2);
    assert.match(String(refused[0]?.from), /^127\.0\.0\.2:\d+$/);
    // the same requests and responses from Kamailio are taken
    proxy.send(response(invite, "486 Busy Here"), uaAddr);
    assert.equal((await call.outcome).status, 486);
    hop.send(byeOf(d, ua.address.port, `SIP/2.0/UDP ${HOST}:${hop.port};branch=z9hG4bKkam9`), uaAddr);
    assert.equal((await hop.next("200 to the BYE")).msg.statusCode, 200);
    assert.equal(seen.length, 1);
  },
);

test("UA source check: trustedSources (sip.trustedSources) may list several Kamailio addresses or CIDRs", LIMIT, async (t) => {
  const proxy = await Peer.open(t);
  const other = await Peer.open(t, INTRUDER);
  const ua = await startUa(t, proxy.port, { trustedSources: parseAddressList("127.0.0.1, 127.0.0.2/32", "Kamailio's") });
  ua.onRequest((_req, reply) => reply(200, "OK"));
  const options = [
    `OPTIONS sip:pf@${HOST} SIP/2.0`,
    `Via: SIP/2.0/UDP ${INTRUDER}:${other.port};branch=z9hG4bKopt2`,
    "From: <sip:kamailio2@example.com>;tag=k2",
    "To: <sip:pf@example.com>",
    "Call-ID: opt-2",
    "CSeq: 1 OPTIONS",
    "",
    "",
  ].join("\r\n");
  other.send(options, { host: HOST, port: ua.address.port });
  assert.equal((await other.next("200")).msg.statusCode, 200);
  assert.equal(ua.refusedDatagrams, 0);
});

test("UA source check: without trustedSources an outbound proxy that is no IP address is CPM_ERR_CONFIG", LIMIT, async () => {
  await assert.rejects(
    SipUa.start({ host: HOST, port: 0, outboundProxy: { host: "kamailio.example.net", port: 5060 }, log: silentLogger() }),
    (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_CONFIG",
  );
});

test("a 2xx from a second fork is ACKed and then ended with a BYE (13.2.2.4); the accepted dialog is untouched", LIMIT, async (t) => {
  // T1 = 200 ms: no BYE retransmission (Timer E) mixes into what the fork sees.
  const { outcome, invite, proxy, hop, ua, uaAddr, device } = await establish(t, { t1Ms: 200 });
  const d = outcome.dialog as Dialog;
  const other = await Peer.open(t);
  const forkOk = response(invite, "200 OK", [`Contact: <${other.uri}>`], "fork-tag");
  proxy.send(forkOk, uaAddr);
  const ack = (await other.next("ACK to the fork")).msg;
  assert.equal(tagOf(header(ack, "to")), "fork-tag");
  assert.equal(header(ack, "cseq"), "1 ACK");
  const bye = await other.next("BYE to the fork");
  assert.equal(header(bye.msg, "cseq"), "2 BYE");
  proxy.send(forkOk, uaAddr); // retransmitted: ACKed again, no second BYE
  const again = await other.next("ACK to the retransmitted 2xx");
  assert.equal(again.msg.method, "ACK");
  assert.equal(branchOf(again.msg), branchOf(ack));
  other.send(response(bye.msg, "200 OK"), bye.from);
  assert.deepEqual(
    (await other.drain(30)).map((r) => r.msg.method),
    [],
  );
  assert.equal(d.localCSeq, 1);
  ua.ack(d);
  assert.equal((await hop.next("ACK")).msg.requestUri, `${device.uri};ob`);
});

test("close() rejects a pending INVITE, clears every timer and resolves once the socket is closed", LIMIT, async (t) => {
  const proxy = await Peer.open(t);
  const ua = await startUa(t, proxy.port, { t1Ms: 1000 });
  const call = inviteFrom(ua);
  await proxy.next("INVITE");
  const bye = ua.bye({
    callId: "c",
    localTag: "l",
    remoteTag: "r",
    localUri: "<sip:a@b>",
    remoteUri: "<sip:c@d>",
    remoteTarget: proxy.uri,
    routeSet: [],
    localCSeq: 1,
  });
  await ua.close();
  await assert.rejects(call.outcome, (err) => err instanceof CpmError && /closed/.test(err.message));
  assert.equal(await bye, 503);
  assert.throws(() => inviteFrom(ua), CpmError);
  assert.deepEqual(
    process.getActiveResourcesInfo().filter((r) => r === "Timeout"),
    [],
    "no timer left behind",
  );
});

test("start(): a wildcard host (no usable Via sent-by) and a failed bind are CPM_ERR_CONFIG", LIMIT, async () => {
  const opts = { port: 0, outboundProxy: { host: HOST, port: 5060 }, log: silentLogger() };
  const isConfig = (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_CONFIG";
  await assert.rejects(SipUa.start({ ...opts, host: "0.0.0.0" }), isConfig);
  await assert.rejects(SipUa.start({ ...opts, host: "192.0.2.1" }), isConfig); // TEST-NET-1: not a local address
});

/** The client's re-join INVITE as Kamailio relays it to the UA (its Record-Route, the client's Contact). */
function rejoinInvite(peerPort: number, branch = "z9hG4bKrj1"): string {
  const body =
    "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=message 7000 TCP/MSRP *\r\na=path:msrp://10.0.0.9:7000/dev;tcp\r\n";
  return [
    `INVITE sip:conf-1@cf.example.com SIP/2.0`,
    `Via: SIP/2.0/UDP ${HOST}:${peerPort};branch=${branch}`,
    "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKdev9",
    "Max-Forwards: 69",
    `Record-Route: <sip:${HOST}:${peerPort};lr;cpmpf;cpmpfrj=6331>`,
    "From: <sip:+15551234@ims.example.com>;tag=c1",
    "To: <sip:conf-1@cf.example.com>",
    "Call-ID: rejoin-1",
    "CSeq: 5 INVITE",
    "Contact: <sip:+15551234@10.0.0.9:5060>",
    "Content-Type: application/sdp",
    `Content-Length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ].join("\r\n");
}

function ackOf(ok: SipMessage, peerPort: number, branch: string): string {
  return [
    "ACK sip:conf-1@cf.example.com SIP/2.0",
    `Via: SIP/2.0/UDP ${HOST}:${peerPort};branch=${branch}`,
    "Max-Forwards: 69",
    `From: ${header(ok, "from")}`,
    `To: ${header(ok, "to")}`,
    `Call-ID: ${header(ok, "call-id")}`,
    "CSeq: 5 ACK",
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
}

test(
  "RJ-1 INVITE server (17.2.1, 13.3.1.4): 100 at once, the 2xx copies Record-Route and is retransmitted until the ACK; the UAS dialog's BYE goes to the first Record-Route",
  LIMIT,
  async (t) => {
    const kam = await Peer.open(t);
    const ua = await startUa(t, kam.port);
    const uaAddr = { host: HOST, port: ua.address.port };
    let dialog: Dialog | undefined;
    let acked: Promise<boolean> | undefined;
    ua.onInvite((inv) => {
      acked = inv.acked;
      dialog = inv.accept(
        [
          ["Contact", "<sip:conf-1@cf.example.com>;isfocus"],
          ["Content-Type", "application/sdp"],
        ],
        "v=0\r\n",
      );
    });
    kam.send(rejoinInvite(kam.port), uaAddr);
    assert.equal((await kam.next("100")).msg.statusCode, 100);
    const ok = (await kam.next("200")).msg;
    assert.equal(ok.statusCode, 200);
    assert.deepEqual(headerValues(ok, "record-route"), [`<sip:${HOST}:${kam.port};lr;cpmpf;cpmpfrj=6331>`]);
    const toTag = tagOf(header(ok, "to"));
    assert.ok(toTag);
    assert.equal(ok.body.toString(), "v=0\r\n");
    // 13.3.1.4: no ACK yet, the 2xx again (T1 = 10 ms here)
    const again = (await kam.next("2xx retransmission")).msg;
    assert.equal(again.statusCode, 200);
    assert.equal(tagOf(header(again, "to")), toTag);
    // a retransmitted INVITE gets the 2xx, not a second dialog
    kam.send(rejoinInvite(kam.port), uaAddr);
    kam.send(ackOf(ok, kam.port, "z9hG4bKack1"), uaAddr);
    assert.equal(await acked, true);
    await kam.drain(60);
    assert.deepEqual(
      (await kam.drain(100)).map((r) => r.msg.statusCode),
      [],
      "no 2xx after the ACK",
    );
    const d = dialog as Dialog;
    assert.equal(d.remoteTag, "c1");
    assert.equal(d.localTag, toTag);
    assert.equal(d.remoteTarget, "sip:+15551234@10.0.0.9:5060");
    assert.deepEqual(d.routeSet, [`<sip:${HOST}:${kam.port};lr;cpmpf;cpmpfrj=6331>`]);
    const bye = ua.bye(d, [["Reason", "SIP;cause=200"]]);
    const req = (await kam.next("BYE")).msg;
    assert.equal(req.method, "BYE");
    assert.equal(req.requestUri, "sip:+15551234@10.0.0.9:5060");
    assert.equal(header(req, "route"), `<sip:${HOST}:${kam.port};lr;cpmpf;cpmpfrj=6331>`);
    assert.equal(header(req, "from"), `<sip:conf-1@cf.example.com>;tag=${toTag}`);
    assert.equal(header(req, "to"), "<sip:+15551234@ims.example.com>;tag=c1");
    assert.equal(header(req, "cseq"), "6 BYE");
    kam.send(response(req, "200 OK"), uaAddr);
    assert.equal(await bye, 200);
  },
);

test("RJ-1 INVITE server: no ACK within 64*T1 settles acked false; a reject is retransmitted until its ACK (Timer G)", LIMIT, async (t) => {
  const kam = await Peer.open(t);
  const ua = await startUa(t, kam.port);
  const uaAddr = { host: HOST, port: ua.address.port };
  const acks: Promise<boolean>[] = [];
  let n = 0;
  ua.onInvite((inv) => {
    acks.push(inv.acked);
    if (n++ === 0) inv.accept([["Contact", "<sip:conf-1@cf.example.com>"]], "");
    else inv.reject(486, "Busy Here");
  });
  kam.send(rejoinInvite(kam.port), uaAddr);
  assert.equal((await kam.next("100")).msg.statusCode, 100);
  assert.equal(await acks[0], false);
  await kam.drain(0);
  kam.send(rejoinInvite(kam.port, "z9hG4bKrj2").replace("rejoin-1", "rejoin-2"), uaAddr);
  assert.equal((await kam.next("100")).msg.statusCode, 100);
  const busy = (await kam.next("486")).msg;
  assert.equal(busy.statusCode, 486);
  assert.equal((await kam.next("486 again")).msg.statusCode, 486);
  assert.equal(await acks[1], false);
  kam.send(ackOf(busy, kam.port, "z9hG4bKrj2").replace("rejoin-1", "rejoin-2"), uaAddr);
  await kam.drain(40);
  assert.deepEqual(
    (await kam.drain(100)).map((r) => r.msg.statusCode),
    [],
    "Timer G stopped by the ACK",
  );
});

test(
  "RJ-1 INVITE server: a CANCEL before the answer gets 200, the INVITE 487 and the handler learns it; a CANCEL for nothing gets 481; no handler: 501",
  LIMIT,
  async (t) => {
    const kam = await Peer.open(t);
    const ua = await startUa(t, kam.port);
    const uaAddr = { host: HOST, port: ua.address.port };
    const stray = rejoinInvite(kam.port, "z9hG4bKnone")
      .replace(/^INVITE/, "CANCEL")
      .replace("5 INVITE", "5 CANCEL");
    kam.send(stray, uaAddr);
    assert.equal((await kam.next("481")).msg.statusCode, 481);
    kam.send(rejoinInvite(kam.port), uaAddr);
    assert.equal((await kam.next("100")).msg.statusCode, 100);
    const unimplemented = (await kam.next("501 without a handler")).msg;
    assert.equal(unimplemented.statusCode, 501);
    kam.send(ackOf(unimplemented, kam.port, "z9hG4bKrj1"), uaAddr);
    await kam.drain(30);
    let cancelled = false;
    ua.onInvite((inv) =>
      inv.onCancel(() => {
        cancelled = true;
      }),
    );
    kam.send(rejoinInvite(kam.port, "z9hG4bKrj3").replace("rejoin-1", "rejoin-3"), uaAddr);
    assert.equal((await kam.next("100")).msg.statusCode, 100);
    const cancel = rejoinInvite(kam.port, "z9hG4bKrj3")
      .replace("rejoin-1", "rejoin-3")
      .replace(/^INVITE/, "CANCEL")
      .replace("5 INVITE", "5 CANCEL");
    kam.send(cancel, uaAddr);
    const got = [(await kam.next("200 CANCEL")).msg, (await kam.next("487")).msg].map((m) => `${m.statusCode} ${header(m, "cseq")}`).sort();
    assert.deepEqual(got, ["200 5 CANCEL", "487 5 INVITE"]);
    assert.equal(cancelled, true);
  },
);

test(
  "DD-12 INVITE server: a re-INVITE (To tagged) keeps its To tag, makes no new dialog, and its 2xx is retransmitted until the ACK",
  LIMIT,
  async (t) => {
    const kam = await Peer.open(t);
    const ua = await startUa(t, kam.port);
    const uaAddr = { host: HOST, port: ua.address.port };
    let acked: Promise<boolean> | undefined;
    ua.onInvite((inv) => {
      assert.equal(inv.inDialog, true);
      assert.throws(() => inv.accept([], ""), CpmError, "not an initial INVITE");
      acked = inv.acked;
      inv.acceptInDialog(
        [
          ["Contact", "<sip:pf@127.0.0.1>"],
          ["Content-Type", "application/sdp"],
        ],
        "v=0\r\n",
      );
    });
    const reinvite = rejoinInvite(kam.port).replace("To: <sip:conf-1@cf.example.com>", "To: <sip:conf-1@cf.example.com>;tag=ue-tag");
    kam.send(reinvite, uaAddr);
    assert.equal((await kam.next("100")).msg.statusCode, 100);
    const ok = (await kam.next("200")).msg;
    assert.equal(tagOf(header(ok, "to")), "ue-tag");
    assert.equal(headerValues(ok, "record-route").length, 0, "no route set in a re-INVITE's 2xx (12.2.2)");
    assert.equal((await kam.next("2xx again")).msg.statusCode, 200);
    kam.send(ackOf(ok, kam.port, "z9hG4bKack2"), uaAddr);
    assert.equal(await acked, true);
  },
);
