"""Results: samples per server, medians, ratios and the Markdown table.

A :class:`Metric` holds every sample taken for angos and for Distribution; the
table shows the median of each and the ratio angos/distribution of the
medians. ``higher_is_better`` says how to read a ratio against its target:
throughput targets are minimums (ratio >= target), time targets maximums
(ratio <= target). Latency rows carry no target and are shown for context.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

SERVERS = ("angos", "distribution")


@dataclass
class Metric:
    name: str
    unit: str
    higher_is_better: bool
    target: float | None = None
    samples: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SERVERS})

    def add(self, server: str, value: float) -> None:
        self.samples[server].append(value)

    def median(self, server: str) -> float | None:
        values = self.samples[server]
        return statistics.median(values) if values else None

    def ratio(self) -> float | None:
        a, d = self.median("angos"), self.median("distribution")
        if a is None or d is None or d == 0:
            return None
        return a / d

    def met(self) -> bool | None:
        r = self.ratio()
        if r is None or self.target is None:
            return None
        return r >= self.target if self.higher_is_better else r <= self.target

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'≥' if self.higher_is_better else '≤'} {self.target:g}×"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("MiB/s", "req/s"):
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit in ("s", "s/GiB"):
        return f"{value:.2f} {unit}"
    if unit == "ms/req":
        return f"{value:.3f} {unit}"
    return f"{value:.3g} {unit}"


def samples_line(m: Metric) -> str:
    parts = []
    for s in SERVERS:
        vals = ", ".join(f"{v:.4g}" for v in m.samples[s]) or "none"
        parts.append(f"{s}=[{vals}]")
    return f"{m.name} ({m.unit}): " + " ".join(parts)


def table(metrics: list[Metric]) -> str:
    rows = ["| Measurement | angos | Distribution | angos/Distribution | Target | Met |",
            "|---|---:|---:|---:|---:|:---:|"]
    for m in metrics:
        r = m.ratio()
        met = m.met()
        rows.append(f"| {m.name} | {_fmt(m.median('angos'), m.unit)} | {_fmt(m.median('distribution'), m.unit)} "
                    f"| {'—' if r is None else f'{r:.2f}×'} | {m.target_text()} "
                    f"| {'' if met is None else ('yes' if met else '**no**')} |")
    return "\n".join(rows)
