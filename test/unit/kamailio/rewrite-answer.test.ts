// The bridge's local 2xx rewrite (kamailio/python/cpm_pf_bridge.py
// rewrite_msrp_sdp), run with Debian's python3 (the interpreter app_python3
// embeds) and a stand-in KSR module: what the CF gets instead of the client's
// SDP answer, with no sidecar call in the SIP worker.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../../harness/sidecar.js";

const PY = process.env.KAMAILIO_PYTHON ?? "/usr/bin/python3";

function rewrite(body: string, leg: Record<string, unknown>): { ok: boolean; out: string } {
  const script = `
import json, sys, types
sys.modules["KSR"] = types.ModuleType("KSR")
sys.path.insert(0, ${JSON.stringify(join(REPO_ROOT, "kamailio", "python"))})
import cpm_pf_bridge as b
req = json.load(sys.stdin)
try:
    print(json.dumps({"ok": True, "out": b.rewrite_msrp_sdp(req["body"], req["leg"])}))
except ValueError as e:
    print(json.dumps({"ok": False, "out": str(e)}))
`;
  const r = spawnSync(PY, ["-c", script], { input: JSON.stringify({ body, leg }), encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { ok: boolean; out: string };
}

const LEG = { host: "127.0.0.1", port: 40000, path: "msrp://127.0.0.1:40000/pf-cf;tcp", setup: "passive", tls: false };
const ANSWER = [
  "v=0",
  "o=client 1 1 IN IP4 192.0.2.20",
  "s=-",
  "c=IN IP4 192.0.2.20",
  "t=0 0",
  "m=message 7395 TCP/MSRP *",
  "a=accept-types:message/cpim application/im-iscomposing+xml",
  "a=accept-wrapped-types:text/plain message/imdn+xml",
  "a=path:msrp://192.0.2.20:7395/ue1;tcp",
  "a=setup:active",
  "a=sendrecv",
  "",
].join("\r\n");

test("MEDIA-ANCHOR: the client's answer gets the PF's CF-facing port, path, setup and address; accept-types stay the client's", () => {
  const r = rewrite(ANSWER, LEG);
  assert.ok(r.ok, r.out);
  assert.equal(
    r.out,
    [
      "v=0",
      "o=client 1 1 IN IP4 127.0.0.1",
      "s=-",
      "c=IN IP4 127.0.0.1",
      "t=0 0",
      "m=message 40000 TCP/MSRP *",
      "a=accept-types:message/cpim application/im-iscomposing+xml",
      "a=accept-wrapped-types:text/plain message/imdn+xml",
      "a=path:msrp://127.0.0.1:40000/pf-cf;tcp",
      "a=setup:passive",
      "a=sendrecv",
      "",
    ].join("\r\n"),
  );
});

test("MEDIA-ANCHOR: an answer without a=setup gets the PF's; msrps legs get TCP/TLS/MSRP; IPv6 addresses", () => {
  const r = rewrite(ANSWER.replace("a=setup:active\r\n", ""), {
    ...LEG,
    host: "2001:db8::1",
    path: "msrps://[2001:db8::1]:40000/pf-cf;tcp",
    tls: true,
  });
  assert.ok(r.ok, r.out);
  assert.match(r.out, /\r\nm=message 40000 TCP\/TLS\/MSRP \*\r\n/);
  assert.match(r.out, /\r\nc=IN IP6 2001:db8::1\r\n/);
  assert.match(r.out, /\r\na=sendrecv\r\na=setup:passive\r\n$/);
});

test("MEDIA-ANCHOR: the SDP part of a multipart answer is rewritten, the other parts are not", () => {
  const body = [
    "--b",
    "Content-Type: application/sdp",
    "",
    ANSWER,
    "--b",
    "Content-Type: text/plain",
    "",
    "c=IN IP4 192.0.2.99",
    "--b--",
    "",
  ].join("\r\n");
  const r = rewrite(body, LEG);
  assert.ok(r.ok, r.out);
  assert.match(r.out, /a=path:msrp:\/\/127\.0\.0\.1:40000\/pf-cf;tcp/);
  assert.match(r.out, /\r\nc=IN IP4 192\.0\.2\.99\r\n--b--/, "a line of another part that looks like SDP stays");
});

test("MEDIA-ANCHOR: no MSRP media, or no CF leg on the transaction -> error (Kamailio relays unchanged, cpm_pf_anchor_failsafe)", () => {
  assert.equal(rewrite(ANSWER.replace("m=message 7395 TCP/MSRP *", "m=audio 4000 RTP/AVP 0"), LEG).ok, false);
  assert.equal(rewrite(ANSWER, { ...LEG, path: "" }).ok, false);
});
