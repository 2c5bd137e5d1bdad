"""Build an offline Hugging Face cache entry for openai/clip-vit-large-patch14 (config + tokenizer, no weights).

The WebUI's SD1 text encoder is created from that hub id (the weights then come from the
checkpoint), so an offline machine needs only the ViT-L/14 config and the tokenizer files.
The tokenizer is built from the CLIP BPE file (ids identical to open_clip.tokenize).

    HF_HOME=/path/hf python tools/genuine_webui/make_hf_cache.py [--bpe .cache/clip/bpe_simple_vocab_16e6.txt.gz]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HUB_ID = "openai/clip-vit-large-patch14"
REVISION = "0" * 40     # any fixed snapshot name: refs/main points at it


def snapshot_dir(hf_home: Path) -> Path:
    repo = hf_home / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    folder = repo / "snapshots" / REVISION
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_cache(hf_home: Path, bpe: Path | None) -> Path:
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    sys.path.insert(0, str(REPO_ROOT))
    from lib_lora.models.tiny import build_clip_tokenizer

    folder = snapshot_dir(hf_home)
    tokenizer = build_clip_tokenizer(bpe)
    tokenizer.save_pretrained(folder)
    text = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                          max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
                          vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=1)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                              num_hidden_layers=24, image_size=224, patch_size=14, projection_dim=768,
                              hidden_act="quick_gelu")
    CLIPConfig.from_text_vision_configs(text, vision, projection_dim=768).save_pretrained(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf-home", default=os.environ.get("HF_HOME"), help="cache root (default: $HF_HOME)")
    parser.add_argument("--bpe", type=Path, default=None, help="bpe_simple_vocab_16e6.txt.gz (default: .cache/clip)")
    args = parser.parse_args()
    if not args.hf_home:
        parser.error("set HF_HOME or pass --hf-home")
    print(write_cache(Path(args.hf_home), args.bpe))
    return 0


if __name__ == "__main__":
    sys.exit(main())
