"""The entry point: `train(cfg, model, hooks)`, one loop for every backend, talking to the model only
through its protocol.

train() checks the options once, plans the run (or takes the plan its caller already made, as the
WebUI does for its memory check), claims the output folder, attaches the network, and hands the rest
to a `Run` (run.py): caching latents, the epochs, a file per save-epoch, stop/pause/save-now, a clean
stop on NaN that keeps the last good epoch. The network is always detached at the end, so the model
comes back as it was. A pause stops at an optimizer-step boundary and hands control to the host's
PauseGate (pause.py): the WebUI's gives the model back for the pause, and the run then continues with
the same objects, exactly as if never paused. Data-parallel runs (torchrun / accelerate launch) shard
each global batch across ranks and average gradients (distributed.py).
"""
from __future__ import annotations

from pathlib import Path
import torch

from .. import options
from ..config import TrainConfig
from ..networks import create_network
from . import distributed as dist
from . import offload, saving
from .hooks import HookCaller, PauseGate, TrainHooks
from .loop_parts import prepare_model
from .memory import model_sizes
from .plan import TrainPlan, make_plan
from .run import Run, TrainResult

# the name tests/models/test_attention_processor.py calls the trainer's model set-up by
_prepare_model = prepare_model

Hooks = TrainHooks | list[TrainHooks] | tuple[TrainHooks, ...] | None


def plan_run(cfg: TrainConfig, model=None) -> TrainPlan:
    """The plan, with its memory estimate when the model is known."""
    return make_plan(cfg, model_sizes(cfg, model) if model is not None else None)


def check_options(cfg: TrainConfig) -> None:
    """Every option against its range and choices, and the combinations the loop cannot run; once
    per run, before anything is read or written."""
    options.validate(cfg)
    offload.check_offload(cfg)


def train(cfg: TrainConfig, model, hooks: Hooks = (), *, plan: TrainPlan | None = None, sampler=None,
          resume_dir: str | Path | None = None, pause_gate: PauseGate | None = None,
          dry_run: bool = False) -> TrainResult:
    """Run a training run; returns what was written and why it ended.

    plan: the plan_run(cfg, model) its caller already made (else it is made here);
    sampler: `sampler(network, sample_cfg, epoch) -> images`, every sample.every_n_epochs;
    resume_dir: the output folder of a run saved with its state, to continue it;
    pause_gate: where a paused run waits (default: in place, holding the model);
    dry_run: only plan and report the plan (no model is needed)."""
    check_options(cfg)
    caller = HookCaller(list(hooks) if isinstance(hooks, (list, tuple)) else [] if hooks is None else [hooks])
    plan = plan if plan is not None else plan_run(cfg, model)
    caller.on_plan(plan)
    caller.on_status(plan.summary())
    if dry_run:
        return TrainResult(plan)
    out_dir = Path(cfg.output.output_dir)
    # one run per output folder and name (CLI, tab and API all pass here); every write guarded
    with saving.claim_outputs(cfg, plan, out_dir, main_rank=dist.is_main()):
        out_dir.mkdir(parents=True, exist_ok=True)
        if dist.is_main():
            saving.write_run_config(cfg, out_dir)
        torch.manual_seed(cfg.training.seed)  # the LoRA's initial weights come from the seed
        network = create_network(model.network_targets(cfg.network.train_unet, cfg.network.train_text_encoder),
                                 cfg.network)
        network.attach()
        try:
            run = Run(cfg, model, network, plan, caller, out_dir, resume_dir=resume_dir, sampler=sampler,
                      gate=pause_gate)
            return run.fit()
        finally:
            network.detach()
            model.set_gradient_checkpointing(False)
