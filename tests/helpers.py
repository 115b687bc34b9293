"""Builders shared by the tests: tiny Llamas with their own BPE tokenizer, and bench requests."""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def tiny_tokenizer(texts: list[str], *, vocab_size: int = 300, add_bos: bool = False):
    """A byte-level BPE tokenizer trained on `texts`, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    if add_bos:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", core.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def tiny_llama(tokenizer, *, hidden: int = 32, intermediate: int = 64, layers: int = 2, heads: int = 2, kv_heads: int | None = None,
               max_positions: int = 256, seed: int = 0):
    """A random-weight LlamaForCausalLM sized for tests (untied lm_head, as the bench's models)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads or heads, max_position_embeddings=max_positions,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny_llama(out: Path, texts: list[str], **sizes) -> Path:
    """Train a tokenizer on `texts`, build a tiny Llama, save both as a Hugging Face directory."""
    tokenizer = tiny_tokenizer(texts)
    tiny_llama(tokenizer, **sizes).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def json_files(root: Path) -> dict[str, bytes]:
    """Every JSON file under root by relative path, as bytes (to compare corpora byte for byte)."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*.json"))}


def write_bench_request(path: Path, request_id: str, *, model: str = "models:/unlearnops-bench@production", data: dict | None = None) -> Path:
    """A forget request on the embedded tiny bench (forget, retain and holdout from it)."""
    data = data or {"bench": "tiny"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "request_id": request_id,
        "received_at": "2026-11-02T09:30:00Z",
        "deadline": "2026-12-02T09:30:00Z",
        "requester": {"name": "Data Protection Office"},
        "legal_basis": {"basis": "gdpr-art17"},
        "model": model,
        "forget": data, "retain": data, "holdout": data,
    }))
    return path


def package_with_metric(dst: Path, module: Path) -> Path:
    """A copy of the unlearnops package with one more metric module in unlearnops/metrics/; put
    the returned directory first on PYTHONPATH (a subprocess) to use it."""
    import shutil

    package = Path(__file__).resolve().parents[1] / "unlearnops"
    shutil.copytree(package, dst / "unlearnops", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(module, dst / "unlearnops" / "metrics" / module.name)
    return dst
