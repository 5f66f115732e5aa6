// The Kamailio bridge's Decide stream (kamailio/python/cpm_pf_bridge.py
// _DecisionStream / _Watchdog) outside Kamailio: Debian's python3 with a
// stand-in KSR module, against a scripted gRPC server in this process. What
// Kamailio relies on: each answer goes to its own request, a late answer is a
// fail-safe at the deadline and never a wrong answer later, a stream the
// sidecar ended is replaced without a fail-safe, and a sidecar without Decide
// is served by unary calls (SHAPE-1, BYE-B9).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import type { ServerDuplexStream, ServerUnaryCall, sendUnaryData } from "@grpc/grpc-js";
import {
  type DecideRequest,
  type DecideResponse,
  DecideResponseSchema,
  type HandleByeRequest,
  type HandleByeResponse,
  HandleByeResponseSchema,
  Mode,
} from "../../src/gen/cpm/pf/v1/pf_pb.js";
import { startScriptedGrpc } from "../harness/scripted-grpc.js";
import { REPO_ROOT } from "../harness/sidecar.js";

const PY = process.env.KAMAILIO_PYTHON ?? "/usr/bin/python3";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the scripted sidecar does with the n-th HandleBye it gets (1-based, over all streams). */
type Behaviour =
  | "answer"
  | "stale" // an answer with another request's id first, then the right one
  | "late" // the answer comes 250 ms after the bridge's deadline
  | "answer-then-end"; // answers, then ends the stream (a sidecar shutting down)

interface Scripted {
  target: string;
  streams: number;
  unaryCalls: number;
  stop(): Promise<void>;
}

const DEADLINE_MS = 150;

function answerTo(req: HandleByeRequest): HandleByeResponse {
  const callId = /^Call-ID:\s*(\S+)/im.exec(Buffer.from(req.bye?.raw ?? new Uint8Array()).toString("utf8"))?.[1] ?? "";
  return create(HandleByeResponseSchema, { mode: Mode.PROXY, sessionKey: `key-${callId}` });
}

async function startScripted(script: Behaviour[], withDecide: boolean): Promise<Scripted> {
  let n = 0;
  const state = { streams: 0, unaryCalls: 0 };
  const decide = (call: ServerDuplexStream<DecideRequest, DecideResponse>) => {
    state.streams++;
    call.on("error", () => undefined); // the bridge cancels a stream whose answer is late
    call.on("data", async (req: DecideRequest) => {
      if (req.request.case !== "handleBye") return;
      const behaviour = script[n++] ?? "answer";
      const answer = (id: bigint, value: HandleByeResponse) => create(DecideResponseSchema, { id, response: { case: "handleBye", value } });
      const right = answer(req.id, answerTo(req.request.value));
      if (behaviour === "stale") call.write(answer(req.id - 1n, create(HandleByeResponseSchema, { sessionKey: "stale" })));
      if (behaviour === "late") await sleep(DEADLINE_MS + 250);
      if (!call.cancelled) call.write(right);
      if (behaviour === "answer-then-end") call.end();
    });
    call.on("end", () => call.end());
  };
  const server = await startScriptedGrpc({
    ...(withDecide ? { decide } : {}),
    handleBye: (call: ServerUnaryCall<HandleByeRequest, HandleByeResponse>, cb: sendUnaryData<HandleByeResponse>) => {
      state.unaryCalls++;
      cb(null, answerTo(call.request));
    },
  });
  return {
    target: server.target,
    get streams() {
      return state.streams;
    },
    get unaryCalls() {
      return state.unaryCalls;
    },
    stop: server.stop,
  };
}

interface Decision {
  ok: number;
  session: string;
  error: string;
  ms: number;
}

