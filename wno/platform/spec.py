"""Study definitions: a YAML file becomes a validated `StudySpec`, and a spec its trial configs.

A study file (see studies/*.yaml):

    name: levels                    # letters, digits, '-', '_', '.'; names the study everywhere
    description: How deep should the wavelet decomposition go?
    base:                           # any TrainConfig field except device, data_dir, save_dir, seed
      model_size: tiny
      epochs: 30
    grid:                           # factor -> values; every combination is one configuration
      wavelet: [haar, db2]
      levels: [1, 2, 3]             # aliases: kernel = use_kernel, levels = n_levels,
                                    #          size = model_size; any TrainConfig field works too
    seeds: 3                        # a count (seeds 0, 1, 2) or a list such as [0, 7, 42]
    baselines:                      # twins over the same seeds; `model` defaults to vit
      vit: {}
    objective: {metric: best_val_acc, direction: maximize}

A tuning study replaces `grid` with `search` (one seed; baselines allowed):

    search:
      n_trials: 40                  # in total, across every worker
      params:                       # field -> {low, high[, log][, step]} or a list of choices
        lr: {low: 1.0e-4, high: 3.0e-3, log: true}
        wavelet: [haar, db2, sym4]
      sampler: tpe                  # tpe | random | qmc | gp, or {name: tpe, seed: 0, <options>}
      pruner: median                # median | percentile | hyperband | successive_halving | none

A baseline runs once per combination of the grid factors its model reads (a ViT twin per
model_size) and once overall for the factors it ignores (wavelet, levels, kernel). Trials are
enqueued seed by seed, so a study cut short has every configuration at its first seeds.
Configurations the model cannot tell apart (TrainConfig.canonical) are trained once.

The whole file is checked before anything is enqueued; every problem is reported at once with its
place in the file, e.g. ``grid.wavlet (line 9): unknown field (did you mean 'wavelet'?)``.

One concern in one module, longer than most: what a study file may say. The rules of each section
and of the plan they expand to refer to each other (a grid factor may not be in base, a baseline
reads the grid's factors, a plan is checked configuration by configuration), and every rule reports
through the same located problem list.

Example:
    >>> spec = load_spec("studies/levels.yaml")
    >>> len(spec.trials())    # (3 levels + 1 ViT) x 3 seeds
    12
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from wno.base.errors import did_you_mean, short_repr
from wno.base.safe_yaml import YamlError, compose, load_yaml, read_text
from wno.training.config import EARLIER_DEFAULTS, ConfigError, TrainConfig
from wno.platform import schema
from wno.platform.search import PRUNERS, SAMPLERS, SearchSpace

# Readable names for the usual factors; TrainConfig field names are accepted everywhere as well.
ALIASES = {"kernel": "use_kernel", "levels": "n_levels", "size": "model_size"}
# Where each machine field comes from instead (a study runs unchanged on any machine).
MACHINE_SOURCES = {
    "device": "the worker's --gpu",
    "data_dir": "the worker's --data-dir / WNO_DATA_DIR",
    "save_dir": "the worker's --checkpoint-dir / WNO_CHECKPOINT_DIR",
}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
# The most trials a study file may plan (an upper bound counted before expanding it); a large GPU
# study plans a few hundred. WNO_MAX_TRIALS raises it.
MAX_TRIALS = 10_000
ENV_MAX_TRIALS = "WNO_MAX_TRIALS"
MAX_SEED = 2**31 - 1  # TrainConfig.seed's bound (MAX_INT)
MAX_PROBLEMS = 50  # problems listed in one message; the count of the rest follows
# The objectives a search can steer by, with the per-epoch metric it prunes on. Validation only:
# the test set is reported, never selected on (TEST_METRICS are refused as objectives).
SEARCH_METRICS = ("final_val_acc", "best_val_acc")
# The per-epoch metric a search prunes on; the test metrics only for studies stored before they
# were refused (`parse_spec(stored=True)`), which keep pruning on validation as they did.
EPOCH_METRIC = {"final_val_acc": "val_acc", "best_val_acc": "val_acc", "test_acc": "val_acc",
                "test_loss": "val_loss"}
TEST_METRICS = ("test_acc", "test_loss")


class SpecError(ConfigError):
    """A study file that cannot be enqueued; `problems` lists every reason with its place."""

    def __init__(self, problems: list[str], source: str = "study"):
        self.source = source
        ValueError.__init__(self, f"{source} is not a valid study ({len(problems)} problem"
                            f"{'s' if len(problems) != 1 else ''}):\n  - " + "\n  - ".join(problems))
        self.problems = list(problems)


# --- the file's structure (pydantic) ----------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Strict):
    metric: str = "best_val_acc"
    direction: Literal["maximize", "minimize"] = "maximize"


class Search(_Strict):
    n_trials: int
    params: dict[str, Any]
    sampler: Any = "tpe"
    pruner: Any = "median"


class _File(_Strict):
    name: str
    description: str = ""
    base: dict[str, Any] = {}
    grid: dict[str, Any] = {}
    seeds: Any = [0]
    baselines: dict[str, Any] = {}
    objective: Objective = Objective()
    search: Search | None = None


# --- what a study becomes -----------------------------------------------------------------------
@dataclass(frozen=True)
class TrialPlan:
    """One trial to enqueue: a canonical configuration and how it relates to the study."""

    config: TrainConfig | None  # None: a search slot, sampled by the worker that runs it
    role: str  # schema.ROLE_MODEL or schema.ROLE_BASELINE
    factors: dict[str, Any]
    group: str
    seed: int

    @property
    def key(self) -> str:
        """What makes two trials the same: the config hash (a search slot has none). The config is
        canonical already, under the defaults its study was stored with: hashed as it is."""
        return self.config.config_hash(canonical=False) if self.config is not None else ""

    def user_attrs(self) -> dict[str, Any]:
        attrs = {schema.ROLE: self.role, schema.FACTORS: self.factors, schema.GROUP: self.group,
                 schema.SEED: self.seed}
        if self.config is not None:
            attrs[schema.CONFIG] = self.config.to_dict(machine=False)
            attrs[schema.CONFIG_HASH] = self.key
        return attrs


@dataclass
class StudySpec:
    """A validated study definition. Build it with `load_spec(path)` or `parse_spec(dict)`."""

    name: str
    description: str
    base: dict[str, Any]  # TrainConfig field -> value (types converted)
    grid: dict[str, list[Any]]  # TrainConfig field -> values, in file order
    seeds: list[int]
    baselines: dict[str, dict[str, Any]]  # name -> TrainConfig overrides (model included)
    objective: Objective
    search: SearchSpace | None
    plan: list[TrialPlan]
    notes: list[str]  # harmless things worth saying in the plan (e.g. merged duplicates)
    # Defaults the study was stored under, where they differ from today's (empty for a new file):
    # the fields the file leaves unset keep them, so an upgrade changes no stored study's trials.
    pinned: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "search" if self.search is not None else "grid"

    def trials(self) -> list[TrialPlan]:
        return list(self.plan)

    def to_dict(self) -> dict[str, Any]:
        """The normalised definition (field names, converted values): what the study stores."""
        d: dict[str, Any] = {
            "name": self.name, "description": self.description, "base": self.base,
            "grid": self.grid, "seeds": self.seeds, "baselines": self.baselines,
            "objective": self.objective.model_dump(),
        }
        if self.search is not None:
            params = {f: (p["choices"] if "choices" in p else p)  # the file's own forms
                      for f, p in self.search.params.items()}
            d["search"] = {"n_trials": self.search.n_trials, "params": params,
                           "sampler": self.search.sampler, "pruner": self.search.pruner}
        return d

    def spec_hash(self) -> str:
        """Identity of the definition; the description is free text and does not count. Stored
        defaults that differ from today's count (the same file means other trials today)."""
        d = {k: v for k, v in self.to_dict().items() if k != "description"}
        if self.pinned:
            d["pinned_defaults"] = self.pinned
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def config_base(self) -> dict[str, Any]:
        """What every configuration starts from: `base` over the pinned defaults it leaves unset."""
        return _resolved_base(self.base, self.grid, self.search, self.pinned)

    def canonical_defaults(self) -> dict[str, Any] | None:
        """The defaults `TrainConfig.canonical` resets ignored fields to (None: today's)."""
        return _canonical_defaults(self.pinned)

    def epoch_metric(self) -> str | None:
        """The per-epoch metric a search trial reports for pruning."""
        return EPOCH_METRIC.get(self.objective.metric)

    def describe(self) -> list[str]:
        """The plan as readable lines: factors, values, trials per value, total."""
        models = [t for t in self.plan if t.role == schema.ROLE_MODEL]
        baselines = [t for t in self.plan if t.role == schema.ROLE_BASELINE]
        lines = [f"study {self.name} ({self.kind})" + (f": {self.description}"
                                                       if self.description else "")]
        if self.base:
            lines.append("  base: " + ", ".join(f"{k}={v}" for k, v in self.base.items()))
        for field, values in self.grid.items():
            per = {v: sum(1 for t in models if t.factors.get(field) == v) for v in values}
            lines.append(f"  grid {field} ({len(values)}): " +
                         ", ".join(f"{v} [{n} trials]" for v, n in per.items()))
        if self.search is not None:
            for field, p in self.search.params.items():
                lines.append(f"  search {field}: " + _describe_param(p))
            lines.append(f"  search: {self.search.n_trials} trials, sampler "
                         f"{self.search.sampler['name']}, pruner {self.search.pruner['name']}")
        for name in self.baselines:
            n = sum(1 for t in baselines if t.factors.get("baseline") == name)
            lines.append(f"  baseline {name}: {n} trials")
        tokens = {t.group: t.config.num_tokens() for t in self.plan if t.config is not None}
        if tokens:
            lines.append("  tokens per configuration:")
            lines += [f"    {group}: {n:,}" for group, n in tokens.items()]
        lines.append(f"  seeds ({len(self.seeds)}): {', '.join(map(str, self.seeds))}")
        lines.append(f"  objective: {self.objective.direction} {self.objective.metric}")
        lines.append(f"  total: {len(self.plan)} trials ({len(models)} model, "
                     f"{len(baselines)} baseline)")
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def _describe_param(p: dict[str, Any]) -> str:
    if "choices" in p:
        return "one of " + ", ".join(map(str, p["choices"]))
    extra = (", log" if p["log"] else "") + (f", step {p['step']}" if p["step"] else "")
    return f"[{p['low']}, {p['high']}]{extra}"


