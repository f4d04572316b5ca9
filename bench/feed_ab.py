"""Does a change cost the feed read? ``bench/feed.py`` of two checkouts, interleaved.

    .venv/bin/python bench/feed_ab.py --before ../before --after . [--rounds 3]

Each checkout needs its own ``.venv`` (``make`` there). Rounds alternate
(before, after, before, after, ...) so that a drift in the machine's speed over the
run touches both sides alike; each round is one ``bench/feed.py`` run of that
checkout (closed-loop peak and a fixed-rate run, no ceiling, no push phase). The
table gives every round, the medians and the after/before ratios:

- peak req/s, p50 and p99 of the closed-loop run (the cell saturated);
- the cell's CPU per read in that run, in microseconds (every process of the cell,
  from ``feed.py``'s per-process CPU line, over the reads it answered): the cost of a
  read, less noisy than a rate on a shared machine;
- p99 at the fixed rate.

The last line is ``after/before peak req/s ratio (median): X.XX``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NOT_THE_CELL = {"wrk", "(kernel irq/softirq)"}
PEAK = re.compile(r"^gateway GET /v1/feed, peak\s+([\d,]+) req/s\s+([\d.]+) ms\s+([\d.]+) ms", re.M)
PACED = re.compile(
    r"^gateway GET /v1/feed @ [\d,]+/s\s+([\d,]+) req/s\s+([\d.]+) ms\s+([\d.]+) ms", re.M
)
CPU = re.compile(r"^CPU in the recorded window[^:]*: (.*)$", re.M)
SHARE = re.compile(r"([^,]+?) (\d+)%")


@dataclass(frozen=True, slots=True)
class Round:
    peak_rps: float
    peak_p50_ms: float
    peak_p99_ms: float
    cell_cpu_us_per_read: float
    paced_p99_ms: float


def parse(output: str) -> Round:
    """One round's numbers from ``bench/feed.py``'s output; ValueError when absent."""
    peak, paced, cpu = PEAK.search(output), PACED.search(output), CPU.search(output)
    if peak is None or paced is None or cpu is None:
        raise ValueError("bench/feed.py printed no peak row, paced row or CPU line")
    rps = float(peak.group(1).replace(",", ""))
    shares = {
        name.strip(): int(percent) for name, percent in SHARE.findall(cpu.group(1).split(";")[0])
    }
    cell = sum(percent for name, percent in shares.items() if name not in NOT_THE_CELL)
    return Round(
        peak_rps=rps,
        peak_p50_ms=float(peak.group(2)),
        peak_p99_ms=float(peak.group(3)),
        cell_cpu_us_per_read=cell / 100 * 1e6 / rps,
        paced_p99_ms=float(paced.group(3)),
    )


def run_round(checkout: Path, extra: list[str]) -> Round:
    command = [
        str(checkout / ".venv/bin/python"),
        str(checkout / "bench/feed.py"),
        "--skip-ceiling",
        "--push-duration",
        "0",
        *extra,
    ]
    done = subprocess.run(command, cwd=checkout, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"bench/feed.py failed in {checkout} (exit {done.returncode})")
    return parse(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout before the change")
    parser.add_argument("--after", type=Path, required=True, help="checkout after the change")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each")
    parser.add_argument("--duration", default="15", help="recorded seconds per wrk run")
    parser.add_argument("--rate", default="1500", help="the fixed-rate run's req/s")
    args = parser.parse_args(argv)
    extra = ["--duration", args.duration, "--rate", args.rate]
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    results: dict[str, list[Round]] = {"before": [], "after": []}
    for number in range(1, args.rounds + 1):
        for side, checkout in sides.items():
            print(f"round {number}, {side}: {checkout}", flush=True)
            results[side].append(run_round(checkout, extra))
    fields = [
        ("peak req/s", "peak_rps", "{:,.0f}"),
        ("peak p50 ms", "peak_p50_ms", "{:.1f}"),
        ("peak p99 ms", "peak_p99_ms", "{:.1f}"),
        ("cell CPU us/read", "cell_cpu_us_per_read", "{:.0f}"),
        (f"p99 ms @ {args.rate}/s", "paced_p99_ms", "{:.1f}"),
    ]
    print()
    print(
        "| what | before (rounds) | after (rounds) | median before | median after | after/before |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for label, attr, fmt in fields:
        before = [getattr(r, attr) for r in results["before"]]
        after = [getattr(r, attr) for r in results["after"]]
        mb, ma = statistics.median(before), statistics.median(after)
        print(
            f"| {label} | {', '.join(fmt.format(v) for v in before)} "
            f"| {', '.join(fmt.format(v) for v in after)} | {fmt.format(mb)} "
            f"| {fmt.format(ma)} | {ma / mb:.2f} |"
        )
    ratio = statistics.median(r.peak_rps for r in results["after"]) / statistics.median(
        r.peak_rps for r in results["before"]
    )
    print(f"\nafter/before peak req/s ratio (median): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
