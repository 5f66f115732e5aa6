// The MSRP parser limits of every connection of the media plane (relay legs
// and delivery endpoints alike), from config media.*.
import type { Config } from "../config/config.js";
import type { MsrpParserLimits } from "../msrp/parser.js";

export function msrpParserLimits(config: Config["media"]): MsrpParserLimits {
  return { maxHeaderBytes: config.maxHeaderBytes, maxBodyBytes: config.maxChunkBytes, maxSkipBytes: config.maxSkipBytes };
}
