"""A stored study keeps the defaults it was created under, on SQLite and PostgreSQL.

`TrainConfig`'s defaults change between versions (issue 15 moved them to the original
description's: tiny/haar/10 epochs/warmup 1 became small/db4/100/5). A study definition is stored
as its file said it, so a field the file leaves unset, and a field a model ignores (a ViT's
`wavelet`, reset by `TrainConfig.canonical`), would otherwise mean something else after an
upgrade: `wno study retry` found none of a study's failed trials in its own plan, `status`
planned other trials, and `create` of the same file enqueued a second set under today's defaults.

An older wno's study is built here as that version left it: its plan resolved under the earlier
defaults, enqueued, and (for the oldest versions) no record of its defaults.
"""

from __future__ import annotations

import pytest

from platform_helpers import TINY, pg_database, storage_url, trials, unique  # noqa: F401
from wno.base.errors import UserError
from wno.platform import schema
from wno.platform.queue import StudyQueue
from wno.platform.report.build import build_report
from wno.platform.spec import parse_spec, resolve_stored
from wno.training.config import EARLIER_DEFAULTS, TrainConfig

EARLIER = {**TrainConfig.defaults(), **EARLIER_DEFAULTS[0]}


def definition(name: str) -> dict:
    """Kernel on/off against a ViT twin; the wavelet is left to the defaults (as smoke.yaml)."""
    base = {k: v for k, v in TINY.items() if k not in ("model", "wavelet")}  # W-MSA micro
    return {"name": name, "base": base, "grid": {"kernel": [True, False]}, "seeds": 2,
            "baselines": {"vit": {}}}


def forget_defaults(q: StudyQueue, name: str) -> None:
    """Remove the study's record of its defaults, as a study of an older wno has none."""
    import sqlalchemy as sa

    table, sid = q.store._table("StudyUserAttributeModel"), q.study_id(name)
    with q.store.engine.begin() as conn:
        n = conn.execute(sa.delete(table).where(table.c.study_id == sid,
                                                table.c.key == schema.DEFAULTS)).rowcount
    assert n == 1


def old_study(url: str, *, recorded: bool) -> tuple[StudyQueue, str]:
    """A study created by a wno whose defaults were EARLIER, every trial failed (cancelled)."""
    q = StudyQueue(url, create=True)
    name = unique()
    q.create(parse_spec(definition(name), defaults=EARLIER))
    if recorded:
        q.storage.set_study_user_attr(q.study_id(name), schema.DEFAULTS, EARLIER)
    else:
        forget_defaults(q, name)
    q.cancel(name)
    return StudyQueue(url), name  # a fresh queue: no cached definition


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "inferred"])
def test_an_upgrade_changes_no_stored_study(storage_url, recorded):
    """Its plan is still its trials (the haar W-MSA models and the ViT twins whose ignored
    wavelet the older version reset to haar), so retry puts every failed trial back."""
    q, name = old_study(storage_url, recorded=recorded)
    enqueued = {t.user_attrs[schema.CONFIG_HASH] for t in trials(storage_url, name)}
    assert {t.user_attrs[schema.CONFIG]["wavelet"] for t in trials(storage_url, name)} == {"haar"}

    spec = q.spec(name)
    assert spec.pinned == EARLIER_DEFAULTS[0]
    assert {t.key for t in spec.plan} == enqueued
    assert {t.key for t in parse_spec(definition(name)).plan}.isdisjoint(enqueued), \
        "today's defaults must give other trials, or this test tests nothing"
    status = q.status(name)
    assert status.planned == 6 and any("stored under earlier defaults" in n
                                       and "wavelet=haar" in n for n in status.notes)
    report = build_report(name, storage_url, curves=False)
    assert report.fixed["wavelet"] == "haar" and report.fixed["model_size"] == "micro"
    assert any("stored under earlier defaults" in n for n in report.notes)
    assert len(q.retry(name)) == 6
    waiting = [t for t in trials(storage_url, name) if t.state.name == "WAITING"]
    assert {t.user_attrs[schema.CONFIG_HASH] for t in waiting} == enqueued


def test_the_same_file_again_is_refused_and_update_moves_to_todays_defaults(storage_url):
    q, name = old_study(storage_url, recorded=False)
    with pytest.raises(UserError) as err:
        q.create(parse_spec(definition(name)))
    assert 'default wavelet: "haar" when it was stored -> "db4" today' in str(err.value)
    assert len(trials(storage_url, name)) == 6  # nothing enqueued

    result = q.create(parse_spec(definition(name)), update=True)
    assert result.added == 6
    assert q.storage.get_study_user_attrs(q.study_id(name))[schema.DEFAULTS] == \
        TrainConfig.defaults()
    assert StudyQueue(storage_url).spec(name).pinned == {}
    waiting = [t for t in trials(storage_url, name) if t.state.name == "WAITING"]
    assert {t.user_attrs[schema.CONFIG]["model_size"] for t in waiting} == {"micro"}
    assert {t.user_attrs[schema.CONFIG]["wavelet"] for t in waiting} == {"db4"}


def test_a_new_study_records_todays_defaults(storage_url):
    q = StudyQueue(storage_url, create=True)
    name = unique()
    q.create(parse_spec(definition(name)))
    assert q.storage.get_study_user_attrs(q.study_id(name))[schema.DEFAULTS] == \
        TrainConfig.defaults()
    assert q.spec(name).pinned == {} and q.status(name).notes == []


def test_inference_prefers_todays_defaults_without_trials_and_when_nothing_tells_them_apart():
    data = definition("x")
    assert resolve_stored(data, None, set()).pinned == {}
    earlier = {t.key for t in parse_spec(data, defaults=EARLIER).plan}
    assert resolve_stored(data, None, earlier).pinned == EARLIER_DEFAULTS[0]
    # A field the file sets is not pinned in effect: the plan is the same under either set.
    explicit = {**data, "base": {**data["base"], "wavelet": "haar", "epochs": 1,
                                 "warmup_epochs": 0.0}, "baselines": {}}
    assert {t.key for t in parse_spec(explicit, defaults=EARLIER).plan} == \
        {t.key for t in parse_spec(explicit).plan}


def test_a_search_samples_on_top_of_the_stored_defaults():
    """The worker builds a sampled configuration from `config_base()`: the pinned defaults the
    file leaves unset, except the searched fields."""
    data = {"name": "s", "base": {"model_size": "micro"},
            "search": {"n_trials": 2, "params": {"wavelet": ["haar", "db2"],
                                                 "lr": {"low": 1e-4, "high": 1e-2}}}}
    spec = parse_spec(data, stored=True, defaults=EARLIER)
    base = spec.config_base()
    assert base["model_size"] == "micro" and base["epochs"] == 10
    assert base["warmup_epochs"] == 1.0 and "wavelet" not in base and "lr" not in base
    assert parse_spec(data).config_base() == {"model_size": "micro"}
