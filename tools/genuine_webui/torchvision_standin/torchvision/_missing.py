"""Placeholders: any name the WebUI's dependencies import resolves, and fails loudly only when used."""


class _MissingMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return cls          # InterpolationMode.BICUBIC-style chains at import time

    def __call__(cls, *args, **kwargs):
        raise NotImplementedError(f"torchvision stand-in: {cls.__qualname__} is not available on this machine")


def missing(name: str) -> type:
    return _MissingMeta(name, (), {"__qualname__": name})


def module_getattr(module_name: str):
    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return missing(f"{module_name}.{name}")
    return __getattr__