# --- loading -------------------------------------------------------------------------------------
def load_spec(path: str | Path, *, max_trials: int | None = None) -> StudySpec:
    """Read and validate a study file; raise `SpecError` listing every problem with its line.

    The file goes through `wno.base.safe_yaml` (no aliases, bounded size and nesting), and its
    plan is counted against `max_trials` (default: `trial_cap()`) before it is expanded.
    """
    path = Path(path)
    try:
        text = read_text(path, "study file")
        data = load_yaml(text)
        lines, duplicates = _line_map(text)
    except FileNotFoundError:
        raise SpecError([f"file {str(path)!r} does not exist"], str(path)) from None
    except YamlError as e:
        raise SpecError([str(e)], str(path)) from None
    return parse_spec(data, source=str(path), lines=lines, duplicates=duplicates,
                      max_trials=trial_cap() if max_trials is None else max_trials)


def trial_cap() -> int:
    """The most trials a study file may plan: `WNO_MAX_TRIALS`, else `MAX_TRIALS`."""
    value = os.environ.get(ENV_MAX_TRIALS, "").strip()
    if not value:
        return MAX_TRIALS
    if not value.isdigit() or int(value) < 1:
        raise SpecError([f"{ENV_MAX_TRIALS}={value!r} must be a positive integer"], ENV_MAX_TRIALS)
    return int(value)


