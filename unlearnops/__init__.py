"""unlearnops: forget requests -> LoRA unlearning -> 4-bit quantization -> gated, served models."""

__version__ = "0.1.0"
