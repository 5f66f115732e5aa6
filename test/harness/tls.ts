// A throw-away PKI for TLS tests: one CA, a server certificate for
// 127.0.0.1/localhost and a client certificate, all signed by the CA,
// made with Debian's openssl in a temporary directory.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestPki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A second CA that signed nothing here (a peer that trusts the wrong issuer). */
  otherCaCert: string;
  remove(): void;
}

const openssl = (args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });

function selfSigned(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  openssl(
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"].concat([
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "1",
      "-subj",
      `/CN=${name}`,
    ]),
  );
  return { cert, key };
}

function signed(dir: string, ca: { cert: string; key: string }, name: string, san: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  openssl(
    ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"].concat([
      "-keyout",
      key,
      "-out",
      csr,
      "-subj",
      `/CN=${name}`,
    ]),
  );
  execFileSync("sh", ["-c", `printf 'subjectAltName=%s\\n' "$1" > "$2"`, "sh", san, ext]);
  openssl(
    ["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-days", "1"].concat(["-out", cert, "-extfile", ext]),
  );
  return { cert, key };
}

export function makeTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "cpm-pf-pki-"));
  const ca = selfSigned(dir, "ca");
  const server = signed(dir, ca, "sidecar", "IP:127.0.0.1,DNS:localhost");
  const client = signed(dir, ca, "kamailio", "DNS:kamailio");
  const other = selfSigned(dir, "other-ca");
  return {
    dir,
    caCert: ca.cert,
    serverCert: server.cert,
    serverKey: server.key,
    clientCert: client.cert,
    clientKey: client.key,
    otherCaCert: other.cert,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
