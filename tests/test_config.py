"""The config: one set of defaults (SchNet() and the CLI read them), a dict round trip, validation."""
from __future__ import annotations

import pytest

from pbcgnn.config import Config, DataConfig, ModelConfig
from pbcgnn.errors import InputError
from pbcgnn.model import ARCHITECTURES, PaiNN, SchNet


def test_schnet_defaults_are_the_configs():
    model, config = SchNet(), ModelConfig()
    assert config.architecture == "schnet"
    assert {k: v for k, v in model.hparams.items() if k != "max_z"} == config.model_kwargs()


def test_every_architecture_is_built_from_its_config():
    from pbcgnn.checkpoint import build_model

    for name, cls in ARCHITECTURES.items():
        model = build_model(Config(model=ModelConfig(architecture=name, hidden_channels=8, num_interactions=2)))
        assert type(model) is cls and model.architecture == name and model.hidden_channels == 8
    assert "num_filters" not in ModelConfig(architecture="painn").model_kwargs()
    assert isinstance(build_model(Config(model=ModelConfig(architecture="painn"))), PaiNN)
    with pytest.raises(InputError, match="expected a model in schnet, painn, found 'mace'"):
        ModelConfig(architecture="mace").validate()


def test_dict_round_trip_and_unknown_options():
    config = Config(data=DataConfig(paths=("a.data",), val_paths=("b.xyz",)), model=ModelConfig(cutoff=5.0))
    assert Config.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="unknown ModelConfig options: width"):
        Config.from_dict({"model": {"width": 3}})


def test_validation_names_the_option():
    with pytest.raises(InputError, match="expected at least one training data file"):
        Config().validate()
    with pytest.raises(InputError, match="freeze needs init_from"):
        Config(data=DataConfig(paths=("a.data",))).replace(transfer={"freeze": ("embedding",)}).validate()
