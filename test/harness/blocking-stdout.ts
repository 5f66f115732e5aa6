// Preloaded (`node --import`) into every process of the test run. node --test's
// child processes send their results to the runner over a pipe on stdout, and
// with --test-force-exit a child exits while writes to that pipe are still
// queued: those verdicts are lost and the run still passes (nodejs/node#64833,
// Linux, where pipes are non-blocking). Blocking writes leave none queued.
const stdout = process.stdout as unknown as { _handle?: { setBlocking?: (blocking: boolean) => void } };
stdout._handle?.setBlocking?.(true);
