// The PF's own request on a group session's dialog it only proxies
// (src/session/proxied-dialog.ts): whose tags, which part of the route set.
import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import type { SessionDialog } from "../../../src/session/group-session.js";
import { routeBeyondPf, towardsClient, towardsFocus } from "../../../src/session/proxied-dialog.js";
import { groupSession } from "../../fixtures/delivery.js";

const PF = "<sip:10.0.0.5:5060;lr;cpmpf>";

function dialog(extra: Partial<SessionDialog> = {}): SessionDialog {
  return {
    callId: "call-1@cf",
    cfTag: "cf-tag",
    clientTag: "ue-tag",
    remoteTarget: "sip:focus@cf.example.net",
    // CF -> P1 -> PF -> P2 -> client: the 2xx's Record-Route reads P2, PF, P1
    routeSet: ["<sip:p2.example.net;lr>", PF, "<sip:p1.example.net;lr>"],
    inviteCseq: 1,
    clientInstance: "",
    initiator: "cf",
    clientTarget: "sip:client@192.0.2.7:5070",
    state: "confirmed",
    ...extra,
  };
}

test("DD-8 ii RFC 3261 16.6: the route beyond the PF towards the caller follows the PF's entry, towards the callee precedes it (nearest first)", () => {
  const rr = ["<sip:p3.example.net;lr>, <sip:p2.example.net;lr>", PF, "<sip:p1.example.net;lr>", "<sip:p0.example.net;lr>"];
  assert.deepEqual(routeBeyondPf(rr, "caller"), ["<sip:p1.example.net;lr>", "<sip:p0.example.net;lr>"]);
  assert.deepEqual(routeBeyondPf(rr, "callee"), ["<sip:p2.example.net;lr>", "<sip:p3.example.net;lr>"]);
  // Kamailio's double Record-Route (a transport change) puts two entries of the PF's
  const double = [PF.replace(";cpmpf", ";r2=on;cpmpf"), PF.replace(";cpmpf", ";transport=tcp;r2=on;cpmpf"), "<sip:p1.example.net;lr>"];
  assert.deepEqual(routeBeyondPf(double, "caller"), ["<sip:p1.example.net;lr>"]);
  assert.deepEqual(routeBeyondPf(double, "callee"), []);
  assert.throws(() => routeBeyondPf(["<sip:p1.example.net;lr>"], "caller"), CpmError);
});

test("DD-8 ii: the served user's BYE to the focus carries the client's tag as From, the CF's as To, goes to the focus's Contact via the CF side's proxies, CSeq above any the client used", () => {
  const s = groupSession({ servedUser: "tel:+16135551200", focusUri: "sip:focus@cf.example.net", dialogs: [dialog()] });
  const d = towardsFocus(s, dialog());
  assert.equal(d.localTag, "ue-tag");
  assert.equal(d.remoteTag, "cf-tag");
  assert.equal(d.localUri, "<tel:+16135551200>");
  assert.equal(d.remoteTarget, "sip:focus@cf.example.net");
  assert.deepEqual(d.routeSet, ["<sip:p1.example.net;lr>"]);
  assert.ok(d.localCSeq + 1 < 2 ** 31, "RFC 3261 8.1.1.5: below 2^31");
  // the other direction: the CF's tag as From, the client's Contact as target
  const c = towardsClient(s, dialog());
  assert.equal(c?.localTag, "cf-tag");
  assert.equal(c?.remoteTarget, "sip:client@192.0.2.7:5070");
  assert.deepEqual(c?.routeSet, ["<sip:p2.example.net;lr>"]);
});

test("DD-8 ii: a client-initiated group session (the client invited the focus): the focus is the callee", () => {
  // client -> P1 -> PF -> P2 -> CF: Record-Route P2, PF, P1
  const d = dialog({ initiator: "client", routeSet: ["<sip:p2.example.net;lr>", PF, "<sip:p1.example.net;lr>"] });
  const s = groupSession({ dialogs: [d] });
  assert.deepEqual(towardsFocus(s, d).routeSet, ["<sip:p2.example.net;lr>"]);
  assert.deepEqual(towardsClient(s, d)?.routeSet, ["<sip:p1.example.net;lr>"]);
});

test("DD-8 ii: no request on a dialog that is not confirmed, or lacks the CF's tag; none towards a client whose Contact is unknown (an older record)", () => {
  const s = groupSession({ dialogs: [dialog()] });
  assert.throws(() => towardsFocus(s, dialog({ state: "terminated" })), CpmError);
  assert.throws(() => towardsFocus(s, dialog({ cfTag: "" })), CpmError);
  assert.equal(towardsClient(s, dialog({ clientTarget: undefined })), undefined);
});
