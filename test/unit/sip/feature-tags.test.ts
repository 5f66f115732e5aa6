import assert from "node:assert/strict";
import { test } from "node:test";
import { acceptContactFor, CPM_SESSION_ICSI, encodeIcsi, icsiRefParam } from "../../../src/sip/feature-tags.js";

test("DD-3: the CPM session ICSI percent-encoded in +g.3gpp.icsi-ref (TS 24.229 7.2A.8.2)", () => {
  assert.equal(CPM_SESSION_ICSI, "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session");
  assert.equal(icsiRefParam(CPM_SESSION_ICSI), '+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"');
  assert.equal(acceptContactFor(CPM_SESSION_ICSI), '*;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"');
  assert.equal(encodeIcsi('a"b c%é'), "a%22b%20c%25%C3%A9");
});
