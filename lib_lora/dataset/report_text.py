"""The dataset report as text for the terminal (the tab renders `Report.to_dict()` itself)."""
from __future__ import annotations

from .report import Report


def format_report(report: Report) -> str:
    lines = [f"Dataset report for {report.root} ({report.kind}, {report.images} images)", ""]
    lines.append("Concepts (images x repeats = per epoch; suggested repeats):")
    for s in report.concepts:
        hint = f"  -> {s.suggested_repeats}" if s.suggested_repeats != s.repeats else ""
        lines.append(f"  {s.repeats}_{s.name}: {s.images} x {s.repeats} = {s.per_epoch}{hint}")
    lines.append(f"Total steps: {report.total_steps} ({report.steps_per_epoch} per epoch, bucket by bucket, as the "
                 f"trainer runs them; a {report.kind} needs about {report.target_steps})")
    lines.append("Short side: " + ", ".join(f"{k}: {v}" for k, v in report.resolution_histogram.items() if v))
    lines.append("Buckets: " + ", ".join(f"{b['width']}x{b['height']} ({b['images']})" for b in report.buckets))
    if report.tag_frequency:
        lines.append("Top tags: " + ", ".join(f"{t} ({n})" for t, n in report.tag_frequency[:15]))
    if report.co_occurrence:
        lines.append("Strongest pairs: " + "; ".join(f"{p['a']} + {p['b']} ({p['together']})"
                                                     for p in report.co_occurrence[:5]))
    lines.append("")
    counts = report.counts()
    lines.append(f"Findings: {counts['error']} errors, {counts['warning']} warnings, {counts['info']} notes "
                 "(advice only; training is never blocked)")
    lines += [f.text() for f in report.findings] or ["  none: the dataset looks fine"]
    return "\n".join(lines)
