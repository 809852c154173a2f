"""Sampling responses from a causal LM behind one interface (DESIGN.md §5).

Backends: vLLM (imported lazily; used only when importable AND a CUDA GPU is present) and
batched transformers `generate` with left padding. Both apply the tokenizer's chat template to
the paper's user prompt. `generate(prompts)` returns `samples_per_prompt` results per prompt,
prompt-major: results[i * s + j] is sample j of prompts[i].

A response is *truncated* when it used all `max_new_tokens` without an end-of-sequence token
(DESIGN §4: truncations are wrong and carry no decisions).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

BACKENDS = ("auto", "vllm", "transformers")


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings (paper: temperature 1.0, one sample, 8,192 tokens; DESIGN §5)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    samples_per_prompt: int = 1
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("max_new_tokens", "samples_per_prompt", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationResult:
    text: str
    n_tokens: int
    truncated: bool


class Generator(Protocol):
    config: GenerationConfig
    backend: str

    def generate(self, prompts: list[str]) -> list[GenerationResult]: ...


class GenerationError(RuntimeError):
    """A backend that cannot run here (message is one line, for the CLI)."""


def vllm_available() -> bool:
    """vLLM importable and a CUDA GPU present."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


class TransformersGenerator:
    """Batched `model.generate` with left padding and the chat template."""

    backend = "transformers"

    def __init__(self, model: Any, tokenizer: Any, config: GenerationConfig) -> None:
        from realmodel.models import prepare_tokenizer

        self.model = model
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.config = config
        self._calls = 0
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = sorted(set(eos))

    def chat_text(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def _generate_batch(self, prompts: Sequence[str]) -> list[GenerationResult]:
        import torch

        cfg = self.config
        enc = self.tokenizer(
            [self.chat_text(p) for p in prompts],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(self.model.device)
        kwargs: dict[str, Any] = {"do_sample": cfg.temperature > 0}
        if cfg.temperature > 0:
            # top_k=0 switches off transformers' default top-k of 50 (vLLM has none).
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=cfg.max_new_tokens,
                num_return_sequences=cfg.samples_per_prompt,
                eos_token_id=self.eos_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        results = []
        for ids in new:
            stop = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
            kept = ids if stop is None else ids[: stop + 1]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            truncated = stop is None and len(ids) >= cfg.max_new_tokens
            results.append(GenerationResult(text, len(kept), truncated))
        return results

    def generate(self, prompts: list[str]) -> list[GenerationResult]:
        import torch

        results: list[GenerationResult] = []
        for start in range(0, len(prompts), self.config.batch_size):
            # One seed per batch call: reproducible for a given batch composition.
            torch.manual_seed(self.config.seed * 1_000_003 + self._calls)
            self._calls += 1
            results.extend(self._generate_batch(prompts[start : start + self.config.batch_size]))
        return results


class VLLMGenerator:
    """vLLM offline inference (GPU only); the chat template is applied by vLLM's tokenizer."""

    backend = "vllm"

    def __init__(self, model_path: str, config: GenerationConfig) -> None:
        from vllm import LLM, SamplingParams

        self.config = config
        self.llm = LLM(model=str(model_path), seed=config.seed)
        self.tokenizer = self.llm.get_tokenizer()
        self.params = SamplingParams(
            n=config.samples_per_prompt,
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_new_tokens,
            seed=config.seed,
        )

    def generate(self, prompts: list[str]) -> list[GenerationResult]:
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        outputs = self.llm.generate(texts, self.params, use_tqdm=False)
        return [
            GenerationResult(o.text, len(o.token_ids), o.finish_reason == "length")
            for req in outputs
            for o in req.outputs
        ]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def make_generator(
    model: Any,
    config: GenerationConfig | None = None,
    backend: str = "auto",
    device: str = "auto",
    log: Callable[[str], None] = _stderr,
) -> Generator:
    """A generator for a model name/path or an in-memory (model, tokenizer) pair.

    backend "auto": vLLM when importable and a GPU is present, else transformers (the
    fallback is stated through `log`); "vllm" without either raises GenerationError.
    """
    config = config or GenerationConfig()
    if backend not in BACKENDS:
        raise GenerationError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    in_memory = isinstance(model, tuple)
    if backend == "vllm":
        if in_memory:
            raise GenerationError("the vLLM backend needs a model name or path, not a model")
        if not vllm_available():
            raise GenerationError(
                "backend vllm needs the vllm package and a CUDA GPU "
                "(pip install 'ds-study[vllm]' on a GPU machine); use --backend transformers"
            )
    if backend == "auto" and not in_memory:
        if vllm_available():
            backend = "vllm"
        else:
            log("vLLM unavailable (not installed or no CUDA GPU): using transformers generate")
    if backend == "vllm":
        from realmodel.models import resolve_model

        return VLLMGenerator(str(resolve_model(model)), config)
    if in_memory:
        hf_model, tokenizer = model
    else:
        from realmodel.models import load_model_and_tokenizer

        hf_model, tokenizer = load_model_and_tokenizer(model, device=device)
    return TransformersGenerator(hf_model, tokenizer, config)
