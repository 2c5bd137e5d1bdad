"""Train LoRA: the library behind the WebUI tab and `python -m lib_lora`.

Importable without the WebUI: only lib_lora.webui touches `modules`, `gradio` or `launch`.
"""
__version__ = "0.1.0"
