"""Run the test suite as pytest processes, two at a time (what scripts/run_tests.sh runs).

    python scripts/run_suite.py [--slots 2] [PYTEST_ARGS ...]

With pytest arguments (e.g. ``-k parity`` or test files) everything they select runs in one
process (the whole tests/ folder unless an argument names a test file or directory).

Why processes: MindSpore's memory pool keeps what a process's graphs once took until the process
ends, and each job's pytest process is a fresh pool (tests/conftest.py also collects the graphs
of finished tests, so that a job's peak is its largest test, not their sum). Why two at a time:
a CPU graph compile keeps one core busy, and this project's CI machine has two. The jobs below
are groups of test files, started in an order that makes the two slots end close together (found
by simulating the durations measured on the 2-core VM, README "Tests"); the three jobs that
compile the full-size R50 model's training graphs (``heavy``: 5-7 GB each, README "Tests") never
run beside each other, so the machine holds one of them and one light job at most. Every test belongs to
exactly one job (a file two jobs name is split between them by complementary ``-k`` selections):
the files no job names form the ``rest`` job, so a new test file is never left out.

Each job's output is printed when it ends; the last lines give each job's time, cores busy and
peak resident set (its pytest process, from /usr/bin/time where present), the peak of the
machine's memory in use while the suite ran (MemTotal - MemAvailable, every 2 s), the suite's
wall time and the counts added up. Exit status 1 when a job fails or collects no test.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, test files and pytest selection, heavy) in the order they start; "rest" stands for every
# file not named here
JOBS = (
    ("parity", ["tests/test_parity.py"], True),
    ("eval", ["tests/test_eval.py"], False),
    ("rest", None, False),
    ("static_canvas", ["tests/test_static_canvas.py"], True),
    ("train", ["tests/test_train.py"], False),
    ("resume", ["tests/test_resume.py"], False),
    ("portability", ["tests/test_portability.py"], False),
    # the files that compare with one process's whole-batch gradients, computed once (tests/whole_batch.py)
    ("whole_batch", ["tests/test_distributed.py", "tests/test_accumulation.py", "tests/test_recompute.py"], False),
    # one file in two processes (complementary -k selections): the PyNative gradients after the
    # graph-mode one in the same process peaked 3 GB above either alone
    ("grad_parity", ["tests/test_grad_parity.py", "-k", "not pynative"], True),
    ("grad_pynative", ["tests/test_grad_parity.py", "-k", "pynative"], False),
    ("export", ["tests/test_export.py", "tests/test_onnx_graph.py", "tests/test_infer.py"], False),
    ("launch", ["tests/test_fine_tuning.py", "tests/test_bench_train.py", "tests/test_converter.py",
                "tests/test_launchers.py", "tests/test_cpu_isa.py", "tests/test_ops_devices.py",
                "tests/test_imports.py"], False),
)


def job_files():
    """{job: files}, with the unnamed test files in 'rest'; a named file that is missing is an error."""
    named = {name: files for name, files, _ in JOBS if files is not None}
    paths = {name: [arg for arg in files if arg.startswith("tests/")] for name, files in named.items()}
    for files in paths.values():
        for path in files:
            if not os.path.isfile(os.path.join(ROOT, path)):
                raise SystemExit(f"run_suite: {path} is named in JOBS but does not exist")
    taken = {path for files in paths.values() for path in files}
    rest = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests", "test_*.py")))
    return {name: named.get(name, [p for p in rest if p not in taken]) for name, _, _ in JOBS}


class MemorySampler(threading.Thread):
    """The machine's peak memory in use (MemTotal - MemAvailable), sampled every 2 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_kb, self.stop = 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                with open("/proc/meminfo") as f:
                    info = {line.split(":")[0]: int(line.split()[1]) for line in f}
                self.peak_kb = max(self.peak_kb, info["MemTotal"] - info["MemAvailable"])
            except (OSError, KeyError, ValueError):
                return
            self.stop.wait(2.0)


