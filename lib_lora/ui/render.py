"""What the tab draws from plain data: status and error lines, the dataset report, progress, the loss chart.

Pure functions of their inputs (strings and PIL images), so they are tested
without a browser. Everything user-supplied is HTML-escaped.
"""
from __future__ import annotations

import html
import math

from PIL import Image, ImageDraw, ImageFont

SEVERITY_CLASS = {"error": "train-lora-error", "warning": "train-lora-warning", "info": "train-lora-info"}


def message_html(text: str, kind: str = "info") -> str:
    return f"<div class='train-lora-msg train-lora-{kind}'>{html.escape(text)}</div>"


def error_html(text: str) -> str:
    return message_html(text, "error")


def report_html(report: dict) -> str:
    counts = report.get("severity_counts", {})
    parts = [f"<div class='train-lora-report'><h4>{html.escape(str(report.get('root', '')))}</h4>",
             f"<p>{report.get('images', 0)} images ({html.escape(report.get('kind', ''))}); "
             f"{report.get('total_steps', 0)} steps with these settings "
             f"(a {html.escape(report.get('kind', ''))} needs about {report.get('target_steps', 0)}); "
             f"{counts.get('error', 0)} errors, {counts.get('warning', 0)} warnings, {counts.get('info', 0)} notes "
             "(advice only: training is never blocked).</p>", "<table><tr><th>Concept</th><th>Images</th>"
             "<th>Repeats</th><th>Per epoch</th><th>Suggested repeats</th></tr>"]
    for c in report.get("concepts", []):
        parts.append(f"<tr><td>{html.escape(c['name'])}</td><td>{c['images']}</td><td>{c['repeats']}</td>"
                     f"<td>{c['per_epoch']}</td><td>{c['suggested_repeats']}</td></tr>")
    parts.append("</table><ul class='train-lora-findings'>")
    for f in report.get("findings", []):
        where = ", ".join(html.escape(p) for p in f.get("paths", [])[:3])
        more = f" and {f['count'] - 3} more" if f.get("count", 0) > 3 else ""
        parts.append(f"<li class='{SEVERITY_CLASS.get(f['severity'], '')}'><b>{f['severity']}</b> "
                     f"{html.escape(f.get('concept') and f['concept'] + ': ' or '')}{html.escape(f['what'])}"
                     + (f" <small>[{where}{more}]</small>" if where else "")
                     + (f"<br/>&rarr; {html.escape(f['fix'])}" if f.get("fix") else "") + "</li>")
    if not report.get("findings"):
        parts.append("<li>No findings: the dataset looks fine.</li>")
    parts.append("</ul>")
    tags = report.get("tag_frequency", [])[:20]
    if tags:
        parts.append("<p><b>Top tags:</b> " + ", ".join(f"{html.escape(t['tag'])} ({t['count']})" for t in tags)
                     + "</p>")
    return "".join(parts) + "</div>"


def progress_html(state: str, step: int, total: int, epoch: int, epochs: int, loss: float | None,
                  it_per_s: float = 0.0, eta_s: float = float("inf"), status: str = "", error: str = "") -> str:
    share = min(1.0, step / total) if total else 0.0
    eta = f"{int(eta_s // 60)}m {int(eta_s % 60)}s" if math.isfinite(eta_s) else "?"
    loss_text = f"{loss:.4f}" if loss is not None and loss == loss else "-"
    bar = (f"<div class='train-lora-bar'><div class='train-lora-bar-fill' style='width:{share * 100:.1f}%'>"
           "</div></div>")
    line = (f"<p><b>{html.escape(state)}</b>: step {step}/{total}, epoch {epoch}/{epochs}, loss {loss_text}, "
            f"{it_per_s:.2f} it/s, ETA {eta}</p>")
    extra = f"<p class='train-lora-status-line'>{html.escape(status)}</p>" if status else ""
    err = error_html(error) if error else ""
    return f"<div class='train-lora-progress' data-state='{html.escape(state)}'>{bar}{line}{extra}{err}</div>"


def best_epoch_html(hint) -> str:
    """The recommended epoch, the signals it rests on, and why (an evaluation.best_epoch.BestEpochHint)."""
    head = ""
    if hint.best is not None:
        basis = " and ".join(hint.used) if hint.used else "no signal: the last epoch"
        head = (f"<p class='train-lora-best'><b>Recommended: epoch {hint.best}</b> "
                f"<small>(based on {html.escape(basis)})</small></p>")
    return f"<div class='train-lora-hint'>{head}<p>{html.escape(hint.explanation)}</p></div>"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:     # Pillow < 10.1
        return ImageFont.load_default()


def _polyline(draw, values: list[float], box: tuple[int, int, int, int], colour: str) -> tuple[float, float]:
    left, top, right, bottom = box
    finite = [v for v in values if v == v and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi - lo < 1e-12:
        hi = lo + 1.0
    n = max(1, len(values) - 1)
    points = [(left + (right - left) * i / n, bottom - (bottom - top) * (v - lo) / (hi - lo))
              for i, v in enumerate(values) if v == v and math.isfinite(v)]
    if len(points) == 1:
        points = points * 2
    if points:
        draw.line(points, fill=colour, width=2)
    return lo, hi


def loss_chart(losses: list[float], lrs: list[float], width: int = 640, height: int = 260) -> Image.Image:
    """Loss (blue, left scale) and learning rate (orange, right scale) per step."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font(12)
    box = (56, 24, width - 64, height - 28)
    draw.rectangle(box, outline="#999999")
    if not losses:
        draw.text((box[0] + 10, height // 2), "The loss appears here once training starts", fill="#666666",
                  font=font)
        return image
    lo, hi = _polyline(draw, losses, box, "#1f77b4")
    lr_lo, lr_hi = _polyline(draw, lrs, box, "#ff7f0e") if lrs else (0.0, 0.0)
    draw.text((4, box[1] - 2), f"{hi:.3f}", fill="#1f77b4", font=font)
    draw.text((4, box[3] - 10), f"{lo:.3f}", fill="#1f77b4", font=font)
    draw.text((box[2] + 4, box[1] - 2), f"{lr_hi:.1e}", fill="#ff7f0e", font=font)
    draw.text((box[2] + 4, box[3] - 10), f"{lr_lo:.1e}", fill="#ff7f0e", font=font)
    draw.text((box[0], 4), f"loss (blue) and learning rate (orange) over {len(losses)} steps", fill="black",
              font=font)
    draw.text((box[0], box[3] + 8), "step 1", fill="#666666", font=font)
    draw.text((box[2] - 60, box[3] + 8), f"step {len(losses)}", fill="#666666", font=font)
    return image
