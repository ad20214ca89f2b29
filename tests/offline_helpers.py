"""Test helpers for the offline path: fabricated wheels and bundles, a stand-in torch, and a
node-like environment (a virtual environment holding only what the GPU node has).

A wheel is a zip with `<name>-<version>.dist-info/{WHEEL,METADATA,RECORD}`; these helpers write
tiny real ones, or repack a distribution installed here into one (its files as RECORD lists
them), so the installer and pip handle genuine wheel files without a registry.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from wno.platform import bundle as B

REPO = Path(__file__).resolve().parents[1]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(folder: Path, name: str, version: str = "1.0", tag: str = "py3-none-any",
               files: dict[str, str] | None = None) -> Path:
    """A real, minimal wheel `name-version-tag.whl` in `folder` holding `files` (path: text);
    by default one module `<name>/__init__.py` that sets VERSION."""
    folder.mkdir(parents=True, exist_ok=True)
    files = files if files is not None else {f"{name}/__init__.py": f"VERSION = {version!r}\n"}
    dist_info = f"{name}-{version}.dist-info"
    content = {path: text.encode() for path, text in files.items()}
    content[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    content[f"{dist_info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: wno-tests\n"
                                     f"Root-Is-Purelib: true\nTag: {tag}\n").encode()
    record = [_record_line(p, d) for p, d in content.items()] + [f"{dist_info}/RECORD,,"]
    content[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, d in content.items():
            z.writestr(p, d)
    return path


def repack_installed(dist_name: str, folder: Path) -> Path:
    """The installed distribution `dist_name` as a wheel again (its RECORD's files, its WHEEL's
    tag), so the installer and pip can install it into a node-like environment offline."""
    dist = md.distribution(dist_name)
    site = Path(sysconfig.get_paths()["purelib"])
    wheel_text = dist.read_text("WHEEL") or ""
    tags = re.findall(r"^Tag: (\S+)$", wheel_text, re.M) or ["py3-none-any"]
    py = ".".join(sorted({t.split("-")[0] for t in tags}))
    abi = ".".join(sorted({t.split("-")[1] for t in tags}))
    plat = ".".join(sorted({t.split("-")[2] for t in tags}))
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    path = folder / f"{name}-{dist.version}-{py}-{abi}-{plat}.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for f in dist.files or []:
            if f.parts[0] == ".." or f.name == "RECORD" or f.suffix == ".pyc":
                continue
            src = site / f
            if src.is_file():
                z.write(src, str(f))
        info = next(str(f.parent) for f in dist.files if f.name == "METADATA")
        z.writestr(f"{info}/RECORD", "")  # pip rewrites RECORD on install
    return path


def fake_torch(folder: Path, version: str = "2.11.0+cu130", cuda: bool = False,
               devices: int = 0, torchvision: str | None = "0.26.0") -> Path:
    """A stand-in `torch` (and `torchvision`) package: the installer only asks its version and
    whether CUDA is there. Put `folder` first on PYTHONPATH."""
    (folder / "torch").mkdir(parents=True, exist_ok=True)
    (folder / "torch" / "__init__.py").write_text(
        f"__version__ = {version!r}\n"
        "class version:\n"
        f"    cuda = {'13.0' if cuda else None!r}\n"
        "class cuda:\n"
        f"    is_available = staticmethod(lambda: {cuda})\n"
        f"    device_count = staticmethod(lambda: {devices})\n")
    if torchvision:
        (folder / "torchvision").mkdir(exist_ok=True)
        (folder / "torchvision" / "__init__.py").write_text(f"__version__ = {torchvision!r}\n")
    return folder


def this_python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def tiny_bundle(out: Path, wheels_dir: Path, **changes) -> Path:
    """A bundle of two fabricated pure wheels for this python, whose installer checks import
    only `tinya` (so a stand-in torch is enough); `changes` edit its manifest."""
    wheels = [make_wheel(wheels_dir, "tinya", "1.0"),
              make_wheel(wheels_dir, "tinyb", "2.0",
                         files={"tinyb/__init__.py": "", "tinyb-2.0.data/purelib/tinyb_extra.py":
                                "EXTRA = True\n"})]
    B.assemble(out, wheels, python=this_python(), plat=B.DEFAULT_PLATFORM,
               project={"name": "wno", "version": "test"})
    edit_manifest(out, lambda m: m.update(check_imports=["tinya", "tinyb", "tinyb_extra"]))
    if changes:
        edit_manifest(out, lambda m: m.update(changes))
    return out


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=1))


# ------------------------------------------------------------------------------------------------
# A node-like environment: a virtual environment holding only NODE_PACKAGES (with what they
# need), linked from this environment's site-packages; the bundle's packages are absent.
# ------------------------------------------------------------------------------------------------
# What that node lacks: the closure of NODE_PACKAGES stops at these.
NODE_ABSENT = ("ptwt", "PyWavelets", "optuna", "SQLAlchemy", "alembic", "Mako", "colorlog",
               "mlflow", "mlflow-skinny", "pydantic", "psycopg")


def node_distributions() -> set[str]:
    dists = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
    absent = {canonicalize_name(n) for n in NODE_ABSENT}
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in B.NODE_PACKAGES]
    while todo:
        name = todo.pop()
        if name in seen or name in absent or name not in dists:
            continue
        seen.add(name)
        for text in dists[name].requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def node_env(root: Path) -> Path:
    """A venv at `root` whose site-packages links only the node's distributions; its python."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = next(root.glob("lib/python3*/site-packages"))
    here = Path(sysconfig.get_paths()["purelib"])
    dists = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
    for name in node_distributions():
        for f in dists[name].files or []:
            top = f.parts[0]
            if top == ".." or top.endswith(".pth") or (site / top).exists():
                continue
            if (here / top).exists():
                (site / top).symlink_to(here / top)
    return root / "bin" / "python"
