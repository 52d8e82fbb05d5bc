"""The table (Markdown, printed) and the JSON file.

Ratio = Lading ÷ Distribution for rates (higher is better) and Distribution ÷ Lading for latency
and memory (lower is better), so in every row a ratio above 1 means Lading is ahead.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench.workload import Metric


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(next(row for row in Path("/proc/meminfo").read_text().splitlines()
                           if row.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        mem_kib = 0
    return {
        "nproc": os.cpu_count(), "cpu": model, "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(metrics: list[Metric]) -> str:
    lines = [
        "| row | unit | Distribution | Lading | ratio (>1: Lading better) | target | client CPU (D / L) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for m in metrics:
        ratio = m.ratio()
        if m.limit is not None and "lading" in m.values:
            verdict = f"≤{m.limit:g} {m.unit} " + ("ok" if m.values["lading"] < m.limit else "**MISS**")
        elif m.target is None or ratio is None:
            verdict = ""
        else:
            verdict = f"≥{m.target:g} " + ("ok" if ratio >= m.target else "**MISS**")
        cpu = ""
        if m.client_cpu:
            cpu = " / ".join(f"{m.client_cpu[n] * 100:.0f}%" if n in m.client_cpu else "-"
                             for n in ("distribution", "lading"))
        ratio_text = "-" if ratio is None else f"{ratio:.2f}"
        lines.append(f"| {m.name} | {m.unit} | {_fmt(m.values.get('distribution'))} | "
                     f"{_fmt(m.values.get('lading'))} | {ratio_text} | {verdict} | {cpu} |")
    return "\n".join(lines)


def write_json(path: Path, *, metrics: list[Metric], settings: dict[str, Any]) -> None:
    path.write_text(json.dumps({
        "machine": machine(),
        "settings": settings,
        "rows": [
            {"row": m.name, "unit": m.unit, "better": m.better, "distribution": m.values.get("distribution"),
             "lading": m.values.get("lading"), "ratio": m.ratio(), "target": m.target, "limit": m.limit,
             "client_cpu": m.client_cpu}
            for m in metrics
        ],
    }, indent=2) + "\n")
