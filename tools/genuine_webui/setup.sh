#!/usr/bin/env bash
# Prepare a genuine AUTOMATIC1111 WebUI v1.10.1 on a CPU-only, offline machine (PyPI reachable) with
# Train LoRA installed, for tools/genuine_webui_check.py. Idempotent: run it again after a failure.
#
#   bash tools/genuine_webui/setup.sh GENUINE_DIR
#
# Expects GENUINE_DIR/webui to hold the WebUI at tag v1.10.1 (82a973c0) with its repositories/ checked
# out at the commits pinned in modules/launch_utils.py (stable-diffusion-stability-ai cf1d67a6,
# generative-models 45c443b3, k-diffusion ab527a9a, BLIP 48211a15, stable-diffusion-webui-assets
# 6f7db241), and GENUINE_DIR/src/CLIP to hold openai/CLIP at d50d76da. Then it makes GENUINE_DIR/venv
# (never the project's .venv), an offline Hugging Face cache, random SD1.5- and SDXL-size checkpoints,
# runs this repository's own .ci/setup (its .venv and .cache: the CLIP vocabulary the extension's
# tokenizer files come from), links it in as extensions/train-lora and runs our install.py the way
# the WebUI does. Set GENUINE_SKIP_SDXL=1 to skip the ~7 GB SDXL checkpoint (the check then skips its run).
set -euo pipefail
GENUINE=$(realpath "${1:?usage: setup.sh GENUINE_DIR}")
REPO=$(realpath "$(dirname "$0")/../..")
WEBUI="$GENUINE/webui"
PY="$GENUINE/venv/bin/python"
[ -f "$WEBUI/launch.py" ] || { echo "no WebUI at $WEBUI (see the header of this script)"; exit 2; }

# The extension's own set-up first: a fresh clone has no .cache/clip vocabulary, and the tab's tokenizer
# files are derived from it on first use.
bash "$REPO/.ci/setup"

[ -x "$PY" ] || python3.11 -m venv "$GENUINE/venv"
# torch first, the local CPU wheel: any other torch spec pulls gigabytes of CUDA packages.
"$PY" -m pip install -q torch==2.13.0
# torchvision has no CPU wheel for torch 2.13: an import-only stand-in (see its pyproject.toml).
"$PY" -m pip install -q "$REPO/tools/genuine_webui/torchvision_standin"
# Every later pip call holds torch, the stand-in and the WebUI's protobuf/numpy pins.
TORCH=$("$PY" -c "import importlib.metadata as m; print(m.version('torch'))")
printf 'torch==%s\ntorchvision==0.28.0\nprotobuf==3.20.0\nnumpy==1.26.2\n' "$TORCH" > "$GENUINE/constraints.txt"
# The WebUI's pins (a CRLF file), less torch (installed above), open-clip-torch (below, without its deps) and
# setuptools 69 (torch 2.13 needs >= 77; < 81 keeps pkg_resources, which lightning and CLIP import).
tr -d '\r' < "$WEBUI/requirements_versions.txt" | grep -v -E '^(torch|setuptools|open-clip-torch)([=<> ]|$)' \
  > "$GENUINE/requirements.txt"
printf 'setuptools>=77,<81\npydantic==1.10.*\n' >> "$GENUINE/requirements.txt"
"$PY" -m pip install -q -c "$GENUINE/constraints.txt" -r "$GENUINE/requirements.txt"
"$PY" -m pip install -q --no-deps open-clip-torch==2.20.0 timm==0.9.16
"$PY" -m pip install -q -c "$GENUINE/constraints.txt" ftfy sentencepiece
"$PY" -m pip install -q --no-deps --no-build-isolation "$GENUINE/src/CLIP"
"$PY" -m pip check

# The SD1 text encoder's config and tokenizer, offline, and a checkpoint to load.
HF_HOME="$GENUINE/hf" "$PY" "$REPO/tools/genuine_webui/make_hf_cache.py"
CKPT="$WEBUI/models/Stable-diffusion/sd15-random.safetensors"
[ -f "$CKPT" ] || "$PY" "$REPO/tools/genuine_webui/make_checkpoint.py" --webui "$WEBUI" --out "$CKPT"
XL_CKPT="$WEBUI/models/Stable-diffusion/sdxl-random.safetensors"
if [ -z "${GENUINE_SKIP_SDXL:-}" ] && [ ! -f "$XL_CKPT" ]; then
  "$PY" "$REPO/tools/genuine_webui/make_checkpoint.py" --webui "$WEBUI" --family sdxl --out "$XL_CKPT"
fi

# Install the extension as a user would, then run install.py as the WebUI runs it.
ln -sfn "$REPO" "$WEBUI/extensions/train-lora"
(cd "$WEBUI" && PYTHONPATH="$WEBUI" "$PY" extensions/train-lora/install.py)
"$PY" -m pip check

cat > "$GENUINE/start_webui.sh" <<EOF
#!/usr/bin/env bash
# The genuine WebUI, CPU only, offline, API on 127.0.0.1:7861; DEBUG shows the Lora loader's unmatched keys.
cd "$WEBUI"
export HF_HOME="$GENUINE/hf" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec "$PY" launch.py --skip-prepare-environment --skip-torch-cuda-test --no-download-sd-model \\
  --use-cpu all --no-half --precision full --api --port 7861 --loglevel DEBUG "\$@"
EOF
chmod +x "$GENUINE/start_webui.sh"
echo "ready: $GENUINE/start_webui.sh > $GENUINE/webui.log 2>&1 &"
