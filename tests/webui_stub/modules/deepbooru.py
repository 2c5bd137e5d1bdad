"""Stand-in of modules/deepbooru.py: `model = DeepDanbooru()` with load/start/stop/tag/tag_multi.

Same names, signatures and option handling as the WebUI's (threshold, ranks,
alphabetical order, spaces, escaping, filtered tags; `rating:` tags skipped);
the network is deepbooru_model's stand-in and nothing is downloaded.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from modules import deepbooru_model, devices, shared

re_special = re.compile(r'([\\()])')


class DeepDanbooru:
    def __init__(self):
        self.model = None
        self.load_count = 0       # stand-in only: how often the weights were "read from disk"

    def load(self):
        if self.model is not None:
            return
        self.load_count += 1
        self.model = deepbooru_model.DeepDanbooruModel()
        self.model.eval()
        self.model.to(devices.cpu, devices.dtype)

    def start(self):
        self.load()
        self.model.to(devices.device)

    def stop(self):
        if not shared.opts.interrogate_keep_models_in_memory:
            self.model.to(devices.cpu)
            devices.torch_gc()

    def tag(self, pil_image):
        self.start()
        res = self.tag_multi(pil_image)
        self.stop()
        return res

    def tag_multi(self, pil_image, force_disable_ranks=False):
        threshold = shared.opts.interrogate_deepbooru_score_threshold
        include_ranks = shared.opts.interrogate_return_ranks and not force_disable_ranks
        pic = pil_image.convert("RGB").resize((512, 512))
        a = np.expand_dims(np.array(pic, dtype=np.float32), 0) / 255
        with torch.no_grad():
            y = self.model(torch.from_numpy(a))[0].numpy()
        probability = {t: p for t, p in zip(self.model.tags, y) if p >= threshold and not t.startswith("rating:")}
        if shared.opts.deepbooru_sort_alpha:
            tags = sorted(probability)
        else:
            tags = [t for t, _ in sorted(probability.items(), key=lambda x: -x[1])]
        filtered = {x.strip().replace(' ', '_') for x in shared.opts.deepbooru_filter_tags.split(",")}
        res = []
        for tag in [t for t in tags if t not in filtered]:
            text = tag.replace('_', ' ') if shared.opts.deepbooru_use_spaces else tag
            if shared.opts.deepbooru_escape:
                text = re.sub(re_special, r'\\\1', text)
            res.append(f"({text}:{probability[tag]:.3f})" if include_ranks else text)
        return ", ".join(res)


model = DeepDanbooru()
