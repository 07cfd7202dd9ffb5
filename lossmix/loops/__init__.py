"""The engine in any training loop: the term logger every loop shares and the adapters.

- :class:`LoopLogger`: per-term logging for a hand-written PyTorch loop or Lightning
  Fabric (``update``/``flush``/``end_epoch``/``finish``), on the buffering core
  (:mod:`lossmix.loops.term_log`) the Lightning ``TermLogger`` uses too;
- :func:`bind_mix`, :func:`mix_step_end`, :func:`mix_epoch_end`: a ``weighting:`` or
  ``aggregation:`` node's calls around the optimizer;
- :mod:`lossmix.loops.hf`: the Hugging Face ``Trainer`` (``pip install lossmix[hf]``).
"""

from lossmix.loops.loop_logger import LoopLogger
from lossmix.loops.loss_plot import plot_loss_curves
from lossmix.loops.mix_hooks import bind_mix, mix_epoch_end, mix_step_end
from lossmix.loops.sinks import CsvSink
from lossmix.loops.term_summary import print_summary, term_summary

__all__ = [
    "CsvSink",
    "LoopLogger",
    "bind_mix",
    "mix_epoch_end",
    "mix_step_end",
    "plot_loss_curves",
    "print_summary",
    "term_summary",
]