def parse_spec(data: Any, *, source: str = "study", lines: dict[tuple, int] | None = None,
               duplicates: list[tuple[tuple, int]] | None = None,
               max_trials: int | None = None, stored: bool = False,
               defaults: dict[str, Any] | None = None) -> StudySpec:
    """Validate a study definition given as a dict (a parsed file or a stored spec).

    Every section is checked even when another one is broken, so that one run of
    `wno study create` reports every problem at once. `max_trials` refuses a plan that would be
    larger, counted before anything is expanded (None: no cap, for definitions already stored).
    `stored=True` reads a definition a storage already holds: a rule added after it was stored
    (a test metric as objective) becomes a note, so that its trials still run and report.
    `defaults` are the field defaults it was stored under (`TrainConfig.defaults()` then); the
    fields the definition leaves unset keep them (`StudySpec.pinned`).
    """
    if not isinstance(data, dict):
        raise SpecError(["the file must hold a mapping with at least `name` and `grid` or "
                         "`search` (see studies/*.yaml)"], source)
    p = _Problems(lines or {})
    for path, line in duplicates or ():
        p.add(path, "duplicate key (the first value would be silently replaced)", line=line)
    try:
        f = _File.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            p.add(err["loc"], _pydantic_message(err))
        f = None

    name = data.get("name")
    if isinstance(name, str) and not NAME_PATTERN.match(name):
        p.add(("name",), f"{name!r} is not a valid study name: use 1-64 letters, digits, '-', "
                         "'_' or '.', starting with a letter or digit")
    base = _mapping_fields(p, ("base",), data.get("base", {}))
    grid = _grid(p, data.get("grid", {}))
    for field in set(base) & set(grid):
        p.add(("base", _key_in(data.get("base"), field)),
              f"{field} is also a grid factor; remove it from base (the grid sets it)")
    seeds = _seeds(p, data.get("seeds", [0]), max_trials)
    baselines = _baselines(p, data.get("baselines", {}), grid, data)
    objective = f.objective if f else Objective()
    stored_notes = _check_metric(p, data.get("objective"), stored)
    search = None
    if data.get("search") is not None:
        if data.get("grid"):
            p.add(("grid",), "a study has either a grid or a search block, not both (run the grid "
                             "as its own study, or search over the factors instead)")
        if len(seeds) > 1:
            p.add(("seeds",), f"a search study trains each sampled configuration once: give one "
                              f"seed, not {len(seeds)}")
        if f and f.search is not None:
            search = _search(p, f.search, data, base, objective)
    elif f and not grid and not p.items:
        p.add(("grid",), "required: a grid (factor -> list of values) or a search block")

    pinned = _pinned(defaults)
    plan: list[TrialPlan] = []
    notes: list[str] = []
    if seeds and (grid or search or baselines) and _fits(p, grid, seeds, baselines, search,
                                                         data, max_trials):
        plan, notes = _plan(p, _resolved_base(base, grid, search, pinned), grid, seeds, baselines,
                            search, data, _canonical_defaults(pinned))
    if p.items:
        raise SpecError(p.messages(), source)
    assert f is not None
    if pinned:
        stored_notes.append(pinned_note(pinned))
    notes = stored_notes + notes
    return StudySpec(name=f.name, description=f.description, base=base, grid=grid, seeds=seeds,
                     baselines=baselines, objective=objective, search=search, plan=plan,
                     notes=notes, pinned=pinned)


