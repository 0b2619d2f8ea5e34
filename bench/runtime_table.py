"""Medians of bench/runtime.sh's runs as one markdown table.

    python3 bench/runtime_table.py RUNS_DIR "RATE ..." "NAME ..."

RUNS_DIR holds NAME.RATE.ROUND.json (oha's JSON report) and
NAME.RATE.ROUND.cost ("CPU_SECONDS UPSTREAM_CONNECTIONS_OPENED").
"""

import glob
import json
import statistics
import sys

runs, rates, names = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()


def one_run(json_path):
    """p50, p99, p99.9 in ms, answered, error kinds; None if oha failed."""
    try:
        with open(json_path) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    percentiles = report.get("latencyPercentiles", {})
    statuses = report.get("statusCodeDistribution", {}) or {}
    kinds = dict(report.get("errorDistribution", {}) or {})
    kinds.update({f"status {c}": n for c, n in statuses.items() if not c.startswith("2")})
    answered = sum(n for c, n in statuses.items() if c.startswith("2"))
    latencies = [percentiles.get(k) for k in ("p50", "p99", "p99.9")]
    if None in latencies:
        return None
    return [v * 1000 for v in latencies], answered, kinds


def median(values):
    return statistics.median(values) if values else float("nan")


print("| rate/s | proxy | p50 ms | p99 ms | p99.9 ms | CPU µs a request | upstream connects a 1k requests | errors |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
for rate in rates:
    for name in names:
        p50, p99, p999, cpu, connects, errors = [], [], [], [], [], {}
        for path in sorted(glob.glob(f"{runs}/{name}.{rate}.*.json")):
            run = one_run(path)
            if run is None:
                errors["oha failed"] = errors.get("oha failed", 0) + 1
                continue
            (a, b, c), answered, kinds = run
            p50.append(a), p99.append(b), p999.append(c)
            for kind, n in kinds.items():
                errors[kind] = errors.get(kind, 0) + n
            with open(path[: -len("json")] + "cost") as f:
                cpu_seconds, opened = f.read().split()
            if answered:
                cpu.append(float(cpu_seconds) * 1e6 / answered)
                connects.append(int(opened) * 1000 / answered)
        connect_cell = f"{median(connects):.2f}" if name.startswith("lb") else "-"
        error_cell = "; ".join(f"{k}: {n}" for k, n in errors.items()) or "0"
        print(
            f"| {rate} | {name} | {median(p50):.2f} | {median(p99):.2f} | {median(p999):.2f} "
            f"| {median(cpu):.1f} | {connect_cell} | {error_cell} |"
        )
