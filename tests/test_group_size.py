"""The group size: one check for every place that quantizes with groups, and the automatic choice.

Real models have widths that 128 does not divide (SmolLM2-135M: 576); a tiny Llama of hidden 192
reproduces that (192 = 3 x 64) without the real model.
"""

from __future__ import annotations

import json

import pytest

from helpers import save_tiny_llama
from unlearnops.errors import UnlearnopsError
from unlearnops.quantize import quantize
from unlearnops.quantize.groups import group_size_for, resolve_group_size

TEXTS = [f"Person {i} lives in town {i % 7} and was born in {1950 + i}." for i in range(30)]


@pytest.fixture(scope="module")
def width_192(tmp_path_factory):
    """A Llama whose hidden size (192) 128 does not divide, 64 does; intermediate 384 (128 divides it)."""
    return save_tiny_llama(tmp_path_factory.mktemp("w192") / "model", TEXTS, hidden=192, intermediate=384, heads=3, max_positions=64)


@pytest.mark.parametrize(("widths", "expected"), [([128, 384], 128), ([576, 1536], 64), ([96, 288], 32), ([128, 256, 512], 128)])
def test_auto_is_the_largest_of_128_64_32_dividing_every_width(widths, expected):
    assert resolve_group_size(widths, None) == expected


def test_auto_with_no_fitting_size_names_the_widths_and_a_divisor():
    with pytest.raises(UnlearnopsError, match=r"--group-size: none of 128, 64, 32 divides .*widths \[48, 80\].*e\.g\. 16"):
        resolve_group_size([48, 80], None)


def test_a_given_size_is_kept_when_it_fits_and_refused_with_the_fitting_ones_when_not():
    assert resolve_group_size([576, 1536], 32) == 32
    with pytest.raises(UnlearnopsError, match=r"stop_group_size: 128 does not divide .*\[576\].*e\.g\. 64, 32, 16"):
        resolve_group_size([576, 1536], 128, field="stop_group_size")
    with pytest.raises(UnlearnopsError, match="positive integer"):
        resolve_group_size([128], 0)


def test_quantize_chooses_the_group_from_the_model_and_records_it(width_192, tmp_path, cli):
    manifest = quantize(width_192, "rtn-w4a16", tmp_path / "auto", show_progress=False)
    assert (manifest["group_size"], manifest["group_size_source"]) == (64, "auto")
    saved = json.loads((tmp_path / "auto" / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"]
    assert saved["weights"]["group_size"] == 64  # what vLLM and transformers will read
    assert json.loads((tmp_path / "auto" / "quantize.json").read_text())["group_size"] == 64
    given = quantize(width_192, "rtn-w4a16", tmp_path / "given", group_size=32, show_progress=False)
    assert (given["group_size"], given["group_size_source"]) == (32, "given")
    refused = cli("quantize", "--model", width_192, "--scheme", "rtn-w4a16", "--out", tmp_path / "q", "--group-size", 128)
    assert refused.exit_code == 1 and "--group-size: 128 does not divide" in refused.stderr and "64, 32" in refused.stderr
    assert not (tmp_path / "q").exists()


def test_library_schemes_record_their_own_grouping(width_192, tmp_path):
    manifest = quantize(width_192, "nf4", tmp_path / "nf4", show_progress=False)
    assert (manifest["group_size"], manifest["group_size_source"]) == (64, "library")


def test_unlearning_resolves_its_stop_group_with_the_same_check(width_192, tmp_path):
    from unlearnops.unlearn import UnlearnConfig
    from unlearnops.unlearn.trainer import with_group_sizes

    assert group_size_for(width_192, None) == 64
    resolved = with_group_sizes(width_192, UnlearnConfig(stop_on="quantized"))
    assert resolved.stop_group_size == 64
    assert with_group_sizes(width_192, UnlearnConfig()).stop_group_size is None  # not quantized: nothing to choose
    with pytest.raises(UnlearnopsError, match="stop_group_size: 128 does not divide"):
        with_group_sizes(width_192, UnlearnConfig(stop_on="quantized", stop_group_size=128))
    with pytest.raises(UnlearnopsError, match="simulate_rounding_cells: 128 does not divide"):
        with_group_sizes(width_192, UnlearnConfig(mode="full", simulate_rounding_cells=128))
