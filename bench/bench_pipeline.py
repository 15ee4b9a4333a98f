"""The whole default pipeline on a mid-size synthetic catalogue, and training beside another training.

    python bench/bench_pipeline.py                         # 10,000 items, 600,000 interactions
    python bench/bench_pipeline.py --override train.sampler.batch_size=512   # any run override
    python bench/bench_pipeline.py --items 2000 --interactions 100000 --epochs 2
    python bench/bench_pipeline.py --concurrent 2 --data data/ml-latest-small --epochs 2

Default mode: writes a seeded synthetic dataset in the contract format (``bench/synthetic.py``:
items in latent topics, text annotations, time-ordered histories that stay within a context's
preferred topics) and runs ``python -m pinsage run`` on it with every default. Prints each stage's
seconds, the epochs (pairs, seconds, validation MRR), the total wall time and the peak RSS.

``--concurrent N``: N runs at once on the same machine, as an Airflow worker running N tasks does,
once with every thread pool sized to the whole machine (each run's default when nothing tells it
otherwise) and once with ``--cpus cores / N``. Prints the mean training-epoch seconds of each.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `pinsage` / `bench` importable
    sys.path.insert(0, str(REPO))

from bench.synthetic import write_synthetic_dataset  # noqa: E402
from pinsage.util.resources import available_cpus  # noqa: E402

STAGE = re.compile(r"\[(\w+)\] done in ([\d.]+)s")
EPOCH = re.compile(r"epoch (\d+)/(\d+)\s+loss ([\d.]+)\s+val ([\d.]+)\s+([\d.]+)s")


def run_pipeline(data: Path, out: Path, extra: list[str], env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pinsage", "run", "--data", str(data), "--out", str(out), *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PINSAGE_PROGRESS": "0", **(env or {})})


def collect(proc: subprocess.Popen, echo: bool) -> tuple[dict, list, list[str]]:
    stages, epochs, lines = {}, [], []
    for line in proc.stdout:
        lines.append(line)
        if m := STAGE.search(line):
            stages[m.group(1)] = float(m.group(2))
            echo and print(f"  {m.group(1)}: {float(m.group(2)):.1f}s", flush=True)
        elif m := EPOCH.search(line):
            epochs.append((int(m.group(1)), float(m.group(4)), float(m.group(5))))
            echo and print(f"    epoch {m.group(1)}/{m.group(2)}: val MRR {m.group(4)}, {m.group(5)}s", flush=True)
    if proc.wait() != 0:
        raise SystemExit("pinsage run failed:\n" + "".join(lines[-30:]))
    return stages, epochs, lines


def whole_pipeline(args) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        data = Path(args.data) if args.data else None
        if data is None:
            t0 = time.perf_counter()
            data = write_synthetic_dataset(Path(tmp) / "data", args.items, args.interactions, seed=args.seed)
            print(f"synthetic dataset: {args.items:,} items, ~{args.interactions:,} interactions "
                  f"(written in {time.perf_counter() - t0:.0f}s)", flush=True)
        extra = ["--seed", str(args.seed)] + (["--epochs", str(args.epochs)] if args.epochs else [])
        extra += [a for kv in args.override for a in ("--override", kv)]
        t0 = time.perf_counter()
        stages, epochs, lines = collect(run_pipeline(data, Path(tmp) / "run", extra), echo=True)
        wall = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
        prep = next((ln.split("prepare: ", 1)[1].strip() for ln in lines if "prepare: " in ln), "")
        print(f"\n{prep}\n\n| stage | seconds |\n|---|---:|")
        for name, sec in stages.items():
            print(f"| {name} | {sec:.1f} |")
        print(f"| **whole pipeline (wall, with start-up)** | **{wall:.0f}** ({wall / 60:.1f} min) |")
        for line in lines:  # which computation graphs trained, and why training stopped
            if "computation graphs" in line or "stopped after epoch" in line:
                print(line.split("train: ", 1)[-1].strip())
        if epochs:
            best = max(epochs, key=lambda e: e[1])
            print(f"\n{len(epochs)} epochs, {sum(e[2] for e in epochs) / len(epochs):.0f} s each; best validation "
                  f"MRR {best[1]:.4f} at epoch {best[0]} (per epoch: {', '.join(f'{e[1]:.4f}' for e in epochs)})")
        print(f"peak RSS {rss:.2f} GB; {available_cpus()} CPUs")


def concurrent(args) -> None:
    n, cores = args.concurrent, available_cpus()
    data = Path(args.data or REPO / "data" / "ml-latest-small")
    extra = ["--seed", str(args.seed), "--epochs", str(args.epochs or 2)]
    rows = []
    for label, cpus in ((f"pools sized to the machine ({cores} threads each)", 0),
                        (f"--cpus {max(1, cores // n)} each (cores / runs)", max(1, cores // n))):
        with tempfile.TemporaryDirectory(prefix="bench_concurrent_") as tmp:
            t0 = time.perf_counter()
            env = {"PINSAGE_CPUS": ""}  # nothing tells the runs how many they share with
            procs = [run_pipeline(data, Path(tmp) / f"run{i}", extra + ["--cpus", str(cpus)], env) for i in range(n)]
            results = [collect(p, echo=False) for p in procs]
            wall = time.perf_counter() - t0
        secs = [e[2] for _, epochs, _ in results for e in epochs]
        rows.append((label, sum(secs) / len(secs), wall))
        print(f"{label}: epoch {rows[-1][1]:.1f}s (mean over {len(secs)}), all {n} runs {wall:.0f}s", flush=True)
    alone = collect(run_pipeline(data, Path(tempfile.mkdtemp()) / "alone", extra), echo=False)[1]
    solo = sum(e[2] for e in alone) / len(alone)
    print(f"\n{n} runs at once on {cores} CPUs ({data.name}, {args.epochs or 2} epochs each); one run alone: "
          f"epoch {solo:.1f}s\n\n| thread pools | epoch (s) | x alone | all runs, wall (s) |\n|---|---:|---:|---:|")
    for label, sec, wall in rows:
        print(f"| {label} | {sec:.1f} | {sec / solo:.1f} | {wall:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--interactions", type=int, default=600_000)
    p.add_argument("--data", default=None, help="a dataset directory instead of the synthetic one")
    p.add_argument("--epochs", type=int, default=None, help="default: the pipeline's own")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                   help="passed to python -m pinsage run (e.g. train.sampler.batch_size=512)")
    p.add_argument("--concurrent", type=int, default=0, help="N runs at once, unsized vs --cpus cores/N")
    args = p.parse_args()
    concurrent(args) if args.concurrent else whole_pipeline(args)


if __name__ == "__main__":
    main()
