import assert from "node:assert/strict";
import { test } from "node:test";
import { parsePromText, promValue } from "../../harness/prom-text.js";

test("Prometheus text exposition 0.0.4: samples with and without labels and timestamps, HELP, TYPE, comments", () => {
  const text = parsePromText(
    [
      "# a comment",
      "# HELP http_requests_total The total \\\\ number\\n of requests.",
      "# TYPE http_requests_total counter",
      'http_requests_total{method="post",code="200"} 1027 1395066363000',
      'http_requests_total{method="post",code="400",} 3',
      "",
      "kamailio_core_rcv_requests 2 1796305027849",
      'kamailio_cnt02 {path="a\\"b\\\\c\\n"} 15',
      "metric_without_timestamp_and_labels 12.47",
      "x_nan NaN",
      "x_inf +Inf",
      "x_exp -1.5e-3",
      "",
    ].join("\n"),
  );
  assert.equal(text.types.get("http_requests_total"), "counter");
  assert.equal(text.help.get("http_requests_total"), "The total \\ number\n of requests.");
  assert.equal(text.samples.length, 8);
  assert.deepEqual(text.samples[0], {
    name: "http_requests_total",
    labels: { method: "post", code: "200" },
    value: 1027,
    timestamp: 1395066363000,
  });
  assert.deepEqual(text.samples[3]?.labels, { path: 'a"b\\c\n' });
  assert.equal(promValue(text, "kamailio_core_rcv_requests"), 2);
  assert.equal(promValue(text, "http_requests_total"), undefined, "only labelled samples");
  assert.ok(Number.isNaN(promValue(text, "x_nan") as number));
  assert.equal(promValue(text, "x_inf"), Number.POSITIVE_INFINITY);
  assert.equal(promValue(text, "x_exp"), -0.0015);
});

test("Prometheus text exposition 0.0.4: lines Prometheus rejects are errors", () => {
  for (const bad of [
    "1bad_name 1",
    "bad-name 1",
    "no_value",
    "bad_value abc",
    "too_many 1 2 3",
    "bad_ts 1 1.5",
    "m{l=unquoted} 1",
    'm{1l="x"} 1',
    'm{l="x" 1',
    'm{l="x",l="y"} 1',
    "# TYPE m countr",
    "# TYPE m counter\n# TYPE m gauge",
    "m 1\n# TYPE m counter",
    "m 1\nm 2",
  ]) {
    assert.throws(() => parsePromText(bad), Error, JSON.stringify(bad));
  }
});