/** Runs handle_bye() `calls` times in one Python process (one "async worker"), BYE n with Call-ID bye-n. */
function runBridge(target: string, calls: number, pauseMs = 0): Promise<Decision[]> {
  const script = `
import base64, json, sys, time, types
pv = {}
BYE = "BYE sip:c@127.0.0.1 SIP/2.0\\r\\nCall-ID: bye-%d\\r\\nCSeq: 2 BYE\\r\\nContent-Length: 0\\r\\n\\r\\n"
n = [0]
def get(spec):
    if spec == "$(mb{s.encode.base64})":
        return base64.b64encode((BYE % n[0]).encode()).decode()
    return {"$var(cpm_pf_grpc_target)": ${JSON.stringify(target)}, "$var(cpm_pf_deadline_ms)": ${DEADLINE_MS},
            "$si": "127.0.0.1", "$sp": 5060, "$pr": "udp"}.get(spec, pv.get(spec))
ksr = types.ModuleType("KSR")
ksr.pv = types.SimpleNamespace(get=get, sets=pv.__setitem__, seti=pv.__setitem__)
ksr.err = lambda s: sys.stderr.write(s)
sys.modules["KSR"] = ksr
sys.path.insert(0, ${JSON.stringify(join(REPO_ROOT, "kamailio", "python"))})
import cpm_pf_bridge as b
bridge = b.mod_init()
out = []
for i in range(1, ${calls} + 1):
    n[0] = i
    t0 = time.monotonic()
    bridge.handle_bye(None)
    out.append({"ok": pv["$var(cpm_pf_ok)"], "session": pv["$var(cpm_pf_session)"], "error": pv["$var(cpm_pf_error)"],
                "ms": (time.monotonic() - t0) * 1000})
    time.sleep(${pauseMs} / 1000)
print(json.dumps(out))
`;
  return new Promise((resolve, reject) => {
    const child = spawn(PY, ["-c", script], { env: { ...process.env, CPM_PF_BRIDGE_UNARY: "" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("exit", (code) => {
      if (code !== 0) reject(new Error(`python exited ${code}: ${stderr}`));
      else resolve(JSON.parse(stdout) as Decision[]);
    });
  });
}

describe("Kamailio bridge: the Decide stream as the bridge drives it", () => {
  const servers: Scripted[] = [];
  const scripted = async (script: Behaviour[], withDecide = true) => {
    const s = await startScripted(script, withDecide);
    servers.push(s);
    return s;
  };
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  test("SHAPE-1: every answer goes to its own request, over one stream", async () => {
    const s = await scripted(["answer", "stale", "answer", "stale"]);
    const d = await runBridge(s.target, 6);
    assert.deepEqual(
      d.map((x) => [x.ok, x.session]),
      [1, 2, 3, 4, 5, 6].map((i) => [1, `key-bye-${i}`]),
      "an answer with another request's id is not taken for this one",
    );
    assert.equal(s.streams, 1);
    assert.equal(s.unaryCalls, 0);
  });

  test("BYE-B9 fail-safe: an answer later than the deadline fails that decision at the deadline; the next one is decided on a fresh stream, not given the late answer", async () => {
    const s = await scripted(["late", "answer", "answer"]);
    // the pause lets the late answer arrive before the next request
    const d = await runBridge(s.target, 3, DEADLINE_MS + 400);
    assert.equal(d[0]?.ok, 0);
    assert.match(d[0]?.error ?? "", /^DEADLINE_EXCEEDED/);
    const ms = d[0]?.ms ?? Number.NaN;
    assert.ok(ms >= DEADLINE_MS - 5 && ms < DEADLINE_MS + 60, `late decision failed after ${ms} ms (deadline ${DEADLINE_MS})`);
    assert.deepEqual(
      d.slice(1).map((x) => [x.ok, x.session]),
      [
        [1, "key-bye-2"],
        [1, "key-bye-3"],
      ],
    );
    assert.equal(s.streams, 2, "the stream with the late answer was replaced");
  });

  test("SHAPE-1: a stream the sidecar ended is replaced by the next request without a fail-safe", async () => {
    const s = await scripted(["answer-then-end", "answer-then-end", "answer"]);
    const d = await runBridge(s.target, 3, 50);
    assert.deepEqual(
      d.map((x) => [x.ok, x.session, x.error]),
      [1, 2, 3].map((i) => [1, `key-bye-${i}`, ""]),
    );
    assert.equal(s.streams, 3);
  });

  test("SHAPE-1: a sidecar without Decide (UNIMPLEMENTED) is served by unary calls from then on", async () => {
    const s = await scripted([], false);
    const d = await runBridge(s.target, 3);
    assert.deepEqual(
      d.map((x) => [x.ok, x.session]),
      [1, 2, 3].map((i) => [1, `key-bye-${i}`]),
    );
    assert.equal(s.unaryCalls, 3);
  });
});
