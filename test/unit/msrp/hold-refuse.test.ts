// The media plane's two hooks in the session: a "message" listener may hold
// the response until its verdict (store-then-200), and
// refuseIncoming() answers every later SEND with a code (BYE-B6).
import assert from "node:assert/strict";
import { test } from "node:test";
import { silentLogger } from "../../../src/log/logger.js";
import { chunkMessage } from "../../../src/msrp/chunking.js";
import { MsrpResources } from "../../../src/msrp/resources.js";
import { MsrpSession } from "../../../src/msrp/session.js";
import { parseMsrpUri } from "../../../src/msrp/uri.js";

const ours = parseMsrpUri("msrp://127.0.0.1:2855/pfSession12345;tcp");
const peer = parseMsrpUri("msrp://127.0.0.1:7000/peerSession1;tcp");

function session() {
  return new MsrpSession({ localUri: ours, remotePath: [peer], logger: silentLogger(), resources: new MsrpResources() });
}

test("media plane hold: a listener's verdict replaces the immediate 200 of the completing chunk; the success REPORT waits for it", async () => {
  const s = session();
  let verdict!: (code: number) => void;
  s.on("message", (_m, hold) =>
    hold(
      new Promise((r) => {
        verdict = r;
      }),
    ),
  );
  const [first, last] = chunkMessage({ body: Buffer.alloc(3000), contentType: "message/cpim", successReport: "yes" }, [ours], [peer], 2000);
  assert.ok(first && last);
  assert.deepEqual(s.receive(first), { respond: 200, reports: [] }, "earlier chunks are answered at once");
  const actions = s.receive(last);
  assert.equal(actions.respond, undefined);
  assert.equal(actions.reports.length, 1, "the success REPORT is handed over with the held response");
  assert.ok(actions.respondLater);
  verdict(200);
  assert.equal(await actions.respondLater, 200);
});

test("media plane hold: without a hold the response is immediate, as before", () => {
  const s = session();
  s.on("message", () => {});
  const [only] = chunkMessage({ body: Buffer.from("hi"), contentType: "message/cpim" }, [ours], [peer]);
  assert.ok(only);
  assert.deepEqual(s.receive(only), { respond: 200, reports: [] });
});

test("BYE-B6: after refuseIncoming(481) every SEND gets 481 and no message is delivered", () => {
  const s = session();
  const got: string[] = [];
  s.on("message", (m) => got.push(m.body.toString()));
  const send = (text: string) => chunkMessage({ body: Buffer.from(text), contentType: "message/cpim" }, [ours], [peer])[0];
  const before = send("before");
  assert.ok(before);
  assert.equal(s.receive(before).respond, 200);
  s.refuseIncoming(481);
  const after = send("after the BYE");
  assert.ok(after);
  assert.deepEqual(s.receive(after), { respond: 481, reports: [] });
  assert.deepEqual(got, ["before"]);
  // Failure-Report: no -> discarded silently (RFC 4975 7.1.1)
  const quiet = chunkMessage({ body: Buffer.from("x"), contentType: "message/cpim", failureReport: "no" }, [ours], [peer])[0];
  assert.ok(quiet);
  assert.deepEqual(s.receive(quiet), { reports: [] });
  assert.deepEqual(got, ["before"]);
});
