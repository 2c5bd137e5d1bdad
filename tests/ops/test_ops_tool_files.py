"""tool_files.py, the typed tools the CLI and the tab's Tools jobs call: progress per layer, a progress
callback that raises stops the tool with nothing written, and the result says what was written."""
from __future__ import annotations

import pytest
from safetensors.torch import load_file

from lib_lora.ops.config import ExtractConfig, MergeConfig, ResizeConfig
from lib_lora.ops.report import report_paths
from lib_lora.ops.tool_files import extract_to_file, merge_to_file, resize_to_file
from ops_fixtures import ATTN_K2, ATTN_Q, PROJ_IN, low_rank, make_lora, save, tiny_sd1

TARGETS = [ATTN_Q, ATTN_K2, PROJ_IN]


class Stop(Exception):
    pass


def _recorder(stop_at: int | None = None):
    seen = []

    def progress(done: int, total: int, what: str) -> None:
        seen.append((done, total))
        if stop_at is not None and done == stop_at:
            raise Stop
    return seen, progress


def _inputs(tmp_path):
    base = tiny_sd1()
    tuned = {k: v.clone() for k, v in base.items()}
    for i, name in enumerate(TARGETS):
        tuned[name] += low_rank(tuple(base[name].shape), 2, seed=i)
    lora = save(tmp_path / "a.safetensors", make_lora(TARGETS, rank=4, alpha=4.0))
    return save(tmp_path / "base.safetensors", base), save(tmp_path / "tuned.safetensors", tuned), lora


@pytest.mark.parametrize("tool", ["extract", "merge", "resize"])
def test_progress_per_layer_and_a_raising_callback_writes_nothing(tmp_path, tool):
    base, tuned, lora = _inputs(tmp_path)
    run = {"extract": lambda out, p: extract_to_file(base, tuned, out, ExtractConfig(dim=2), p),
           "merge": lambda out, p: merge_to_file([lora, lora], out, MergeConfig(mode="concat"), None, p),
           "resize": lambda out, p: resize_to_file(lora, out, ResizeConfig(dim=2), p)}[tool]
    stopped = tmp_path / "stopped.safetensors"
    seen, progress = _recorder(stop_at=1)
    with pytest.raises(Stop):
        run(stopped, progress)
    assert seen[-1][0] == 1 and seen[-1][1] > 1
    assert not stopped.exists() and not any(p.exists() for p in report_paths(stopped))

    out = tmp_path / "done.safetensors"
    seen, progress = _recorder()
    result = run(out, progress)
    total = seen[0][1]
    assert [d for d, _t in seen][:total] == list(range(total)) and total >= len(TARGETS)
    assert result.out == out and load_file(str(out)) and all(p.exists() for p in result.report_files)
    assert f"wrote {out}" in result.text() and result.report.operation == tool
