"""``benchmarks/gpu.py`` runs end to end: every part on tiny CPU inputs, and without CUDA it
says so in one line and exits 0 (its figures need a GPU; see ``tests/test_cuda.py``)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu


def test_every_part_runs_on_tiny_cpu_inputs(capsys):
    gpu.main(["--device", "cpu", "--small", "--backend", "eager"])
    table = capsys.readouterr().out
    for variant in (
        "fused",
        "plain",
        "compiled plain",
        "torchvision",
        "hand-written sum",
        "LossMix, compiled",
    ):
        assert f"| {variant} |" in table
    assert "focal bfloat16" in table and "3-term step" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_without_cuda_it_prints_one_line(capsys):
    gpu.main([])
    assert capsys.readouterr().out.count("\n") == 1
