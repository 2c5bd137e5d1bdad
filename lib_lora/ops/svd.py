"""Truncated SVD for extraction, merging and resizing: rank selection, randomized SVD, exact fallback.

Every matrix is upcast to fp32 first (half-precision SVD is either unsupported or
too inaccurate). `truncated_svd` uses `torch.svd_lowrank` (Halko et al. 2009)
when it is both cheaper and sufficient, and the exact `torch.linalg.svd`
otherwise or when the randomized one fails; `svd_of_product` decomposes a
matrix given as `up @ down` exactly, in O((m + n) r^2), through two QR
factorizations, which is what resizing and re-compressing LoRAs need.

Rank rules (the ones users know from sd-scripts' resize_lora.py):
  fixed          the requested rank
  sv_ratio       keep singular values larger than s[0] / param
  sv_fro         smallest rank whose kept energy sum(s_i^2) reaches param^2 of the total
  sv_cumulative  smallest rank whose sum(s_i) reaches param of the total sum
The total energy is the squared Frobenius norm of the matrix, known exactly
without the full spectrum, so sv_ratio and sv_fro work with the randomized SVD;
sv_cumulative needs every singular value and always uses the exact SVD.
Imports only torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LoraError

DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")
SVD_METHODS = ("auto", "lowrank", "exact")
# Extra random directions beyond the rank: the randomized SVD's error bound
# tightens quickly with oversampling, and 10 is the textbook minimum.
MIN_OVERSAMPLE = 10
# Below this smaller side an exact SVD costs about as much as a randomized one.
EXACT_BELOW = 64


@dataclass
class RankRule:
    """How many singular values to keep, at most `max_rank`."""
    max_rank: int
    dynamic: str = ""          # "" (fixed rank) or one of DYNAMIC_METHODS
    param: float = 0.0         # the dynamic rule's threshold
    method: str = "auto"       # one of SVD_METHODS
    niter: int = 4             # power iterations of the randomized SVD (2 is torch's default; 4 is closer to exact)
    seed: int = 0              # the randomized SVD is seeded so runs repeat bit for bit

    def check(self) -> None:
        if self.max_rank < 1:
            raise LoraError(f"Rank {self.max_rank} is too small", where="rank", fix="Use a rank of at least 1")
        if self.dynamic and self.dynamic not in DYNAMIC_METHODS:
            raise LoraError(f"Unknown dynamic rank method {self.dynamic!r}", where="dynamic",
                            fix="Use one of " + ", ".join(DYNAMIC_METHODS))
        if self.dynamic == "sv_ratio" and self.param <= 1.0:
            raise LoraError(f"sv_ratio needs a parameter above 1, got {self.param}", where="dynamic_param",
                            fix="Use e.g. 20: keep singular values above 1/20 of the largest")
        if self.dynamic in ("sv_fro", "sv_cumulative") and not 0.0 < self.param <= 1.0:
            raise LoraError(f"{self.dynamic} needs a parameter in (0, 1], got {self.param}",
                            where="dynamic_param", fix="Use e.g. 0.9 to keep 90%")
        if self.method not in SVD_METHODS:
            raise LoraError(f"Unknown SVD method {self.method!r}", where="svd",
                            fix="Use one of " + ", ".join(SVD_METHODS))


@dataclass
class Truncated:
    """A rank-r approximation `up @ down` of a matrix, with the numbers the report needs."""
    up: torch.Tensor            # (out, r) = U[:, :r] * s[:r]
    down: torch.Tensor          # (r, in)  = Vh[:r]
    kept: torch.Tensor          # (r,) singular values kept
    total_energy: float         # squared Frobenius norm of the input matrix
    method: str                 # "lowrank", "exact", "product" (svd_of_product) or "concat" (no SVD)

    @property
    def rank(self) -> int:
        return int(self.up.shape[1])

    @property
    def energy_kept(self) -> float:
        """Share of the squared Frobenius norm the kept singular values carry (1.0 for a zero matrix)."""
        if self.total_energy <= 0.0:
            return 1.0
        return min(1.0, float((self.kept.double() ** 2).sum()) / self.total_energy)


def select_rank(singular_values: torch.Tensor, total_energy: float, rule: RankRule) -> int:
    """Number of leading singular values to keep under `rule`, between 1 and `rule.max_rank`."""
    s = singular_values.double()
    cap = max(1, min(rule.max_rank, s.numel()))
    if s.numel() == 0 or float(s[0]) <= 1e-12:
        return 1  # a zero matrix: one (zero) component keeps the file's shapes valid
    if not rule.dynamic:
        return cap
    if rule.dynamic == "sv_ratio":
        rank = int((s > s[0] / rule.param).sum())
    elif rule.dynamic == "sv_fro":
        share = torch.cumsum(s ** 2, 0) / max(total_energy, float((s ** 2).sum()))
        rank = int(torch.searchsorted(share, torch.tensor(rule.param ** 2, dtype=share.dtype))) + 1
    else:  # sv_cumulative: s is the full spectrum here (see _needs_full_spectrum)
        share = torch.cumsum(s, 0) / s.sum()
        rank = int(torch.searchsorted(share, torch.tensor(rule.param, dtype=share.dtype))) + 1
    return max(1, min(rank, cap))


def _needs_full_spectrum(rule: RankRule) -> bool:
    return rule.dynamic == "sv_cumulative"


def _use_exact(shape: tuple[int, int], rule: RankRule, q: int) -> bool:
    if rule.method == "exact" or _needs_full_spectrum(rule):
        return True
    if rule.method == "lowrank":
        return False
    return min(shape) < max(EXACT_BELOW, 2 * q)


def _exact(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        return torch.linalg.svd(matrix, full_matrices=False)
    except RuntimeError:
        # A rare ill-conditioned difference fails to converge in fp32; fp64 is slower but robust.
        u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
        return u.float(), s.float(), vh.float()


def _randomized(matrix: torch.Tensor, q: int, rule: RankRule) -> tuple[torch.Tensor, ...] | None:
    """Randomized SVD, or None when it fails or returns non-finite values (the caller then goes exact)."""
    devices = [matrix.device] if matrix.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(rule.seed)
            u, s, v = torch.svd_lowrank(matrix, q=q, niter=rule.niter)
    except RuntimeError:
        return None
    if not (torch.isfinite(s).all() and torch.isfinite(u).all() and torch.isfinite(v).all()):
        return None
    return u, s, v.mT


def truncated_svd(matrix: torch.Tensor, rule: RankRule) -> Truncated:
    """Best rank-r approximation of a 2-D matrix under `rule`.

    Args:
        matrix: (out, in), any float dtype; computed in fp32 on its device.
    Returns:
        Truncated with up (out, r) and down (r, in) in fp32.
    """
    a = matrix.float()
    total = float(torch.linalg.vector_norm(a, dtype=torch.float64) ** 2)
    q = min(min(a.shape), rule.max_rank + max(MIN_OVERSAMPLE, rule.max_rank // 2))
    method, parts = "lowrank", None
    if not _use_exact(tuple(a.shape), rule, q):
        parts = _randomized(a, q, rule)
    if parts is None:
        method, parts = "exact", _exact(a)
    u, s, vh = parts
    rank = select_rank(s, total, rule)
    return Truncated(up=u[:, :rank] * s[:rank], down=vh[:rank].contiguous(), kept=s[:rank].clone(),
                     total_energy=total, method=method)


def svd_of_product(up: torch.Tensor, down: torch.Tensor, rule: RankRule) -> Truncated:
    """Exact truncated SVD of `up @ down` without forming it.

    With up = Qu Ru and down^T = Qd Rd (thin QR), up @ down = Qu (Ru Rd^T) Qd^T, so
    the SVD of the small (r x r) core gives the SVD of the product exactly.

    Args:
        up: (out, r), down: (r, in); any float dtype.
    """
    up32, down32 = up.float(), down.float()
    qu, ru = torch.linalg.qr(up32)
    qd, rd = torch.linalg.qr(down32.mT)
    cu, s, cvh = torch.linalg.svd(ru @ rd.mT, full_matrices=False)
    total = float((s.double() ** 2).sum())
    rank = select_rank(s, total, rule)
    new_up = (qu @ cu[:, :rank]) * s[:rank]
    new_down = (cvh[:rank] @ qd.mT).contiguous()
    return Truncated(up=new_up, down=new_down, kept=s[:rank].clone(), total_energy=total, method="product")


def clamp_factors(up: torch.Tensor, down: torch.Tensor, quantile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip both factors to the `quantile` of their joint absolute values (1.0: unchanged).

    sd-scripts clamps by default (0.99) to tame outliers for fp16; on a genuine low-rank
    change that costs about a tenth of the signal, so ours is off unless asked for."""
    if quantile >= 1.0:
        return up, down
    values = torch.cat([up.flatten(), down.flatten()]).abs()
    k = max(1, min(values.numel(), int(round(quantile * values.numel()))))
    limit = float(values.kthvalue(k).values)
    return up.clamp(-limit, limit), down.clamp(-limit, limit)
