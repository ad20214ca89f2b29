"""Study definitions: the shipped studies, the plan they make, and the corpus of bad files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from wno.training.config import TrainConfig
from wno.platform import schema
from wno.platform.spec import SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "studies").glob("*.yaml"))
BAD = sorted((REPO / "tests" / "bad_studies").glob("*.yaml"))


def expectations(path: Path) -> list[str]:
    return re.findall(r"^# expect: (.*)$", path.read_text(), re.M)


# --- the shipped studies ---------------------------------------------------------------------------
def test_every_named_study_ships():
    names = {p.stem for p in STUDIES}
    assert {"ablations", "levels", "kernel", "wavelets", "sizes", "smoke"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_shipped_study_is_valid_and_runnable(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.plan, "a study with nothing to run"
    hashes = [t.key for t in spec.plan]
    assert len(hashes) == len(set(hashes)), "a configuration would train twice"
    for trial in spec.plan:
        cfg = TrainConfig.from_dict(trial.user_attrs()[schema.CONFIG])
        assert cfg.problems() == []
        assert cfg.config_hash() == trial.user_attrs()[schema.CONFIG_HASH]
        assert cfg == cfg.canonical()
        assert cfg.seed == trial.seed and trial.seed in spec.seeds
        # machine fields are never part of a study
        assert not set(trial.user_attrs()[schema.CONFIG]) & TrainConfig.machine_fields()


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_the_stored_definition_reads_back_as_the_same_study(path):
    """Workers rebuild the spec from what `study create` stored."""
    spec = load_spec(path)
    again = parse_spec(spec.to_dict())
    assert again.spec_hash() == spec.spec_hash()
    assert [t.key for t in again.plan] == [t.key for t in spec.plan]


def test_ablations_plan_counts_factors_and_baselines():
    spec = load_spec(REPO / "studies" / "ablations.yaml")
    data = yaml.safe_load((REPO / "studies" / "ablations.yaml").read_text())
    n_configs = 1
    for values in data["grid"].values():
        n_configs *= len(values)
    n_seeds = data["seeds"]
    models = [t for t in spec.plan if t.role == schema.ROLE_MODEL]
    baselines = [t for t in spec.plan if t.role == schema.ROLE_BASELINE]
    assert len(models) == n_configs * n_seeds
    # the ViT ignores every factor of this grid: one baseline per seed, not one per grid cell
    assert len(baselines) == n_seeds
    assert all(t.factors == {"baseline": "vit"} and t.config.model == "vit" for t in baselines)
    # aliases become field names everywhere (factors, groups, stored spec)
    assert set(models[0].factors) == {"use_kernel", "wavelet", "n_levels"}
    assert set(spec.to_dict()["grid"]) == {"use_kernel", "wavelet", "n_levels"}
    assert models[0].group.startswith("use_kernel=")
    # seed-major: one seed of everything before the next seed
    seeds_in_order = [t.seed for t in spec.plan]
    assert seeds_in_order == sorted(seeds_in_order)
    text = "\n".join(spec.describe())
    assert f"total: {len(spec.plan)} trials" in text
    assert f"db4 [{n_configs * n_seeds // 3} trials]" in text


@pytest.mark.parametrize("name,factor,values", [("wavelets", "wavelet", ["db4", "sym4", "coif2"]),
                                                ("levels", "n_levels", [2, 3, 4])])
def test_the_original_descriptions_ablations_run_as_written(name, factor, values):
    """db4, sym4, coif2 at 3 levels and levels 2, 3, 4: boundary wavelets cannot reach coif2 at 3
    or db4 at 4 on 32x32, so these studies use periodization for every configuration, and the
    plan shows each configuration's token count."""
    spec = load_spec(REPO / "studies" / f"{name}.yaml")
    assert spec.grid[factor] == values and spec.base["mode"] == "periodization"
    models = [t for t in spec.plan if t.role == schema.ROLE_MODEL]
    assert sorted({getattr(t.config, factor) for t in models}, key=values.index) == values
    assert all(t.config.mode == "periodization" for t in models)  # one mode: no switch
    text = "\n".join(spec.describe())
    for t in models:
        assert f"{t.group}: {t.config.num_tokens():,}" in text
    if name == "levels":
        assert "n_levels=2: 1,217" in text and "n_levels=4: 1,357" in text


