import subprocess
import sys

import pytest

from seats_fx.config import SeatsConfig


def test_defaults_are_valid_and_documented_values():
    cfg = SeatsConfig()
    assert cfg.video_retention == 0.1 and cfg.audio_retention == 0.1
    assert cfg.encoder_ratio_scale == 1.4 and cfg.window_temperature == 0.1 and cfg.window_seconds == 2.0
    assert cfg.encoder_ratio == {"video": pytest.approx(0.14), "audio": pytest.approx(0.14)}


def test_retention_sets_both_modalities():
    cfg = SeatsConfig(retention=0.25)
    assert cfg.video_retention == cfg.audio_retention == 0.25


@pytest.mark.parametrize("field,value,allowed", [
    ("retention", 1.5, "(0, 1]"), ("video_retention", 0.0, "(0, 1]"), ("audio_retention", -1, "(0, 1]"),
    ("video_retention", "0.1", "(0, 1]"), ("encoder_ratio_scale", 0.5, "[1, 100]"),
    ("late_block_layer", 1, ">= 2"), ("progressive_drop_layers", (5, 3), "strictly increasing"),
    ("progressive_drop_layers", (0, 3), ">= 1"), ("window_temperature", 0, "> 0"),
    ("strict", "yes", "a bool"), ("drop_growth", 0.5, "[1, 100]"),
])
def test_bad_value_names_field_range_and_value(field, value, allowed):
    with pytest.raises(ValueError) as err:
        SeatsConfig(**{field: value})
    message = str(err.value)
    assert f"SeatsConfig.{field}" in message and allowed in message and repr(value) in message


def test_drop_layers_must_precede_late_block():
    with pytest.raises(ValueError, match="late_block_layer=6"):
        SeatsConfig(progressive_drop_layers=(3, 6), late_block_layer=6)


def test_unknown_option_lists_known_ones():
    with pytest.raises(ValueError) as err:
        SeatsConfig.from_options({"retension": 0.1})
    assert "retension" in str(err.value) and "video_retention" in str(err.value)


def test_from_options_list_becomes_tuple_and_hash_is_stable():
    a = SeatsConfig.from_options({"progressive_drop_layers": [2, 3], "late_block_layer": 5})
    b = SeatsConfig(progressive_drop_layers=(2, 3), late_block_layer=5)
    assert a == b and a.stable_hash() == b.stable_hash()
    assert a.stable_hash() != SeatsConfig(progressive_drop_layers=(2, 4), late_block_layer=5).stable_hash()


def test_hash_is_the_same_in_another_process():
    code = "from seats_fx.config import SeatsConfig; print(SeatsConfig(retention=0.3).stable_hash())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == SeatsConfig(retention=0.3).stable_hash()


def test_config_is_frozen():
    with pytest.raises(Exception):
        SeatsConfig().video_retention = 0.5  # type: ignore[misc]
