#!/usr/bin/env python3
"""Runs every test target of the workspace side by side, once `cargo test --no-run` has built them.

Called by scripts/test when it is given no arguments. The suites spend most of their time
waiting (on timers, child processes, sockets and the database), not computing, so running
them one after another, as `cargo test --all-targets` does, leaves the two cores mostly idle.
Each suite is still an ordinary `cargo test` command, printed with its result so it can be
rerun alone; its whole output goes to target/test-logs/<suite>.log.

Two phases. The suites that assert time bounds Herald promises (TIMED_SUITES: the chaos
suite's campaign ends within seconds of the last crash) start first, beside only the suites
of FIRST_BESIDE_TIMED, so the bounds are measured on a machine that is not saturated; the
others, which only check outcomes, start as soon as the timed suites end.

The suites come from `cargo metadata`, so a new test target is run without being listed
here. The run fails if any suite fails, times out, or reports a test as ignored: nothing is
skipped silently.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

# Threads for the integration suite `it`: its tests mostly wait on the database and on short
# timers, so more of them at once than cores shortens the run.
IT_THREADS = "4"
# Suites that assert time bounds (they start first), and the suites that start beside them:
# only the short ones. Run beside everything, three debug instances of the chaos suite got
# too little of two cores to finish a rate-limited campaign within its bound (19.9 s for a
# 14.4 s bound). Beside these and `process`, the longest suite, its slowest recovery was
# 5.1 s of 10 s, until a CI run on 2026-12-07 took 10.13 s (`kill9-twilio` on SQLite; 2.5
# to 2.9 s when rerun alone): `process` now waits for the timed suites, which costs the run
# a minute or two.
TIMED_SUITES = {"chaos"}
FIRST_BESIDE_TIMED = {"units", "fakes", "providers"}
# A suite still running after this has hung; it is stopped and the run fails.
SUITE_TIMEOUT_S = 30 * 60

RESULT = re.compile(
    r"test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored; (\d+) measured; (\d+) filtered out"
)
KIND_FLAG = {"test": "--test", "bench": "--bench", "example": "--example"}


def suites():
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    found = [("units", ["cargo", "test", "--locked", "--workspace", "--lib", "--bins"])]
    for package in meta["packages"]:
        if package["id"] not in meta["workspace_members"]:
            continue
        for target in package["targets"]:
            kinds = set(target["kind"])
            if kinds & {"lib", "rlib", "proc-macro", "bin", "custom-build"}:
                continue  # libraries and binaries run in `units`; build scripts are not tests
            flag = next((KIND_FLAG[k] for k in target["kind"] if k in KIND_FLAG), None)
            if flag is None:
                sys.exit(f"scripts/test-suites.py: {package['name']} has a target {target['name']} of kind "
                         f"{target['kind']} that this runner does not know; add it to KIND_FLAG")
            if flag != "--test" and not target.get("test", False):
                continue  # benches and examples are built by --all-targets, not run
            command = ["cargo", "test", "--locked", "-p", package["name"], flag, target["name"]]
            if target["name"] == "it":
                command += ["--", "--test-threads", IT_THREADS]
            found.append((target["name"], command))
    return found


def start(name, command, logs, running):
    log = open(os.path.join(logs, f"{name}.log"), "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    running[name] = (process, command, log, time.monotonic())
    print(f"scripts/test: started {name}: {' '.join(command)}", flush=True)


def main():
    logs = os.path.join("target", "test-logs")
    os.makedirs(logs, exist_ok=True)
    started = time.monotonic()
    every = suites()
    first = [(n, c) for n, c in every if n in TIMED_SUITES | FIRST_BESIDE_TIMED]
    then = [(n, c) for n, c in every if n not in TIMED_SUITES | FIRST_BESIDE_TIMED]
    running = {}
    totals = {"passed": 0, "failed": 0, "ignored": 0}
    failed = []
    try:
        for name, command in first:
            start(name, command, logs, running)
        # The others start as soon as the timed suites end.
        wait_for(running, logs, totals, failed, until=TIMED_SUITES)
        for name, command in then:
            start(name, command, logs, running)
        wait_for(running, logs, totals, failed, until=None)
    finally:
        # Interrupted (Ctrl-C, CI's timeout): the suites run in sessions of their own, so
        # they would not see the signal; stop them with this script.
        for process, _, _, _ in running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    took = time.monotonic() - started
    print(
        f"scripts/test: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['ignored']} ignored in {took:.0f} s; logs in {logs}/"
    )
    if failed:
        print(f"scripts/test: failed suites: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def wait_for(running, logs, totals, failed, until):
    """Reports each suite of `running` as it ends; returns once those named in `until` have
    ended (every one, for None)."""
    while running and (until is None or until & running.keys()):
        time.sleep(0.5)
        for name in list(running):
            process, command, log, began = running[name]
            timed_out = process.poll() is None and time.monotonic() - began > SUITE_TIMEOUT_S
            if timed_out:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if process.returncode is None:
                continue
            del running[name]
            log.close()
            path = os.path.join(logs, f"{name}.log")
            with open(path, errors="replace") as f:
                text = f.read()
            counts = {"passed": 0, "failed": 0, "ignored": 0}
            for m in RESULT.finditer(text):
                counts["passed"] += int(m.group(2))
                counts["failed"] += int(m.group(3))
                counts["ignored"] += int(m.group(4))
            for k in totals:
                totals[k] += counts[k]
            took = time.monotonic() - began
            problem = None
            if timed_out:
                problem = f"still running after {SUITE_TIMEOUT_S} s: stopped"
            elif process.returncode != 0:
                problem = f"exited with {process.returncode}"
            elif counts["ignored"]:
                problem = f"{counts['ignored']} tests ignored: CI runs every test"
            summary = f"{counts['passed']} passed, {counts['failed']} failed, {counts['ignored']} ignored, {took:.0f} s"
            if problem:
                failed.append(name)
                print(f"scripts/test: FAILED {name} ({summary}): {problem}", flush=True)
                print(f"---- {path} (last 150 lines) ----")
                print("\n".join(text.splitlines()[-150:]))
                print(f"---- rerun alone: {' '.join(command)}", flush=True)
            else:
                print(f"scripts/test: ok {name} ({summary})", flush=True)



if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
