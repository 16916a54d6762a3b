"""The parity helpers compare logits at the precision the models computed them in: a float64 parity check that
cast its logits to float32 first could not see a difference below float32's resolution at the logits' size
(1.5e-5 near 143, the 270M's largest logit), so a goal of 1e-5 could be neither met nor missed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from export.parity import causal_logits, max_abs_diff


class _Fixed(torch.nn.Module):
    """A stand-in causal LM whose logits are given (the helpers only call it and read `.logits`)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits)


def test_a_float64_difference_below_float32_resolution_is_measured() -> None:
    base = torch.full((1, 2, 4), 143.0, dtype=torch.float64)
    shifted = base.clone()
    shifted[0, 1, 2] += 2e-6  # below float32's spacing at 143 (1.5e-5): a float32 cast rounds it away
    assert float(shifted.float()[0, 1, 2]) == float(base.float()[0, 1, 2])
    batches = [{"input_ids": torch.zeros((1, 2), dtype=torch.long)}]
    first, second = causal_logits(_Fixed(base), batches), causal_logits(_Fixed(shifted), batches)
    assert first[0].dtype == torch.float64
    assert abs(max_abs_diff(first, second) - 2e-6) < 1e-9


def test_bfloat16_logits_compare_with_float64_ones_exactly() -> None:
    low = torch.tensor([[[1.0, 2.5, -3.0]]], dtype=torch.bfloat16)
    high = torch.tensor([[[1.0, 2.5, -3.0 + 1e-7]]], dtype=torch.float64)
    batches = [{"input_ids": torch.zeros((1, 1), dtype=torch.long)}]
    diff = max_abs_diff(causal_logits(_Fixed(low), batches), causal_logits(_Fixed(high), batches))
    assert abs(diff - 1e-7) < 1e-12
