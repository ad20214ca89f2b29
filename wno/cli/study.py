"""`wno study ...`: create a study from a YAML file, list, status, cancel, retry, delete."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from datetime import datetime
from pathlib import Path

import typer

from wno.cli.common import user_errors

STORAGE_HELP = "Optuna storage URL (default: $WNO_STORAGE, else sqlite:///wno-runs/optuna.db)."


def register(app: typer.Typer) -> None:
    study_app = typer.Typer(help="Ablation studies on the Optuna queue: create (enqueue), list, "
                                 "status, cancel, retry, delete.", no_args_is_help=True)
    app.add_typer(study_app, name="study")

    @study_app.command("create")
    def create(
        file: Path = typer.Argument(..., help="Study definition (YAML), e.g. studies/smoke.yaml."),
        storage: str = typer.Option(None, "--storage", help=STORAGE_HELP),
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; "
                                                              "enqueue nothing."),
        update: bool = typer.Option(False, "--update", help="Accept a changed definition under "
                                    "an existing name: enqueue its new trials, keep finished "
                                    "ones, cancel waiting ones it no longer contains."),
        max_trials: int = typer.Option(None, "--max-trials", min=1, help="The most trials the "
                                       "file may plan, counted before it is expanded.",
                                       show_default="$WNO_MAX_TRIALS, else 10,000"),
    ) -> None:
        """Validate FILE, print the plan, enqueue its trials (a rerun adds only what is missing)."""
        with user_errors():
            from wno.platform.queue import StudyQueue
            from wno.platform.spec import load_spec

            spec = load_spec(file, max_trials=max_trials)
            for line in spec.describe():
                typer.echo(line)
            # A dry run creates nothing, not even the storage file.
            queue = _maybe(storage) if dry_run else StudyQueue(storage, create=True)
            if queue is None:
                typer.echo(f"dry run: would create study {spec.name!r} and enqueue "
                           f"{len(spec.plan)} trials")
                return
            r = queue.create(spec, update=update, dry_run=dry_run)
            verb = "would enqueue" if dry_run else "enqueued"
            head = ("dry run: " if dry_run else "") + (
                f"{'would create' if dry_run else 'created'} study {spec.name!r}" if r.created
                else f"study {spec.name!r} exists")
            typer.echo(f"{head} in {queue.shown_url}: {verb} {r.added} trial(s)"
                       + (f", {r.existing} already there" if r.existing else "")
                       + (f", {r.removed} waiting trial(s) no longer in the definition "
                          f"{'would be ' if dry_run else ''}cancelled" if r.removed else ""))
            if not dry_run and r.added:
                typer.echo(f"start workers with: wno worker --gpu 0 --study {spec.name}"
                           + (f" --storage '{queue.shown_url}'" if storage else ""))

    @study_app.command("list")
    def list_(storage: str = typer.Option(None, "--storage", help=STORAGE_HELP)) -> None:
        """Every study in the storage with its trial counts."""
        with user_errors():
            queue = _maybe(storage)
            summaries = queue.summaries() if queue is not None else []
            if not summaries:
                typer.echo("no studies" + (f" in {queue.shown_url}" if queue else
                                           " (the storage does not exist yet)"))
                return
            states = ("WAITING", "RUNNING", "COMPLETE", "PRUNED", "FAIL")
            width = max(5, *(len(s.name) for s in summaries))
            typer.echo(f"{'STUDY':<{width}}  KIND    " + " ".join(f"{s:>8}" for s in states)
                       + "  DESCRIPTION")
            for s in summaries:
                typer.echo(f"{s.name:<{width}}  {s.kind:<6}  "
                           + " ".join(f"{s.counts.get(k, 0):>8}" for k in states)
                           + f"  {s.description}")

    @study_app.command("status")
    def status(
        name: str = typer.Argument(..., help="Study name."),
        storage: str = typer.Option(None, "--storage", help=STORAGE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Progress, running trials, failures, ETA (also re-enqueues trials of lost workers)."""
        with user_errors():
            from wno.platform.queue import StudyQueue

            st = StudyQueue(storage).status(name)
            if as_json:
                typer.echo(json.dumps(_status_dict(st), indent=2, default=str))
                return
            for line in _status_lines(st):
                typer.echo(line)

    @study_app.command("cancel")
    def cancel(name: str = typer.Argument(..., help="Study name."),
               storage: str = typer.Option(None, "--storage", help=STORAGE_HELP)) -> None:
        """Cancel waiting and running trials (running ones stop at their next heartbeat)."""
        with user_errors():
            from wno.platform.queue import StudyQueue

            n = StudyQueue(storage).cancel(name)
            typer.echo(f"cancelled {n} trial(s) of {name!r}; `wno study retry {name}` puts them "
                       f"back")

    @study_app.command("retry")
    def retry(name: str = typer.Argument(..., help="Study name."),
              storage: str = typer.Option(None, "--storage", help=STORAGE_HELP)) -> None:
        """Put failed and cancelled trials back into the queue (they resume from checkpoints)."""
        with user_errors():
            from wno.platform.queue import StudyQueue

            pairs = StudyQueue(storage).retry(name)
            for old, new in pairs:
                typer.echo(f"trial #{old} re-enqueued as #{new}")
            typer.echo(f"{len(pairs)} trial(s) back in the queue of {name!r}")

    @study_app.command("delete")
    def delete(
        name: str = typer.Argument(..., help="Study name."),
        storage: str = typer.Option(None, "--storage", help=STORAGE_HELP),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
        keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints",
                                              help="Keep this machine's checkpoints of the study."),
        checkpoint_dir: str = typer.Option(None, "--checkpoint-dir", help="Checkpoint root "
                                           "(default: $WNO_CHECKPOINT_DIR, else "
                                           "wno-runs/checkpoints)."),
    ) -> None:
        """Delete the study and its trials from the storage (and this machine's checkpoints)."""
        with user_errors():
            from wno.platform import defaults
            from wno.platform.queue import StudyQueue, checkpoint_folder

            queue = StudyQueue(storage)
            queue.study_id(name)
            if not yes:
                typer.confirm(f"delete study {name!r} and all its trials from "
                              f"{queue.shown_url}?", abort=True)
            uid = queue.delete(name)
            typer.echo(f"deleted study {name!r}")
            if keep_checkpoints:
                return
            root = defaults.checkpoint_dir(checkpoint_dir)
            folder = checkpoint_folder(root, name, uid) if uid else None
            if folder is not None and folder.is_dir():
                shutil.rmtree(folder)
                typer.echo(f"removed its checkpoints in {folder}")
            _tidy(root / name, name)


