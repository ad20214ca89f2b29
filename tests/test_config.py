"""TrainConfig: round trips, identity (hash), canonical form and validation messages."""

import pytest

from wno.training.config import ConfigError, TrainConfig


def test_round_trips_through_dict_and_yaml(tmp_path):
    cfg = TrainConfig(model_size="micro", wavelet="db2", n_levels=2, train_size=100, lr=3e-4,
                      use_kernel=False)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert TrainConfig.from_yaml(path) == cfg


def test_hash_is_stable_and_ignores_machine_fields():
    a = TrainConfig(seed=1)
    assert a.config_hash() == TrainConfig(seed=1).config_hash()
    assert a.config_hash() == a.replace(device="cuda:3", data_dir="/x", save_dir="/y").config_hash()
    assert a.config_hash() != a.replace(seed=2).config_hash()
    assert a.config_hash() != a.replace(wavelet="haar").config_hash()
    assert len(a.config_hash()) == 12


def test_canonical_drops_what_a_model_does_not_read():
    vit = TrainConfig(model="vit")
    assert vit.config_hash() == vit.replace(wavelet="db4", n_levels=2, use_kernel=False).config_hash()
    assert vit.config_hash() != vit.replace(patch_size=8).config_hash()
    off = TrainConfig(use_kernel=False)
    assert off.config_hash() == off.replace(kernel_radius=0.5, attention="sparse").config_hash()
    on = TrainConfig(use_kernel=True)
    assert on.config_hash() != on.replace(kernel_radius=0.5).config_hash()


def test_canonical_merges_token_layouts_that_build_the_same_model():
    seed = TrainConfig(token_layout="seed")
    same = [seed.replace(token_patch=4), seed.replace(token_layout="patch", token_patch=1),
            seed.replace(token_layout="pool", token_patch=1)]
    assert {c.config_hash() for c in same} == {seed.config_hash()}
    distinct = [seed, seed.replace(token_layout="patch", token_patch=2),
                seed.replace(token_layout="pool", token_patch=2),
                seed.replace(token_layout="pool", token_patch=4)]
    assert len({c.config_hash() for c in distinct}) == 4


def test_types_are_converted_and_wrong_types_reported():
    cfg = TrainConfig.from_dict({"epochs": "3", "lr": "1e-3", "use_kernel": "off"})
    assert (cfg.epochs, cfg.lr, cfg.use_kernel) == (3, 1e-3, False)
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"epochs": 2.5, "use_kernel": "maybe", "wavlet": "haar"})
    text = str(err.value)
    assert "epochs=2.5 must be an integer" in text
    assert "use_kernel='maybe' must be true or false" in text
    assert "unknown field 'wavlet' (did you mean 'wavelet'?)" in text
    assert len(err.value.problems) == 3


def test_validate_reports_every_problem_together():
    cfg = TrainConfig(model_size="tiny", num_heads=5, lr=-1.0, dataset="imagenet", epochs=0)
    problems = cfg.problems()
    assert any("lr=-1.0 must be >= 0" in p for p in problems)
    assert any("dataset='imagenet'" in p for p in problems)
    assert any("epochs=0 must be >= 1" in p for p in problems)
    with pytest.raises(ConfigError, match="invalid configuration"):
        cfg.validate()


def test_heads_and_levels_are_checked_against_the_model():
    err = TrainConfig(model_size="tiny", num_heads=5).problems()
    assert err == ["num_heads=5 does not divide embed_dim=96; allowed head counts for 96: "
                   "[1, 2, 3, 4, 6, 8, 12, 16, 24, 32]"]
    assert "at most 2 level" in TrainConfig(wavelet="coif2", n_levels=3).problems()[0]
    assert TrainConfig(model="vit", wavelet="coif2", n_levels=3).problems() == []
    assert "patch_size=5" in TrainConfig(model="vit", patch_size=5).problems()[0]


def test_missing_or_broken_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.from_yaml(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.from_yaml(bad)


def test_split_sizes_must_fit_the_data_set():
    assert "val_size=50000 must be smaller" in TrainConfig(val_size=50_000).problems()[0]
    msg = TrainConfig(train_size=46_000).problems()[0]
    assert "train_size=46000 is larger than the 45,000 training images" in msg
    assert "test_size=20000" in TrainConfig(test_size=20_000).problems()[0]
    assert TrainConfig(train_size=45_000, test_size=10_000).problems() == []
    assert "5,000 training images" in TrainConfig(dataset="synthetic", val_size=5000).problems()[0]


def test_defaults_are_the_original_descriptions_argument_table():
    c = TrainConfig()
    assert (c.model, c.model_size, c.wavelet, c.n_levels, c.epochs, c.batch_size, c.lr,
            c.weight_decay, c.warmup_epochs) == ("wavelet", "small", "db4", 3, 100, 128, 1e-3,
                                                 0.05, 5.0)
    # Regularisation beyond the description: on by default, and named as such.
    from wno.training.config import REGULARISATION

    assert {n: getattr(c, n) for n in REGULARISATION} == {"label_smoothing": 0.1,
                                                          "grad_clip": 1.0, "drop_path": 0.1}


@pytest.mark.parametrize("changes", [
    {}, {"n_levels": 2, "mode": "periodization"}, {"n_levels": 4, "mode": "periodization"},
    {"wavelet": "coif2", "mode": "periodization"}, {"token_layout": "patch", "token_patch": 4},
    {"token_layout": "pool", "token_patch": 2, "wavelet": "db2", "mode": "reflect", "n_levels": 2},
    {"model": "vit"}, {"model": "vit", "patch_size": 8}])
def test_num_tokens_is_what_the_built_model_has(changes):
    from wno.model import build_model

    cfg = TrainConfig(model_size="micro", **changes)
    assert cfg.num_tokens() == build_model(cfg).num_tokens


