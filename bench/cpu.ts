// CPU time from /proc (Linux): which process a benchmark phase spent CPU in.
import { readdir, readFile } from "node:fs/promises";

/** Clock ticks per second of /proc's utime/stime (USER_HZ: 100 on every Linux ABI Node runs on). */
const USER_HZ = 100;

/** utime+stime (ms) of every live process whose ancestry reaches one of `roots`, per root. */
async function treeCpuMs(roots: readonly number[]): Promise<number[]> {
  const procs = new Map<number, { ppid: number; ms: number }>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    // fields after "(comm)": state ppid ... utime(14) stime(15), counted from 1
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (f.length < 13) continue;
    procs.set(Number(name), { ppid: Number(f[1]), ms: ((Number(f[11]) + Number(f[12])) * 1000) / USER_HZ });
  }
  return roots.map((root) => {
    let ms = 0;
    for (const [pid, p] of procs) {
      for (let cur: number | undefined = pid, hops = 0; cur !== undefined && cur > 1 && hops < 64; hops++) {
        if (cur === root) {
          ms += p.ms;
          break;
        }
        cur = procs.get(cur)?.ppid;
      }
    }
    return ms;
  });
}

/**
 * Starts a measurement of the CPU time (ms) of each root process and its
 * descendants; the returned function ends it. (Per process, from
 * /proc/<pid>/stat: the machine-wide /proc/stat of the sandboxes this is
 * built in does not add up under load.)
 */
export async function measureCpu(roots: readonly number[]): Promise<() => Promise<number[]>> {
  const r0 = await treeCpuMs(roots);
  return async () => (await treeCpuMs(roots)).map((v, i) => v - (r0[i] ?? 0));
}

/**
 * Waits until the process trees of `roots` together use less than
 * `maxShare` of one core over two 250 ms windows in a row (or `timeoutMs`
 * passed): work an earlier phase left behind (folders still being created,
 * journals written) does not land in the next phase's figures.
 */
export async function quiesce(roots: readonly number[], maxShare = 0.1, timeoutMs = 60_000): Promise<void> {
  const windowMs = 250;
  const end = Date.now() + timeoutMs;
  let calm = 0;
  while (calm < 2 && Date.now() < end) {
    const stop = await measureCpu(roots);
    await new Promise((r) => setTimeout(r, windowMs));
    const used = (await stop()).reduce((a, b) => a + b, 0);
    calm = used < maxShare * windowMs ? calm + 1 : 0;
  }
}
