#!/usr/bin/env python3
"""Install a wno bundle on an offline machine that keeps its own torch (standard library only).

A bundle (`wno bundle build`, see docs/offline.md) is a folder: `manifest.json`, this file as
`install.py`, and `wheels/` (wno and the packages a worker needs beyond what the machine has,
for one Python version and platform). On the offline machine, with its own python3:

    python3 wno-bundle/install.py --target ~/wno-site --gpu 0
    export PYTHONPATH=~/wno-site${PYTHONPATH:+:$PYTHONPATH}
    python3 -m wno worker --gpu 0

One file of about 500 lines by necessity: it runs where wno is not installed yet, so it can
import nothing but the standard library, and it travels inside the bundle as `install.py`.

Everything is checked before anything is written, and every problem is named at once: the
manifest; each wheel (present, sha256, readable, built for this Python and platform); no wheel
that would shadow the machine's torch stack; torch and torchvision present and new enough; with
`--gpu N`, that torch sees CUDA device N. Then the wheels go into a new folder beside `--target`
(`pip install --no-index --no-deps --target`, or unpacked with zipfile where pip is absent),
the folder is checked by importing the bundle's modules next to the machine's torch, and only
then renamed into place. A failure at any step leaves `--target` as it was.

This file must run where wno is not installed yet: it imports nothing but the standard library.

Exit codes: 0 installed (or checked, with --check); 2 the bundle is damaged or built for another
Python or platform, or --target is not ours to replace; 3 this machine lacks what the bundle
needs (torch, torchvision, CUDA for --gpu) or the install itself failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

FORMAT = "wno-bundle"
VERSION = 1
MANIFEST = "manifest.json"
MARKER = ".wno-bundle.json"  # written into an installed folder: --target may replace only these
EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 2, 3
# The machine's own GPU stack: a bundle carrying any of these would shadow it on PYTHONPATH.
PROTECTED = ("torch", "torchvision", "torchaudio", "triton", "pytorch-triton")
PROTECTED_PREFIXES = ("nvidia-", "cuda-")
# Legacy manylinux names and the glibc they stand for (PEP 600).
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?"
                         r"-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


class Refusal(Exception):
    """Problems that stop the install; `problems` are shown one a line, `code` is the exit code."""

    def __init__(self, problems: list[str], code: int = EXIT_BAD_INPUT):
        super().__init__("\n".join(problems))
        self.problems, self.code = problems, code


@dataclass(frozen=True)
class Machine:
    """What decides which wheels run here: the CPython version, the CPU, the C library."""

    python: tuple[int, int]  # (3, 12)
    arch: str  # x86_64, aarch64
    glibc: tuple[int, int] | None  # None: not glibc (musl) or unknown

    @classmethod
    def here(cls) -> Machine:
        glibc = None
        try:
            name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
            glibc = _version_tuple(version, 2) if name == "glibc" else None
        except (AttributeError, ValueError, OSError):
            pass
        return cls(sys.version_info[:2], platform.machine(), glibc)

    @classmethod
    def of_target(cls, python: str, plat: str) -> Machine:
        """The oldest machine a bundle built for (python, plat) promises to serve."""
        m = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", plat)
        if not m:
            raise Refusal([f"platform {plat!r} is not manylinux_X_Y_ARCH (e.g. "
                           "manylinux_2_28_x86_64)"])
        return cls(_version_tuple(python, 2), m[3], (int(m[1]), int(m[2])))

    def describe(self) -> str:
        libc = f"glibc {self.glibc[0]}.{self.glibc[1]}" if self.glibc else "no glibc"
        return f"CPython {self.python[0]}.{self.python[1]} on {self.arch} with {libc}"


def _version_tuple(text: str, n: int | None = None) -> tuple[int, ...]:
    """'2.11.0+cu130' -> (2, 11, 0); the leading numbers only."""
    parts = []
    for piece in re.split(r"[.+-]", str(text)):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    if not parts:
        raise ValueError(f"no version number in {text!r}")
    return tuple(parts[:n]) if n else tuple(parts)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------------------------------------
# Wheels: names, tags, contents
# ------------------------------------------------------------------------------------------------
def parse_wheel_name(filename: str) -> dict[str, str]:
    m = _WHEEL_NAME.match(filename)
    if not m:
        raise ValueError(f"{filename!r} is not a wheel file name (name-version-py-abi-platform.whl)")
    return m.groupdict()


def platform_ok(plat: str, machine: Machine) -> bool:
    if plat == "any":
        return True
    if plat == f"linux_{machine.arch}":
        return True  # built on and for Linux without a manylinux promise; pip accepts it too
    m = re.fullmatch(r"(manylinux\d+|manylinux_(\d+)_(\d+))_(\w+)", plat)
    if not m or m[4] != machine.arch or machine.glibc is None:
        return False
    needs = (int(m[2]), int(m[3])) if m[2] else LEGACY_MANYLINUX.get(m[1])
    return needs is not None and needs <= machine.glibc


def tag_ok(py: str, abi: str, plat: str, machine: Machine) -> bool:
    """Whether one (python, abi, platform) tag runs on `machine` (CPython), as pip would judge."""
    if not platform_ok(plat, machine):
        return False
    major, minor = machine.python
    m = re.fullmatch(r"(cp|py)(\d)(\d*)", py)
    if not m or int(m[2]) != major:
        return False
    tag_minor = int(m[3]) if m[3] else None
    if abi == "none":
        if m[1] == "py":
            return tag_minor is None or tag_minor <= minor
        return tag_minor == minor
    if abi == "abi3":  # the stable ABI: built for 3.k, runs on 3.k and later
        return m[1] == "cp" and tag_minor is not None and tag_minor <= minor
    return m[1] == "cp" and abi == f"cp{major}{minor}" and tag_minor == minor


def wheel_runs_on(filename: str, machine: Machine) -> bool:
    p = parse_wheel_name(filename)
    return any(tag_ok(py, abi, plat, machine) for py in p["py"].split(".")
               for abi in p["abi"].split(".") for plat in p["plat"].split("."))


def _wheel_metadata_problem(path: Path) -> str | None:
    """None when `path` is a readable wheel with one top-level `.dist-info/WHEEL`."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            wheel_files = [n for n in names if re.fullmatch(r"[^/]+\.dist-info/WHEEL", n)]
            if len(wheel_files) != 1:
                return f"{path.name} holds {len(wheel_files)} .dist-info/WHEEL files, not one"
            text = z.read(wheel_files[0]).decode("utf-8", "replace")
            if not re.search(r"^Wheel-Version: 1\.", text, re.M):
                return f"{path.name}: its WHEEL file is not Wheel-Version 1.x"
            bad = [n for n in names if n.startswith("/") or ".." in n.split("/")]
            if bad:
                return f"{path.name} has entries outside its folder ({bad[0]})"
    except (zipfile.BadZipFile, OSError) as e:
        return f"{path.name} is not a readable zip ({e})"
    return None


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in blocks (wheels can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# Checks: manifest, wheels, the machine's torch
# ------------------------------------------------------------------------------------------------
def load_manifest(bundle: Path) -> dict:
    path = bundle / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise Refusal([f"{bundle} has no {MANIFEST}: not a wno bundle (build one with "
                       "`wno bundle build`), or a partial copy of one"]) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Refusal([f"{path} cannot be read as JSON ({e}); copy the bundle again"]) from None
    problems = []
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise Refusal([f"{path} is not a {FORMAT} manifest"])
    if manifest.get("version") != VERSION:
        problems.append(f"{path}: version {manifest.get('version')!r}; this installer reads "
                        f"version {VERSION}")
    for key in ("python", "platform"):
        if not isinstance(manifest.get(key), str):
            problems.append(f"{path}: '{key}' is missing")
    wheels = manifest.get("wheels")
    if not isinstance(wheels, list) or not wheels or not all(
            isinstance(w, dict) and isinstance(w.get("file"), str)
            and isinstance(w.get("sha256"), str) for w in wheels):
        problems.append(f"{path}: 'wheels' must list each wheel's file and sha256")
    if problems:
        raise Refusal(problems)
    return manifest


def check_bundle(bundle: Path, manifest: dict, machine: Machine) -> list[str]:
    """Every problem of the bundle for `machine`, each naming the wheel and what is allowed."""
    problems = []
    want = _version_tuple(manifest["python"], 2)
    if machine.python != want:
        problems.append(f"this bundle is for CPython {manifest['python']}, this python is "
                        f"{machine.python[0]}.{machine.python[1]} ({sys.executable}); build one "
                        f"for it: wno bundle build --python {machine.python[0]}.{machine.python[1]}")
    for entry in manifest["wheels"]:
        file = entry["file"]
        path = bundle / file
        name = Path(file).name
        if Path(file).is_absolute() or ".." in Path(file).parts or not name.endswith(".whl"):
            problems.append(f"manifest entry {file!r} must be a .whl file inside the bundle")
            continue
        try:
            parsed = parse_wheel_name(name)
        except ValueError as e:
            problems.append(str(e))
            continue
        dist = canonical(parsed["name"])
        if dist in PROTECTED or dist.startswith(PROTECTED_PREFIXES):
            problems.append(f"{name}: the bundle must not carry {dist} (this machine's own torch "
                            "stack is used, never replaced)")
            continue
        if not path.is_file():
            problems.append(f"{name} is listed in {MANIFEST} but missing from {path.parent}")
            continue
        if sha256_file(path) != entry["sha256"]:
            problems.append(f"{name} does not match its sha256 in {MANIFEST}: damaged or "
                            "replaced; copy the bundle again")
            continue
        if machine.python == want and not wheel_runs_on(name, machine):  # else said once above
            problems.append(f"{name} is built for {parsed['py']}-{parsed['abi']}-{parsed['plat']}; "
                            f"this machine is {machine.describe()}")
            continue
        bad = _wheel_metadata_problem(path)
        if bad:
            problems.append(bad)
    return problems


def probe_torch(python: str) -> dict:
    """The machine's torch as its own python sees it (in a subprocess: torch's import can crash)."""
    code = (
        "import json\n"
        "info = {}\n"
        "try:\n"
        "    import torch\n"
        "    info.update(torch=torch.__version__, file=torch.__file__, cuda=torch.version.cuda,\n"
        "                available=torch.cuda.is_available(), devices=torch.cuda.device_count())\n"
        "except Exception as e:\n"
        "    info['error'] = f'{type(e).__name__}: {e}'\n"
        "try:\n"
        "    import torchvision\n"
        "    info['torchvision'] = torchvision.__version__\n"
        "except Exception as e:\n"
        "    info['torchvision_error'] = f'{type(e).__name__}: {e}'\n"
        "print('WNO-PROBE ' + json.dumps(info))\n")
    # PYTHONPATH stays: on many clusters it is how the machine's torch is found (module load)
    run = subprocess.run([python, "-c", code], capture_output=True, text=True,
                         cwd=tempfile.gettempdir(), timeout=600)
    for line in run.stdout.splitlines():
        if line.startswith("WNO-PROBE "):
            return json.loads(line[len("WNO-PROBE "):])
    tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"{python} could not run the torch probe (exit {run.returncode}): {tail[0]}"}


