"""Sampling responses from a causal LM behind one interface (DESIGN.md §5).

Backends: vLLM (imported lazily; used only when importable AND a CUDA GPU is present) and
batched transformers `generate` with left padding. Both apply the tokenizer's chat template to
the paper's user prompt. `generate(prompts)` returns `samples_per_prompt` results per prompt,
prompt-major: results[i * s + j] is sample j of prompts[i].

A response is *truncated* when it used all `max_new_tokens` without an end-of-sequence token
(DESIGN §4: truncations are wrong and carry no decisions).

Seeding. `generate(prompts, keys)` takes one key per prompt (evaluation passes the query id);
sample j of a prompt draws its randomness from `sample_seed(config.seed, key, j)` only, so a
response depends on (seed, key, sample, model), never on which other prompts share its batch,
the batch size, or how many batches ran before (a resumed evaluation regenerates exactly what
an uninterrupted run generates). Without keys, a prompt is keyed by its position in the call.
* transformers: `generate` has no per-row random generators, so sampling is done by
  `KeyedSampler`, the last logits processor: it applies the temperature and the nucleus
  (top-p) cut, draws one uniform per row from that row's own CPU `torch.Generator`, picks the
  token by inverse CDF, and hands `generate` a one-hot score that its greedy step takes. The
  draws are identical on CPU and GPU; the logits of one row can still differ in the last bits
  between batch compositions (padding), which moves a draw only when it falls within that
  rounding of a token boundary. torch's global RNG is never touched.
* vLLM: one `SamplingParams` per prompt with `seed=sample_seed(seed, key, 0)` (vLLM draws all
  samples of a request from that request's own generator).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from core.errors import ExpectedError

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
    """`keys` (optional for other generators): one stable key per prompt (module docstring)."""

    config: GenerationConfig
    backend: str

    def generate(self, prompts: list[str]) -> list[GenerationResult]: ...


def sample_seed(seed: int, key: str, sample: int) -> int:
    """The 63-bit seed of sample `sample` of the prompt keyed `key` (sha256: stable across
    processes and Python versions, unlike hash())."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{key}\x1f{int(sample)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _keys(prompts: Sequence[str], keys: Sequence[Any] | None) -> list[str]:
    if keys is None:
        return [str(k) for k in range(len(prompts))]
    if len(keys) != len(prompts):
        raise ValueError(f"{len(keys)} keys for {len(prompts)} prompts")
    return [str(k) for k in keys]


@functools.cache
def _keyed_sampler_class() -> type:
    import torch
    from transformers import LogitsProcessor

    class KeyedSampler(LogitsProcessor):
        """Multinomial sampling with one random generator per row (module docstring):
        temperature, then the nucleus of mass `top_p` (the most probable tokens whose
        mass before them is below `top_p`), then an inverse-CDF draw; returns scores that
        are 0 at the drawn token and -inf elsewhere, for `generate`'s greedy step."""

        def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
            self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
            self.temperature = float(temperature)
            self.top_p = float(top_p)

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if scores.shape[0] != len(self.generators):
                raise GenerationError(
                    f"KeyedSampler has {len(self.generators)} generators for "
                    f"{scores.shape[0]} rows"
                )
            probs = torch.softmax(scores.float() / self.temperature, dim=-1)
            if self.top_p < 1.0:
                top, order = probs.sort(dim=-1, descending=True)
                top = top.masked_fill(top.cumsum(dim=-1) - top >= self.top_p, 0.0)
                probs = torch.zeros_like(probs).scatter_(-1, order, top)
            cdf = probs.double().cumsum(dim=-1)
            u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64)
                           for g in self.generators]).to(cdf.device)
            token = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True)
            token = token.clamp_(max=scores.shape[-1] - 1)
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, token, 0.0)

    return KeyedSampler


def keyed_sampler(seeds: Sequence[int], temperature: float, top_p: float) -> Any:
    """A `KeyedSampler` logits processor (transformers imported on first use)."""
    return _keyed_sampler_class()(seeds, temperature, top_p)


class GenerationError(ExpectedError, RuntimeError):
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

    def _generate_batch(self, prompts: Sequence[str],
                        keys: Sequence[str]) -> list[GenerationResult]:
        import torch
        from transformers import LogitsProcessorList

        cfg = self.config
        s = cfg.samples_per_prompt
        # One row per sample, prompt-major (row i * s + j is sample j of prompt i): the steps
        # are greedy (at temperature > 0 the KeyedSampler has already drawn the token), and
        # greedy `generate` takes no num_return_sequences. No top-k (vLLM has none).
        enc = self.tokenizer(
            [self.chat_text(p) for p in prompts for _ in range(s)],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(self.model.device)
        kwargs: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None,
                                  "top_k": None}
        if cfg.temperature > 0:
            seeds = [sample_seed(cfg.seed, key, j) for key in keys for j in range(s)]
            kwargs["logits_processor"] = LogitsProcessorList(
                [keyed_sampler(seeds, cfg.temperature, cfg.top_p)])
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=cfg.max_new_tokens,
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

    def generate(self, prompts: list[str],
                 keys: Sequence[Any] | None = None) -> list[GenerationResult]:
        """`samples_per_prompt` results per prompt, prompt-major; sample j of a prompt is a
        function of (config.seed, its key, j) alone (module docstring)."""
        keys = _keys(prompts, keys)
        results: list[GenerationResult] = []
        size = self.config.batch_size
        for start in range(0, len(prompts), size):
            results.extend(self._generate_batch(prompts[start : start + size],
                                                keys[start : start + size]))
        return results


class VLLMGenerator:
    """vLLM offline inference (GPU only); the chat template is applied by vLLM's tokenizer."""

    backend = "vllm"

    def __init__(self, model_path: str, config: GenerationConfig) -> None:
        from vllm import LLM, SamplingParams

        self.config = config
        self.llm = LLM(model=str(model_path), seed=config.seed)
        self.tokenizer = self.llm.get_tokenizer()
        self._params = SamplingParams

    def _sampling_params(self, key: str) -> Any:
        cfg = self.config
        return self._params(
            n=cfg.samples_per_prompt,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_new_tokens,
            seed=sample_seed(cfg.seed, key, 0),
        )

    def generate(self, prompts: list[str],
                 keys: Sequence[Any] | None = None) -> list[GenerationResult]:
        params = [self._sampling_params(k) for k in _keys(prompts, keys)]
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        outputs = self.llm.generate(texts, params, use_tqdm=False)
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
