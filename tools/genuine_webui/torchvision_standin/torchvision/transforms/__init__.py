from torchvision._missing import module_getattr

__getattr__ = module_getattr(__name__)

from torchvision.transforms import functional  # noqa: E402,F401
from torchvision.transforms.functional import InterpolationMode, normalize  # noqa: E402,F401
