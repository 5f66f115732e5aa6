import assert from "node:assert/strict";
import { test } from "node:test";
import { buildConfig, defaults } from "../../../src/config/config.js";

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
