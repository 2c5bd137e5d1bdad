"""Tools over state dicts: extract a LoRA from two checkpoints, merge LoRAs, resize a LoRA's rank.

Pure tensor math, one algorithm per file, no WebUI imports:
    extract.py           extract_lora(base, tuned, ExtractConfig) -> (tensors, report, family)
    merge_checkpoint.py  merge_into_checkpoint(base, loras, out, MergeConfig) -> report
    merge_loras.py       merge_loras(loras, MergeConfig, family) -> (tensors, report)   (concat or SVD)
    resize.py            resize_lora(tensors, ResizeConfig) -> (tensors, report)
    svd.py               rank rules, randomized SVD with exact fallback, exact SVD of a product
    blocks.py            17/26 (SD1/SD2) and 12/20 (SDXL) block-weight vectors
    report.py            the per-layer error report, printed and saved beside each output
    commands.py          the CLI entry points (add_*_args / run_*)
Checkpoints are read and written through lib_lora/checkpoint_io.py (lazy, read-only access and a
streaming safetensors writer), which models/ shares.
A checkpoint may be a .safetensors path, a tensors-only .ckpt, or any Mapping[str, Tensor]
such as the WebUI's loaded model's state_dict().
"""
