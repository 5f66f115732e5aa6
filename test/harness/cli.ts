// Runs the operator CLI (dist/src/cli/main.js) as a user would and returns
// its --json output parsed; rejects with its stderr when it exits non-zero.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "./sidecar.js";

export function runCli(args: string[], timeoutMs = 20_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [join(REPO_ROOT, "dist", "src", "cli", "main.js"), ...args],
      { timeout: timeoutMs },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`cpm-pf ${args.join(" ")}: exit ${err.code ?? "?"}: ${stderr.trim()}`));
        else resolve(JSON.parse(stdout));
      },
    );
  });
}
