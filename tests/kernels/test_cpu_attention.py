"""The compiled small-head CPU attention kernel: exact against PyTorch's SDPA, thread-count
independent, refused where it cannot run, and built once into its cache (or refused with a reason).
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lib_lora.kernels import build, cpu_attention


def projections(batch: int, queries: int, keys: int, heads: int, head_size: int, seed: int = 0):
    """q, k, v laid out as linear-layer outputs: (batch, tokens, heads * head_size), leaf tensors."""
    gen = torch.Generator().manual_seed(seed)
    width = heads * head_size
    shapes = [(batch, queries, width), (batch, keys, width), (batch, keys, width)]
    return [(torch.randn(s, generator=gen) * 1.5).requires_grad_() for s in shapes]


def sdpa(q, k, v, heads: int) -> torch.Tensor:
    batch, head_size = q.shape[0], q.shape[-1] // heads
    split = [t.view(batch, -1, heads, head_size).transpose(1, 2) for t in (q, k, v)]
    return F.scaled_dot_product_attention(*split).transpose(1, 2).reshape(q.shape)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).detach().abs().max() / expected.detach().abs().max())


def out_and_grads(fn, q, k, v, grad_out):
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


CASES = {  # (queries, keys): self-attention with ragged key blocks, cross-attention on 77 tokens
    "self_1000": (1000, 1000), "self_37": (37, 37), "cross_77": (96, 77),
}


@pytest.mark.parametrize("head_size", [4, 8])
@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_sdpa_outputs_and_gradients(kernel, case, head_size):
    queries, keys = CASES[case]
    heads = 3
    q, k, v = projections(2, queries, keys, heads, head_size)
    assert kernel.runs_on(q, k, v, heads)
    grad_out = torch.randn(2, queries, heads * head_size, generator=torch.Generator().manual_seed(1))
    mine = out_and_grads(lambda *t: kernel.attention(*t, heads, head_size ** -0.5), q, k, v, grad_out)
    ref = out_and_grads(lambda *t: sdpa(*t, heads), q, k, v, grad_out)
    for name, a, b in zip(("out", "dq", "dk", "dv"), mine, ref):
        assert a.shape == b.shape
        assert rel_err(a, b) < 1e-5, f"{name}: {rel_err(a, b):.2e}"


def test_kernel_under_no_grad_gives_the_sdpa_output(kernel):
    q, k, v = projections(2, 50, 77, 4, 8)
    with torch.no_grad():
        out = kernel.attention(q, k, v, 4, 8 ** -0.5)
        ref = sdpa(q, k, v, 4)
    assert not out.requires_grad
    assert rel_err(out, ref) < 1e-5


def test_kernel_takes_non_contiguous_projections(kernel):
    # Slices of one fused projection, as some attention layers produce q, k and v.
    gen = torch.Generator().manual_seed(2)
    fused = torch.randn(2, 40, 3 * 16, generator=gen).requires_grad_()
    q, k, v = fused.split(16, dim=-1)
    assert not q.is_contiguous()
    grad_out = torch.randn(2, 40, 16, generator=gen)
    mine = torch.autograd.grad(kernel.attention(q, k, v, 4, 0.5), fused, grad_out)[0]
    ref = torch.autograd.grad(sdpa(q, k, v, 4), fused, grad_out)[0]
    assert rel_err(mine, ref) < 1e-5


def test_results_do_not_depend_on_the_thread_count(kernel):
    q, k, v = projections(2, 200, 77, 3, 8, seed=4)   # 6 heads: split across 2 threads
    grad_out = torch.randn(2, 200, 24, generator=torch.Generator().manual_seed(5))
    run = lambda: out_and_grads(lambda *t: kernel.attention(*t, 3, 8 ** -0.5), q, k, v, grad_out)  # noqa: E731
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(2)
        double = run()
        # the kernel shares torch's OpenMP runtime, so it follows torch's thread count
        assert kernel.threads() == 2
    finally:
        torch.set_num_threads(before)
    for a, b in zip(single, double):
        assert torch.equal(a, b)


def test_runs_on_refuses_what_the_kernel_does_not_cover(kernel):
    q, k, v = projections(2, 10, 12, 2, 8)
    assert kernel.runs_on(q, k, v, 2)
    refused = {
        "fp64": [t.double() for t in (q, k, v)],
        "fp16": [t.half() for t in (q, k, v)],
        "head size 16": [q, k, v],   # 16 channels as one head
        "4-D input": [t.unsqueeze(0) for t in (q, k, v)],
        "k and v differ": [q, k, v[:, :5]],
        "batch mismatch": [q, k[:1], v[:1]],
        "width not a multiple of heads": [q[..., :15], k[..., :15], v[..., :15]],
        "no keys": [q, k[:, :0], v[:, :0]],
        "meta device": [t.to("meta") for t in (q, k, v)],
    }
    heads = {"head size 16": 1, "width not a multiple of heads": 2}
    for name, tensors in refused.items():
        assert not kernel.runs_on(*tensors, heads.get(name, 2)), name


# ---- building and caching ----------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "kernels"
    monkeypatch.setenv("LIB_LORA_KERNEL_CACHE", str(folder))
    return folder


def needs_compiler():
    if build.find_compiler() is None:
        pytest.skip("no C compiler here")


def test_load_kernel_builds_once_into_the_cache(cache):
    needs_compiler()
    lib = build.load_kernel(cpu_attention.SOURCE)
    built = list(cache.iterdir())
    assert len(built) == 1 and built[0].name.startswith("small_head_attention-")
    assert hasattr(lib, "sha_forward") and hasattr(lib, "sha_backward")
    stamp = built[0].stat().st_mtime_ns
    build.load_kernel(cpu_attention.SOURCE)
    assert list(cache.iterdir()) == built              # no second build, no leftover temporary file
    assert built[0].stat().st_mtime_ns == stamp


def test_an_edited_source_is_rebuilt_not_served_stale(cache, tmp_path):
    needs_compiler()
    source = tmp_path / "answer.c"
    source.write_text("int answer(void) { return 42; }\n")
    assert build.load_kernel(source).answer() == 42
    source.write_text("int answer(void) { return 43; }\n")
    assert build.load_kernel(source).answer() == 43
    assert len(list(cache.glob("answer-*"))) == 2


def test_no_compiler_is_reported_as_such(cache, tmp_path, monkeypatch):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("CC", str(tmp_path / "no_such_cc"))
    monkeypatch.setenv("PATH", str(empty))
    assert build.find_compiler() is None
    with pytest.raises(build.KernelUnavailable, match="no C compiler found"):
        build.load_kernel(cpu_attention.SOURCE)
    assert not cache.exists() or not any(cache.iterdir())


def test_a_failing_compiler_leaves_no_library_behind(cache, monkeypatch):
    false = "/bin/false" if os.path.exists("/bin/false") else "/usr/bin/false"
    monkeypatch.setenv("CC", false)
    with pytest.raises(build.KernelUnavailable, match="failed on small_head_attention.c"):
        build.load_kernel(cpu_attention.SOURCE)
    assert not any(cache.iterdir())                    # the temporary output was removed


def test_an_unwritable_cache_says_where_to_point_it(tmp_path, monkeypatch):
    needs_compiler()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("LIB_LORA_KERNEL_CACHE", str(blocker / "kernels"))   # a folder under a file
    with pytest.raises(build.KernelUnavailable, match="LIB_LORA_KERNEL_CACHE"):
        build.load_kernel(cpu_attention.SOURCE)


def test_a_kernel_refusal_raises_instead_of_returning_garbage(kernel):
    # The C entry point checks the head size itself: a caller that skips runs_on gets an error.
    q, k, v = projections(1, 4, 4, 1, 16)
    with pytest.raises(RuntimeError, match="refused its input"):
        kernel.attention(q, k, v, 1, 0.25)
    assert isinstance(kernel._library, ctypes.CDLL)
