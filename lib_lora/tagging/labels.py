"""The tag list of a WD1.4 model: selected_tags.csv (tag_id,name,category,count).

Category 9 rows are the four ratings (first in the file), 0 general tags and 4
character tags; the model's outputs follow the CSV row order.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ..errors import TaggerError

RATING, GENERAL, CHARACTER = 9, 0, 4


@dataclass(frozen=True)
class TagLabels:
    names: tuple[str, ...]
    categories: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.names)

    def indices(self, category: int) -> list[int]:
        return [i for i, c in enumerate(self.categories) if c == category]


def read_labels(path: str | Path) -> TagLabels:
    path = Path(path)
    fix = "Download selected_tags.csv from the model's Hugging Face repo into the same folder as model.onnx"
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise TaggerError(f"Cannot read the tag list: {e.strerror or e}", where=str(path), fix=fix) from None
    except UnicodeDecodeError:
        raise TaggerError("The tag list is not a UTF-8 text file", where=str(path), fix=fix) from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [h.strip() for h in rows[0][:3]] != ["tag_id", "name", "category"]:
        raise TaggerError("The tag list does not start with the header tag_id,name,category", where=str(path),
                          fix=fix)
    names, categories = [], []
    for line_no, row in enumerate(rows[1:], start=2):
        try:
            names.append(row[1])
            categories.append(int(row[2]))
        except (IndexError, ValueError):
            raise TaggerError(f"Line {line_no} of the tag list is malformed: {row!r}", where=str(path),
                              fix=fix) from None
    if not names:
        raise TaggerError("The tag list is empty", where=str(path), fix=fix)
    return TagLabels(tuple(names), tuple(categories))
