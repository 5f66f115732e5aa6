#!/bin/sh
# The whole test suite: type check + build, lint, then unit, integration and
# end-to-end tests with node's test runner (real Dovecot, Kamailio and SIPp are
# started by the tests themselves on 127.0.0.1 and stopped by PID).
set -eu
cd "$(dirname "$0")/.."
npm run --silent build
npx biome check .
# A test (or suite) that hangs fails after 10 minutes, and a file whose handles keep its
# process alive after its last test is ended, so a hang is a red run naming it. The preload
# keeps --test-force-exit from losing the verdicts a file's process had not written yet.
node --import ./dist/test/harness/blocking-stdout.js --test --test-reporter=tap --test-timeout=600000 --test-force-exit \
  dist/test/unit/ dist/test/integration/ dist/test/e2e/ | tee .test-output.tap
# The plain summary line CI reads, from node's own counts.
pass=$(grep -E '^# pass ' .test-output.tap | awk '{print $3}')
fail=$(grep -E '^# fail ' .test-output.tap | awk '{print $3}')
# a test cancelled by its parent (a promise left pending when the event loop ran dry) did not pass either
cancelled=$(grep -E '^# cancelled ' .test-output.tap | awk '{print $3}')
fail=$(( ${fail:-1} + ${cancelled:-0} ))
# every test that started has its verdict: one lost on the way to the runner is neither passed nor failed
started=$(grep -cE '^ *# Subtest: ' .test-output.tap || true)
ended=$(grep -cE '^ *(ok|not ok) [0-9]+ - ' .test-output.tap || true)
if [ "$started" != "$ended" ]; then
  echo "$((started - ended)) test(s) started without a verdict in the report"
  fail=$((fail + started - ended))
fi
echo "${pass:-0} passed, ${fail} failed"
rm -f .test-output.tap
[ "${fail:-1}" = "0" ]
