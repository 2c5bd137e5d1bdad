"""Stand-in of modules/images.py: grids, grid annotations and save_image."""
from __future__ import annotations

import math
import os
from collections import namedtuple

from PIL import Image, ImageDraw


class GridAnnotation:
    def __init__(self, text='', is_active=True):
        self.text, self.is_active = text, is_active
        self.size = None


Grid = namedtuple("Grid", ["tiles", "tile_w", "tile_h", "image_w", "image_h", "overlap"])


def image_grid(imgs, batch_size=1, rows=None):
    if rows is None:
        rows = max(1, int(math.sqrt(len(imgs))))
    cols = math.ceil(len(imgs) / rows)
    w, h = imgs[0].size
    grid = Image.new('RGB', size=(cols * w, rows * h), color='black')
    for i, img in enumerate(imgs):
        grid.paste(img, box=(i % cols * w, i // cols * h))
    return grid


def draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin=0):
    """Adds a header row and a label column; the texts of active annotations are drawn."""
    pad_left = 0 if sum(len(x) for x in ver_texts) == 0 else width * 3 // 4
    pad_top = 0 if sum(len(x) for x in hor_texts) == 0 else height // 2
    result = Image.new("RGB", (im.width + pad_left, im.height + pad_top), "white")
    result.paste(im, (pad_left, pad_top))
    draw = ImageDraw.Draw(result)
    for col, texts in enumerate(hor_texts):
        draw.text((pad_left + col * width + 2, 2), " ".join(t.text for t in texts if t.is_active), fill="black")
    for row, texts in enumerate(ver_texts):
        draw.text((2, pad_top + row * height + 2), " ".join(t.text for t in texts if t.is_active), fill="black")
    return result


def save_image(image, path, basename, seed=None, prompt=None, extension='png', info=None, short_filename=False,
               no_prompt=False, grid=False, pnginfo_section_name='parameters', p=None, existing_info=None,
               forced_filename=None, suffix="", save_to_dirs=None):
    os.makedirs(path, exist_ok=True)
    name = forced_filename or f"{basename}{'-' if basename else ''}{seed if seed is not None else 0}{suffix}"
    fullfn = os.path.join(path, f"{name}.{extension}")
    image.save(fullfn)
    return fullfn, None