def check_torch(info: dict, requires: dict, gpu: int | None) -> list[str]:
    problems = []
    need_torch = requires.get("torch")
    if "torch" not in info:
        problems.append(f"torch cannot be imported by this python ({info.get('error')}); the "
                        f"bundle uses the machine's own torch{' >= ' + need_torch if need_torch else ''}")
        return problems
    if need_torch and _version_tuple(info["torch"]) < _version_tuple(need_torch):
        problems.append(f"torch {info['torch']} is older than this wno needs (>= {need_torch}); "
                        "use a python whose torch is new enough")
    need_tv = requires.get("torchvision")
    if "torchvision" not in info:
        problems.append(f"torchvision cannot be imported ({info.get('torchvision_error')}); "
                        f"wno needs the machine's torchvision{' >= ' + need_tv if need_tv else ''}")
    elif need_tv and _version_tuple(info["torchvision"]) < _version_tuple(need_tv):
        problems.append(f"torchvision {info['torchvision']} is older than this wno needs "
                        f"(>= {need_tv})")
    if gpu is not None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        build = f"built for CUDA {info['cuda']}" if info.get("cuda") else "a CPU-only build"
        shown = "unset" if visible is None else repr(visible)
        if not info.get("available"):
            problems.append(f"--gpu {gpu} was asked for, but torch {info['torch']} sees no CUDA "
                            f"device ({build}; CUDA_VISIBLE_DEVICES {shown}): run on a GPU "
                            "node, or leave out --gpu")
        elif gpu >= info.get("devices", 0):
            problems.append(f"--gpu {gpu} was asked for, but torch sees {info['devices']} CUDA "
                            f"device(s): choose 0..{info['devices'] - 1}")
    return problems


