#!/usr/bin/python3
"""switchyard end-to-end runner.

    /usr/bin/python3 tests/e2e/run.py --binary ./switchyard [-k SUBSTR] [-v] [-j N] [--list] [--keep]

Imports every tests/e2e/cases_*.py, runs each registered case in its own forked
process group with a timeout, prints `PASS name` / `FAIL name: why` /
`SKIP name: why` per case and, last, `N passed, M failed, K skipped`. Exit
status 1 if any case failed or none passed.
"""

import argparse
import glob
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


def load_cases():
    """Import cases_*.py; returns a list of (name, error text) for failed imports."""
    broken = []
    for path in sorted(glob.glob(os.path.join(HERE, "cases_*.py"))):
        mod = os.path.basename(path)[:-3]
        harness._module = mod[len("cases_"):]
        try:
            importlib.import_module(mod)
        except Exception:
            broken.append(("import." + mod, traceback.format_exc().strip().splitlines()[-1]))
    return broken


def one_line(s, limit=400):
    s = " ".join(str(s).split())
    return s if len(s) <= limit else s[:limit] + "..."


def child(c, binary, cdir, verbose):
    """Runs in the forked process: execute case c, write result.json."""
    os.setpgid(0, 0)
    out = os.open(os.path.join(cdir, "case.out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def on_alarm(signum, frame):
        raise harness.CaseTimeout("case timed out after %ds" % c.timeout)

    signal.signal(signal.SIGALRM, on_alarm)
    result = {"ok": False, "skip": False, "why": "", "logs": []}
    ctx = harness.Ctx(c.name, binary, cdir, verbose)
    try:
        signal.alarm(c.timeout)
        c.fn(ctx)
        signal.alarm(0)
        result["ok"] = True
    except harness.Skip as e:
        signal.alarm(0)
        result["ok"] = result["skip"] = True
        result["why"] = str(e) or "skipped"
        print("skipped:", result["why"])
    except BaseException as e:
        signal.alarm(0)
        traceback.print_exc()
        if isinstance(e, AssertionError):
            result["why"] = str(e) or "assertion failed: " + traceback.format_exc().strip().splitlines()[-2].strip()
        else:
            result["why"] = "%s: %s" % (type(e).__name__, e)
    try:
        signal.alarm(30)
        problems = ctx.cleanup()
        signal.alarm(0)
    except BaseException as e:
        problems = ["cleanup raised %s: %s" % (type(e).__name__, e)]
    for p in problems:
        print("cleanup problem:", p)
    if result["ok"] and problems:
        result["ok"] = result["skip"] = False
        result["why"] = problems[0]
    result["logs"] = ctx.logs()
    sys.stdout.flush()
    with open(os.path.join(cdir, "result.json"), "w") as f:
        json.dump(result, f)
    os._exit(0)


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return lines[-n:]


def main():
    ap = argparse.ArgumentParser(description="switchyard end-to-end tests")
    ap.add_argument("--binary", default="./switchyard")
    ap.add_argument("-k", action="append", default=[], help="run cases whose name contains this (repeatable)")
    ap.add_argument("-v", action="store_true", help="show case output and proxy log tails of failures")
    ap.add_argument("-j", type=int, default=1, help="cases run in parallel")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep every case directory")
    args = ap.parse_args()

    broken = load_cases()
    cases = [c for c in harness.CASES if not args.k or any(k in c.name for k in args.k)]
    if args.list:
        for c in cases:
            print(c.name)
        return 0

    passed = failed = skipped = 0
    for name, why in broken:
        print("FAIL %s: %s" % (name, why), flush=True)
        failed += 1

    binary = os.path.abspath(args.binary)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print("FAIL setup: binary %s not found or not executable" % binary, flush=True)
        print("%d passed, %d failed, %d skipped" % (passed, failed + 1, skipped))
        return 1

    base = tempfile.mkdtemp(prefix="sy-e2e-")
    # run a private copy, so a rebuild during the run cannot pull it away
    copy = os.path.join(base, os.path.basename(binary))
    shutil.copy2(binary, copy)
    binary = copy
    pending = list(enumerate(cases))
    running = {}  # pid -> (case, dir, hard deadline)
    results = {}
    order = 0
    failed_dirs = []

    def report(c, cdir, res):
        nonlocal passed, failed, skipped
        if res["ok"] and res.get("skip"):
            skipped += 1
            print("SKIP %s: %s" % (c.name, one_line(res["why"])), flush=True)
            if not args.keep:
                shutil.rmtree(cdir, ignore_errors=True)
            return
        if res["ok"]:
            passed += 1
            print("PASS %s" % c.name, flush=True)
            if not args.keep:
                shutil.rmtree(cdir, ignore_errors=True)
            return
        failed += 1
        failed_dirs.append(cdir)
        print("FAIL %s: %s" % (c.name, one_line(res["why"])), flush=True)
        if args.v:
            for ln in tail(os.path.join(cdir, "case.out"), 60):
                print("    | " + ln)
            for lp in res.get("logs", []):
                print("    -- %s" % lp)
                for ln in tail(lp, 30):
                    print("    > " + ln)
            sys.stdout.flush()

    def reap(pid):
        c, cdir, _ = running.pop(pid)
        try:
            os.killpg(pid, signal.SIGKILL)  # leftovers of the case, if any
        except OSError:
            pass
        try:
            with open(os.path.join(cdir, "result.json")) as f:
                res = json.load(f)
        except (OSError, ValueError):
            res = {"ok": False, "why": "case process died without a result", "logs": []}
        results[c.name] = (c, cdir, res)

    try:
        # results are printed in registration order
        next_print = 0
        while pending or running:
            while pending and len(running) < max(1, args.j):
                i, c = pending.pop(0)
                cdir = os.path.join(base, "%03d-%s" % (i, c.name.replace("/", "_")))
                os.makedirs(cdir)
                sys.stdout.flush()
                pid = os.fork()
                if pid == 0:
                    try:
                        child(c, binary, cdir, args.v)
                    finally:
                        os._exit(3)
                try:
                    os.setpgid(pid, pid)
                except OSError:
                    pass
                running[pid] = (c, cdir, time.monotonic() + c.timeout + 40)
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid and pid in running:
                reap(pid)
                continue
            now = time.monotonic()
            for p, (c, cdir, dl) in list(running.items()):
                if now > dl:
                    try:
                        os.killpg(p, signal.SIGKILL)
                    except OSError:
                        pass
                    os.waitpid(p, 0)
                    running.pop(p)
                    results[c.name] = (c, cdir, {"ok": False, "why": "hard timeout: case process killed", "logs": []})
            while next_print < len(cases) and cases[next_print].name in results:
                report(*results.pop(cases[next_print].name))
                next_print += 1
            time.sleep(0.01)
        while next_print < len(cases) and cases[next_print].name in results:
            report(*results.pop(cases[next_print].name))
            next_print += 1
    except KeyboardInterrupt:
        for p in running:
            try:
                os.killpg(p, signal.SIGKILL)
            except OSError:
                pass
        print("interrupted")
        failed += 1

    if failed_dirs:
        print("logs of failed cases kept under %s" % base, file=sys.stderr)
    elif not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped), flush=True)
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
