"""What the real-shape bench prints: per phase time and measured peak, then the checks against the goals.

- peak: the largest live tensor bytes on the training device in the phase (memory
  tracker), base weights included; on CUDA also torch.cuda.max_memory_allocated.
- added: the steps' peak minus the base weights on the device then: what training adds.
- lower bound: LoRA weights + gradients + optimizer state (counted) + the caches
  (measured when the steps start) + the activations autograd saves for backward
  (measured per step). With gradient checkpointing the tensors saved inside a
  checkpointed block's recompute are not seen, so the bound is low and the ratio high.
- estimate: training/memory.py's figure for the same run (the plan's and the WebUI's).
"""
from __future__ import annotations

from .options import BenchOptions

MIB = 2 ** 20
GIB = 2 ** 30
# the goals: SDXL 1024 px and SD1.5 512 px, batch 1, rank 16, half-precision weights, gradient
# checkpointing, VAE and text encoders offloaded after caching
PEAK_GOALS_GIB = {("sdxl", 1024): 8.0, ("sd15", 512): 3.0}
ADDED_GOAL = 1.15
ESTIMATE_GOAL = 0.10


def steps_peak(result) -> int:
    device = result.device
    return max((p.memory.peak_on(device) for p in result.figures.phases if p.name in ("first step", "steady steps")),
               default=0)


def cuda_steps_peak(result) -> int:
    return max((p.cuda_peak for p in result.figures.phases if p.name in ("first step", "steady steps")), default=0)


def added_bytes(result) -> int:
    return max(0, max(steps_peak(result), cuda_steps_peak(result)) - result.weights_on_device)


def lower_bound(result) -> int:
    f = result.figures
    return result.lora_state_bytes + f.cache_bytes + f.saved_activation_bytes


def measured_peak(result) -> int:
    return cuda_steps_peak(result) or steps_peak(result)


def print_case(opts: BenchOptions, result, wall_s: float) -> None:
    case, fake = result.case, result.case.fake
    print(f"\n{case.label(opts)}  ({'fake run: memory only' if fake else 'real run'}, {wall_s:.0f} s wall)")
    print(f"  {'phase':<16}{'time':>10}{'peak MiB':>11}{'base MiB':>11}{'CUDA MiB':>11}")
    for p in result.figures.phases:
        time_text = "-" if fake else f"{p.seconds:.2f} s"
        cuda = f"{p.cuda_peak / MIB:.0f}" if p.cuda_peak else "-"
        print(f"  {p.name:<16}{time_text:>10}{p.memory.peak_on(result.device) / MIB:>11.0f}"
              f"{p.memory.base.get(result.device, 0) / MIB:>11.0f}{cuda:>11}")
    if not fake and result.figures.steps > 1:
        print(f"  steady step: {result.figures.step_seconds():.2f} s ({result.figures.steps - 1} steps)")
    measured, bound = measured_peak(result), lower_bound(result)
    error = result.estimate_mb * MIB / measured - 1 if measured else float("nan")
    print(f"  estimate {result.estimate_mb:.0f} MiB vs measured {measured / MIB:.0f} MiB: {error:+.0%} "
          f"(goal within {ESTIMATE_GOAL:.0%})")
    ratio = added_bytes(result) / bound if bound else float("nan")
    note = " (GC: recompute not in the bound)" if case.checkpointing else ""
    print(f"  added {added_bytes(result) / MIB:.0f} MiB vs lower bound {bound / MIB:.0f} MiB (LoRA state "
          f"{result.lora_state_bytes / MIB:.0f}, caches {result.figures.cache_bytes / MIB:.0f}, saved activations "
          f"{result.figures.saved_activation_bytes / MIB:.0f}): {ratio:.2f}x (goal <= {ADDED_GOAL}){note}", flush=True)


def goal_case(opts: BenchOptions, result) -> bool:
    return ((opts.model, opts.px()) in PEAK_GOALS_GIB and result.case.batch == 1 and result.case.checkpointing
            and result.case.precision != "no" and opts.rank() == 16 and opts.offloads()
            and not opts.trains_text_encoder())      # the goals are for half-precision weights


def print_summary(opts: BenchOptions, results: list) -> None:
    print("\nsummary (MiB on the training device: peak during the steps, and of the whole run; [fake] = memory only)")
    print(f"  {'case':<52}{'steps':>7}{'run':>7}{'added':>7}{'bound':>7}{'ratio':>7}{'estim.':>8}{'s/step':>8}")
    for r in results:
        bound = lower_bound(r)
        step = "-" if r.case.fake else f"{r.figures.step_seconds():.1f}"
        run_peak = max(p.memory.peak_on(r.device) for p in r.figures.phases)
        print(f"  {r.case.label(opts):<52}{measured_peak(r) / MIB:>7.0f}{run_peak / MIB:>7.0f}"
              f"{added_bytes(r) / MIB:>7.0f}{bound / MIB:>7.0f}"
              f"{(added_bytes(r) / bound if bound else float('nan')):>7.2f}{r.estimate_mb:>8.0f}{step:>8}")
    for r in results:
        if goal_case(opts, r):
            goal = PEAK_GOALS_GIB[(opts.model, opts.px())]
            peak = measured_peak(r) / GIB
            print(f"  goal: {r.case.label(opts)}: peak {peak:.2f} GiB (goal <= {goal:.0f} GiB) "
                  f"{'ok' if peak <= goal else 'MISSED'}")