# ------------------------------------------------------------------------------------------------
# Installing
# ------------------------------------------------------------------------------------------------
def check_target(target: Path) -> list[str]:
    if not target.exists():
        parent = target.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            return [f"cannot create {target}: {parent} is not writable"]
        return []
    if not target.is_dir():
        return [f"--target {target} exists and is not a folder"]
    if any(target.iterdir()) and not (target / MARKER).is_file():
        return [f"--target {target} is not empty and was not made by this installer (no "
                f"{MARKER}); choose a new folder, it is never merged into"]
    if not os.access(target.parent, os.W_OK):
        return [f"cannot replace {target}: {target.parent} is not writable"]
    return []


def _pip_works(python: str) -> bool:
    run = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True,
                         env=_pip_env())
    return run.returncode == 0


def _pip_env() -> dict[str, str]:
    # Only the wheels named on the command line are installed: no config file, index or
    # find-links of this machine may add or swap anything.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def _install_with_pip(python: str, wheels: list[Path], folder: Path) -> None:
    run = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-deps",
                          "--no-warn-script-location", "--target", str(folder),
                          *map(str, wheels)], capture_output=True, text=True, env=_pip_env())
    if run.returncode != 0:
        tail = "\n".join((run.stderr or run.stdout).strip().splitlines()[-8:])
        raise Refusal([f"pip install --no-index --no-deps --target failed (exit "
                       f"{run.returncode}):\n{tail}"], EXIT_UNAVAILABLE)


