"""Workarounds for loading a GGUF checkpoint with the pinned transformers 5.17.0, kept in this one place.

Each one names the upstream behaviour it works around and has a sentinel test in
tests/test_pretrained.py that fails on the day upstream no longer needs it (then delete the fix).
"""

from __future__ import annotations

import copy
from typing import Any


def fix_eos_token(tokenizer: Any, config: Any) -> Any:
    """A copy of the GGUF tokenizer whose end-of-sequence (and pad) token is the model's.

    transformers 5.17.0 builds the tokenizer of SmolLM2's GGUF with eos_token `<|im_start|>`
    (id 1, the BOS of a chat turn) while the same file's model config says eos_token_id 2
    (`<|im_end|>`), and with no pad token. Training documents would then end in a turn *start*,
    and greedy generation would stop at the wrong token. The model config is right: we take its
    id. Pad = EOS, as the config's pad_token_id says (pads are always masked).
    Sentinel: test_gguf_tokenizer_still_has_wrong_eos.
    """
    fixed = copy.deepcopy(tokenizer)
    eos_id = config.eos_token_id[0] if isinstance(config.eos_token_id, (list, tuple)) else config.eos_token_id
    eos = fixed.convert_ids_to_tokens(int(eos_id))
    fixed.eos_token = eos
    fixed.pad_token = eos
    return fixed


def savable_copy(model: Any) -> Any:
    """The same weights in a plain model that `save_pretrained` accepts.

    A model loaded with `gguf_file=` keeps `quantization_config: {quant_method: gguf}` although its
    weights are already dequantized to float32, and transformers 5.17.0's `save_pretrained` refuses
    it ("The model is quantized with QuantizationMethod.GGUF and is not serializable"). We rebuild
    the architecture from the config without that entry and copy the state dict (tied embeddings
    stay tied: from_config ties them, load_state_dict fills the shared tensor).
    Sentinel: test_gguf_model_still_refuses_save_pretrained.
    """
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    with init_empty_weights():  # parameters on the meta device (no second random init); buffers real
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()
