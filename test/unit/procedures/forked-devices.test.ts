// BYE-B7 with a forked INVITE: the pure procedure (src/procedures/forked-devices.ts).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { deviceBye, forkedAnswer } from "../../../src/procedures/forked-devices.js";
import { devicesIn, type ForkedDevice, holdsForks, type SessionDialog } from "../../../src/session/group-session.js";
import { towardsDevice } from "../../../src/session/proxied-dialog.js";
import { groupSession } from "../../fixtures/delivery.js";

const PF_RR = "<sip:127.0.0.1:5060;lr;cpmpf>";
const SCSCF_RR = "<sip:scscf.example.net;lr>";

const dialog: SessionDialog = {
  callId: "call-1@cf",
  cfTag: "cf-tag",
  clientTag: "phone-tag",
  remoteTarget: "sip:focus@cf.example.net",
  routeSet: [SCSCF_RR, PF_RR],
  inviteCseq: 7,
  clientInstance: "<urn:gsma:imei:1>",
  clientTarget: "sip:phone@10.0.0.1",
  state: "confirmed",
};

const tablet: ForkedDevice = {
  clientTag: "tablet-tag",
  clientTarget: "sip:tablet@10.0.0.2",
  clientInstance: "<urn:gsma:imei:2>",
  routeSet: [SCSCF_RR, PF_RR],
  state: "confirmed",
};

const session = groupSession({ dialogs: [dialog] });

describe("BYE-B7 forked INVITE: a further device's 2xx", () => {
  test("BYE-B7: the first 2xx of a further device joins the dialog, is ACKed and anchored", () => {
    const r = forkedAnswer(session, "call-1@cf", tablet);
    assert.deepEqual(
      r.actions.map((a) => a.kind),
      ["ackDevice", "anchorDevice"],
    );
    const d = r.record.dialogs[0] as SessionDialog;
    assert.deepEqual(d.forks, [tablet]);
    assert.deepEqual(devicesIn(d), ["phone-tag", "tablet-tag"]);
    assert.equal(holdsForks(d), true);
    assert.equal(session.dialogs[0]?.forks, undefined, "the input record is not changed");
  });

  test("BYE-B7: a retransmitted 2xx is ACKed again, nothing else", () => {
    const once = forkedAnswer(session, "call-1@cf", tablet).record;
    const again = forkedAnswer(once, "call-1@cf", { ...tablet });
    assert.equal(again.record, once);
    assert.deepEqual(
      again.actions.map((a) => a.kind),
      ["ackDevice"],
    );
  });

  test("BYE-B7: a device answering a dialog that is over is ACKed and ended at once", () => {
    const ended = groupSession({ dialogs: [{ ...dialog, state: "terminated" }] });
    const r = forkedAnswer(ended, "call-1@cf", tablet);
    assert.deepEqual(
      r.actions.map((a) => a.kind),
      ["ackDevice", "byeDevice"],
    );
    assert.equal(r.record, ended);
    const unknown = forkedAnswer(session, "other@cf", tablet);
    assert.deepEqual(
      unknown.actions.map((a) => a.kind),
      ["ackDevice", "byeDevice"],
    );
  });

  test("BYE-B7: the first device's own 2xx reported as a further one changes nothing", () => {
    const r = forkedAnswer(session, "call-1@cf", { ...tablet, clientTag: "phone-tag" });
    assert.deepEqual(r.actions, []);
    assert.equal(r.record, session);
  });

  test("BYE-B7: the UA speaks to the further device in its own dialog: its tag, its Contact, its route beyond the PF, CSeq after the INVITE's", () => {
    const forked = forkedAnswer(session, "call-1@cf", tablet).record;
    const d = towardsDevice(forked, forked.dialogs[0] as SessionDialog, "tablet-tag");
    assert.ok(d);
    assert.equal(d.callId, "call-1@cf");
    assert.equal(d.localTag, "cf-tag");
    assert.equal(d.remoteTag, "tablet-tag");
    assert.equal(d.remoteTarget, "sip:tablet@10.0.0.2");
    assert.deepEqual(d.routeSet, [SCSCF_RR]);
    assert.equal(d.localCSeq, 7, "the ACK carries the INVITE's CSeq, the BYE the next");
    assert.equal(towardsDevice(forked, forked.dialogs[0] as SessionDialog, "nobody"), undefined);
  });
});

describe("BYE-B7 forked INVITE: BYEs", () => {
  const forked = forkedAnswer(session, "call-1@cf", tablet).record;
  const fd = forked.dialogs[0] as SessionDialog;

  test("BYE-B7: without further devices nothing changes (Kamailio relays as for one device)", () => {
    const r = deviceBye(session, dialog, "network", "cf-tag");
    assert.deepEqual(r, { relayToUa: false, last: false, record: session });
    assert.equal(deviceBye(session, dialog, "client", "phone-tag").relayToUa, false);
  });

  test("BYE-B7: the network's BYE goes to the UA, which sends it on to every device", () => {
    const r = deviceBye(forked, fd, "network", "cf-tag");
    assert.equal(r.relayToUa, true);
    assert.equal(r.leaving, undefined);
    assert.equal(r.record, forked);
  });

  test("BYE-B7: the further device's BYE ends only its part; the first device stays", () => {
    const r = deviceBye(forked, fd, "client", "tablet-tag");
    assert.equal(r.relayToUa, true);
    assert.equal(r.leaving, "tablet-tag");
    assert.equal(r.last, false);
    const after = r.record.dialogs[0] as SessionDialog;
    assert.deepEqual(devicesIn(after), ["phone-tag"]);
    assert.equal(holdsForks(after), false, "the next BYE goes the usual way");
  });

  test("BYE-B7: the first device leaves while the further one stays; then the further one's BYE is the last", () => {
    const r = deviceBye(forked, fd, "client", "phone-tag");
    assert.equal(r.relayToUa, true);
    assert.equal(r.last, false);
    const after = r.record.dialogs[0] as SessionDialog;
    assert.equal(after.clientLeft, true);
    assert.deepEqual(devicesIn(after), ["tablet-tag"]);
    const last = deviceBye(r.record, after, "client", "tablet-tag");
    assert.equal(last.relayToUa, true, "the UA answers it and ends the CF's dialog for the user");
    assert.equal(last.last, true);
    assert.deepEqual(devicesIn(last.record.dialogs[0] as SessionDialog), []);
  });

  test("BYE-B7: a BYE with the tag of no device in the dialog changes nothing", () => {
    const r = deviceBye(forked, fd, "client", "stranger");
    assert.equal(r.record, forked);
    assert.equal(r.last, false);
  });
});