def stored_spec(attrs: dict, trials: Callable[[], Sequence], *, source: str = "stored study"
                ) -> StudySpec:
    """The definition a study's user attrs hold, under the defaults it was stored with;
    `trials()` (its frozen trials) is read only for a study that did not record them."""
    defaults = attrs.get(schema.DEFAULTS)
    keys = set() if defaults is not None else {
        t.user_attrs[schema.CONFIG_HASH] for t in trials() if schema.CONFIG_HASH in t.user_attrs}
    return resolve_stored(attrs[schema.SPEC], defaults, keys, source=source)


def resolve_stored(data: dict, defaults: dict[str, Any] | None, trial_keys: set[str], *,
                   source: str = "stored study") -> StudySpec:
    """A stored definition, read under the defaults it was stored with.

    A study stored before studies recorded their defaults (`defaults` None) is read under the
    set, today's or one of `EARLIER_DEFAULTS`, whose plan holds most of its trials' config
    hashes (`trial_keys`); today's on a tie (a study without trials yet).
    """
    if defaults is not None:
        return parse_spec(data, source=source, stored=True, defaults=defaults)
    best, first_error = None, None
    for candidate in (None, *({**TrainConfig.defaults(), **d} for d in EARLIER_DEFAULTS)):
        try:
            spec = parse_spec(data, source=source, stored=True, defaults=candidate)
        except SpecError as e:
            first_error = first_error or e
            continue
        hits = len({t.key for t in spec.plan if t.config is not None} & trial_keys)
        if best is None or hits > best[0]:
            best = (hits, spec)
    if best is None:
        assert first_error is not None
        raise first_error
    return best[1]


def pinned_note(pinned: dict[str, Any]) -> str:
    """What status and the report say of a study stored under earlier defaults."""
    return ("stored under earlier defaults (" + ", ".join(f"{k}={v}" for k, v in pinned.items())
            + "): its trials keep them wherever the definition leaves a field unset "
              "(`wno study create --update` moves it to today's)")


def _canonical_defaults(pinned: dict[str, Any]) -> dict[str, Any] | None:
    return {**TrainConfig.defaults(), **pinned} if pinned else None


def _pinned(defaults: dict[str, Any] | None) -> dict[str, Any]:
    """The stored defaults that differ from today's (fields no longer known are dropped)."""
    today = TrainConfig.defaults()
    return {k: v for k, v in (defaults or {}).items()
            if k in today and k != "seed" and v != today[k]}


def _resolved_base(base: dict, grid: dict, search: SearchSpace | None, pinned: dict) -> dict:
    chosen = set(grid) | set(search.params if search is not None else ())
    return {**{k: v for k, v in pinned.items() if k not in chosen}, **base}


# --- problems and their places -------------------------------------------------------------------
class _Problems:
    """Problems with their place in the file: ('grid', 'wavlet') -> 'grid.wavlet (line 9)'."""

    def __init__(self, lines: dict[tuple, int]):
        self.lines = lines
        self.items: list[tuple[str, str, int]] = []
        self.repeats: dict[str, int] = {}

    def add(self, path: tuple, message: str, *, line: int | None = None, label: str | None = None,
            merge: bool = False):
        """Record a problem; `merge` folds one message repeated over many combinations."""
        path = tuple(path)
        if line is None:
            for i in range(len(path), 0, -1):  # the closest enclosing node that has a line
                if path[:i] in self.lines:
                    line = self.lines[path[:i]]
                    break
        place = label or _dotted(path) or "file"
        place = place if len(place) <= 120 else place[:117] + "..."
        place = f"{place} (line {line})" if line else place
        if (place, message) in [(pl, m) for pl, m, _ in self.items]:
            return
        if merge and message in self.repeats:  # the same problem in another combination
            self.repeats[message] += 1
            return
        if merge:
            self.repeats[message] = 0
        self.items.append((place, message, line or 10**9))

    def messages(self) -> list[str]:
        """One line per problem, in file order (the first MAX_PROBLEMS, then how many more)."""
        out = []
        for place, message, _ in sorted(self.items, key=lambda item: item[2])[:MAX_PROBLEMS]:
            more = self.repeats.get(message, 0)
            out.append(f"{place}: {message}" + (f" (and {more} more combination"
                                                 f"{'s' if more > 1 else ''})" if more else ""))
        if len(self.items) > MAX_PROBLEMS:
            out.append(f"... and {len(self.items) - MAX_PROBLEMS:,} more problems")
        return out


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_map(text: str) -> tuple[dict[tuple, int], list[tuple[tuple, int]]]:
    """Line (1-based) of every key and list item, and keys given twice in one mapping."""
    lines: dict[tuple, int] = {}
    duplicates: list[tuple[tuple, int]] = []

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
                if key in seen:
                    duplicates.append((path + (key,), k.start_mark.line + 1))
                seen.add(key)
                lines.setdefault(path + (key,), k.start_mark.line + 1)
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    root = compose(text)
    if root is not None:
        walk(root, ())
    return lines, duplicates


