// Reading a test Dovecot with an independent imapflow client (not the PF's
// pool), so that tests see what the server really holds.
import { ImapFlow } from "imapflow";
import type { DovecotInstance } from "./dovecot.js";

/** Another user's own login (not through the master user). */
export interface Login {
  user: string;
  password: string;
}

/** A connected imapflow client of the test user, or of `as` (no logging). */
export async function connectImap(dovecot: DovecotInstance, as?: Login): Promise<ImapFlow> {
  const auth = as ? { user: as.user, pass: as.password } : { user: dovecot.user, pass: dovecot.password };
  const c = new ImapFlow({ host: dovecot.host, port: dovecot.port, auth, logger: false });
  c.on("error", () => {});
  await c.connect();
  return c;
}

async function withClient<T>(dovecot: DovecotInstance, fn: (c: ImapFlow) => Promise<T>, as?: Login): Promise<T> {
  const c = await connectImap(dovecot, as);
  try {
    return await fn(c);
  } finally {
    await c.logout().catch(() => c.close());
  }
}

/** Every message of a folder in UID order, byte for byte; [] when the folder does not exist. */
export function readFolderRaw(dovecot: DovecotInstance, folder: string, as?: Login): Promise<Buffer[]> {
  return withClient(
    dovecot,
    async (c) => {
      if (!(await c.list()).some((m) => m.path === folder)) return [];
      const lock = await c.getMailboxLock(folder, { readOnly: true });
      try {
        const out: { uid: number; source: Buffer }[] = [];
        if (c.mailbox && c.mailbox.exists > 0) {
          for await (const m of c.fetch("1:*", { source: true, uid: true })) if (m.source) out.push({ uid: m.uid, source: m.source });
        }
        return out.sort((a, b) => a.uid - b.uid).map((m) => m.source);
      } finally {
        lock.release();
      }
    },
    as,
  );
}

/** Paths of all folders of the test user (or of `as`). */
export function listFolderPaths(dovecot: DovecotInstance, as?: Login): Promise<string[]> {
  return withClient(dovecot, async (c) => (await c.list()).map((m) => m.path), as);
}
