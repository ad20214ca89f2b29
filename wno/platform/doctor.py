"""`wno doctor`: is this machine ready to train, queue and track? One line per check.

The seed's `test_installation.py`, grown with the platform: versions, devices, a wavelet round
trip and a forward pass on every device, the data set, the study storage and the tracking store.
Each check says OK, or what is wrong and what to do; failures of what a run needs make the exit
status non-zero, warnings do not.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from wno.base.errors import one_line

OK, WARN, FAIL = "ok", "warn", "fail"
PINNED = {"torch": "2.14.1", "torchvision": "0.29.1"}


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str


_DISTRIBUTIONS = {"pywt": "PyWavelets"}


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        importlib.import_module(module)
    except Exception:
        return None
    try:
        return version(_DISTRIBUTIONS.get(module, module))
    except PackageNotFoundError:
        return "unknown"


def check_versions() -> Iterator[Check]:
    yield Check("python", OK if sys.version_info >= (3, 11) else FAIL, platform.python_version())
    for module in ("torch", "torchvision", "ptwt", "pywt", "optuna", "mlflow", "plotly", "pandas",
                   "scipy", "typer", "pydantic"):
        v = _version(module)
        if v is None:
            yield Check(module, FAIL, "not importable: reinstall the project (make venv)")
        elif module in PINNED and not v.startswith(PINNED[module]):
            yield Check(module, WARN, f"{v} (the project pins {PINNED[module]}; other pairings of "
                                      f"torch and torchvision can fail to import together)")
        else:
            yield Check(module, OK, v)
    try:
        import torch
        import torchvision

        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
        yield Check("torchvision ops", OK, "torchvision's C++ operators load beside torch")
    except Exception as e:
        yield Check("torchvision ops", FAIL, f"{e}; install torch==2.14.1 with torchvision==0.29.1")


def devices() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found


def check_devices() -> Iterator[Check]:
    import torch

    yield Check("cpu", OK, f"{os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            yield Check(f"cuda:{i}", OK, f"{p.name}, {p.total_memory / 2**30:.0f} GiB, "
                                         f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    else:
        yield Check("cuda", WARN, "no CUDA device: training runs on the CPU (`--gpu cpu` for workers)")


def check_model(device: str) -> Iterator[Check]:
    import torch

    from wno.training.config import TrainConfig
    from wno.model import build_model
    from wno.model.wavelets_2d import WaveletTransform2d

    try:
        x = torch.randn(2, 3, 32, 32, device=device)
        wt = WaveletTransform2d("db4", 3).to(device)
        err = (wt.inverse(wt(x)) - x).abs().max().item()
        yield Check(f"wavelet round trip ({device})", OK if err < 1e-4 else FAIL,
                    f"db4, 3 levels: max error {err:.1e}")
        for kind in ("wavelet", "vit"):
            model = build_model(TrainConfig(model=kind, model_size="micro", device=device))
            out = model.to(device)(x)
            good = out.shape == (2, 10) and bool(torch.isfinite(out).all())
            yield Check(f"forward {kind} ({device})", OK if good else FAIL,
                        f"micro model -> {tuple(out.shape)}")
    except Exception as e:
        yield Check(f"model ({device})", FAIL, f"{type(e).__name__}: {e}")


def check_data(data_dir: str) -> Iterator[Check]:
    from wno.training.data import DataError, load_cifar10

    try:
        train, test, source = load_cifar10(data_dir)
        yield Check("data set cifar10", OK, f"{len(train):,} train + {len(test):,} test images "
                                           f"from {source}")
    except DataError as e:
        yield Check("data set cifar10", FAIL, str(e))


def check_storage(url: str, name: str = "study storage",
                  hint: str = "set --storage or WNO_STORAGE") -> Iterator[Check]:
    from pathlib import Path

    from wno.base.utils import mask_url

    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.exists():
            folder = next((p for p in path.absolute().parents if p.exists()), None)
            if folder is not None and os.access(folder, os.W_OK):
                yield Check(name, OK, f"{mask_url(url)} (created on first use)")
            else:
                yield Check(name, FAIL, f"cannot create {path}: {folder} is not writable ({hint})")
            return
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, connect_args=_connect_args(url))
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
        yield Check(name, OK, mask_url(url))
    except Exception as e:
        yield Check(name, FAIL, f"cannot reach {mask_url(url)}: {type(e).__name__}: "
                                f"{one_line(e)} ({hint})")


def check_tracking(uri: str) -> Iterator[Check]:
    from wno.base.utils import mask_url

    if uri.startswith(("http://", "https://")):
        from wno.platform.tracking import server_health

        try:
            body = server_health(uri, timeout=5)[:64]
            yield Check("tracking server", OK, f"{mask_url(uri)} answers {body.strip()!r}")
        except Exception as e:
            yield Check("tracking server", FAIL, f"cannot reach {mask_url(uri)}: {one_line(e)} "
                                                 f"(start `mlflow server` or set "
                                                 f"MLFLOW_TRACKING_URI)")
        return
    yield from check_storage(uri, "tracking store", "set --tracking-uri or MLFLOW_TRACKING_URI")


def _connect_args(url: str) -> dict:
    return {"connect_timeout": 5} if url.startswith("postgresql") else {}


def run_checks(*, data_dir: str, storage: str, tracking: str, quick: bool = False,
               data: bool = True) -> Iterator[Check]:
    """Every check, in order. `quick` skips the model and data checks (health checks)."""
    sections: list[Callable[[], Iterator[Check]]] = [check_versions, check_devices]
    if not quick:
        sections += [lambda d=d: check_model(d) for d in devices()]
        if data:
            sections.append(lambda: check_data(data_dir))
    sections += [lambda: check_storage(storage), lambda: check_tracking(tracking)]
    for section in sections:
        yield from section()