def _pydantic_message(err: dict) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return (f"unknown field{did_you_mean(str(loc[-1]), allowed)}; "
                f"allowed: {', '.join(allowed)}")
    if kind == "missing":
        return "required field is missing"
    return f"{err['msg']} (got {short_repr(err.get('input'), 80)})"


def _allowed_keys(parent: tuple) -> list[str]:
    model = {(): _File, ("objective",): Objective, ("search",): Search}.get(tuple(parent), _File)
    return list(model.model_fields)


def _key_in(mapping: Any, field: str) -> str:
    """The key the user wrote for `field` (an alias or the field name)."""
    if isinstance(mapping, dict):
        for key in mapping:
            if ALIASES.get(key, key) == field:
                return key
    return field


# --- sections ------------------------------------------------------------------------------------
_FIELDS = TrainConfig.field_names()


def _resolve(p: _Problems, path: tuple, key: Any) -> str | None:
    """The TrainConfig field a key names, or None (with the problem recorded)."""
    if not isinstance(key, str):
        p.add(path, f"keys must be field names, got {key!r}")
        return None
    field = ALIASES.get(key, key)
    if field in MACHINE_SOURCES:
        p.add(path, f"{field} belongs to the machine, not the study: it comes from "
                    f"{MACHINE_SOURCES[field]}")
    elif field == "seed":
        p.add(path, "the seed is set by the top-level `seeds` list")
    elif field not in _FIELDS:
        options = [f for f in _FIELDS if f not in MACHINE_SOURCES] + list(ALIASES)
        p.add(path, f"unknown field{did_you_mean(key, options)}; allowed: TrainConfig fields "
                    f"(wno/config.py) and the aliases {', '.join(ALIASES)}")
    else:
        return field
    return None


def _convert(p: _Problems, path: tuple, field: str, value: Any) -> tuple[bool, Any]:
    """Convert `value` to the field's type as TrainConfig does; (ok, converted value)."""
    try:
        return True, getattr(TrainConfig.from_dict({field: value}), field)
    except ConfigError as e:
        for problem in e.problems:
            p.add(path, problem)
        return False, value


def _mapping_fields(p: _Problems, path: tuple, mapping: Any) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        p.add(path, f"must be a mapping of field: value, got {type(mapping).__name__}")
        return {}
    out = {}
    for key, value in mapping.items():
        field = _resolve(p, path + (key,), key)
        if field is None:
            continue
        if field in out:
            p.add(path + (key,), f"{field} is given twice (once through an alias)")
        ok, value = _convert(p, path + (key,), field, value)
        if ok:
            out[field] = value
    return out


def _grid(p: _Problems, grid: Any) -> dict[str, list[Any]]:
    if not isinstance(grid, dict):
        p.add(("grid",), f"must be a mapping of factor: [values], got {type(grid).__name__}")
        return {}
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        field = _resolve(p, ("grid", key), key)
        if field is None:
            continue
        if field in out:
            p.add(("grid", key), f"{field} is given twice (once through an alias)")
            continue
        if not isinstance(values, list) or not values:
            p.add(("grid", key), f"must be a non-empty list of values (got {values!r}); a single "
                                 f"value belongs in base")
            continue
        converted = []
        for i, value in enumerate(values):
            ok, value = _convert(p, ("grid", key, i), field, value)
            if ok and value in converted:
                p.add(("grid", key, i), f"{value!r} appears twice")
            elif ok:
                converted.append(value)
        out[field] = converted
    return out


