// Writes the SIP messages the sidecar originates (RFC 3261 7): start line,
// one header per line in the given order, Content-Length counted in bytes
// (20.14), an empty line, the body. Nothing is folded or reordered.
import { CpmError } from "../errors/catalogue.js";

export type SipHeaderLine = [name: string, value: string];

/** RFC 3261 25.1 token: header names and methods. */
const TOKEN = /^[A-Za-z0-9\-.!%*_+`'~]+$/;

export function serializeRequest(method: string, requestUri: string, headers: readonly SipHeaderLine[], body = ""): Buffer {
  if (!TOKEN.test(method)) throw new CpmError("CPM_ERR_BAD_REQUEST", `method ${JSON.stringify(method)} is not a token`);
  if (!requestUri || /\s/.test(requestUri)) throw new CpmError("CPM_ERR_BAD_REQUEST", `Request-URI ${JSON.stringify(requestUri)}`);
  return serialize(`${method} ${requestUri} SIP/2.0`, headers, body);
}

export function serializeResponse(status: number, reason: string, headers: readonly SipHeaderLine[], body = ""): Buffer {
  if (!Number.isInteger(status) || status < 100 || status > 699) throw new CpmError("CPM_ERR_BAD_REQUEST", `status ${status}`);
  if (/[\r\n]/.test(reason)) throw new CpmError("CPM_ERR_BAD_REQUEST", "reason phrase with a line break");
  return serialize(`SIP/2.0 ${status} ${reason}`, headers, body);
}

function serialize(startLine: string, headers: readonly SipHeaderLine[], body: string): Buffer {
  const payload = Buffer.from(body, "utf8");
  const lines = [startLine];
  for (const [name, value] of headers) {
    // A CR or LF in a value would start a header of the caller's choosing.
    if (!TOKEN.test(name) || /[\r\n]/.test(value)) {
      throw new CpmError("CPM_ERR_BAD_REQUEST", `header ${JSON.stringify(name)} cannot be written on one line`);
    }
    lines.push(`${name}: ${value}`);
  }
  lines.push(`Content-Length: ${payload.length}`, "", "");
  return Buffer.concat([Buffer.from(lines.join("\r\n"), "utf8"), payload]);
}
