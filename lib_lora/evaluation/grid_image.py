"""Compose labelled image grids (epochs across, weights down) with PIL only.

Used by the headless grid and the tab; the WebUI path can use its own
images.image_grid, but the layout and labels are decided here so both look alike.
"""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def labelled_grid(cells: list[list[Image.Image]], col_labels: list[str], row_labels: list[str],
                  title: str = "") -> Image.Image:
    """cells[row][col] -> one image with column labels on top and row labels on the left."""
    rows, cols = len(cells), max(len(r) for r in cells)
    w, h = cells[0][0].size
    font_size = max(10, min(24, w // 8))
    font = _font(font_size)
    left = max(60, int(font_size * 0.6 * max((len(s) for s in row_labels), default=4)) + 12)
    top = font_size * 2 + (font_size + 8 if title else 0)
    grid = Image.new("RGB", (left + cols * w, top + rows * h), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((8, 4), title, fill="black", font=font)
    for c, label in enumerate(col_labels):
        draw.text((left + c * w + 4, top - font_size - 6), label, fill="black", font=font)
    for r, label in enumerate(row_labels):
        draw.text((4, top + r * h + h // 2 - font_size // 2), label, fill="black", font=font)
        for c, img in enumerate(cells[r]):
            grid.paste(img.convert("RGB").resize((w, h)), (left + c * w, top + r * h))
    return grid
