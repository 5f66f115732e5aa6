// The record store contract (test/fixtures/record-store-contract.ts) on the
// local journal (src/session/registry.ts), the default engine.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { silentLogger } from "../../../src/log/logger.js";
import { SessionRegistry } from "../../../src/session/registry.js";
import { POLICY, recordStoreContract } from "../../fixtures/record-store-contract.js";

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

recordStoreContract("journal", async (policy = POLICY) => {
  const dir = await mkdtemp(join(tmpdir(), "cpm-contract-"));
  dirs.push(dir);
  const opened = async () => {
    const r = new SessionRegistry(dir, policy, silentLogger());
    await r.load();
    return r;
  };
  let store = await opened();
  return {
    store,
    async reopen() {
      await store.close();
      store = await opened();
      return store;
    },
  };
});