def _baselines(p: _Problems, raw: Any, grid: dict, data: dict) -> dict[str, dict[str, Any]]:
    """name -> TrainConfig overrides; `model` defaults to vit (baselines are usually ViT twins)."""
    if not isinstance(raw, dict):
        return {}  # pydantic reported it
    out = {}
    for name, overrides in raw.items():
        out[name] = _mapping_fields(p, ("baselines", name), overrides or {})
        out[name].setdefault("model", "vit")
    if out and "model" in grid:
        p.add(("grid", _key_in(data.get("grid"), "model")), "model cannot be a grid factor when "
              "baselines are given; put the other model kinds under baselines")
    return out


def _check_metric(p: _Problems, objective: Any, stored: bool) -> list[str]:
    """Problems of the objective's metric; the notes a stored study keeps instead of a refusal."""
    metric = objective.get("metric") if isinstance(objective, dict) else None
    if isinstance(metric, str) and metric in TEST_METRICS:
        if stored:
            return [f"objective {metric!r} selects on the test set (stored before wno refused "
                    f"test metrics as objectives): read its ranking as test-set selection, or "
                    f"create the study again with {' or '.join(SEARCH_METRICS)}"]
        p.add(("objective", "metric"), f"{metric!r} would select on the test set: the objective "
                                       f"ranks configurations (and steers a search), so it must "
                                       f"be a validation metric ({', '.join(SEARCH_METRICS)}); "
                                       f"test accuracy is reported beside it in every report")
    elif isinstance(metric, str) and metric not in schema.FINAL_METRICS:
        p.add(("objective", "metric"), f"{metric!r} is not a final metric"
                                       f"{did_you_mean(metric, schema.FINAL_METRICS)}; allowed: "
                                       f"{', '.join(schema.FINAL_METRICS)}")
    return []


def _seeds(p: _Problems, seeds: Any, cap: int | None) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            p.add(("seeds",), f"a seed count must be >= 1, got {seeds}")
            return []
        if cap is not None and seeds > cap:  # before building a list of them
            p.add(("seeds",), f"{seeds:,} seeds would plan at least {seeds:,} trials; a study may "
                              f"plan at most {cap:,} ({ENV_MAX_TRIALS} raises the cap)")
            return []
        return list(range(seeds))
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                       for s in seeds)):
        p.add(("seeds",), f"must be a count (e.g. 3) or a non-empty list of integers from 0 to "
                          f"{MAX_SEED:,}, got {short_repr(seeds, 80)}")
        return []
    if len(set(seeds)) != len(seeds):
        p.add(("seeds",), f"a seed appears twice in {seeds}")
    return list(dict.fromkeys(seeds))


def _search(p: _Problems, search: Search, data: dict, base: dict, objective: Objective
            ) -> SearchSpace | None:
    if search.n_trials < 1:
        p.add(("search", "n_trials"), f"must be >= 1, got {search.n_trials}")
    params: dict[str, dict[str, Any]] = {}
    for key, value in search.params.items():
        path = ("search", "params", key)
        field = _resolve(p, path, key)
        if field is None:
            continue
        if field in base:
            p.add(("base", _key_in(data.get("base"), field)),
                  f"{field} is searched; remove it from base")
        param = _param(p, path, field, value)
        if param is not None:
            params[field] = param
    if not search.params:
        p.add(("search", "params"), "give at least one field to search over")
    if objective.metric not in SEARCH_METRICS and objective.metric not in TEST_METRICS:
        p.add(("objective", "metric"), f"a search study prunes on a per-epoch metric: use one of "
                                       f"{', '.join(SEARCH_METRICS)}")
    sampler = _named(p, ("search", "sampler"), search.sampler, SAMPLERS)
    pruner = _named(p, ("search", "pruner"), search.pruner, PRUNERS)
    if sampler is None or pruner is None or len(params) != len(search.params):
        return None
    return SearchSpace(search.n_trials, params, sampler, pruner)


def _param(p: _Problems, path: tuple, field: str, value: Any) -> dict[str, Any] | None:
    kind = TrainConfig.field_type(field)
    if isinstance(value, list):
        if not value:
            p.add(path, "an empty list of choices")
            return None
        choices = []
        for i, v in enumerate(value):
            ok, v = _convert(p, path + (i,), field, v)
            if ok:
                choices.append(v)
        return {"choices": choices} if len(choices) == len(value) else None
    if not isinstance(value, dict):
        p.add(path, "must be a list of choices or {low, high[, log][, step]}")
        return None
    unknown = sorted(set(value) - {"low", "high", "log", "step"})
    if unknown:
        keys = ["low", "high", "log", "step"]
        p.add(path + (unknown[0],), f"unknown key{did_you_mean(unknown[0], keys)}; allowed: "
                                    f"{', '.join(keys)}")
        return None
    if kind not in (int, float):
        p.add(path, f"{field} is a {kind.__name__}: give a list of choices instead of a range")
        return None
    if "low" not in value or "high" not in value:
        p.add(path, "a range needs both low and high")
        return None
    ok_low, low = _convert(p, path + ("low",), field, value["low"])
    ok_high, high = _convert(p, path + ("high",), field, value["high"])
    log, step = value.get("log", False), value.get("step")
    if not isinstance(log, bool):
        p.add(path + ("log",), f"must be true or false, got {log!r}")
        return None
    if not (ok_low and ok_high) or low is None or high is None:
        return None
    if low >= high:
        p.add(path, f"low={low} must be below high={high}")
    if log and low <= 0:
        p.add(path, f"a log range needs low > 0, got {low}")
    if log and step is not None:
        p.add(path, "log and step cannot be combined")
    if step is not None and (not isinstance(step, (int, float)) or isinstance(step, bool)
                             or not math.isfinite(step) or step <= 0
                             or (kind is int and not float(step).is_integer())):
        p.add(path + ("step",), f"must be a positive {'integer' if kind is int else 'number'}")
    return {"low": low, "high": high, "log": log, "step": step}