def _install_with_zipfile(wheels: list[Path], folder: Path) -> None:
    """Unpack wheels as pip would for pure imports: `*.data/purelib|platlib` to the root,
    `*.data/scripts` to bin/, other data skipped (headers, share/ files a worker never reads)."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                if info.is_dir():
                    continue
                if parts[0].endswith(".data") and len(parts) > 2:
                    kind, rest = parts[1], parts[2:]
                    if kind in ("purelib", "platlib"):
                        parts = rest
                    elif kind == "scripts":
                        parts = ["bin", *rest]
                    else:
                        continue
                dest = folder.joinpath(*parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    dest.chmod(mode | 0o600)


def _verify(python: str, folder: Path, manifest: dict, torch_file: str) -> list[str]:
    """Import the bundle's modules from `folder` next to the machine's torch, as a worker will."""
    modules = [m for m in manifest.get("check_imports", []) if re.fullmatch(r"[\w.]+", m)]
    code = ("import json, sys, importlib\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "import torch\n"
            "print('WNO-VERIFY ' + json.dumps({'torch': torch.__file__}))\n")
    env = dict(os.environ)  # as it will be used: the folder first, then what was there
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tempfile.gettempdir(), timeout=600)  # not a checkout's wno/
    found = [json.loads(line[len("WNO-VERIFY "):]) for line in run.stdout.splitlines()
             if line.startswith("WNO-VERIFY ")]
    if run.returncode != 0 or not found:
        tail = "\n".join(run.stderr.strip().splitlines()[-6:])
        return [f"the installed bundle does not import ({', '.join(modules)}):\n{tail}"]
    if found[0]["torch"] != torch_file:
        return [f"after the install torch comes from {found[0]['torch']}, not the machine's "
                f"{torch_file}: the bundle must not shadow torch"]
    return []


def install(bundle: Path, manifest: dict, target: Path, python: str, use_pip: bool,
            torch_file: str) -> str:
    """Install into a new folder beside `target`, verify it, then rename it into place."""
    wheels = [bundle / w["file"] for w in manifest["wheels"]]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=".partial"))
    old = None
    try:
        staging.chmod(0o755)
        how = "pip" if use_pip else "zipfile"
        if use_pip:
            _install_with_pip(python, wheels, staging)
        else:
            _install_with_zipfile(wheels, staging)
        problems = _verify(python, staging, manifest, torch_file)
        if problems:
            raise Refusal(problems, EXIT_UNAVAILABLE)
        record = {k: manifest.get(k) for k in ("python", "platform", "project", "created")}
        record.update(bundle=str(bundle.resolve()), installed_with=how,
                      wheels=[Path(w["file"]).name for w in manifest["wheels"]])
        (staging / MARKER).write_text(json.dumps(record, indent=1) + "\n")
        if target.exists():
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return how


# ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(
        prog="install.py", description="Install a wno bundle next to this machine's own torch "
        "(offline: pip --no-index --no-deps --target, or zipfile). Checks everything first; "
        "changes nothing when a check fails.")
    p.add_argument("--target", required=True, type=Path,
                   help="folder to install into (new, or one this installer made); put it on "
                        "PYTHONPATH afterwards")
    p.add_argument("--bundle", type=Path, default=here,
                   help="the bundle folder (default: the folder holding this file)")
    p.add_argument("--gpu", type=int, default=None, metavar="N",
                   help="also require CUDA device N to be visible to torch")
    p.add_argument("--check", action="store_true", help="run every check, install nothing")
    p.add_argument("--no-pip", action="store_true",
                   help="unpack the wheels with zipfile even when pip is available")
    args = p.parse_args(argv)
    if args.gpu is not None and args.gpu < 0:
        p.error(f"--gpu {args.gpu}: a GPU index is 0 or more")
    return args


def run(args: argparse.Namespace) -> int:
    bundle, target = args.bundle.resolve(), args.target.expanduser().resolve()
    python = sys.executable
    manifest = load_manifest(bundle)
    problems = check_bundle(bundle, manifest, Machine.here())
    problems += check_target(target)  # writes nothing: --check runs it too
    if problems:
        raise Refusal(problems, EXIT_BAD_INPUT)
    info = probe_torch(python)
    problems = check_torch(info, manifest.get("requires", {}), args.gpu)
    if problems:
        raise Refusal(problems, EXIT_UNAVAILABLE)
    cuda = (f"CUDA {info.get('cuda')}, {info.get('devices')} device(s) visible"
            if info.get("available") else "no CUDA device visible")
    print(f"bundle {bundle}: {len(manifest['wheels'])} wheels for CPython {manifest['python']} "
          f"{manifest['platform']}, all checked")
    print(f"torch {info['torch']} ({cuda}), torchvision {info['torchvision']}: this machine's "
          f"own, from {Path(info['file']).parent.parent}; left as it is")
    if args.check:
        print("--check: nothing installed")
        return 0
    use_pip = not args.no_pip and _pip_works(python)
    how = install(bundle, manifest, target, python, use_pip, info["file"])
    print(f"installed into {target} (with {how}); use it with:")
    print(f"export PYTHONPATH={target}${{PYTHONPATH:+:$PYTHONPATH}}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except Refusal as e:
        print("install.py: nothing was installed:", file=sys.stderr)
        for problem in e.problems:
            print(f"  - {problem}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
