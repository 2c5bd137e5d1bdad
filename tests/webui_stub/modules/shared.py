"""Stand-in of modules/shared.py: opts, cmd_opts, state, and the lazily loading `sd_model` property."""
from __future__ import annotations

import sys
import types

from modules import devices, paths_internal, shared_cmd_options, shared_options, shared_state
from modules.options import OptionHTML, OptionInfo, Options, options_section  # noqa: F401
from modules.paths_internal import (  # noqa: F401
    data_path, extensions_builtin_dir, extensions_dir, models_path, script_path, sd_configs_path,
)

cmd_opts = shared_cmd_options.cmd_opts
parallel_processing_allowed = True
styles_filename = []
hide_dirs = {"visible": not cmd_opts.hide_ui_dir_config}
demo = None
device = devices.device
weight_load_location = None if cmd_opts.lowram else "cpu"
state = shared_state.State()
options_templates = shared_options.options_templates
opts = Options(options_templates, shared_options.restricted_opts)
hf_endpoint = "https://huggingface.co"
total_tqdm = None
mem_mon = types.SimpleNamespace(disabled=True, monitor=lambda: None, stop=lambda: {})
settings_components = {}
tab_names = []


def natural_sort_key(s, regex=None):
    return s


class Shared(types.ModuleType):
    """Like modules/shared_items.Shared: `sd_model` reads/writes sd_models.model_data."""

    @property
    def sd_model(self):
        import modules.sd_models
        return modules.sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models
        modules.sd_models.model_data.set_sd_model(value)


sys.modules[__name__].__class__ = Shared

# Set at start-up in the WebUI (shared_init.initialize and modelloader.load_upscalers); here once the
# module is complete, because both modules read shared.
from modules import interrogate as _interrogate, upscaler as _upscaler  # noqa: E402

interrogator = _interrogate.InterrogateModels("interrogate")
sd_upscalers = [data for cls in (_upscaler.UpscalerNone, _upscaler.UpscalerLanczos, _upscaler.UpscalerNearest)
                for data in cls().scalers]
