"""`wno bundle build`: wno and what a worker needs, as wheels for an offline machine with its own torch.

Many clusters' compute nodes have no network and a CUDA build of torch that must not be
replaced. A bundle is a folder that carries everything else a worker imports:

    wno-bundle/
      manifest.json   target Python and platform, the torch it needs, each wheel and its sha256
      install.py      the installer (wno/platform/offline_install.py: standard library only)
      wheels/         wno's own wheel and the packages of WORKER_PACKAGES, pinned to the versions
                      installed where the bundle is built, for the target Python and platform

It is built where the package registry is reachable (`pip download --only-binary=:all:
--no-deps --python-version 3.12 --platform manylinux_2_28_x86_64 ...`, one pinned name each) and
installed on the node with `python3 wno-bundle/install.py --target DIR` (docs/offline.md).

WORKER_PACKAGES is the smallest set that a worker run (a study trained to the end, with MLflow
tracking to a local store) imports on a machine that has only NODE_PACKAGES:
tests/test_offline.py runs such a worker in an environment holding exactly those and checks
that every listed distribution was imported. Most of it is MLflow's import-time closure.

Example (needs the registry):
    >>> report = build_bundle("dist/wno-bundle", python="3.12")  # doctest: +SKIP
    >>> report.total_bytes / 1e6  # doctest: +SKIP
    25.3
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from wno.base.code_version import code_version
from wno.base.errors import Unavailable, UserError
from wno.platform import offline_install as installer

# What the target GPU node (an H200 with its own CUDA torch) already has besides the standard
# library: the bundle never carries these.
NODE_PACKAGES = ("torch", "torchvision", "triton", "numpy", "pandas", "scipy", "typer", "rich",
                 "PyYAML", "requests", "psutil", "pytest", "pytest-timeout", "matplotlib",
                 "pillow", "timm", "tqdm", "nvidia-ml-py", "setuptools", "wheel", "pip")

# Everything else a worker imports, by who needs it (found by elimination in a node-like
# environment; see the module docstring).
WORKER_PACKAGES = (
    # the model: wavelet transforms
    "ptwt", "PyWavelets",
    # the queue: Optuna on SQLite
    "optuna", "SQLAlchemy", "alembic", "Mako", "colorlog",
    # configs and specs (and MLflow's entities)
    "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
    # tracking: MLflow without its server and UI, and what `import mlflow` pulls in
    "mlflow-skinny", "protobuf", "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-proto",
    "opentelemetry-semantic-conventions", "sqlparse", "cachetools", "click", "importlib-metadata",
    "databricks-sdk", "fastapi", "starlette", "anyio",
    # MLflow's SQL store encrypts registry secrets: cryptography and its C binding
    "cryptography", "cffi",
)

# The oldest torch the code is known to train with (FlexAttention's forward and compiled
# backward on an H200: torch 2.11 with its torchvision 0.26); the pinned pair is newer.
REQUIRES = {"torch": "2.11", "torchvision": "0.26"}
# What the installer imports from the installed folder before it is put into place.
CHECK_IMPORTS = ("wno", "wno.cli", "wno.platform.worker", "wno.platform.tracking", "ptwt",
                 "optuna", "sqlalchemy", "mlflow")
DEFAULT_OUT = "dist/wno-bundle"
DEFAULT_PYTHON = "3.12"
DEFAULT_PLATFORM = "manylinux_2_28_x86_64"


@dataclass
class BundleReport:
    out: Path
    python: str
    platform: str
    wheels: list[dict] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(w["bytes"] for w in self.wheels)

    def lines(self) -> list[str]:
        out = [f"wrote {self.out}: {len(self.wheels)} wheels, {self.total_bytes / 1e6:.1f} MB, "
               f"for CPython {self.python} {self.platform}"]
        out += [f"  {w['name']} {w['version']}  {w['bytes'] / 1e6:.2f} MB"
                for w in sorted(self.wheels, key=lambda w: -w["bytes"])[:5]]
        out.append(f"on the offline machine: python3 {self.out}/install.py --target DIR [--gpu 0]")
        return out


def pins(packages: tuple[str, ...] = WORKER_PACKAGES) -> dict[str, str]:
    """{name: installed version}: the bundle carries what this environment is tested with."""
    found, missing = {}, []
    for name in packages:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise UserError(f"{', '.join(missing)} not installed here: a bundle pins the versions of "
                        "this environment; build it from wno's own environment (make venv)")
    return found


def platform_tags(plat: str) -> list[str]:
    """The platform tags a manylinux_X_Y machine runs, newest first: pip download takes
    `--platform` literally, so a 2_28 target must also name 2_27 ... 2_17 and manylinux2014.

    >>> platform_tags("manylinux_2_17_x86_64")[:2], platform_tags("manylinux_2_17_x86_64")[-3:]
    (['manylinux_2_17_x86_64', 'manylinux_2_16_x86_64'], ['manylinux2014_x86_64', 'manylinux2010_x86_64', 'manylinux1_x86_64'])
    """
    machine = _target("3", plat)
    major, minor = machine.glibc
    tags = [f"manylinux_{major}_{m}_{machine.arch}" for m in range(minor, 4, -1)]
    tags += [f"{legacy}_{machine.arch}" for legacy, glibc in installer.LEGACY_MANYLINUX.items()
             if glibc <= machine.glibc][::-1]
    return tags


def repo_root() -> Path:
    """The checkout wno is imported from: its wheel is built from there."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or not re.search(r'^name = "wno"$', pyproject.read_text(), re.M):
        raise UserError(f"wno is imported from {root}, which is not a checkout (no pyproject.toml "
                        "naming wno): build the bundle from a checkout")
    return root


