"""The rounding-cell projection keeps the RTN 4-bit codes of the source model bit for bit."""

import torch
from torch import nn

from unlearnops.rounding_cells import RoundingCellProjector, changed_code_fraction, rtn_codes


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 128)
        self.proj = nn.Linear(128, 256, bias=False)
        self.lm_head = nn.Linear(256, 16, bias=False)

    def forward(self, ids):
        return self.lm_head(self.proj(self.embed(ids)))


def _train_steps(model, projector, steps=20, lr=0.05):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    ids = torch.arange(16).repeat(4, 1)
    for _ in range(steps):
        loss = -nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten())  # ascent
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if projector:
            projector.project()


def _copy(model):
    clone = TwoLayer()
    clone.load_state_dict(model.state_dict())
    return clone


def test_rtn_codes_are_4bit_and_reconstruct_within_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(8, 256)
    packed = rtn_codes(weight, group_size=128)
    assert packed.codes.min() >= -8 and packed.codes.max() <= 7
    for row in packed.codes.reshape(8, 2, 128):
        for group in row:
            assert group.unique().numel() <= 16
    dequantized = (packed.codes.float() - packed.zero_point) * packed.scale
    error = (dequantized.reshape(8, 256) - weight).abs().reshape(8, 2, 128)
    assert torch.all(error <= packed.scale * 0.5 + 1e-6)


def test_projection_keeps_every_code_while_weights_move():
    torch.manual_seed(0)
    source = TwoLayer()
    model = _copy(source)
    projector = RoundingCellProjector(model, group_size=128)
    _train_steps(model, projector)
    moved = (model.proj.weight - source.proj.weight).abs().mean() / source.proj.weight.abs().mean()
    assert moved > 0.01  # the full-precision weights really changed
    assert changed_code_fraction(source, model, group_size=128) == 0.0
    before, after = rtn_codes(source.proj.weight, 128), rtn_codes(model.proj.weight, 128)
    assert torch.equal(before.codes, after.codes) and torch.equal(before.scale, after.scale)
    assert torch.equal(model.embed.weight, source.embed.weight)  # unquantized params frozen
    assert torch.equal(model.lm_head.weight, source.lm_head.weight)
    assert 0 < projector.pinned_fraction() < 1


def test_without_projection_codes_flip():
    torch.manual_seed(0)
    source = TwoLayer()
    model = _copy(source)
    _train_steps(model, None)
    assert changed_code_fraction(source, model, group_size=128) > 0.01
