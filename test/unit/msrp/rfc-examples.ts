// Example frames of RFC 4975 (4 Protocol Overview, 5.1 chunking, 11 Examples)
// and RFC 4976 (7.1 AUTH with a relay), as wire bytes with CRLF line ends.
// RFC 4976 wraps long header lines to fit the page; MSRP has no header
// folding, so they are on one line here.

function frame(lines: string[], body?: string): Buffer {
  const endLine = lines[lines.length - 1] as string;
  const head = lines.slice(0, -1);
  if (body === undefined) return Buffer.from(`${[...head, endLine].join("\r\n")}\r\n`, "utf8");
  return Buffer.from(`${head.join("\r\n")}\r\n\r\n${body}\r\n${endLine}\r\n`, "utf8");
}

/** RFC 4975 4: Alice's SEND to Bob. The Byte-Range says 25 octets; the body has 23. */
export const OVERVIEW_SEND = frame(
  [
    "MSRP a786hjs2 SEND",
    "To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp",
    "From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp",
    "Message-ID: 87652491",
    "Byte-Range: 1-25/25",
    "Content-Type: text/plain",
    "-------a786hjs2$",
  ],
  "Hey Bob, are you there?",
);

/** RFC 4975 4: Bob's 200 (To-Path = the previous hop, From-Path = Bob). */
export const OVERVIEW_200 = frame([
  "MSRP a786hjs2 200 OK",
  "To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp",
  "From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp",
  "-------a786hjs2$",
]);

// RFC 4975 5.1 / 11.3: a message of 8 octets in two chunks; the first was interrupted (end "*", flag "+").
export const CHUNK_1 = frame(
  [
    "MSRP dkei38sd SEND",
    "To-Path: msrp://alice.example.com:7777/iau39soe2843z;tcp",
    "From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp",
    "Message-ID: 4564dpWd",
    "Byte-Range: 1-*/8",
    "Content-Type: text/plain",
    "-------dkei38sd+",
  ],
  "abcd",
);

export const CHUNK_2 = frame(
  [
    "MSRP dkei38ia SEND",
    "To-Path: msrp://alice.example.com:7777/iau39soe2843z;tcp",
    "From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp",
    "Message-ID: 4564dpWd",
    "Byte-Range: 5-8/8",
    "Content-Type: text/plain",
    "-------dkei38ia$",
  ],
  "EFGH",
);

/** RFC 4975 11.1 (basic IM session): Alice sends a message to Bob. 16 octets declared, 14 sent. */
export const BASIC_SEND = frame(
  [
    "MSRP d93kswow SEND",
    "To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp",
    "From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp",
    "Message-ID: 12339sdqwer",
    "Byte-Range: 1-16/16",
    "Content-Type: text/plain",
    "-------d93kswow$",
  ],
  "Hi, I'm Alice!",
);

export const BASIC_200 = frame([
  "MSRP d93kswow 200 OK",
  "To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp",
  "From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp",
  "-------d93kswow$",
]);

/** RFC 4975 11.5 (positive report): a SEND asking for a success report and no failure reports... */
export const REPORTED_SEND = frame(
  [
    "MSRP d93kswow SEND",
    "To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp",
    "From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp",
    "Message-ID: 12339sdqwer",
    "Byte-Range: 1-106/106",
    "Success-Report: yes",
    "Failure-Report: no",
    "Content-Type: text/html",
    "-------d93kswow$",
  ],
  '<html><body>\r\n<p>Here is that important link...\r\n<a href="http://www.example.com/foobar">foobar</a>\r\n</p>\r\n</body></html>',
);

/** ...and the REPORT Bob sends once he has it all. */
export const SUCCESS_REPORT = frame([
  "MSRP dkei38sd REPORT",
  "To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp",
  "From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp",
  "Message-ID: 12339sdqwer",
  "Byte-Range: 1-106/106",
  "Status: 000 200 OK",
  "-------dkei38sd$",
]);

/** RFC 4976 7.1: Alice authenticates to her relay (URIs with userinfo and without session-id or port). */
export const AUTH_1 = frame([
  "MSRP 49fh AUTH",
  "To-Path: msrps://alice@intra.example.com;tcp",
  "From-Path: msrps://alice.example.com:9892/98cjs;tcp",
  "-------49fh$",
]);

export const AUTH_401 = frame([
  "MSRP 49fh 401 Unauthorized",
  "To-Path: msrps://alice.example.com:9892/98cjs;tcp",
  "From-Path: msrps://alice@intra.example.com;tcp",
  'WWW-Authenticate: Digest realm="intra.example.com", qop="auth", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"',
  "-------49fh$",
]);

export const AUTH_2 = frame([
  "MSRP 49fi AUTH",
  "To-Path: msrps://alice@intra.example.com;tcp",
  "From-Path: msrps://alice.example.com:9892/98cjs;tcp",
  'Authorization: Digest username="Alice", realm="intra.example.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1"',
  "-------49fi$",
]);

export const AUTH_200 = frame([
  "MSRP 49fi 200 OK",
  "To-Path: msrps://alice.example.com:9892/98cjs;tcp",
  "From-Path: msrps://alice@intra.example.com;tcp",
  "Use-Path: msrps://relay.example.com:2855/hjdhfha;tcp",
  "Expires: 900",
  "-------49fi$",
]);

export const ALL_EXAMPLES: Record<string, Buffer> = {
  OVERVIEW_SEND,
  OVERVIEW_200,
  CHUNK_1,
  CHUNK_2,
  BASIC_SEND,
  BASIC_200,
  REPORTED_SEND,
  SUCCESS_REPORT,
  AUTH_1,
  AUTH_401,
  AUTH_2,
  AUTH_200,
};
