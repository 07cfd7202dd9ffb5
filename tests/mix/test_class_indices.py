"""The CPU check of class-index targets: one reduction without an ignore label, a mask with one."""

from __future__ import annotations

import pytest
import torch

from lossmix import LossInputError
from lossmix.utilities.checks import check_class_indices


@pytest.mark.parametrize(
    "labels, ignore, background_ok",
    [([0, 1, 2], None, False), ([0, 3, 1], None, True), ([0, -100, 2], -100, False), ([], None, False)],
)
def test_valid_labels_pass(labels, ignore, background_ok):
    check_class_indices(
        "cls", torch.tensor(labels, dtype=torch.long), 3, ignore_index=ignore, background_ok=background_ok
    )


@pytest.mark.parametrize(
    "labels, ignore, background_ok, match",
    [
        ([0, 3, 1], None, False, r"must lie in \[0, 2\] .*got values \[3\]"),
        (
            [0, -1, 5],
            None,
            True,
            r"must lie in \[0, 3\] \(num_classes means background\).*got values \[-1, 5\]",
        ),
        ([0, -100, 7], -100, False, r"must lie in \[0, 2\] or -100 .*got values \[7\]"),
    ],
)
def test_out_of_range_labels_name_the_values(labels, ignore, background_ok, match):
    with pytest.raises(LossInputError, match=match):
        check_class_indices(
            "cls", torch.tensor(labels, dtype=torch.long), 3, ignore_index=ignore, background_ok=background_ok
        )