def _named(p: _Problems, path: tuple, value: Any, registry: dict) -> dict[str, Any] | None:
    """`tpe` or {name: tpe, seed: 0, ...options}; checked by building it once."""
    spec = {"name": value} if isinstance(value, str) else value
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        p.add(path, f"must be a name ({', '.join(registry)}) or a mapping with `name` and options")
        return None
    if spec["name"] not in registry:
        p.add(path, f"{spec['name']!r} is not one of {', '.join(registry)}"
                    f"{did_you_mean(spec['name'], registry)}")
        return None
    options = {k: v for k, v in spec.items() if k != "name"}
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature warnings
            registry[spec["name"]]()(**options)
    except (TypeError, ValueError) as e:
        p.add(path, f"invalid options for {spec['name']}: {e}")
        return None
    return dict(spec)


# --- the plan -------------------------------------------------------------------------------------
def _fits(p: _Problems, grid: dict[str, list], seeds: list[int], baselines: dict,
          search: SearchSpace | None, data: dict, cap: int | None) -> bool:
    """Whether the plan stays within `cap` trials, counted from the sizes alone (an upper bound:
    merged duplicates only make it smaller), so that an absurd file is refused before anything is
    expanded or validated configuration by configuration."""
    if cap is None:
        return True
    combos = math.prod(len(v) for v in grid.values())
    per_seed = (search.n_trials if search is not None else combos) + len(baselines) * combos
    total = per_seed * len(seeds)
    if total <= cap:
        return True
    sizes = " x ".join(f"{len(v):,} {_key_in(data.get('grid'), f)}" for f, v in grid.items())
    what = (f"{search.n_trials:,} search trials" if search is not None else
            f"{combos:,} configurations ({sizes})")
    place = ("search", "n_trials") if search is not None else ("grid",) if grid else ("seeds",)
    p.add(place, f"{what} x {len(seeds):,} seed(s), with baselines, would plan up to {total:,} "
                 f"trials; a study may plan at most {cap:,} ({ENV_MAX_TRIALS} raises the cap)")
    return False


def _plan(p: _Problems, base: dict, grid: dict[str, list], seeds: list[int],
          baselines: dict[str, dict], search: SearchSpace | None, data: dict,
          canonical: dict[str, Any] | None = None) -> tuple[list[TrialPlan], list[str]]:
    """Every trial of the study, seed-major (one seed of everything first), duplicates merged."""
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    models: list[tuple[dict, TrainConfig, dict]] = []  # (combo, config, factors it reads)
    if search is None:
        for combo in combos:
            cfg = _checked(p, base, combo, {}, seeds[0], _grid_label(combo, data),
                           ("grid",) if combo else ("base",), data)
            if cfg is not None:
                models.append((combo, cfg, _factors_read(cfg, combo, grid)))
    else:
        _check_search(p, base, search, seeds[0], _get(data, ("search", "params")))
    twins: list[tuple[str, dict, TrainConfig]] = []
    for name, overrides in baselines.items():
        for combo in combos or [{}]:
            label = f"baselines.{name}" + (f"[{_combo_text(combo, data)}]" if combo else "")
            cfg = _checked(p, base, combo, overrides, seeds[0], label, ("baselines", name), data)
            if cfg is not None:
                shared = {f: v for f, v in combo.items() if f not in overrides
                          and _reads(cfg, f, grid[f])}
                twins.append((name, {"baseline": name, **shared}, cfg))
    if p.items:
        return [], []

    plan, seen, labels, notes = [], {}, {}, []
    for seed in seeds:
        for name, factors, cfg in twins:
            group = schema.group_label(factors)
            _add(plan, seen, labels, notes, TrialPlan(cfg.replace(seed=seed).canonical(canonical),
                                                      schema.ROLE_BASELINE, factors, group, seed),
                 group)
        if search is not None:
            plan += [TrialPlan(None, schema.ROLE_MODEL, {}, "", seed)
                     for _ in range(search.n_trials)]
        for combo, cfg, factors in models:
            _add(plan, seen, labels, notes,
                 TrialPlan(cfg.replace(seed=seed).canonical(canonical), schema.ROLE_MODEL, factors,
                           schema.group_label(factors), seed), schema.group_label(combo))
    return plan, list(dict.fromkeys(notes))