def start(name, pytest_args, reports):
    timer = ["/usr/bin/time", "-f", "%M %e %U %S", "-o", os.path.join(reports, f"{name}.usage")]
    cmd = [sys.executable, "-u", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15",
           f"--junitxml={os.path.join(reports, name + '.xml')}", f"--basetemp={os.path.join(reports, 'tmp_' + name)}",
           *pytest_args]
    log = open(os.path.join(reports, f"{name}.log"), "w")
    proc = subprocess.Popen((timer if os.access(timer[0], os.X_OK) else []) + cmd, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    return proc, log, time.perf_counter()


def usage(reports, name):
    """(peak GB, wall s, cores busy) from /usr/bin/time, or None."""
    try:
        fields = open(os.path.join(reports, f"{name}.usage")).read().split()[-4:]
        peak, wall, user, system = int(fields[0]), float(fields[1]), float(fields[2]), float(fields[3])
    except (OSError, ValueError, IndexError):
        return None  # a killed process leaves a note instead of the numbers
    return peak / 2**20, wall, (user + system) / max(wall, 1e-9)


def peak_test(reports, name):
    """The test during which job ``name``'s pytest process reached its peak (the conftest notes
    ``peak_rss_kb`` on each test that raises it), or None."""
    try:
        cases = ET.parse(os.path.join(reports, f"{name}.xml")).getroot().iter("testcase")
    except (OSError, ET.ParseError):
        return None
    raised = [(int(prop.get("value")), f"{case.get('classname')}::{case.get('name')}") for case in cases
              for prop in case.iter("property") if prop.get("name") == "peak_rss_kb"]
    return max(raised)[1] if raised else None


def counts(reports):
    totals = dict(tests=0, failures=0, errors=0, skipped=0)
    for path in glob.glob(os.path.join(reports, "*.xml")):
        for suite in ET.parse(path).getroot().iter("testsuite"):
            for key in totals:
                totals[key] += int(suite.get(key, 0))
    return totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--slots", type=int, default=2, help="pytest processes at a time")
    args, pytest_args = parser.parse_known_args(argv)
    if pytest_args:  # one job: what the arguments select
        named = any(os.path.exists(os.path.join(ROOT, arg.split("::")[0])) for arg in pytest_args)
        files, heavy = {"selected": ([] if named else ["tests"]) + pytest_args}, set()
    else:
        files, heavy = job_files(), {name for name, _, is_heavy in JOBS if is_heavy}
    reports = tempfile.mkdtemp(prefix="run_suite_")
    sampler = MemorySampler()
    sampler.start()
    began = time.perf_counter()
    waiting, running, status = [name for name in files if files[name]], {}, {}
    try:
        while waiting or running:
            while len(running) < args.slots:
                busy_heavy = heavy & set(running)
                ready = [name for name in waiting if not (name in heavy and busy_heavy)]
                if not ready:
                    break
                name = ready[0]
                waiting.remove(name)
                running[name] = start(name, files[name], reports)
                print(f"run_suite: {time.perf_counter() - began:5.0f} s: started {name}", flush=True)
            time.sleep(1.0)
            for name, (proc, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                rc = proc.returncode
                status[name] = 1 if rc == 5 else rc  # 5: pytest collected no tests
                print(f"\n===== {name} ({' '.join(files[name])}): exit {rc} after {time.perf_counter() - t0:.0f} s",
                      flush=True)
                with open(os.path.join(reports, f"{name}.log")) as f:
                    sys.stdout.write(f.read())
                if rc == 5:
                    print(f"run_suite: pytest collected no tests ({name})")
                sys.stdout.flush()
    finally:
        sampler.stop.set()
        for proc, _, _ in running.values():
            proc.kill()
    wall = time.perf_counter() - began
    for name in status:
        figures, test = usage(reports, name), peak_test(reports, name)
        if figures:
            print(f"run_tests: {name}: peak {figures[0]:.1f} GB resident{f' (in {test})' if test else ''}, "
                  f"{figures[1] / 60:.1f} min, {figures[2]:.2f} cores busy on average")
    print(f"run_tests: machine memory in use at most {sampler.peak_kb / 2**20:.1f} GB; suite {wall / 60:.1f} min "
          f"with {args.slots} jobs at a time")
    totals = counts(reports)
    failed = totals["failures"] + totals["errors"]
    print(f"run_tests: {totals['tests'] - failed - totals['skipped']} passed, {failed} failed, "
          f"{totals['skipped']} skipped")
    shutil.rmtree(reports, ignore_errors=True)
    return 1 if any(status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
