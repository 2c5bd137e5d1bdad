"""Report checks on the captions: missing or empty, junk tags, the trigger word,
very long tags, and the strongest tag associations.
"""
from __future__ import annotations

from .findings import Finding, finding_for_files
from .scan import Concept
from .tags import LONG_TAG_CHARS, is_junk_tag, split_tags, tag_key
from .tagstats import TagPair


def caption_presence_findings(concept: Concept) -> list[Finding]:
    items = concept.items
    missing = [i.path for i in items if i.caption_path is None]
    empty = [i.path for i in items if i.caption_path is not None and not i.caption]
    if missing and len(missing) == len(items):
        return [Finding("warning", "no_captions", f"No image has a caption: the folder name '{concept.name}' "
                        "is used as the prompt of every image (DreamBooth without captions)",
                        "Caption the images with `python -m lib_lora tag` for a more flexible LoRA",
                        [str(concept.folder)], len(items), concept.name)]
    out = []
    if missing:
        out.append(finding_for_files("warning", "missing_caption", f"{len(missing)} images have no caption file",
                                     "Tag them (`tag --write-mode skip` only fills the missing ones)",
                                     missing, concept.name))
    if empty:
        out.append(finding_for_files("warning", "empty_caption", f"{len(empty)} caption files are empty",
                                     "Tag them, or write the caption by hand", empty, concept.name))
    return out


def junk_findings(concept: Concept) -> list[Finding]:
    junk: dict[str, int] = {}
    long_tags: set[str] = set()
    files = []
    for item in concept.items:
        tags = split_tags(item.caption)
        found = [t for t in tags if is_junk_tag(t)]
        for t in found:
            junk[tag_key(t)] = junk.get(tag_key(t), 0) + 1
        long_tags |= {t for t in tags if len(t) > LONG_TAG_CHARS}
        if found:
            files.append(item.path)
    out = []
    if junk:
        listed = ", ".join(f"{t} ({n})" for t, n in sorted(junk.items(), key=lambda kv: -kv[1]))
        out.append(finding_for_files("warning", "junk_tags", f"Booru junk tags in {len(files)} captions: {listed}",
                                     "Remove them: `tags DIR remove " + ", ".join(sorted(junk)) + "`",
                                     files, concept.name))
    if long_tags:
        out.append(Finding("info", "long_tags", "Very long tags (often costume names): " +
                           "; ".join(sorted(long_tags)[:5]), "Replace them with plain descriptive tags",
                           [], len(long_tags), concept.name))
    return out


def trigger_findings(concept: Concept, trigger: str) -> list[Finding]:
    if not trigger.strip():
        return []
    key = tag_key(trigger)
    absent, not_first = [], []
    for item in concept.items:
        tags = [tag_key(t) for t in split_tags(item.caption)]
        if key not in tags:
            absent.append(item.path)
        elif tags[0] != key:
            not_first.append(item.path)
    out = []
    if absent:
        out.append(finding_for_files("warning", "trigger_missing", f"The trigger word '{trigger}' is missing "
                                     f"from {len(absent)} captions", f"Add it: `tags DIR add-trigger {trigger}`",
                                     absent, concept.name))
    if not_first:
        out.append(finding_for_files("info", "trigger_not_first", f"The trigger word is not the first tag in "
                                     f"{len(not_first)} captions, so keep_tokens will not keep it in place",
                                     f"Move it: `tags DIR front {trigger}`", not_first, concept.name))
    return out


def association_findings(pairs: list[TagPair], threshold: float = 0.8) -> list[Finding]:
    strong = [p for p in pairs if p.jaccard >= threshold]
    if not strong:
        return []
    text = "; ".join(f"{p.a} + {p.b} ({p.together}/{max(p.a_count, p.b_count)})" for p in strong[:5])
    return [Finding("info", "associations", f"Tags that almost always appear together will be learned as one: "
                    f"{text}", "If they should stay separate, add images that have one without the other; "
                    "if they are one trait, merge them (`tags DIR merge`)", [], len(strong))]