@pytest.mark.parametrize("kind", ["grid", "search"])
@pytest.mark.parametrize("metric", ["test_acc", "test_loss"])
def test_test_metrics_are_refused_as_objectives_with_the_reason(kind, metric):
    data = {"name": "x", "base": {"model_size": "micro"}, "objective": {"metric": metric}}
    if kind == "grid":
        data["grid"] = {"lr": [1e-3, 2e-3]}
    else:
        data["search"] = {"n_trials": 3, "params": {"lr": {"low": 1e-4, "high": 1e-2}}}
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert f"{metric!r} would select on the test set" in str(err.value)
    assert "objective.metric" in str(err.value) and "best_val_acc" in str(err.value)


@pytest.mark.parametrize("metric, pruned_on", [("test_acc", "val_acc"), ("test_loss", "val_loss")])
def test_a_stored_search_with_a_test_objective_still_prunes_on_validation(metric, pruned_on):
    data = {"name": "x", "base": {"model_size": "micro"}, "objective": {"metric": metric},
            "search": {"n_trials": 3, "params": {"lr": {"low": 1e-4, "high": 1e-2}},
                       "pruner": "median"}}
    spec = parse_spec(data, stored=True)
    assert spec.epoch_metric() == pruned_on and spec.search.pruner == {"name": "median"}


def test_a_baseline_shares_the_factors_it_reads():
    """sizes.yaml: the ViT twin reads model_size, so there is one ViT per size (and seed)."""
    spec = load_spec(REPO / "studies" / "sizes.yaml")
    vit = [t for t in spec.plan if t.role == schema.ROLE_BASELINE]
    sizes = spec.grid["model_size"]
    assert len(vit) == len(sizes) * len(spec.seeds)
    assert {t.factors["model_size"] for t in vit} == set(sizes)
    assert all(t.config.model_size == t.factors["model_size"] for t in vit)
    assert "baseline=vit, model_size=micro" in {t.group for t in vit}


def test_seeds_count_or_list_and_spec_hash(tmp_path):
    base = {"name": "h", "base": {"model_size": "micro"}, "grid": {"levels": [1, 2]}}
    a = parse_spec({**base, "seeds": 2})
    b = parse_spec({**base, "seeds": [0, 1], "description": "words do not change the study"})
    c = parse_spec({**base, "seeds": [0, 7]})
    assert a.seeds == [0, 1] and c.seeds == [0, 7]
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()
    # a value written differently but meaning the same is the same study
    d = parse_spec({**base, "base": {"model_size": "micro", "lr": "1e-3"}, "seeds": 2})
    e = parse_spec({**base, "base": {"model_size": "micro", "lr": 0.001}, "seeds": 2})
    assert d.spec_hash() == e.spec_hash() and d.base["lr"] == 0.001


def test_configurations_the_model_cannot_tell_apart_train_once():
    """patch_size is ignored by a wavelet model: two grid values are one configuration."""
    spec = parse_spec({"name": "dup", "base": {"model_size": "micro"},
                       "grid": {"patch_size": [4, 8]}, "seeds": 1})
    assert len(spec.plan) == 1
    assert any("same configuration" in note for note in spec.notes)


def test_token_study_trains_the_seed_layout_once_under_its_own_label():
    """The seed layout ignores token_patch: one configuration, labelled without it, so the
    report's token_patch effect compares patches and pools only."""
    spec = load_spec(REPO / "studies" / "tokens.yaml")
    first_seed = [t for t in spec.plan if t.seed == spec.seeds[0] and t.role == schema.ROLE_MODEL]
    assert sorted(t.group for t in first_seed) == [
        "token_layout=patch, token_patch=2", "token_layout=patch, token_patch=4",
        "token_layout=pool, token_patch=2", "token_layout=pool, token_patch=4",
        "token_layout=seed"]
    seed_trial = next(t for t in first_seed if t.config.token_layout == "seed")
    assert seed_trial.factors == {"token_layout": "seed"}
    assert len(spec.plan) == 6 * len(spec.seeds)  # 5 layouts and ViT, every seed
    assert any("'token_layout=seed, token_patch=4' is the same configuration as "
               "'token_layout=seed, token_patch=2'" in note for note in spec.notes)


