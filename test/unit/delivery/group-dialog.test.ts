// DD-13 / RJ-3, the I/O side of the re-start (src/delivery/group-dialog.ts
// GroupDialogs.restart) against a fake UA and media plane: the INVITE it
// sends to the focus or the conference factory, what a 2xx hands to the
// record (the new focus), and the defined outcome of a CF that answers
// garbage or never answers.
import assert from "node:assert/strict";
import { test } from "node:test";
import { GroupDialogs, type GroupDialogUa } from "../../../src/delivery/group-dialog.js";
import type { JoinedClient } from "../../../src/media/anchored-session.js";
import { type RestartRequest, restartRequest } from "../../../src/procedures/delivery-session.js";
import type { SessionDialog } from "../../../src/session/group-session.js";
import { parseSipMessage, type SipMessage } from "../../../src/sip/message.js";
import { bodyParts } from "../../../src/sip/multipart.js";
import type { Dialog } from "../../../src/sip/ua.js";
import { parseResourceLists } from "../../../src/xml/resource-lists.js";
import { groupSession, policy, SERVED_USER } from "../../fixtures/delivery.js";
import { capturedLog } from "../../fixtures/sip-ua.js";

const FACTORY = "sip:factory@cf.example.net";
const ANSWER_SDP = "v=0\r\nm=message 7394 TCP/MSRP *\r\na=path:msrp://10.0.0.9:7394/cf;tcp\r\n";

function response(status: number, phrase: string, headers: string[], body = ""): SipMessage {
  const text = [`SIP/2.0 ${status} ${phrase}`, ...headers, `Content-Length: ${Buffer.byteLength(body)}`, "", body].join("\r\n");
  return parseSipMessage(Buffer.from(text));
}

const dialog = (callId: string): Dialog => ({
  callId,
  localTag: "pf-tag",
  remoteTag: "cf-tag",
  localUri: `<${SERVED_USER}>`,
  remoteUri: `<${FACTORY}>`,
  remoteTarget: "sip:focus-new@10.0.0.9:5060",
  routeSet: [],
  localCSeq: 1,
});

type Answer = (callId: string) => { status: number; reason: string; response: SipMessage; dialog?: Dialog } | "never" | Error;

function rig(answer: Answer, ringMs = 50) {
  const sent: { requestUri: string; headers: [string, string][]; body: string }[] = [];
  const byes: [string, string][][] = [];
  const acks: string[] = [];
  let cancels = 0;
  const ua: GroupDialogUa = {
    outboundRoute: "<sip:127.0.0.1:5060;lr;cpmpfuac>",
    address: { host: "127.0.0.1", port: 5097 },
    invite(req) {
      sent.push(req);
      const callId = req.callId ?? "x";
      const a = answer(callId);
      let settle: ((v: Awaited<ReturnType<GroupDialogUa["invite"]>["outcome"]>) => void) | undefined;
      const outcome =
        a === "never"
          ? new Promise<Awaited<ReturnType<GroupDialogUa["invite"]>["outcome"]>>((r) => {
              // the restart's ring timer is unref'd: keep the test's event loop alive until the CANCEL
              const alive = setInterval(() => undefined, 1000);
              settle = (v) => {
                clearInterval(alive);
                r(v);
              };
            })
          : a instanceof Error
            ? Promise.reject(a)
            : Promise.resolve(a);
      return {
        callId,
        outcome,
        cancel: () => {
          cancels++;
          // RFC 3261 9.1: the CF answers the CANCELled INVITE 487
          settle?.({ status: 487, reason: "Request Terminated", response: response(487, "Request Terminated", []) });
        },
      };
    },
    ack: (d) => acks.push(d.callId),
    bye: (_d, headers) => {
      byes.push(headers ?? []);
      return Promise.resolve(200);
    },
  };
  const restarted: { sessionKey: string; dialog: SessionDialog; focusUri: string | undefined }[] = [];
  const media = { abandoned: [] as string[], anchored: [] as { callId: string; focus: string | undefined }[] };
  const log = capturedLog();
  const group = new GroupDialogs({
    userLeaves: () => Promise.resolve(undefined),
    clientJoined: () => Promise.resolve(),
    restarted: (sessionKey, d, focusUri) => {
      restarted.push({ sessionKey, dialog: d, focusUri });
      return Promise.resolve();
    },
    ringMs,
    ua,
    media: {
      holds: () => true,
      originate: () => "v=0\r\nm=message 9 TCP/MSRP *\r\na=path:msrp://127.0.0.1:7000/pf;tcp\r\n",
      abandon: (k) => {
        media.abandoned.push(k);
        return 1;
      },
      anchorAnswer: (callId, answerSdp, facts) => {
        if (!answerSdp.includes("a=path")) throw new Error("no path");
        media.anchored.push({ callId, focus: facts?.focus });
        return "";
      },
      release: () => 0,
      joinClient: () => undefined,
      leaveClient: () => undefined,
      relayToCf: () => Promise.resolve(200),
    },
    log: log.log,
  });
  return { group, sent, byes, acks, restarted, media, lines: log.lines, cancels: () => cancels };
}

