"""Issue 23, item 8 (app): values Torch or Lightning refuse deep inside, and YAML mistakes, are
one line naming the key and the fix."""

import pytest
import yaml
from omegaconf import OmegaConf

from lossmix.app.checks import one_line_error
from lossmix.app.compose import compose_config
from lossmix.app.nodes import check_app_values
from lossmix.app.runner import USER_ERRORS
from lossmix.errors import LossConfigError


@pytest.mark.parametrize(
    ("override", "least"),
    [("data.batch_size=0", 1), ("data.num_workers=-1", 0), ("trainer.accumulate_grad_batches=0", 1)],
)
def test_app_values_below_their_least_are_refused(override, least):
    cfg = compose_config([override])
    key, value = override.split("=")
    with pytest.raises(
        LossConfigError, match=f"^{key}={value} is not valid; .* >= {least} \\(e.g. {key}={least}\\)"
    ):
        check_app_values(cfg)


def test_shipped_values_pass():
    check_app_values(compose_config([]))


def test_a_duplicate_yaml_key_is_one_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("type: FocalLoss\ngamma: 2.0\ngamma: 1.0\n")
    with pytest.raises(yaml.YAMLError) as err:
        OmegaConf.load(path)
    assert isinstance(err.value, USER_ERRORS)
    assert one_line_error(err.value) == (
        f"{path}, line 3: the key 'gamma' is given twice in one mapping; keep one of them "
        "(YAML allows a key once)."
    )
