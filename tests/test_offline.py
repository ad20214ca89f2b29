"""The offline path: `wno bundle build`, the bundle's install.py, and a worker on a node-like
machine that has only what the GPU node has (docs/offline.md).

The installer's refusals are tested with tiny fabricated wheels and a stand-in torch (its
version and CUDA are what the installer asks); every refusal must leave the target untouched.
The slow tests install real wheels into a virtual environment holding only the node's packages
and run the prepared GPU script's dry run there, and (when the registry answers) build a real
bundle and install it.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from offline_helpers import (REPO, edit_manifest, fake_torch, make_wheel, node_env,
                             repack_installed, this_python, tiny_bundle)
from wno.base.errors import UserError
from wno.cli import app
from wno.platform import bundle as B
from wno.platform import offline_install as I


def install(bundle: Path, target: Path, *args: str, torch_dir: Path | None = None,
            python: str = sys.executable) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(torch_dir) if torch_dir else ""}
    return subprocess.run([python, str(bundle / "install.py"), "--target", str(target), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".partial", ".old")))


def add_wheel(bundle: Path, wheel: Path) -> None:
    """Put `wheel` into the bundle with a correct manifest entry (so only its tags are wrong)."""
    dest = bundle / "wheels" / wheel.name
    dest.write_bytes(wheel.read_bytes())
    edit_manifest(bundle, lambda m: m["wheels"].append(
        {"file": f"wheels/{wheel.name}", "name": wheel.name.split("-")[0], "version": "1",
         "sha256": I.sha256_file(dest), "bytes": dest.stat().st_size}))


@pytest.fixture
def bundle(tmp_path) -> Path:
    return tiny_bundle(tmp_path / "bundle", tmp_path / "built")


@pytest.fixture
def torch_211(tmp_path) -> Path:
    return fake_torch(tmp_path / "torch-2.11")


# ------------------------------------------------------------------------------------------------
# Installing
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["pip", "zipfile"])
def test_installs_beside_the_machines_own_torch(tmp_path, bundle, torch_211, how):
    target = tmp_path / "site"
    run = install(bundle, target, *(["--no-pip"] if how == "zipfile" else []), torch_dir=torch_211)
    assert run.returncode == 0, run.stderr
    assert f"(with {how})" in run.stdout
    assert f"export PYTHONPATH={target}${{PYTHONPATH:+:$PYTHONPATH}}" in run.stdout
    assert (target / "tinya" / "__init__.py").is_file()
    assert (target / "tinyb_extra.py").is_file()  # a wheel's .data/purelib lands at the root
    assert not (target / "torch").exists()
    marker = json.loads((target / I.MARKER).read_text())
    assert marker["installed_with"] == how and len(marker["wheels"]) == 2
    check = subprocess.run([sys.executable, "-c", "import tinya, torch; print(tinya.VERSION, "
                            "torch.__file__)"], capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": f"{target}:{torch_211}"})
    assert check.stdout.split() == ["1.0", str(torch_211 / "torch" / "__init__.py")]
    assert leftovers(tmp_path) == []


def test_reinstalls_into_its_own_folder_but_never_into_a_foreign_one(tmp_path, bundle, torch_211):
    target = tmp_path / "site"
    assert install(bundle, target, torch_dir=torch_211).returncode == 0
    (target / "stale.py").write_text("")
    again = install(bundle, target, torch_dir=torch_211)
    assert again.returncode == 0, again.stderr
    assert not (target / "stale.py").exists()  # replaced whole, not merged into

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    run = install(bundle, foreign, torch_dir=torch_211)
    assert run.returncode == 2
    assert "is not empty and was not made by this installer" in run.stderr
    assert os.listdir(foreign) == ["notes.txt"] and leftovers(tmp_path) == []


def test_a_failed_import_check_keeps_the_previous_install(tmp_path, bundle, torch_211):
    target = tmp_path / "site"
    assert install(bundle, target, torch_dir=torch_211).returncode == 0
    before = (target / I.MARKER).read_text()
    edit_manifest(bundle, lambda m: m["check_imports"].append("tinya_nowhere"))
    run = install(bundle, target, torch_dir=torch_211)
    assert run.returncode == 3
    assert "does not import" in run.stderr and "tinya_nowhere" in run.stderr
    assert (target / I.MARKER).read_text() == before and leftovers(tmp_path) == []


def test_check_only_installs_nothing(tmp_path, bundle, torch_211):
    run = install(bundle, tmp_path / "site", "--check", torch_dir=torch_211)
    assert run.returncode == 0, run.stderr
    assert "nothing installed" in run.stdout and not (tmp_path / "site").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    run = install(bundle, taken, "--check", torch_dir=torch_211)
    assert run.returncode == 2 and "is not empty and was not made by this installer" in run.stderr
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


# ------------------------------------------------------------------------------------------------
# Refusals: each names what was wrong and what is allowed, and changes nothing
# ------------------------------------------------------------------------------------------------
def _missing_wheel(bundle, tmp):
    next((bundle / "wheels").glob("tinyb-*.whl")).unlink()


def _damaged_wheel(bundle, tmp):
    wheel = next((bundle / "wheels").glob("tinya-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"\0")


def _old_python_bundle(bundle, tmp):
    edit_manifest(bundle, lambda m: m.update(python="3.9"))


def _wheel_for(tag):
    def change(bundle, tmp):
        add_wheel(bundle, make_wheel(tmp / "extra", "native", "1.0", tag=tag))
    return change


def _torch_wheel(bundle, tmp):
    add_wheel(bundle, make_wheel(tmp / "extra", "torch", "2.11.0"))


def _no_manifest(bundle, tmp):
    (bundle / "manifest.json").unlink()


PY = this_python().replace(".", "")
REFUSALS = {
    "missing-wheel": (_missing_wheel, None, (), 2,
                      r"tinyb-2\.0-py3-none-any\.whl is listed in manifest\.json but missing"),
    "sha256": (_damaged_wheel, None, (), 2,
               r"tinya-1\.0-py3-none-any\.whl does not match its sha256 in manifest\.json"),
    "python": (_old_python_bundle, None, (), 2,
               rf"this bundle is for CPython 3\.9, this python is {this_python()}.*"
               rf"wno bundle build --python {this_python()}"),
    "wheel-python": (_wheel_for("cp39-cp39-manylinux_2_17_x86_64"), None, (), 2,
                     r"native-1\.0-cp39-cp39-manylinux_2_17_x86_64\.whl is built for "
                     rf"cp39-cp39-manylinux_2_17_x86_64; this machine is CPython {this_python()}"),
    "platform": (_wheel_for(f"cp{PY}-cp{PY}-manylinux_2_17_aarch64"), None, (), 2,
                 r"built for .*aarch64; this machine is .* on x86_64"),
    "newer-glibc": (_wheel_for(f"cp{PY}-cp{PY}-manylinux_2_99_x86_64"), None, (), 2,
                    r"manylinux_2_99_x86_64; this machine is .* with glibc"),
    "carries-torch": (_torch_wheel, None, (), 2,
                      r"must not carry torch \(this machine's own torch stack is used"),
    "not-a-bundle": (_no_manifest, None, (), 2, r"has no manifest\.json: not a wno bundle"),
    "old-torch": (None, {"version": "2.10.1+cu128"}, (), 3,
                  r"torch 2\.10\.1\+cu128 is older than this wno needs \(>= 2\.11\)"),
    "old-torchvision": (None, {"torchvision": "0.25.0"}, (), 3,
                        r"torchvision 0\.25\.0 is older than this wno needs \(>= 0\.26\)"),
    "no-cuda": (None, {}, ("--gpu", "0"), 3,
                r"--gpu 0 was asked for, but torch 2\.11\.0\+cu130 sees no CUDA device"),
    "gpu-index": (None, {"cuda": True, "devices": 1}, ("--gpu", "1"), 3,
                  r"--gpu 1 was asked for, but torch sees 1 CUDA device\(s\): choose 0\.\.0"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_input_is_refused_and_changes_nothing(tmp_path, bundle, case):
    damage, torch_kwargs, args, code, pattern = REFUSALS[case]
    if damage:
        damage(bundle, tmp_path)
    torch_dir = fake_torch(tmp_path / "torch", **(torch_kwargs or {}))
    before = sorted(os.listdir(tmp_path))
    run = install(bundle, tmp_path / "site", *args, torch_dir=torch_dir)
    assert run.returncode == code, run.stdout + run.stderr
    assert "nothing was installed" in run.stderr
    assert __import__("re").search(pattern, run.stderr), run.stderr
    assert sorted(os.listdir(tmp_path)) == before  # no target, no half-written folder


def test_a_bundle_for_another_python_is_one_problem_not_one_per_wheel(tmp_path, bundle):
    _old_python_bundle(bundle, tmp_path)
    _wheel_for("cp39-cp39-manylinux_2_17_x86_64")(bundle, tmp_path)
    run = install(bundle, tmp_path / "site", torch_dir=fake_torch(tmp_path / "torch"))
    assert run.returncode == 2 and "this bundle is for CPython 3.9" in run.stderr
    assert "is built for" not in run.stderr, run.stderr


def test_a_torch_that_does_not_import_is_named(tmp_path, bundle):
    broken = tmp_path / "broken"
    (broken / "torch").mkdir(parents=True)
    (broken / "torch" / "__init__.py").write_text("raise ImportError('libcudart.so.13: cannot "
                                                  "open shared object file')\n")
    run = install(bundle, tmp_path / "site", torch_dir=broken)
    assert run.returncode == 3
    assert "torch cannot be imported by this python (ImportError: libcudart.so.13" in run.stderr


def test_every_problem_is_named_at_once(tmp_path, bundle, torch_211):
    _missing_wheel(bundle, tmp_path)
    _damaged_wheel(bundle, tmp_path)
    run = install(bundle, tmp_path / "site", torch_dir=torch_211)
    assert run.returncode == 2
    assert "tinyb-2.0-py3-none-any.whl is listed" in run.stderr
    assert "tinya-1.0-py3-none-any.whl does not match its sha256" in run.stderr


def test_the_installer_needs_only_the_standard_library():
    """It must run where wno and its dependencies are not installed yet."""
    tree = ast.parse(Path(I.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


@pytest.mark.parametrize("tag, runs", [
    ("py3-none-any", True), (f"cp{PY}-cp{PY}-manylinux2014_x86_64", True),
    ("cp38-abi3-manylinux_2_17_x86_64", True), (f"cp{PY}-cp{PY}-manylinux_2_28_x86_64", True),
    (f"cp{PY}-cp{PY}-manylinux_2_29_x86_64", False), (f"cp{PY}-cp{PY}-musllinux_1_2_x86_64", False),
    (f"cp{PY}-cp{PY}-win_amd64", False), ("py2-none-any", False), ("cp39-cp39-linux_x86_64", False),
])
def test_wheel_tags_are_judged_as_pip_would(tag, runs):
    machine = I.Machine.of_target(this_python(), "manylinux_2_28_x86_64")
    assert I.wheel_runs_on(f"x-1.0-{tag}.whl", machine) is runs


# ------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------
def test_platform_tags_name_every_older_manylinux():
    tags = B.platform_tags("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags
    assert tags[-3:] == ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    assert "manylinux_2_29_x86_64" not in tags


@pytest.mark.parametrize("args, pattern", [
    (["--python", "3"], r"--python '3': give a CPython version as 3\.N"),
    (["--python", "3.10"], r"--python 3\.10: wno requires Python >=3\.11"),
    (["--platform", "win_amd64"], r"platform 'win_amd64' is not manylinux_X_Y_ARCH"),
], ids=["python", "old python", "platform"])
def test_build_refuses_bad_input_before_downloading(tmp_path, monkeypatch, args, pattern):
    monkeypatch.setattr(B, "download_wheels", lambda *a: pytest.fail("downloaded"))
    result = CliRunner().invoke(app, ["bundle", "build", "--out", str(tmp_path / "b"), *args])
    assert result.exit_code == 2
    assert __import__("re").search(pattern, result.output), result.output
    assert not (tmp_path / "b").exists()


def test_build_refuses_a_folder_that_is_not_a_bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "download_wheels", lambda *a: pytest.fail("downloaded"))
    out = tmp_path / "b"
    out.mkdir()
    (out / "x").write_text("")
    runner = CliRunner()
    result = runner.invoke(app, ["bundle", "build", "--out", str(out)])
    assert result.exit_code == 2 and "--replace" in result.output
    result = runner.invoke(app, ["bundle", "build", "--out", str(out), "--replace"])
    assert result.exit_code == 2 and "is not a bundle" in result.output
    assert os.listdir(out) == ["x"]


def test_assemble_refuses_wheels_its_target_would_refuse(tmp_path):
    wheels = [make_wheel(tmp_path / "w", "ok"), make_wheel(tmp_path / "w", "native", tag=
                                                           "cp39-cp39-manylinux_2_17_x86_64")]
    with pytest.raises(UserError, match=r"native-1\.0-cp39.*is built for.*CPython 3\.12"):
        B.assemble(tmp_path / "b", wheels, python="3.12", plat="manylinux_2_28_x86_64")
    assert sorted(os.listdir(tmp_path)) == ["w"]


def test_pins_are_this_environments_versions():
    import importlib.metadata as md

    pins = B.pins()
    assert pins["optuna"] == md.version("optuna") and set(pins) == set(B.WORKER_PACKAGES)
    with pytest.raises(UserError, match="no-such-dist not installed here"):
        B.pins(("no-such-dist",))


# ------------------------------------------------------------------------------------------------
# A node-like machine: only the node's packages, then the bundle, then the GPU script's dry run
# ------------------------------------------------------------------------------------------------
RECORDER = """
import atexit, json, os, sys
def _record():
    site = os.environ.get("WNO_TEST_SITE")
    if not site:
        return
    tops = sorted({name.split(".")[0] for name, mod in list(sys.modules.items())
                   if (getattr(mod, "__file__", None) or "").startswith(site)})
    path = os.path.join(os.environ["WNO_TEST_RECORD"], f"{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump(tops, f)
atexit.register(_record)
"""


def _top_levels(site: Path) -> dict[str, set[str]]:
    """{distribution: its top-level modules} of what was installed into `site`."""
    out = {}
    for record in site.glob("*.dist-info/RECORD"):
        name = record.parent.name.split("-")[0].lower().replace("_", "-")
        paths = [line.split(",")[0] for line in record.read_text().splitlines() if line]
        # a package folder, or a module file at the top (x.py, _x.cpython-311-x86_64-linux-gnu.so)
        out[name] = {p.split("/")[0] if "/" in p else p.split(".")[0] for p in paths}
        out[name] = {t for t in out[name] if not t.endswith((".dist-info", ".data"))}
    return out


@pytest.mark.slow
def test_a_worker_trains_on_a_node_like_machine_from_the_bundle_alone(tmp_path):
    """A virtual environment holding only what the GPU node has (NODE_PACKAGES, and what they
    need) gets the bundle through install.py inside benchmarks/gpu_check.sh's dry run, which then
    trains a study with two workers and MLflow tracking. Every distribution of WORKER_PACKAGES
    is imported by some process of that run (the set is minimal), and the run succeeds with
    nothing else (the set suffices)."""
    python = node_env(tmp_path / "node")
    missing = subprocess.run([str(python), "-c", "import ptwt"], capture_output=True)
    assert missing.returncode != 0  # the node lacks the bundle's packages before the install
    wheels = tmp_path / "wheels"
    for name in B.WORKER_PACKAGES:
        repack_installed(name, wheels)
    B.build_project_wheel(wheels, REPO)
    here = I.Machine.here()  # the repacked wheels carry this machine's tags
    bundle = B.assemble(tmp_path / "bundle", sorted(wheels.glob("*.whl")), python=this_python(),
                        plat=f"manylinux_{here.glibc[0]}_{here.glibc[1]}_{here.arch}").out
    recorder = tmp_path / "recorder"
    recorder.mkdir()
    (recorder / "sitecustomize.py").write_text(RECORDER)
    records = tmp_path / "records"
    records.mkdir()
    site, out = tmp_path / "work" / "site", tmp_path / "out"
    env = {**os.environ, "PYTHON": str(python), "WNO_BUNDLE": str(bundle), "OUT": str(out),
           "WORK": str(tmp_path / "work"), "SITE": str(site), "DRY_RUN": "1",
           "PYTHONPATH": str(recorder), "WNO_TEST_SITE": str(site), "WNO_TEST_RECORD": str(records)}
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert f"installed into {site} (with pip)" in log
    status = json.loads((out / "status.json").read_text())
    assert status["counts"]["COMPLETE"] == 6, status
    with sqlite3.connect(out / "mlflow.db") as db:
        assert [r[0] for r in db.execute("select status from runs")] == ["FINISHED"] * 6
    imported = set().union(*(json.loads(p.read_text()) for p in records.glob("*.json")))
    tops = _top_levels(site)
    unused = [name for name in B.WORKER_PACKAGES
              if not tops[name.lower().replace("_", "-")] & imported]
    assert not unused, f"bundled but never imported by the run: {unused}"


def _registry_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_a_real_bundle_builds_and_installs_offline(tmp_path):
    """`wno bundle build` against the registry, for this python, then install.py into a
    node-like environment: the real wheels import (wno's worker and tracking, ptwt, optuna,
    SQLAlchemy, MLflow) beside the environment's own torch."""
    if not _registry_reachable():
        pytest.skip("the package registry (pypi.org) is not reachable from here")
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["bundle", "build", "--out", str(out),
                                      "--python", this_python()])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    names = {w["name"].lower().replace("_", "-") for w in manifest["wheels"]}
    assert names == {n.lower() for n in B.WORKER_PACKAGES} | {"wno"}
    python = node_env(tmp_path / "node")
    run = install(out, tmp_path / "site", python=str(python))
    assert run.returncode == 0, run.stderr
    assert "installed into" in run.stdout
