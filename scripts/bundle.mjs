// The sidecar as one ES module, dist/bundle/sidecar.mjs, built from tsc's
// output (dist/src/main.js) with esbuild: what `npm start`, systemd, Docker
// and the test harness run. Why: unbundled, a start resolves and loads
// hundreds of module files, and a restart's boot CPU is taken from the
// sidecars still serving on the same cores (README, after the quick start).
// The gRPC packages stay in node_modules: grpc-health-check and
// @grpc/reflection read .proto files next to their own code, and they must
// share one @grpc/grpc-js with the server.
// The bundle sits two levels under the package root like dist/src/main.js,
// so main's `../../package.json` (the version it logs) resolves the same.
import { build } from "esbuild";

await build({
  entryPoints: ["dist/src/main.js"],
  outfile: "dist/bundle/sidecar.mjs",
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  external: ["@grpc/*", "grpc-health-check"],
  // CommonJS dependencies (winston, ioredis, imapflow) call require() for Node's own modules
  banner: { js: 'import { createRequire as __cpmRequire } from "node:module"; const require = __cpmRequire(import.meta.url);' },
  // maps to the TypeScript sources through tsc's own maps (node --enable-source-maps)
  sourcemap: "linked",
  logLevel: "warning",
});
