// The PF's own SIP UA as a subscriber (RFC 6665): SUBSCRIBE, a
// dialog-creating non-INVITE request through the outbound proxy, and the
// in-dialog SUBSCRIBE (refresh, Expires: 0) on the dialog its 2xx or an
// early NOTIFY made.
import assert from "node:assert/strict";
import { test } from "node:test";
import { header, headerValues, parseSipMessage } from "../../../src/sip/message.js";
import { tagOf } from "../../../src/sip/name-addr.js";
import { dialogFromNotify } from "../../../src/sip/ua.js";
import { HOST, Peer, response, startUa } from "../../fixtures/sip-ua.js";

const LIMIT = { timeout: 3000 };
const HEADERS: [string, string][] = [
  ["From", "<tel:+16135551200>"],
  ["To", "<sip:focus@cf.example.net>"],
  ["Contact", "<sip:127.0.0.1:5097>"],
  ["Event", "conference"],
  ["Expires", "3600"],
];

test(
  "DD-11 RFC 6665 4.1.2.1: SUBSCRIBE goes to the outbound proxy with its Route; the 2xx gives the dialog; the in-dialog SUBSCRIBE (Expires: 0) follows the route set with CSeq 2",
  LIMIT,
  async (t) => {
    const proxy = await Peer.open(t);
    const ua = await startUa(t, proxy.port);
    const sub = ua.subscribe({ requestUri: "sip:focus@cf.example.net", headers: HEADERS });
    const { msg, raw } = await proxy.next("SUBSCRIBE");
    assert.equal(raw.split("\r\n")[0], "SUBSCRIBE sip:focus@cf.example.net SIP/2.0");
    assert.equal(header(msg, "route"), `<sip:127.0.0.1:${proxy.port};lr;cpmpfuac>`);
    assert.equal(header(msg, "cseq"), "1 SUBSCRIBE");
    assert.equal(header(msg, "call-id"), sub.callId);
    assert.equal(tagOf(header(msg, "from")), sub.localTag);
    assert.equal(header(msg, "event"), "conference");
    const rr = `<sip:127.0.0.1:${proxy.port};lr;cpmpfdd=abcd>`;
    proxy.send(response(msg, "200 OK", [`Record-Route: ${rr}`, "Contact: <sip:focus@10.0.0.9:5070>", "Expires: 600"], "focus-tag"), {
      host: HOST,
      port: ua.address.port,
    });
    const outcome = await sub.outcome;
    assert.equal(outcome.status, 200);
    assert.equal(header(outcome.response ?? parseSipMessage(Buffer.from("")), "expires"), "600");
    const dialog = outcome.dialog;
    assert.ok(dialog);
    assert.deepEqual(dialog.routeSet, [rr]);
    assert.equal(dialog.remoteTag, "focus-tag");
    const unsub = ua.inDialog(dialog, "SUBSCRIBE", [
      ["Event", "conference"],
      ["Expires", "0"],
    ]);
    const second = await proxy.next("in-dialog SUBSCRIBE");
    assert.equal(second.raw.split("\r\n")[0], "SUBSCRIBE sip:focus@10.0.0.9:5070 SIP/2.0");
    assert.equal(header(second.msg, "route"), rr);
    assert.equal(header(second.msg, "cseq"), "2 SUBSCRIBE");
    assert.equal(tagOf(header(second.msg, "to")), "focus-tag");
    assert.equal(header(second.msg, "expires"), "0");
    proxy.send(response(second.msg, "200 OK"), { host: HOST, port: ua.address.port });
    assert.equal((await unsub).status, 200);
    assert.throws(() => ua.inDialog(dialog, "INVITE"), /not sent by inDialog/);
    assert.throws(() => ua.inDialog(dialog, "SUBSCRIBE", [["CSeq", "9 SUBSCRIBE"]]), /writes CSeq itself/);
  },
);

test(
  "DD-11 bad input: a SUBSCRIBE never answered resolves 408 (Timer F) with no response; a 2xx without Contact is no dialog (502)",
  LIMIT,
  async (t) => {
    const proxy = await Peer.open(t);
    const ua = await startUa(t, proxy.port);
    const silent = await ua.subscribe({ requestUri: "sip:focus@cf.example.net", headers: HEADERS }).outcome;
    assert.equal(silent.status, 408);
    assert.equal(silent.response, undefined);
    await proxy.drain(5);
    const bad = ua.subscribe({ requestUri: "sip:focus@cf.example.net", headers: HEADERS });
    const { msg } = await proxy.next("SUBSCRIBE");
    proxy.send(response(msg, "200 OK"), { host: HOST, port: ua.address.port });
    const o = await bad.outcome;
    assert.equal(o.status, 502);
    assert.equal(o.dialog, undefined);
  },
);

test("DD-11 RFC 6665 4.1.2.4: an early NOTIFY makes the dialog: its From tag, its Contact, its Record-Route in order", () => {
  const notify = parseSipMessage(
    Buffer.from(
      [
        "NOTIFY sip:127.0.0.1:5097 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1",
        "Record-Route: <sip:a;lr>, <sip:b;lr>",
        "From: <sip:focus@cf.example.net>;tag=ftag",
        "To: <tel:+16135551200>;tag=mine",
        "Call-ID: c1",
        "CSeq: 1 NOTIFY",
        "Contact: <sip:focus@10.0.0.9:5070>;isfocus",
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n"),
    ),
  );
  const d = dialogFromNotify(notify, {
    callId: "c1",
    localTag: "mine",
    localUri: "<tel:+16135551200>",
    remoteUri: "<sip:focus@cf.example.net>",
    localCSeq: 1,
  });
  assert.equal(d.remoteTag, "ftag");
  assert.equal(d.remoteTarget, "sip:focus@10.0.0.9:5070");
  assert.deepEqual(d.routeSet, ["<sip:a;lr>", "<sip:b;lr>"]);
  const noContact = parseSipMessage(
    Buffer.from(notify.headers.length ? "NOTIFY sip:x SIP/2.0\r\nFrom: <sip:f>;tag=1\r\nCall-ID: c\r\n\r\n" : ""),
  );
  assert.throws(
    () => dialogFromNotify(noContact, { callId: "c", localTag: "m", localUri: "<a>", remoteUri: "<b>", localCSeq: 1 }),
    /NOTIFY without From tag or Contact/,
  );
});

test("DD-11 TS 24.229 5.7.3: a SUBSCRIBE with a pre-loaded route carries it after the outbound proxy's", LIMIT, async (t) => {
  const proxy = await Peer.open(t);
  const ua = await startUa(t, proxy.port);
  ua.subscribe({ requestUri: "sip:focus@cf.example.net", route: ["<sip:scscf.example.net;lr;orig>"], headers: HEADERS });
  const { msg } = await proxy.next("SUBSCRIBE");
  assert.deepEqual(headerValues(msg, "route"), [`<sip:127.0.0.1:${proxy.port};lr;cpmpfuac>`, "<sip:scscf.example.net;lr;orig>"]);
});
