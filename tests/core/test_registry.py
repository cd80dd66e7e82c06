from __future__ import annotations

import pytest

import localearn
from localearn import LocalLearner, create_learner, list_algorithms, register_algorithm
from localearn.errors import ConfigError
from localearn.registry import canonical_name
from localearn.run import check_options


def test_builtin_learners_and_aliases() -> None:
    names = list_algorithms()
    assert {"backprop", "mono_forward"} <= set(names)
    assert canonical_name("mf") == "mono_forward"
    assert canonical_name("BP") == "backprop"
    assert canonical_name("mono-forward") == "mono_forward"
    assert isinstance(create_learner("mf", arch="mlp:1x8", input_shape=(1, 8, 8)), LocalLearner)


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown algorithm 'nope'; valid names: .*mono_forward"):
        create_learner("nope")


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_algorithm
        class Dup(LocalLearner):
            name = "mono_forward"


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match=r"mono_forward has no option 'foo'"):
        check_options("mf", {"foo": 1})
    with pytest.raises(ConfigError, match=r"option prediction=1 must be a str"):
        check_options("mf", {"prediction": 1})
    check_options("mf", {"prediction": "sum", "input_head": True})


def test_bad_learner_options() -> None:
    with pytest.raises(ConfigError, match="prediction must be"):
        create_learner("mf", arch="mlp:1x8", input_shape=(1, 8, 8), prediction="mean")
    with pytest.raises(ConfigError, match="does not support schedule 'greedy'"):
        create_learner("bp", arch="mlp:1x8", input_shape=(1, 8, 8), schedule="greedy")


def test_entry_point_plugins_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party learner registered through the `localearn.algorithms` entry-point group."""
    import localearn.registry as reg

    loaded = []

    class FakeEP:
        def load(self) -> None:
            loaded.append(True)

    monkeypatch.setattr(reg, "_LOADED", False)
    monkeypatch.setattr(reg, "entry_points", lambda group: [FakeEP()] if group == "localearn.algorithms" else [])
    reg.list_algorithms()
    assert loaded == [True]
    assert localearn.list_algorithms()