def test_baselines_that_read_a_factor_are_told_apart_by_it():
    """token_patch 1 builds the seed layout, yet a wavelet baseline reads token_patch: its twins
    at 1, 2 and 4 are three configurations with three labels, not one label for three."""
    spec = parse_spec({"name": "twins", "base": {"model_size": "micro", "token_layout": "patch"},
                       "grid": {"token_patch": [1, 2, 4]}, "seeds": 1,
                       "baselines": {"nokernel": {"model": "wavelet", "use_kernel": False}}})
    twins = [t for t in spec.plan if t.role == schema.ROLE_BASELINE]
    assert len(twins) == 3 and len({t.key for t in twins}) == 3
    assert sorted(t.group for t in twins) == [f"baseline=nokernel, token_patch={p}"
                                              for p in (1, 2, 4)]


def test_search_study_enqueues_n_trials_slots_and_builds_its_sampler():
    spec = parse_spec({
        "name": "tune", "base": {"model_size": "micro"}, "seeds": [3],
        "baselines": {"vit": {}},
        "search": {"n_trials": 5, "params": {"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                             "levels": [1, 2, 3],
                                             "batch_size": {"low": 32, "high": 128, "step": 32}},
                   "sampler": {"name": "tpe", "seed": 1, "n_startup_trials": 2},
                   "pruner": "median"}})
    assert spec.kind == "search"
    slots = [t for t in spec.plan if t.config is None]
    assert len(slots) == 5 and all(t.seed == 3 for t in slots)
    assert [t.role for t in spec.plan].count(schema.ROLE_BASELINE) == 1
    dists = spec.search.distributions()
    assert set(dists) == {"lr", "n_levels", "batch_size"}
    assert dists["batch_size"].step == 32 and dists["lr"].log
    # a fixed seed is offset per trial, so that workers do not all sample the same point
    assert _first_sample(spec.search.make_sampler(0)) == _first_sample(spec.search.make_sampler(0))
    assert _first_sample(spec.search.make_sampler(0)) != _first_sample(spec.search.make_sampler(1))
    assert spec.epoch_metric() == "val_acc"
    again = parse_spec(spec.to_dict())
    assert again.spec_hash() == spec.spec_hash() and again.search.params == spec.search.params


def _first_sample(sampler) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=sampler).ask().suggest_float("x", 0, 1)


def test_a_search_value_that_cannot_run_is_reported():
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "tune", "base": {"wavelet": "db4"},
                    "search": {"n_trials": 2, "params": {"levels": [2, 3, 4]}}})
    assert "search.params.levels: n_levels=4 cannot run: n_levels=4 is not reachable" in str(e.value)


# --- the corpus of bad files -----------------------------------------------------------------------
def test_the_bad_corpus_is_not_empty():
    assert len(BAD) >= 15


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_study_is_rejected_with_its_message(path):
    expected = expectations(path)
    assert expected, f"{path.name} states no `# expect:` line"
    with pytest.raises(SpecError) as e:
        load_spec(path)
    message = str(e.value)
    assert message.startswith(f"{path} is not a valid study")
    for text in expected:
        assert text in message, f"expected {text!r} in:\n{message}"
    assert "Traceback" not in message


def test_every_problem_is_reported_together():
    problems = None
    with pytest.raises(SpecError) as e:
        load_spec(REPO / "tests" / "bad_studies" / "many_problems.yaml")
    problems = e.value.problems
    assert len(problems) == len(expectations(REPO / "tests" / "bad_studies" / "many_problems.yaml"))
    # in file order
    lines = [int(re.search(r"\(line (\d+)\)", p).group(1)) for p in problems]
    assert lines == sorted(lines)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