def _pip(args: list[str], what: str) -> None:
    run = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if run.returncode != 0:
        tail = "\n".join((run.stderr or run.stdout).strip().splitlines()[-6:])
        raise Unavailable(f"{what} failed (is the package registry reachable?):\n{tail}")


def download_wheels(folder: Path, versions: dict[str, str], python: str, plat: str) -> None:
    """Each pinned package as a wheel for (python, plat), without dependencies."""
    platforms = [arg for tag in platform_tags(plat) for arg in ("--platform", tag)]
    _pip(["download", "--only-binary=:all:", "--no-deps", "--python-version", python,
          "--implementation", "cp", *platforms, "--dest", str(folder),
          *(f"{name}=={version}" for name, version in versions.items())],
         f"pip download for CPython {python} {plat}")


def build_project_wheel(folder: Path, root: Path) -> None:
    """wno's wheel, built from a copy of the package: setuptools would otherwise leave build/
    and wno.egg-info in the checkout, and a stale build/lib can carry deleted modules along."""
    with tempfile.TemporaryDirectory(prefix="wno-src-") as tmp:
        src = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            shutil.copyfile(root / name, src / name)
        shutil.copytree(root / "wno", src / "wno",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _pip(["wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(folder), str(src)],
             "building wno's own wheel")


def assemble(out: str | Path, wheels: list[Path], *, python: str, plat: str,
             project: dict | None = None, replace: bool = False) -> BundleReport:
    """Write the bundle folder `out` from wheel files: copies them, writes the manifest and the
    installer, checks every wheel suits (python, plat), and renames the folder into place."""
    out = Path(out)
    target = _target(python, plat)
    _check_out(out, replace)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        staging.chmod(0o755)
        (staging / "wheels").mkdir()
        entries = []
        for wheel in sorted(wheels, key=lambda p: p.name.lower()):
            parsed = installer.parse_wheel_name(wheel.name)
            dest = staging / "wheels" / wheel.name
            shutil.copyfile(wheel, dest)
            data_hash = installer.sha256_file(dest)
            entries.append({"file": f"wheels/{wheel.name}", "name": parsed["name"],
                            "version": parsed["version"], "sha256": data_hash,
                            "bytes": dest.stat().st_size})
        manifest = {
            "format": installer.FORMAT, "version": installer.VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "python": python, "platform": plat, "requires": REQUIRES,
            "check_imports": list(CHECK_IMPORTS), "project": project or {}, "wheels": entries}
        (staging / installer.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.copyfile(installer.__file__, staging / "install.py")
        (staging / "install.py").chmod(0o755)
        problems = installer.check_bundle(staging, manifest, target)
        if problems:
            raise UserError("the bundle would be refused on its target:\n  - "
                            + "\n  - ".join(problems))
        if out.exists():
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BundleReport(out, python, plat, entries)


def _target(python: str, plat: str) -> installer.Machine:
    try:
        return installer.Machine.of_target(python, plat)
    except installer.Refusal as e:
        raise UserError(f"--platform: {e}") from None


def _check_out(out: Path, replace: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not replace:
        raise UserError(f"{out} exists and is not empty; choose a new folder, or replace a "
                        "bundle there with --replace")
    if not (out / installer.MANIFEST).is_file():
        raise UserError(f"{out} is not a bundle (no {installer.MANIFEST}); --replace only "
                        "replaces a bundle, choose another folder")


def build_bundle(out: str | Path = DEFAULT_OUT, *, python: str = DEFAULT_PYTHON,
                 plat: str = DEFAULT_PLATFORM, replace: bool = False) -> BundleReport:
    """Download the pinned WORKER_PACKAGES for (python, plat), build wno's wheel, assemble."""
    if not re.fullmatch(r"3\.\d{1,2}", python):
        raise UserError(f"--python {python!r}: give a CPython version as 3.N, e.g. 3.12")
    requires = md.metadata("wno")["Requires-Python"]  # ">=3.11"
    lowest = tuple(int(n) for n in re.findall(r"\d+", requires)[:2])
    if tuple(int(n) for n in python.split(".")) < lowest:
        raise UserError(f"--python {python}: wno requires Python {requires}; a node with an "
                        f"older Python needs a newer one (e.g. a virtual environment) first")
    _target(python, plat)  # a bad platform is refused before anything is downloaded
    _check_out(Path(out), replace)
    root = repo_root()
    versions = pins()
    with tempfile.TemporaryDirectory(prefix="wno-bundle-") as tmp:
        wheels = Path(tmp)
        download_wheels(wheels, versions, python, plat)
        build_project_wheel(wheels, root)
        project = {"name": "wno", **code_version()}
        return assemble(out, sorted(wheels.glob("*.whl")), python=python, plat=plat,
                        project=project, replace=replace)
