"""One WD1.4 tagger model: an onnxruntime session plus its tag list.

CUDA is asked for when onnxruntime offers it, but onnxruntime-gpu silently
falls back to CPU when the CUDA libraries are missing, so the provider shown
to the user is the one the session actually uses (`session.get_providers()`),
never the list of available ones (reference/deps.md item 6).
"""
from __future__ import annotations

import numpy as np

from ..errors import TaggerError
from .labels import TagLabels, read_labels
from .model_files import ModelFiles

DEFAULT_INPUT_SIZE = 448  # every published WD1.4 model; read from the model when it says


def _pick_providers(available: list[str]) -> list[str]:
    wanted = [p for p in ("CUDAExecutionProvider",) if p in available]
    return wanted + ["CPUExecutionProvider"]


class Wd14Model:
    """Runs a batch of prepared images (N, size, size, 3) BGR float32 to tag probabilities (N, K)."""

    def __init__(self, files: ModelFiles, providers: list[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise TaggerError("onnxruntime is not installed", where="tagger",
                              fix="pip install onnxruntime (or onnxruntime-gpu for CUDA, never both)") from None
        self.name = files.name
        self.labels: TagLabels = read_labels(files.tags_path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # a CUDA fallback is reported through active_provider, not log spam
        try:
            # Bytes, not a path: onnxruntime has failed on non-ASCII Windows paths.
            model_bytes = files.onnx_path.read_bytes()
            self.session = ort.InferenceSession(model_bytes, sess_options=options,
                                                providers=providers or _pick_providers(ort.get_available_providers()))
        except OSError as e:
            raise TaggerError(f"Cannot read the tagger model: {e.strerror or e}", where=str(files.onnx_path),
                              fix="Check the file exists and is readable") from None
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise TaggerError(f"The tagger model cannot be loaded: {str(e)[:200]}", where=str(files.onnx_path),
                              fix="Download model.onnx again; it may be incomplete") from None
        self._check_signature(files)

    def _check_signature(self, files: ModelFiles) -> None:
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4 or shape[3] not in (3, "3"):
            raise TaggerError(f"The model's input has shape {shape}, not (N, H, W, 3)", where=str(files.onnx_path),
                              fix="Use a WD1.4 tagger model (SmilingWolf wd-* v2 or v3)")
        self.input_size = shape[1] if isinstance(shape[1], int) else DEFAULT_INPUT_SIZE
        out = self.session.get_outputs()[0]
        n_out = out.shape[-1] if out.shape and isinstance(out.shape[-1], int) else None
        if n_out is not None and n_out != len(self.labels):
            raise TaggerError(f"The model predicts {n_out} tags but selected_tags.csv lists {len(self.labels)}",
                              where=str(files.tags_path), fix="Use the selected_tags.csv of the same model repo")

    @property
    def active_provider(self) -> str:
        return self.session.get_providers()[0]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        probs = self.session.run(None, {self.input_name: batch})[0]
        return np.asarray(probs, dtype=np.float32)