const session = groupSession({
  lifecycle: "inactive",
  participants: [
    { name: "Bob", commAddr: "tel:+16135551210" },
    { name: "Me", commAddr: SERVED_USER },
  ],
});
const viaFactory: RestartRequest = { ...restartRequest(session, { ...policy, conferenceFactoryUri: FACTORY }), via: "factory" };
const client = {} as JoinedClient;

test("DD-13 RJ-3: the factory INVITE goes to the factory URI with the recipient list; its 2xx names the new focus, handed to the record with the dialog", async () => {
  const r = rig((callId) => ({
    status: 200,
    reason: "OK",
    response: response(200, "OK", ["Contact: <sip:focus-new@10.0.0.9:5060>;isfocus", "Content-Type: application/sdp"], ANSWER_SDP),
    dialog: dialog(callId),
  }));
  const out = await r.group.restart({ servedUser: SERVED_USER, session, restart: viaFactory, client });
  assert.equal(out.status, 200);
  assert.equal(out.focusUri, "sip:focus-new@10.0.0.9:5060");
  assert.equal(r.sent[0]?.requestUri, FACTORY);
  const ct = r.sent[0]?.headers.find(([n]) => n === "Content-Type")?.[1];
  const list = bodyParts(ct, Buffer.from(r.sent[0]?.body ?? "")).find((p) => p.contentType === "application/resource-lists+xml");
  assert.deepEqual(parseResourceLists(list?.body ?? ""), [{ uri: "tel:+16135551210", displayName: "Bob" }]);
  assert.equal(r.restarted[0]?.focusUri, "sip:focus-new@10.0.0.9:5060");
  assert.equal(r.restarted[0]?.dialog.initiator, "pf");
  assert.deepEqual(r.media.anchored, [{ callId: out.callId, focus: "sip:focus-new@10.0.0.9:5060" }]);
  assert.ok(
    r.lines.some((l) => l.message === "re-start INVITE to the conference factory (DD-13: the focus is gone)" && l.participants === 1),
  );
});

test("DD-13 RJ-3 bad input: the factory's 2xx names no focus (no ;isfocus) -> ACK, BYE at once, 502 for the procedure, media released, a log line", async () => {
  const r = rig((callId) => ({
    status: 200,
    reason: "OK",
    response: response(200, "OK", ["Contact: <sip:somewhere@10.0.0.9>", "Content-Type: application/sdp"], ANSWER_SDP),
    dialog: dialog(callId),
  }));
  const out = await r.group.restart({ servedUser: SERVED_USER, session, restart: viaFactory, client });
  assert.deepEqual(out, { status: 502, reasonPhrase: "Bad Gateway" });
  assert.equal(r.acks.length, 1);
  assert.deepEqual(r.byes, [[["Reason", 'SIP;cause=502;text="Bad Gateway"']]]);
  assert.equal(r.media.abandoned.length, 1);
  assert.equal(r.restarted.length, 0, "the record keeps its focus and dialogs");
  assert.ok(r.lines.some((l) => l.message === "re-start answer unusable" && l.via === "factory"));
});

test("DD-13 RJ-3 bad input: the factory's 2xx carries garbage instead of an SDP answer -> BYE, 488, media released", async () => {
  const r = rig((callId) => ({
    status: 200,
    reason: "OK",
    response: response(200, "OK", ["Contact: <sip:focus-new@10.0.0.9>;isfocus", "Content-Type: text/plain"], "\u0000garbage"),
    dialog: dialog(callId),
  }));
  const out = await r.group.restart({ servedUser: SERVED_USER, session, restart: viaFactory, client });
  assert.deepEqual(out, { status: 488, reasonPhrase: "Not Acceptable Here" });
  assert.equal(r.byes.length, 1);
  assert.equal(r.restarted.length, 0);
});

test("DD-13 RJ-3 bad input: a factory that rings and never answers is CANCELled after the ring limit -> 408 (not the 487), a log line", async () => {
  const r = rig(() => "never", 30);
  const out = await r.group.restart({ servedUser: SERVED_USER, session, restart: viaFactory, client });
  assert.deepEqual(out, { status: 408, reasonPhrase: "Request Timeout" });
  assert.equal(r.cancels(), 1);
  assert.equal(r.media.abandoned.length, 1);
  assert.ok(r.lines.some((l) => l.message === "re-start INVITE rang too long: cancelled" && l.status === 487));
});

test("DD-13 RJ-3 bad input: no response at all (the UA's Timer B) -> 408, a log line", async () => {
  const r = rig(() => new Error("Timer B: no response to the INVITE within 32000 ms"));
  const out = await r.group.restart({ servedUser: SERVED_USER, session, restart: viaFactory, client });
  assert.deepEqual(out, { status: 408, reasonPhrase: "Request Timeout" });
  assert.ok(r.lines.some((l) => l.message === "re-start INVITE not answered" && l.via === "factory"));
});

test("DD-13 RJ-3: the factory refuses (403) -> its code and phrase as they came, media released", async () => {
  const r = rig(() => ({ status: 403, reason: "Forbidden", response: response(403, "Forbidden", []) }));
  const out = await r.group.restart({ servedUser: SERVED_USER, session, restart: viaFactory, client });
  assert.deepEqual(out, { status: 403, reasonPhrase: "Forbidden" });
  assert.equal(r.media.abandoned.length, 1);
  assert.equal(r.cancels(), 0);
});