def _tidy(parent: Path, name: str) -> None:
    """Remove the study name's folder when nothing is left in it; otherwise say what stays: the
    checkpoints of other studies of that name, which only their own study may resume or delete."""
    if not parent.is_dir():
        return
    others = sorted(p.name for p in parent.iterdir())
    if not others:
        with contextlib.suppress(OSError):  # a worker of another lineage just wrote there
            parent.rmdir()
        return
    typer.echo(f"kept {len(others)} folder(s) in {parent}: checkpoints of other studies named "
               f"{name!r} (another storage, or written before checkpoints carried their study's "
               f"identity); remove them by hand once no study needs them")


def _maybe(storage: str | None):
    """The queue, or None when the (SQLite) storage does not exist yet."""
    from wno.platform import defaults
    from wno.platform.queue import StudyQueue
    from wno.platform.storage import normalize_url, sqlite_path

    path = sqlite_path(normalize_url(defaults.storage_url(storage)))
    if path is not None and not path.exists():
        return None
    return StudyQueue(storage)


# --- rendering status -----------------------------------------------------------------------------
def _status_lines(st) -> list[str]:
    c = st.counts
    lines = [f"study {st.name} ({st.kind}, {st.objective})"
             + (f": {st.description}" if st.description else "")]
    lines.append(f"{_bar(st.done, st.planned)} {st.done}/{st.planned} done   "
                 + "  ".join(f"{k.lower()} {c.get(k, 0)}"
                             for k in ("WAITING", "RUNNING", "COMPLETE", "PRUNED", "FAIL")))
    lines += [f"note: {n}" for n in st.notes]
    for failed, new in st.retried_now:
        lines.append(f"trial #{failed} lost its worker: "
                     + (f"re-enqueued as #{new}" if new is not None else "not retried again"))
    if st.running:
        lines.append("running:")
        for t in st.running:
            age = f"{t.heartbeat_age:.0f} s ago" if t.heartbeat_age is not None else "none yet"
            lines.append(f"  #{t.number:<4} {t.group} (seed {t.seed})  on {t.host} {t.device}  "
                         f"heartbeat {age}  running {_ago(t.started)}")
    if st.failures:
        lines.append("failed:")
        for t in st.failures:
            then = (f"  -> retried as #{t.retried_by}" if t.retried_by is not None else "")
            lines.append(f"  #{t.number:<4} {t.group} (seed {t.seed}): {t.error or 'no error kept'}"
                         f"{then}")
    eta, mean = st.eta, st.mean_duration
    if eta == 0 and st.done >= st.planned:
        lines.append("finished")
    elif eta is not None and eta > 0:
        lines.append(f"ETA ~{_duration(eta)} (mean trial {_duration(mean)}, "
                     f"{max(1, len(st.running))} worker(s) busy)")
    elif eta is None:
        lines.append("ETA: unknown until a trial completes")
    return lines


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = round(width * done / total) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _ago(t: datetime | None) -> str:
    if t is None:
        return "?"
    return _duration((datetime.now() - t).total_seconds())


def _status_dict(st) -> dict:
    return {"name": st.name, "kind": st.kind, "objective": st.objective, "planned": st.planned,
            "done": st.done, "counts": st.counts, "eta_s": st.eta,
            "mean_trial_s": st.mean_duration,
            "retried_now": [list(p) for p in st.retried_now], "notes": st.notes,
            "trials": [dataclasses.asdict(t) for t in st.trials]}
