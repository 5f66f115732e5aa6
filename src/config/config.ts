// One typed, validated configuration: a JSON file plus environment overrides.
// Override any key with CPM_PF__<SECTION>__<KEY> (e.g. CPM_PF__STORE__PORT=1143).
// A bad value stops start-up with an error naming the key.
import { readFileSync } from "node:fs";
import { CpmError } from "../errors/catalogue.js";

export type PfMode = "proxy" | "b2bua";

export interface Config {
  grpc: {
    /** Address the gRPC server binds. Default 127.0.0.1. */
    host: string;
    /** Port; 0 picks a free one (tests). Default 50051. */
    port: number;
  };
  log: {
    /** error | warn | info | debug. Default info. */
    level: "error" | "warn" | "info" | "debug";
  };
  pf: {
    /** Role of the PF for group sessions it knows (8.3.2.3 1 vs 2). Default b2bua. */
    mode: PfMode;
    /** Role for a BYE whose session the PF never saw (no state to build a GSO from). Default proxy. */
    unknownSessionMode: PfMode;
    /** Group Session Data management (subject, icon) in GSOs: the spec's MAY. Default false. */
    groupSessionDataManagement: boolean;
    /** The served user's address used as GSO `To` when a session does not reveal it. Default "". */
    servedUser: string;
  };
  store: {
    /** IMAP Message Store host. Default 127.0.0.1. */
    host: string;
    /** IMAP port. Default 143. */
    port: number;
    /** Implicit TLS (IMAPS). Default false. */
    secure: boolean;
    /** Login of the served user's mailbox. */
    user: string;
    /** Password of that login. */
    password: string;
    /** Root folder of CPM objects; deployed RCS stores use "Default". */
    rootFolder: string;
    /** IMAP connections kept open. Default 2. */
    poolSize: number;
    /** Connect/command timeout in ms. Default 3000. */
    timeoutMs: number;
    /** Directory of the durable spool for objects the store did not take yet. */
    spoolDir: string;
    /** First spool retry delay in ms; doubles up to retryMaxMs. Default 500. */
    retryInitialMs: number;
    /** Longest spool retry delay in ms. Default 30000. */
    retryMaxMs: number;
  };
  session: {
    /** Directory where session facts are persisted so they survive a restart. */
    stateDir: string;
    /** Sessions with no activity for this long are forgotten (ms). Default 7 days. */
    idleTtlMs: number;
  };
}

export const defaults: Config = {
  grpc: { host: "127.0.0.1", port: 50051 },
  log: { level: "info" },
  pf: { mode: "b2bua", unknownSessionMode: "proxy", groupSessionDataManagement: false, servedUser: "" },
  store: {
    host: "127.0.0.1",
    port: 143,
    secure: false,
    user: "",
    password: "",
    rootFolder: "Default",
    poolSize: 2,
    timeoutMs: 3000,
    spoolDir: "var/spool",
    retryInitialMs: 500,
    retryMaxMs: 30000,
  },
  session: { stateDir: "var/state", idleTtlMs: 7 * 24 * 3600 * 1000 },
};

type Kind = "string" | "port" | "posint" | "bool" | { oneOf: readonly string[] };

const schema: { [S in keyof Config]: { [K in keyof Config[S]]: Kind } } = {
  grpc: { host: "string", port: "port" },
  log: { level: { oneOf: ["error", "warn", "info", "debug"] } },
  pf: {
    mode: { oneOf: ["proxy", "b2bua"] },
    unknownSessionMode: { oneOf: ["proxy", "b2bua"] },
    groupSessionDataManagement: "bool",
    servedUser: "string",
  },
  store: {
    host: "string",
    port: "port",
    secure: "bool",
    user: "string",
    password: "string",
    rootFolder: "string",
    poolSize: "posint",
    timeoutMs: "posint",
    spoolDir: "string",
    retryInitialMs: "posint",
    retryMaxMs: "posint",
  },
  session: { stateDir: "string", idleTtlMs: "posint" },
};

function bad(key: string, why: string): never {
  throw new CpmError("CPM_ERR_CONFIG", `${key}: ${why}`);
}

function coerce(key: string, kind: Kind, value: unknown, fromEnv: boolean): unknown {
  if (typeof kind === "object") {
    if (typeof value !== "string" || !kind.oneOf.includes(value)) bad(key, `must be one of ${kind.oneOf.join(", ")}`);
    return value;
  }
  switch (kind) {
    case "string":
      if (typeof value !== "string") bad(key, "must be a string");
      return value;
    case "bool":
      if (fromEnv && typeof value === "string") {
        if (value === "true" || value === "1") return true;
        if (value === "false" || value === "0") return false;
      }
      if (typeof value !== "boolean") bad(key, "must be true or false");
      return value;
    case "port":
    case "posint": {
      const n = fromEnv && typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isInteger(n)) bad(key, "must be an integer");
      if (kind === "port" && (n < 0 || n > 65535)) bad(key, "must be a port number 0-65535");
      if (kind === "posint" && n < 1) bad(key, "must be a positive integer");
      return n;
    }
  }
}

/**
 * Validates a partial configuration object (from a file) and environment
 * overrides on top of the defaults. Unknown keys are errors too: a typo must
 * not silently fall back to a default.
 */
export function buildConfig(file: unknown, env: NodeJS.ProcessEnv = {}): Config {
  const out = structuredClone(defaults) as unknown as Record<string, Record<string, unknown>>;
  if (file !== undefined) {
    if (typeof file !== "object" || file === null || Array.isArray(file)) bad("(root)", "must be a JSON object");
    for (const [section, values] of Object.entries(file as Record<string, unknown>)) {
      const sectionSchema = (schema as Record<string, Record<string, Kind>>)[section];
      if (!sectionSchema) bad(section, "unknown section");
      if (typeof values !== "object" || values === null || Array.isArray(values)) bad(section, "must be an object");
      for (const [key, value] of Object.entries(values as Record<string, unknown>)) {
        const kind = sectionSchema[key];
        if (!kind) bad(`${section}.${key}`, "unknown key");
        (out[section] as Record<string, unknown>)[key] = coerce(`${section}.${key}`, kind, value, false);
      }
    }
  }
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("CPM_PF__") || value === undefined) continue;
    const [sectionRaw, keyRaw, ...rest] = name.slice("CPM_PF__".length).split("__");
    const section = Object.keys(schema).find((s) => s.toUpperCase() === sectionRaw);
    const sectionSchema = section ? (schema as Record<string, Record<string, Kind>>)[section] : undefined;
    const key = sectionSchema ? Object.keys(sectionSchema).find((k) => k.toUpperCase() === keyRaw) : undefined;
    if (!section || !sectionSchema || !key || rest.length > 0) bad(name, "unknown configuration key");
    (out[section] as Record<string, unknown>)[key] = coerce(name, sectionSchema[key] as Kind, value, true);
  }
  const cfg = out as unknown as Config;
  if (cfg.store.retryMaxMs < cfg.store.retryInitialMs) bad("store.retryMaxMs", "must be >= store.retryInitialMs");
  return cfg;
}

/** Loads the file named by CPM_PF_CONFIG (if any) and applies the environment. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const path = env.CPM_PF_CONFIG;
  let file: unknown;
  if (path) {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw new CpmError("CPM_ERR_CONFIG", `CPM_PF_CONFIG: cannot read ${path}`, { cause: err });
    }
    try {
      file = JSON.parse(text);
    } catch (err) {
      throw new CpmError("CPM_ERR_CONFIG", `CPM_PF_CONFIG: ${path} is not valid JSON`, { cause: err });
    }
  }
  return buildConfig(file, env);
}
