"""The per-layer error report of an extraction, LoRA merge or resize: printed and saved beside the output.

For each layer: the rank kept, the relative error ||D - up@down||_F / ||D||_F of
what was written (after clamping and after rounding to the save precision), and
the share of D's energy (squared Frobenius norm) the kept singular values carry.
The overall error weighs layers by their energy, so it is the relative error of
the whole change. Users can decide from it whether the approximation is good
enough instead of discovering it in images.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import fileio

FIELDS = ("layer", "shape", "rank", "relative_error", "energy_kept", "delta_norm", "method", "note",
          "input_rounding")


@dataclass
class LayerReport:
    layer: str                  # the LoRA module key, e.g. lora_unet_down_blocks_0_attentions_0_proj_in
    shape: str                  # the layer's weight shape, e.g. "320x320" or "320x320x3x3"
    rank: int                   # rank written (0: layer skipped)
    relative_error: float       # ||D - approx||_F / ||D||_F (0 for an unchanged layer)
    energy_kept: float          # kept singular values' share of ||D||_F^2
    delta_norm: float           # ||D||_F, the size of this layer's change
    method: str                 # lowrank, exact, product, concat or skipped
    note: str = ""
    # Expected size of the tuned weights' own fp16/bf16 rounding relative to ||D||: noise no low-rank
    # factor can hold, so a relative_error near it is the inputs' floor, not the SVD's doing.
    input_rounding: float = 0.0


@dataclass
class OpReport:
    operation: str                                   # "extract", "merge" or "resize"
    layers: list[LayerReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # decisions worth telling (text encoder kept or not, ...)
    settings: dict = field(default_factory=dict)

    def add(self, layer: LayerReport) -> None:
        self.layers.append(layer)

    @property
    def written(self) -> list[LayerReport]:
        return [x for x in self.layers if x.rank > 0]

    def overall_relative_error(self) -> float:
        """Relative Frobenius error of the whole change: sqrt(sum err_i^2 |D_i|^2 / sum |D_i|^2)."""
        total = sum(x.delta_norm ** 2 for x in self.written)
        if total <= 0.0:
            return 0.0
        return math.sqrt(sum((x.relative_error * x.delta_norm) ** 2 for x in self.written) / total)

    def overall_input_rounding(self) -> float:
        total = sum(x.delta_norm ** 2 for x in self.written)
        if total <= 0.0:
            return 0.0
        return math.sqrt(sum((x.input_rounding * x.delta_norm) ** 2 for x in self.written) / total)

    def worst(self) -> LayerReport | None:
        return max(self.written, key=lambda x: x.relative_error, default=None)

    def summary(self) -> dict:
        worst = self.worst()
        return {
            "operation": self.operation,
            "layers_written": len(self.written),
            "layers_skipped": len(self.layers) - len(self.written),
            "overall_relative_error": self.overall_relative_error(),
            "input_rounding_floor": self.overall_input_rounding(),
            "worst_layer": worst.layer if worst else "",
            "worst_relative_error": worst.relative_error if worst else 0.0,
            "notes": list(self.notes),
            "settings": dict(self.settings),
        }

    def to_json(self) -> str:
        return json.dumps({"summary": self.summary(), "layers": [asdict(x) for x in self.layers]}, indent=1)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for x in self.layers:
            writer.writerow(asdict(x))
        return buffer.getvalue()

    def format_text(self, max_rows: int = 12) -> str:
        """A short table: the worst layers first, then the totals."""
        rows = sorted(self.written, key=lambda x: x.relative_error, reverse=True)[:max_rows]
        lines = [f"{'layer':<72} {'rank':>4} {'rel.err':>9} {'energy':>8}  method"] if rows else []
        for x in rows:
            lines.append(f"{x.layer[:72]:<72} {x.rank:>4} {x.relative_error:>8.4%} {x.energy_kept:>7.3%}  {x.method}")
        if rows and len(self.written) > len(rows):
            lines.append(f"... {len(self.written) - len(rows)} more layers with smaller errors")
        s = self.summary()
        lines.append(f"{self.operation}: {s['layers_written']} layers written, {s['layers_skipped']} skipped; "
                     f"overall relative error {s['overall_relative_error']:.4%}")
        floor = s["input_rounding_floor"]
        if floor > 0.0:
            lines.append(f"of which the inputs' own rounding (fp16/bf16), which no LoRA can hold, is about {floor:.4%}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def report_paths(output: str | Path) -> tuple[Path, Path]:
    """Where the report of `output` goes: <stem>.report.json and <stem>.report.csv beside it."""
    output = Path(output)
    stem = output.with_suffix("")
    return stem.with_name(stem.name + ".report.json"), stem.with_name(stem.name + ".report.csv")


def save_report(report: OpReport, output: str | Path) -> tuple[Path, Path]:
    json_path, csv_path = report_paths(output)
    fileio.write_text(json_path, report.to_json())
    fileio.write_text(csv_path, report.to_csv())
    return json_path, csv_path


def relative_error(delta_energy: float, residual_energy: float) -> float:
    """sqrt(residual / delta), with an unchanged layer (delta 0) counting as exact."""
    if delta_energy <= 0.0:
        return 0.0 if residual_energy <= 0.0 else math.inf
    return math.sqrt(max(residual_energy, 0.0) / delta_energy)
