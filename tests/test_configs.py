"""Typed ``field=value`` parsing of dataclass configs (jmeta.training.configs)."""

import dataclasses

import pytest

from jmeta.algorithms import maml_rl
from jmeta.envs.mjx.config import WarehouseConfig
from jmeta.envs.tasks import Range
from jmeta.training import configs


@dataclasses.dataclass(frozen=True)
class Toy:
    """A toy config.

    Attributes:
      steps: how many steps,
        continued on a second line.
      lr, momentum: two fields documented at once.
      sizes: layer widths.
      span: a range.
      maybe: optional range.
      flag: a switch.
    """

    steps: int = 1
    lr: float = 0.1
    momentum: float = 0.9
    sizes: tuple[int, ...] = (8,)
    span: Range = (0.0, 1.0)
    maybe: Range | None = None
    flag: bool = False


def test_field_docs_read_the_attributes_section():
    docs = configs.field_docs(Toy)
    assert docs["steps"] == "how many steps, continued on a second line."
    assert docs["lr"] == docs["momentum"] == "two fields documented at once."
    # inherited docs: WarehouseConfig documents friction itself, MJXConfig documents horizon
    wh = configs.field_docs(WarehouseConfig)
    assert "floor/wheel friction" in wh["friction"] and "episode length" in wh["horizon"]


@pytest.mark.parametrize("text, expected", [
    ("steps=3", {"steps": 3}),
    ("lr=1e-3", {"lr": 0.001}),
    ("sizes=64,32", {"sizes": (64, 32)}),
    ("sizes=64x64", {"sizes": (64, 64)}),
    ("span=0.5:0.9", {"span": (0.5, 0.9)}),
    ("span=0.5,0.9", {"span": (0.5, 0.9)}),
    ("maybe=none", {"maybe": None}),
    ("maybe=0.7", {"maybe": 0.7}),
    ("maybe=1:2", {"maybe": (1.0, 2.0)}),
    ("flag=yes", {"flag": True}),
    ("flag=off", {"flag": False}),
    ("steps = 4", {"steps": 4}),
])
def test_parse_overrides_by_type(text, expected):
    assert configs.parse_overrides(Toy, [text]) == expected


@pytest.mark.parametrize("text, message", [
    ("steps=1.5", "steps: expected an int, got '1.5'"),
    ("lr=nan", "lr: expected a number, got 'nan'"),
    ("flag=2", "flag: expected true or false, got '2'"),
    ("span=1:2:3", "span: expected a range low:high, got '1:2:3'"),
    ("sizes=8,x", "sizes: expected a comma-separated list of an int"),
    ("stepz=1", "unknown config field 'stepz' (did you mean steps?)"),
    ("steps", "--set 'steps': expected field=value"),
])
def test_bad_overrides_name_the_field(text, message):
    with pytest.raises(configs.ConfigError) as err:
        configs.parse_overrides(Toy, [text])
    assert message in str(err.value)


def test_nested_tuples_from_the_command_line_and_yaml():
    # a schedule ((iteration, value), ...): ',' between pairs, ':' inside one; empty: none
    tp = tuple[tuple[int, float], ...]
    assert configs.coerce(tp, "400:0.01,600:3e-3", "s") == ((400, 0.01), (600, 0.003))
    assert configs.coerce(tp, "400:0.01", "s") == ((400, 0.01),)
    assert configs.coerce(tp, "", "s") == ()
    assert configs.coerce(tp, [[400, 0.01]], "s") == ((400, 0.01),)
    with pytest.raises(configs.ConfigError, match="s: expected a comma-separated list of "
                                                  "2-tuples a:b"):
        configs.coerce(tp, "400", "s")


def test_yaml_values_are_checked_too():
    assert configs.typed_mapping(Toy, {"sizes": [4, 4], "span": [0, 1]}) == {
        "sizes": (4, 4), "span": (0.0, 1.0)}
    with pytest.raises(configs.ConfigError, match="steps: expected an int, got True"):
        configs.typed_mapping(Toy, {"steps": True})


def test_help_table_of_a_real_config():
    rows = {r[0]: r for r in configs.help_table(maml_rl.Config)}
    assert rows["inner_lr"][1:3] == ("a number", "0.1") and "inner step size" in rows["inner_lr"][3]
    assert rows["num_steps"][1] == "an int or none"
