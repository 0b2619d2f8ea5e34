"""Turns oha's JSON report (stdin) into one markdown row.

    oha --output-format json ... | python3 bench/oha_row.py NAME RATE SHARE
"""

import json
import sys

name, rate, share = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    report = json.load(sys.stdin)
except ValueError:
    print(f"| {name} | {rate} ({share}%) | - | - | - | oha failed |")
    sys.exit()
percentiles = report.get("latencyPercentiles", {})


def ms(key):
    value = percentiles.get(key)
    return f"{value * 1000:.3f}" if value is not None else "-"


statuses = report.get("statusCodeDistribution", {}) or {}
errors = sum((report.get("errorDistribution", {}) or {}).values())
errors += sum(count for code, count in statuses.items() if not code.startswith("2"))
print(f"| {name} | {rate} ({share}%) | {ms('p50')} | {ms('p99')} | {ms('p99.9')} | {errors} |")
