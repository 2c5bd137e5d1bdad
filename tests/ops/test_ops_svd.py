"""svd.py: rank rules, randomized vs exact, the exact SVD of a product, clamping."""
from __future__ import annotations

import math

import pytest
import torch

from lib_lora.errors import LoraError
from lib_lora.ops.svd import RankRule, clamp_factors, select_rank, svd_of_product, truncated_svd


def _matrix_with_spectrum(s: list[float], m: int = 40, n: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, len(s), generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, len(s), generator=g))
    return u @ torch.diag(torch.tensor(s)) @ v.T


@pytest.mark.parametrize("method", ["lowrank", "exact"])
def test_rank_r_matrix_is_recovered(method):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(300, 4, generator=g) @ torch.randn(4, 200, generator=g)
    t = truncated_svd(a, RankRule(max_rank=4, method=method))
    assert t.method == method and t.rank == 4
    assert float((t.up @ t.down - a).norm() / a.norm()) < 1e-5
    assert t.energy_kept == pytest.approx(1.0, abs=1e-6)


def test_rank_rules_on_a_known_spectrum():
    s = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5])
    total = float((s ** 2).sum())
    assert select_rank(s, total, RankRule(max_rank=3)) == 3
    assert select_rank(s, total, RankRule(max_rank=5, dynamic="sv_ratio", param=4.0)) == 2   # s > 10/4
    # sv_fro: 10^2 / 130.25 = 0.768 of the energy; 125 / 130.25 = 0.96 reaches 0.95^2 = 0.9025
    assert select_rank(s, total, RankRule(max_rank=5, dynamic="sv_fro", param=0.95)) == 2
    # sv_cumulative: cumulative sums 10, 15, 17 of 18.5: 0.9 is first reached at rank 3
    assert select_rank(s, total, RankRule(max_rank=5, dynamic="sv_cumulative", param=0.9)) == 3
    assert select_rank(s, total, RankRule(max_rank=1, dynamic="sv_cumulative", param=0.9)) == 1  # capped
    assert select_rank(torch.zeros(4), 0.0, RankRule(max_rank=3)) == 1


def test_dynamic_rank_through_truncated_svd():
    a = _matrix_with_spectrum([10.0, 5.0, 2.0, 1.0, 0.5])
    t = truncated_svd(a, RankRule(max_rank=5, dynamic="sv_cumulative", param=0.9))
    assert t.method == "exact" and t.rank == 3
    lost = math.sqrt((1.0 + 0.25) / 130.25)
    assert float((t.up @ t.down - a).norm() / a.norm()) == pytest.approx(lost, rel=1e-4)


def test_bad_rules_are_refused():
    with pytest.raises(LoraError, match="sv_ratio"):
        RankRule(max_rank=4, dynamic="sv_ratio", param=0.5).check()
    with pytest.raises(LoraError, match="svd"):
        RankRule(max_rank=4, method="fast").check()


def test_randomized_failure_falls_back_to_exact(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("did not converge")
    monkeypatch.setattr(torch, "svd_lowrank", broken)
    a = _matrix_with_spectrum([3.0, 2.0, 1.0], m=200, n=150)
    t = truncated_svd(a, RankRule(max_rank=3, method="lowrank"))
    assert t.method == "exact" and float((t.up @ t.down - a).norm()) < 1e-4


def test_randomized_svd_is_seeded():
    a = torch.randn(300, 200, generator=torch.Generator().manual_seed(3))
    one = truncated_svd(a, RankRule(max_rank=4, method="lowrank", seed=5))
    two = truncated_svd(a, RankRule(max_rank=4, method="lowrank", seed=5))
    assert torch.equal(one.up, two.up) and torch.equal(one.down, two.down)


def test_svd_of_product_matches_the_exact_svd():
    g = torch.Generator().manual_seed(2)
    up, down = torch.randn(50, 6, generator=g), torch.randn(6, 70, generator=g)
    exact = torch.linalg.svdvals(up @ down)
    t = svd_of_product(up, down, RankRule(max_rank=4))
    assert torch.allclose(t.kept, exact[:4], rtol=1e-4)
    best = truncated_svd(up @ down, RankRule(max_rank=4, method="exact"))
    assert float((t.up @ t.down - best.up @ best.down).norm()) < 1e-3


def test_clamp_is_off_at_one_and_clips_otherwise():
    up, down = torch.linspace(-1, 1, 101).reshape(101, 1), torch.ones(1, 3)
    assert clamp_factors(up, down, 1.0)[0] is up
    clipped, _ = clamp_factors(up, down, 0.5)
    assert float(clipped.abs().max()) < 1.0