def _add(plan: list, seen: dict, labels: dict, notes: list, trial: TrialPlan, label: str) -> None:
    """Plan `trial` unless its configuration is planned already (`label`: its grid cell, for the
    note that says so)."""
    first = seen.get(trial.key)
    if first is None:
        seen[trial.key], labels[trial.key] = trial, label
        plan.append(trial)
    elif trial.role == schema.ROLE_MODEL or first.role == schema.ROLE_MODEL:
        notes.append(f"'{label}' is the same configuration as '{labels[trial.key]}' (fields its "
                     f"model ignores, or values that build the same model); it is trained once")


def _factors_read(cfg: TrainConfig, combo: dict, grid: dict[str, list]) -> dict:
    """The grid factors of `combo` that its configuration reads (`_reads`). A seed token layout
    ignores `token_patch`, a model without the kernel its radius: its label and the report's
    factor effects leave such a factor out. The whole combination stays if nothing would be left."""
    read = {f: v for f, v in combo.items() if _reads(cfg, f, grid[f])}
    return read or dict(combo)


def _reads(cfg: TrainConfig, field: str, values: list) -> bool:
    """Does `cfg` read `field` over `values`: do they make more than one configuration of it?
    (A single value: is it among the fields its model reads, `TrainConfig.ignored_fields`.)"""
    if len(values) > 1:  # stops at the first value that makes another configuration
        first = cfg.replace(**{field: values[0]}).config_hash()
        return any(cfg.replace(**{field: v}).config_hash() != first for v in values[1:])
    return field not in cfg.replace(**{field: values[0]}).ignored_fields()


def _grid_label(combo: dict, data: dict) -> str:
    return f"grid[{_combo_text(combo, data)}]" if combo else "base"


def _combo_text(combo: dict, data: dict) -> str:
    return ", ".join(f"{_key_in(data.get('grid'), f)}={v}" for f, v in combo.items())


_MENTION = re.compile(r"\b([a-z_]+)=")


def _checked(p: _Problems, base: dict, combo: dict, overrides: dict, seed: int, label: str,
             section: tuple, data: dict) -> TrainConfig | None:
    """The config of one combination, or None with its problems recorded.

    A problem about fields set only in base (or only in a baseline's overrides) is placed there,
    e.g. ``base.n_levels (line 6): n_levels=5 is not reachable for wavelet 'db4' ...``; one that
    involves the grid names the combination, e.g. ``grid[wavelet=db4, levels=4] (line 5): ...``,
    plus the other places it depends on (``... with base.n_levels=5``).
    """
    try:
        cfg = TrainConfig.from_dict({**base, **combo, **overrides, "seed": seed})
    except ConfigError as e:  # types were checked per field already; this is a safety net
        for problem in e.problems:
            p.add(section, problem, label=label)
        return None
    problems = cfg.problems()
    for problem in problems:
        mentioned = [f for f in dict.fromkeys(_MENTION.findall(problem)) if f in _FIELDS]
        owner = {}  # field -> where its value was set
        for f in mentioned:
            if f in overrides:
                owner[f] = section + (_key_in(_get(data, section), f),)
            elif f in combo:
                owner[f] = ("grid",)
            elif f in base:
                owner[f] = ("base", _key_in(data.get("base"), f))
        places = set(o[:-1] if o[0] != "grid" else o for o in owner.values())
        if mentioned and len(owner) == len(mentioned) and len(places) == 1 and ("grid",) not in places:
            p.add(owner[mentioned[0]], problem, merge=True)  # e.g. base.n_levels
            continue
        fixed = [f"{_dotted(o[:-1])}.{f}={_get(data, o[:-1]).get(o[-1])}"
                 for f, o in owner.items() if o[0] != "grid"]
        p.add(section, problem, label=label + (" with " + ", ".join(fixed) if fixed else ""),
              merge=True)
    return None if problems else cfg


def _get(data: dict, path: tuple) -> dict:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def _check_search(p: _Problems, base: dict, search: SearchSpace, seed: int, raw: dict) -> None:
    """Each searched value at its extremes (or each choice), the others at their first value."""
    first = {f: (v["choices"][0] if "choices" in v else v["low"]) for f, v in search.params.items()}
    for field, param in search.params.items():
        values = param["choices"] if "choices" in param else [param["low"], param["high"]]
        for value in values:
            cfg = TrainConfig.from_dict({**base, **first, field: value, "seed": seed})
            for problem in cfg.problems():
                p.add(("search", "params", _key_in(raw, field)),
                      f"{field}={value!r} cannot run: {problem}")
