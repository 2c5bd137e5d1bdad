"""The WebUI's own DeepDanbooru and BLIP as captioners for a tagging run (lib_lora.tagging.captioner).

Each loads its model once per run (the WebUI downloads it on first use into
its models folder), captions every image, and on close moves it back to the
CPU exactly as the WebUI does after an interrogation (`stop()` / `unload()`,
which keep it on the GPU only when the user set "Keep models in VRAM").

DeepDanbooru: `tag_multi(img, force_disable_ranks=True)` between one
`start()` and one `stop()` (`tag()` would move the model to and from the GPU
for every image). Its threshold, order and `deepbooru_filter_tags` are the
WebUI's Interrogate settings; its backslash escapes are undone because our
filters, exclusions and the trainer expect plain tags.
BLIP: `load()`, `generate_caption(img)` per image, `unload()`. Not
`interrogate()`: that one calls shared.state.begin()/end() itself, which would
wipe the progress of our own job; and its CLIP "flavour" ranking is not a caption.
The caption sentence is one tag, so write modes, trigger word and exclusions apply.
Callers run these in a job that holds the WebUI (its queue lock: lib_lora/webui/host.py), like the
WebUI's own interrogate button.
"""
from __future__ import annotations

import logging
import re

from PIL import Image

from lib_lora.errors import TaggerError
from lib_lora.tagging.postprocess import TagFilter, filter_tags

log = logging.getLogger(__name__)
ESCAPED = re.compile(r"\\([\\()])")      # what modules.deepbooru.re_special escaped
CAPTIONERS = ("wd14", "deepdanbooru", "blip")     # TaggingConfig.captioner's names inside the WebUI


def _load_failed(what: str, err: Exception) -> TaggerError:
    log.exception("Train LoRA: loading the WebUI's %s failed", what)
    return TaggerError(f"The WebUI's {what} model could not be loaded ({type(err).__name__}: {str(err)[:160]})",
                       where=f"{what} (WebUI interrogator)",
                       fix="It is downloaded on first use: check the internet connection and the console, "
                           "or tag with WD14 instead")


def deepbooru_tags(text: str) -> list[str]:
    """`tag_multi`'s ', '-joined, maybe escaped output -> plain tags."""
    return [ESCAPED.sub(r"\1", t.strip()) for t in text.split(", ") if t.strip()]


class DeepDanbooruCaptioner:
    def __init__(self):
        from modules import deepbooru, devices
        self.interrogator = deepbooru.model
        try:
            self.interrogator.start()
        except Exception as err:
            self.close()
            raise _load_failed("DeepDanbooru", err) from None
        self.providers = {"DeepDanbooru": str(devices.device)}

    def caption(self, images: list[Image.Image], flt: TagFilter) -> list[list[str]]:
        return [filter_tags(deepbooru_tags(self.interrogator.tag_multi(img, force_disable_ranks=True)), flt)
                for img in images]

    def close(self) -> None:
        if getattr(self.interrogator, "model", None) is not None:
            self.interrogator.stop()


class BlipCaptioner:
    def __init__(self):
        from modules import devices, shared
        self.interrogator = shared.interrogator
        if shared.cmd_opts.lowvram or shared.cmd_opts.medvram:
            # As the WebUI's interrogate does: with --lowvram/--medvram the SD model makes room first.
            from modules import lowvram
            lowvram.send_everything_to_cpu()
            devices.torch_gc()
        try:
            self.interrogator.load()
        except Exception as err:
            self.close()
            raise _load_failed("BLIP", err) from None
        self.providers = {"BLIP": str(devices.device_interrogate)}

    def caption(self, images: list[Image.Image], flt: TagFilter) -> list[list[str]]:
        out = []
        for img in images:
            sentence = " ".join(str(self.interrogator.generate_caption(img)).split())
            out.append(filter_tags([sentence] if sentence else [], flt))
        return out

    def close(self) -> None:
        self.interrogator.unload()


def captioner_names() -> list[str]:
    """The tab's captioner choices inside the WebUI: WD14 (ours) first, then its interrogators."""
    return list(CAPTIONERS)


def make_captioner(name: str):
    """The captioner for TaggingConfig.captioner inside the WebUI; None for wd14 (the run builds it)."""
    if name == "deepdanbooru":
        return DeepDanbooruCaptioner()
    if name == "blip":
        return BlipCaptioner()
    return None
