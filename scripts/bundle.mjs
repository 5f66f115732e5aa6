// The sidecar as one ES module, dist/bundle/sidecar.mjs, built from tsc's
// output (dist/src/main.js) with esbuild: what `npm start`, systemd, Docker
// and the test harness run. Why: a start loads ~1,000 modules otherwise, and
// on a 2-core box that boot (≈750 ms CPU, mostly module resolution and
// loading) is taken from the sidecars still serving; bundled it is ≈300 ms.
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
