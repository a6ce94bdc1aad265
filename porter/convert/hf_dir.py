"""HF model directories: config.json and safetensors, as `from_pretrained` reads them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from porter.errors import PorterError
from porter.hf_config import installed_rope_spelling


def read_hf(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, state dict) of a directory `from_pretrained` reads."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise PorterError(f"{directory} has no config.json", file=str(directory),
                          construct="an HF model directory (config.json + model.safetensors)",
                          fix="pass the directory written by save_pretrained")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise PorterError(f"malformed config.json: {exc.msg}", file=str(config_path), construct="JSON",
                          found=f"line {exc.lineno} column {exc.colno}", fix="fix the JSON, or save the model again") from exc
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(load_file(str(path)))
    if not files:
        for path in sorted(directory.glob("pytorch_model*.bin")):
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    if not state:
        raise PorterError(f"{directory} holds no weights", file=str(directory),
                          construct="model.safetensors (or pytorch_model.bin)", found="none",
                          fix="pass the directory written by save_pretrained")
    return config, state


def write_hf(directory: Path, config: dict, state: dict[str, torch.Tensor], hf_class: str = "LlamaForCausalLM") -> Path:
    """Write config.json (through the transformers config class of `hf_class`) and model.safetensors."""
    import transformers
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_class = getattr(transformers, hf_class).config_class
    fields = {k: v for k, v in installed_rope_spelling(config).items() if k not in ("model_type",)}
    config_class(**fields).save_pretrained(str(directory))
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    return directory
