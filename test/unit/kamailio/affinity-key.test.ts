// The bridge's served-user key (kamailio/python/cpm_pf_bridge.py
// _served_user_key, CPM_PF_GRPC_AFFINITY "served-user"), run with Debian's
// python3 and a stand-in KSR module: one key per served user whichever form
// the identity takes and whichever message carries it, so that a user's
// dialogs, registrations and re-joins go to one sidecar.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../../harness/sidecar.js";

const PY = process.env.KAMAILIO_PYTHON ?? "/usr/bin/python3";

function keys(messages: string[]): (string | null)[] {
  const script = `
import json, sys, types
sys.modules["KSR"] = types.ModuleType("KSR")
sys.path.insert(0, ${JSON.stringify(join(REPO_ROOT, "kamailio", "python"))})
import cpm_pf_bridge as b
print(json.dumps([b._served_user_key(m.encode()) for m in json.load(sys.stdin)]))
`;
  const r = spawnSync(PY, ["-c", script], { input: JSON.stringify(messages), encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as (string | null)[];
}

const sip = (...lines: string[]) => `${lines.join("\r\n")}\r\n\r\n`;
const FOCUS_INVITE = sip(
  "INVITE sip:+16135551200@127.0.0.1:5090;user=phone SIP/2.0",
  "From: <sip:focus@cf.example>;tag=cf1",
  "To: <tel:+1-613-555-1200>",
  "Contact: <sip:focus@cf.example>;isfocus",
);
const REGISTER = sip(
  "REGISTER sip:pf.example SIP/2.0",
  "From: <sip:scscf.example>;tag=r1",
  "To: <sip:+16135551200@ims.example;user=phone>",
  "Contact: <sip:scscf.example>",
);
const CLIENT_INVITE = sip(
  "INVITE sip:focus@cf.example SIP/2.0",
  'f: "Alice" <tel:+16135551200>;tag=ue1',
  "t: <sip:focus@cf.example>",
  "m: <sip:alice@192.0.2.7:5060>",
);
const OTHER_USER = sip(
  "INVITE sip:x SIP/2.0",
  "From: <sip:focus@cf.example>;tag=cf2",
  "To: <tel:+16135551299>",
  "Contact: <sip:focus@cf.example>;isfocus",
);

test("SHAPE-1 served-user affinity: the focus's INVITE (To), the third-party REGISTER (To) and the client's re-join (From) of one user give one key: tel: with visual separators, sip:...;user=phone, a display name and compact headers alike; another user another key", () => {
  const [focus, register, client, other] = keys([FOCUS_INVITE, REGISTER, CLIENT_INVITE, OTHER_USER]);
  assert.match(focus ?? "", /^[0-9a-f]{8}$/);
  assert.equal(register, focus);
  assert.equal(client, focus);
  assert.notEqual(other, focus);
});

test("SHAPE-1 served-user affinity: a request or reply of the dialog takes the key its Route / Record-Route carries (;cpmpf=<key>); an in-dialog request without one, or another method, has none", () => {
  const bye = sip(
    "BYE sip:client@192.0.2.7 SIP/2.0",
    "Route: <sip:127.0.0.1;lr;cpmpf=0badc0de>",
    "From: <sip:focus@cf.example>;tag=cf1",
    "To: <tel:+16135551200>;tag=c1",
  );
  const ok = sip("SIP/2.0 200 OK", "Record-Route: <sip:127.0.0.1;lr;cpmpf=0badc0de;cpmpfrj=6162>", "To: <tel:+16135551200>;tag=c1");
  const plain = sip("BYE sip:client@192.0.2.7 SIP/2.0", "Route: <sip:127.0.0.1;lr;cpmpf>", "To: <tel:+16135551200>;tag=c1");
  const reinvite = sip(
    "INVITE sip:c SIP/2.0",
    "From: <sip:focus@cf.example>;tag=cf1",
    "To: <tel:+16135551200>;tag=c1",
    "Contact: <sip:focus@cf.example>;isfocus",
  );
  const notRr = sip("BYE sip:c SIP/2.0", "Route: <sip:127.0.0.1;lr;cpmpfrj=6162>");
  assert.deepEqual(keys([bye, ok, plain, reinvite, notRr, "garbage"]), ["0badc0de", "0badc0de", null, null, null, null]);
});
