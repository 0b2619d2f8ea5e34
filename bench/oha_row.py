"""Turns oha's JSON report (stdin) into one markdown row.

    oha --output-format json ... | python3 bench/oha_row.py NAME RATE SHARE [CPU_SECONDS]

CPU_SECONDS, the proxy's user + system time over the run, adds its CPU
time per answered request. Errors name their kinds (oha's error
distribution), so a row says what went wrong, not only how often.
"""

import json
import sys

name, rate, share = sys.argv[1], sys.argv[2], sys.argv[3]
cpu_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else None
try:
    report = json.load(sys.stdin)
except ValueError:
    print(f"| {name} | {rate} ({share}%) | - | - | - | - | oha failed |")
    sys.exit()
percentiles = report.get("latencyPercentiles", {})


def ms(key):
    value = percentiles.get(key)
    return f"{value * 1000:.3f}" if value is not None else "-"


statuses = report.get("statusCodeDistribution", {}) or {}
kinds = dict(report.get("errorDistribution", {}) or {})
kinds.update({f"status {code}": n for code, n in statuses.items() if not code.startswith("2")})
errors = sum(kinds.values())
answered = sum(n for code, n in statuses.items() if code.startswith("2"))
cpu = f"{cpu_seconds * 1e6 / answered:.1f}" if cpu_seconds is not None and answered else "-"
detail = f"{errors}" + (f" ({'; '.join(f'{k}: {n}' for k, n in kinds.items())})" if errors else "")
print(f"| {name} | {rate} ({share}%) | {ms('p50')} | {ms('p99')} | {ms('p99.9')} | {cpu} | {detail} |")
