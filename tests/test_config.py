"""Config: defaults <- preset <- overrides, validation, JSON round trip."""

import dataclasses
import datetime
import re

import pytest

import keras_vae
from keras_vae import config as config_lib
from keras_vae.config import Config, UsageError


def test_preset_then_overrides():
    config = config_lib.resolve("celeb_a", latent_dim=64, beta=None)
    # From the celeb_a preset.
    assert config.network == "conv"
    assert config.image_size == 64
    assert config.likelihood == "discretized_logistic"
    # The override wins; a None override (flag not given) keeps the preset.
    assert config.latent_dim == 64
    assert config.beta == 1.0
    # Untouched defaults.
    assert config.batch_size == Config().batch_size


def test_every_dataset_has_a_valid_preset():
    for name in config_lib.DATASETS:
        assert config_lib.resolve(name).dataset == name
    folder = config_lib.resolve("folder:/data/faces")
    assert folder.preset_name == "folder" and folder.image_size == 64


def test_json_round_trip(tmp_path):
    config = config_lib.resolve("mnist", widths=(64, 32), free_bits=0.25)
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert Config.from_json_file(str(path)) == config


def test_unknown_key_is_an_error():
    with pytest.raises(UsageError, match=r"Unknown config key\(s\) \['latent_size'\]"):
        Config().replace(latent_size=3)
    with pytest.raises(UsageError, match="Unknown config key"):
        config_lib.resolve("shapes", lr=0.1)


@pytest.mark.parametrize(
    "dataset, overrides, message",
    [
        ("cifar100", {}, "Unknown dataset 'cifar100'"),
        ("folder:", {}, "needs a path"),
        ("shapes", {"latent_dim": 0}, "--latent_dim must be a positive integer"),
        ("shapes", {"batch_size": -4}, "--batch_size must be a positive integer"),
        ("shapes", {"epochs": 1.5}, "--epochs must be a positive integer"),
        ("shapes", {"beta": -0.5}, "--beta must be >= 0"),
        ("shapes", {"free_bits": -1.0}, "--free_bits must be >= 0"),
        ("shapes", {"learning_rate": 0.0}, "--learning_rate must be > 0"),
        ("shapes", {"likelihood": "poisson"}, "--likelihood must be one of"),
        ("shapes", {"beta_schedule": "cosine"}, "--beta_schedule must be one of"),
        ("shapes", {"network": "resnet"}, "--network must be one of"),
        ("shapes", {"image_size": 32}, "not available for shapes"),
        ("mnist", {"image_size": 4}, "too small for --network=conv"),
        ("shapes", {"widths": (8, 0)}, "--widths must be positive integers"),
        ("shapes", {"cycle_ratio": 1.5}, "--cycle_ratio must be in (0, 1]"),
    ],
)
def test_invalid_values_name_the_flag(dataset, overrides, message):
    if dataset == "mnist":
        overrides = dict(overrides, network="conv")
    with pytest.raises(UsageError) as info:
        config_lib.resolve(dataset, **overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_default_workdir():
    now = datetime.datetime(2026, 11, 21, 9, 5, 7)
    assert config_lib.default_workdir("shapes", now) == "runs/shapes-20261121-090507"
    assert (
        config_lib.default_workdir("folder:/data/img_align_celeba/", now)
        == "runs/folder-img_align_celeba-20261121-090507"
    )


def test_name_lists_are_the_registries_keys():
    # config.py sits at the bottom of the house and cannot import the
    # registries; this keeps its lists equal to them.
    from keras_vae import likelihoods, models, networks, sequence_networks

    assert config_lib.MODELS == tuple(models.MODELS)
    assert config_lib.NETWORKS == tuple(networks.NETWORKS) + sequence_networks.RNNS
    assert config_lib.SEQUENCE_NETWORKS == sequence_networks.RNNS
    assert config_lib.LIKELIHOODS == tuple(likelihoods.LIKELIHOODS)
    assert models.get("vae") is keras_vae.VAE


def test_config_json_of_an_earlier_version_is_refused():
    old = config_lib.resolve("shapes").to_dict()
    old["architecture"] = old.pop("network")
    del old["model"]
    with pytest.raises(config_lib.UsageError, match="earlier keras_vae .*--restart"):
        config_lib.Config.from_dict(old)


def test_every_field_is_a_flag_with_help():
    from absl import flags

    from keras_vae import cli

    values = flags.FlagValues()
    cli.define_config_flags(values)
    values(["train.py", "--network=mlp", "--widths=16,8", "--beta=4"])
    config = cli.config_from_flags(values)
    assert (config.network, config.widths, config.beta) == ("mlp", (16, 8), 4.0)
    assert config.latent_dim == 10  # not given: the shapes preset's value
    for field in dataclasses.fields(config_lib.Config):
        assert values[field.name].help.endswith(".") and len(values[field.name].help) > 20


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"model": "iwae", "beta": 4.0}, "--model=iwae trains the importance-weighted bound"),
        ({"model": "iwae", "free_bits": 0.5}, "drop --beta, --beta_schedule and --free_bits"),
        ({"model": "iwae", "beta_schedule": "linear"}, "beta_schedule='linear'"),
        ({"model": "beta_tcvae", "free_bits": 0.5}, "--free_bits does not apply"),
        ({"model": "beta_tcvae", "batch_size": 1}, "--batch_size of 2 or more"),
        ({"model": "beta_tcvae", "tc_weight": float("inf")}, "--tc_weight must be a finite"),
        ({"model": "beta_tcvae", "tc_estimator": "paper"}, "--tc_estimator must be one of"),
        ({"iwae_k": 0}, "--iwae_k must be a positive integer"),
    ],
)
def test_variant_settings_are_checked(overrides, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        config_lib.resolve("shapes", **overrides)
