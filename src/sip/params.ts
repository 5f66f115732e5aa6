// Generic-param lists (RFC 3261 25.1: `;name=value`, value a token, host or
// quoted-string). Shared by Reason, Referred-By, Contact and To/From.
import { CpmError } from "../errors/catalogue.js";

export interface ParsedParams {
  /** Lower-case names; quoted values are unquoted; a flag has value "". */
  params: Map<string, string>;
}

/** Parses `;a=b ;c="d;e" ;f` (leading `;` optional). Throws on an unterminated quote. */
export function parseParams(text: string): Map<string, string> {
  const params = new Map<string, string>();
  let i = 0;
  const n = text.length;
  const skipWs = () => {
    while (i < n && /\s/.test(text[i] as string)) i++;
  };
  while (i < n) {
    skipWs();
    if (text[i] === ";") i++;
    skipWs();
    if (i >= n) break;
    let name = "";
    while (i < n && !/[\s;=]/.test(text[i] as string)) name += text[i++];
    skipWs();
    let value = "";
    if (text[i] === "=") {
      i++;
      skipWs();
      if (text[i] === '"') {
        i++;
        let closed = false;
        while (i < n) {
          const ch = text[i++] as string;
          if (ch === "\\" && i < n) value += text[i++];
          else if (ch === '"') {
            closed = true;
            break;
          } else value += ch;
        }
        if (!closed) throw new CpmError("CPM_ERR_BAD_HEADER", "unterminated quoted-string in parameter");
      } else {
        while (i < n && !/[\s;]/.test(text[i] as string)) value += text[i++];
      }
    }
    skipWs();
    if (i < n && text[i] !== ";") throw new CpmError("CPM_ERR_BAD_HEADER", `unexpected character '${text[i]}' in parameters`);
    if (!name) throw new CpmError("CPM_ERR_BAD_HEADER", "empty parameter name");
    const key = name.toLowerCase();
    if (!params.has(key)) params.set(key, value);
  }
  return params;
}
