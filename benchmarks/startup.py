"""Start-up: `import omiclip`, `omiclip --help` and `omiclip --version` in fresh processes.

    python benchmarks/startup.py [--repeats 7] [--top 12] [--first-use]

Each command runs `repeats` times in a fresh interpreter: wall clock (median, min) and the process's CPU time
(user + sys, median), which a busy machine inflates much less than the wall clock. Targets (issue #16):
import <= 1.0 s, --help/--version <= 0.5 s. Also lists the heavy libraries each command left in
`sys.modules` (none expected) and the top entries of `python -X importtime -c "import omiclip"` (with
`--first-use`, also of the first use of a function, `oc.tl.embed`, which imports torch), by cumulative time.
Prints a table and writes benchmarks/results/startup.json.
"""

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ["anndata", "dask", "open_clip", "scanpy", "spatialdata", "squidpy", "torch"]
TARGETS_S = {"import omiclip": 1.0, "omiclip --help": 0.5, "omiclip --version": 0.5}
REPORT_HEAVY = f"import json, sys; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"


def commands() -> dict[str, list[str]]:
    python = [sys.executable]
    script = shutil.which("omiclip", path=str(Path(sys.executable).parent))
    runs = {
        "import omiclip": [*python, "-c", "import omiclip"],
        "omiclip --help": [*python, "-m", "omiclip", "--help"],
        "omiclip --version": [*python, "-m", "omiclip", "--version"],
    }
    if script:  # the installed entry point (imports the same code when PYTHONPATH points at a checkout)
        runs["omiclip --help (entry point)"] = [script, "--help"]
        runs["omiclip --version (entry point)"] = [script, "--version"]
    return runs


def time_command(argv: list[str], repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each of ``repeats`` runs of ``argv``."""
    wall, cpu = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


def heavy_modules(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\n{REPORT_HEAVY}"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def import_time_top(code: str, top: int) -> list[dict]:
    """Top entries of `-X importtime` by cumulative time (µs), the process's own imports only."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], check=True, capture_output=True, text=True)
    rows = []
    for line in err.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        rows.append({"module": name.strip(), "self_ms": int(self_us) / 1e3, "cumulative_ms": int(cumulative_us) / 1e3})
    return sorted(rows, key=lambda row: -row["cumulative_ms"])[:top]


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--first-use", action="store_true", help="also time the first use of oc.tl.embed")
    args = parser.parse_args()

    subprocess.run([sys.executable, "-c", "import omiclip"], check=True)  # warm the file cache once
    rows = []
    runs = commands()
    if args.first_use:
        runs["first use: oc.tl.embed"] = [sys.executable, "-c", "import omiclip as oc; oc.tl.embed"]
    for what, argv in runs.items():
        wall, cpu = time_command(argv, args.repeats)
        rows.append(
            {
                "command": what,
                "median_s": statistics.median(wall),
                "min_s": min(wall),
                "cpu_median_s": statistics.median(cpu),
                "target_s": TARGETS_S.get(what.removesuffix(" (entry point)")),
            }
        )
    heavy = {
        "import omiclip": heavy_modules("import omiclip"),
        "omiclip --help": heavy_modules(
            "from omiclip.__main__ import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
        ),
    }
    top = {"import omiclip": import_time_top("import omiclip", args.top)}
    if args.first_use:
        top["first use: oc.tl.embed"] = import_time_top("import omiclip as oc; oc.tl.embed", args.top)

    print(f"CPU: {cpu_model()}; Python {platform.python_version()}; {args.repeats} runs each\n")
    print(f"{'command':34s} {'median s':>9s} {'min s':>7s} {'CPU s':>7s} {'target s':>9s}  met")
    for row in rows:
        target = row["target_s"]
        met = "" if target is None else ("yes" if row["median_s"] <= target else "NO")
        target_text = "" if target is None else f"{target:.1f}"
        print(
            f"{row['command']:34s} {row['median_s']:9.3f} {row['min_s']:7.3f} {row['cpu_median_s']:7.3f} "
            f"{target_text:>9s}  {met}"
        )
    for what, modules in heavy.items():
        print(f"\nheavy libraries after `{what}`: {modules or 'none'}")
    for what, entries in top.items():
        print(f"\n-X importtime, `{what}`, top {args.top} by cumulative ms:")
        for entry in entries:
            print(f"  {entry['cumulative_ms']:9.1f}  {entry['module']}")

    out = Path(__file__).parent / "results" / "startup.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"cpu": cpu_model(), "repeats": args.repeats, "timings": rows, "heavy": heavy, "importtime": top}, indent=2
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
