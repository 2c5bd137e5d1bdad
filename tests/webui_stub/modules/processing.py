"""Stand-in of modules/processing.py: txt2img on the loaded tiny model with a plain DDIM sampler.

Keeps the real flow where Train LoRA depends on it: reload_model_weights() first, `<lora:..>`
parsed out of the prompt and activated through extra_networks (which, with no LoRA in the
prompt, restores merged weights), conditioning through sd_model.get_learned_conditioning,
seeded noise, images decoded by the VAE, shared.state updated per step. Unlike the real one,
Processed also carries the sampled latents (tests measure learning in latent space), and
`processed_prompts` lists every prompt generated (the browser test asks the stand-in server
which prompts the grid sent through here)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from modules import devices, extra_networks, prompt_parser, sd_models, shared

processed_prompts: list[str] = []     # stand-in only, see above


@dataclass(repr=False)
class StableDiffusionProcessing:
    sd_model: object = None
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: str = ""
    prompt_for_display: str = None
    negative_prompt: str = ""
    styles: list = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str = None
    scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool = None
    tiling: bool = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict = None
    overlay_images: list = None
    eta: float = None
    do_not_reload_embeddings: bool = False
    denoising_strength: float = None
    ddim_discretize: str = None
    s_min_uncond: float = None
    s_churn: float = None
    s_tmax: float = None
    s_tmin: float = None
    s_noise: float = None
    override_settings: dict = None
    override_settings_restore_afterwards: bool = True
    sampler_index: int = None
    refiner_checkpoint: str = None
    refiner_switch_at: float = None
    token_merging_ratio: float = 0
    token_merging_ratio_hr: float = 0
    disable_extra_networks: bool = False
    firstpass_image: object = None
    comments: dict = None
    scripts: object = field(default=None, init=False)
    script_args: tuple = field(default=(), init=False)

    def __post_init__(self):
        if self.sd_model is None:
            self.sd_model = shared.sd_model

    def close(self):
        pass


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    denoising_strength: float = 0.75
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str = None
    hr_sampler_name: str = None
    hr_scheduler: str = None
    hr_prompt: str = ''
    hr_negative_prompt: str = ''
    force_task_id: str = None


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", all_seeds=None, infotexts=None):
        self.images, self.seed, self.info = images_list, seed, info
        self.prompt, self.negative_prompt = p.prompt, p.negative_prompt
        self.all_seeds = all_seeds or [seed]
        self.infotexts = infotexts or [info] * len(images_list)
        self.width, self.height = p.width, p.height

    def js(self):
        return "{}"


def _conditioning(sd_model, prompts, width, height, negative=False):
    batch = prompt_parser.SdConditioning(prompts, is_negative_prompt=negative, width=width, height=height)
    with devices.autocast():
        c = sd_model.get_learned_conditioning(batch)
    return c


def _latent_factor(sd_model) -> int:
    return 2 ** (len(sd_model.first_stage_model.encoder.down) - 1)


def _ddim_sample(p, sd_model, cond, uncond, shape, generator):
    alphas = torch.as_tensor(sd_model.alphas_cumprod).float().cpu()
    timesteps = torch.linspace(999, 0, p.steps).round().long()
    x = torch.randn(shape, generator=generator)
    shared.state.sampling_steps = p.steps
    for i, t in enumerate(timesteps):
        if shared.state.interrupted:
            break
        a_t = alphas[t]
        a_prev = alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0)
        both = torch.cat([x, x]).to(devices.device)
        cond_in = ({k: torch.cat([uncond[k], cond[k]]) for k in cond} if isinstance(cond, dict)
                   else torch.cat([uncond, cond]))
        with torch.no_grad():
            out = sd_model.apply_model(both, torch.full((both.shape[0],), int(t), device=devices.device), cond_in)
        out_uncond, out_cond = out.float().cpu().chunk(2)
        out = out_uncond + p.cfg_scale * (out_cond - out_uncond)
        if getattr(sd_model, "parameterization", "eps") == "v":
            eps, x0 = a_t.sqrt() * out + (1 - a_t).sqrt() * x, a_t.sqrt() * x - (1 - a_t).sqrt() * out
        else:
            eps = out
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        shared.state.sampling_step = i + 1
    return x


def process_images(p: StableDiffusionProcessing) -> Processed:
    processed_prompts.append(p.prompt)
    sd_models.reload_model_weights()
    sd_model = p.sd_model
    prompt, extra_data = extra_networks.parse_prompt(p.prompt)
    if not p.disable_extra_networks:
        extra_networks.activate(p, extra_data)
    if shared.state.job_count == -1:
        shared.state.job_count = p.n_iter
    factor = _latent_factor(sd_model)
    seed = p.seed if p.seed >= 0 else int(torch.randint(0, 2 ** 31, ()).item())
    images_out, latents_out = [], []
    for n in range(p.n_iter):
        prompts = [prompt] * p.batch_size
        cond = _conditioning(sd_model, prompts, p.width, p.height)
        uncond = _conditioning(sd_model, [p.negative_prompt] * p.batch_size, p.width, p.height, negative=True)
        generator = torch.Generator().manual_seed(seed + n)
        shape = (p.batch_size, 4, p.height // factor, p.width // factor)
        latents = _ddim_sample(p, sd_model, cond, uncond, shape, generator)
        latents_out.append(latents)
        with torch.no_grad():
            decoded = sd_model.decode_first_stage(latents.to(devices.device)).float().cpu()
        for image in ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy():
            images_out.append(Image.fromarray(np.ascontiguousarray(image)))
        shared.state.nextjob()
    if not p.disable_extra_networks:
        extra_networks.deactivate(p, extra_data)
    info = f"{p.prompt}\nSteps: {p.steps}, Sampler: DDIM, CFG scale: {p.cfg_scale}, Seed: {seed}"
    processed = Processed(p, images_out, seed, info, all_seeds=[seed + n for n in range(p.n_iter)])
    processed.latents = torch.cat(latents_out)   # stand-in only: lets tests measure in latent space
    return processed
