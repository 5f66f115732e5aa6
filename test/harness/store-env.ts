// A real Dovecot plus throwaway spool directories for Message Store tests:
// registers before/after hooks (start Dovecot; close the stores, stop Dovecot
// by PID, remove the directories) in the calling test file. storeConfig() is
// the shared login (the test user); mailboxConfig() the per-user template
// through the Dovecot master user ("{user}*pfmaster").
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { type Config, defaults } from "../../src/config/config.js";
import { createRootLogger, type Logger, silentLogger } from "../../src/log/logger.js";
import { Mailboxes } from "../../src/store/mailboxes.js";
import { MessageStore } from "../../src/store/message-store.js";
import { type DovecotInstance, startDovecot } from "./dovecot.js";

export interface StoreTestEnv {
  /** The running Dovecot (set once the before hook ran). */
  readonly dovecot: DovecotInstance;
  readonly log: Logger;
  /** Store config for the test Dovecot with a fresh spool directory and short timeouts. */
  storeConfig(over?: Partial<Config["store"]>): Promise<Config["store"]>;
  /** A MessageStore not started yet, closed by the after hook. */
  newStore(cfg: Config["store"]): MessageStore;
  /** A started MessageStore, closed by the after hook. */
  startStore(cfg: Config["store"]): Promise<MessageStore>;
  /** storeConfig() with the per-user login template "{user}*<master user>" and the master password. */
  mailboxConfig(over?: Partial<Config["store"]>): Promise<Config["store"]>;
  /** Mailboxes not started yet, closed by the after hook. */
  newMailboxes(cfg: Config["store"], log?: Logger): Mailboxes;
  /** Started Mailboxes, closed by the after hook. */
  startMailboxes(cfg: Config["store"], log?: Logger): Promise<Mailboxes>;
}

export function useStoreEnv(prefix: string): StoreTestEnv {
  let dovecot: DovecotInstance | undefined;
  const dirs: string[] = [];
  const stores: { close(): Promise<void> }[] = [];
  const log: Logger = process.env.CPM_TEST_LOG ? createRootLogger("debug") : silentLogger();
  before(async () => {
    dovecot = await startDovecot();
  });
  after(async () => {
    for (const s of stores) await s.close().catch(() => {});
    await dovecot?.stop();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  const env: StoreTestEnv = {
    get dovecot(): DovecotInstance {
      if (!dovecot) throw new Error("Dovecot not started (use the env inside tests)");
      return dovecot;
    },
    log,
    async storeConfig(over = {}) {
      const dir = await mkdtemp(join(tmpdir(), `${prefix}-`));
      dirs.push(dir);
      const d = env.dovecot;
      return {
        ...defaults.store,
        host: d.host,
        port: d.port,
        user: d.user,
        password: d.password,
        spoolDir: join(dir, "spool"),
        timeoutMs: 1500,
        retryInitialMs: 100,
        retryMaxMs: 400,
        ...over,
      };
    },
    newStore(cfg) {
      const store = new MessageStore(cfg, log);
      stores.push(store);
      return store;
    },
    async startStore(cfg) {
      const store = env.newStore(cfg);
      await store.start();
      return store;
    },
    async mailboxConfig(over = {}) {
      const d = env.dovecot;
      return env.storeConfig({ user: `{user}*${d.masterUser}`, password: d.masterPassword, ...over });
    },
    newMailboxes(cfg, l = log) {
      const m = new Mailboxes(cfg, l);
      stores.push(m);
      return m;
    },
    async startMailboxes(cfg, l) {
      const m = env.newMailboxes(cfg, l);
      await m.start();
      return m;
    },
  };
  return env;
}
