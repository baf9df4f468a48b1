"""Shared fixtures.  Real-data tests read ../shared through environment variables set by .ci/run:

TTQ_DATA_TGZ        the CIFAR-10 JPEG tarball (../shared/data/cifar10-jpeg.tar.gz)
TTQ_PRETRAINED_DIR  the folder of pretrained CIFAR ResNets (../shared/pretrained)
"""
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _env_path(var: str, what: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set: point it at {what} to run this real-data test")
    path = Path(value)
    if not path.exists():
        pytest.skip(f"{var}={value} does not exist")
    return path


@pytest.fixture(scope="session")
def cifar_tgz() -> Path:
    return _env_path("TTQ_DATA_TGZ", "../shared/data/cifar10-jpeg.tar.gz")


@pytest.fixture(scope="session")
def pretrained_dir() -> Path:
    return _env_path("TTQ_PRETRAINED_DIR", "../shared/pretrained")


@pytest.fixture(scope="session")
def resnet20_th(pretrained_dir) -> Path:
    return pretrained_dir / "resnet20-12fca82f.th"


@pytest.fixture(scope="session")
def cifar(cifar_tgz):
    """The full shared CIFAR-10 copy as uint8 tensors (decoded once, then cached)."""
    from ttq_lib.data import load_cifar10

    return load_cifar10(str(cifar_tgz))


@pytest.fixture()
def fake_repo(tmp_path) -> Path:
    """An empty ttq-workbook checkout (a pyproject.toml naming it, and notebooks/) under tmp_path."""
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "ttq-workbook"\n')
    return root


@pytest.fixture()
def history_rows() -> list[dict]:
    """Three epochs of a made-up ``history.jsonl``: two ternary layers with their stats and histograms."""
    layer = lambda name, n, z, wp: {"name": name, "numel": n, "wp": wp, "wn": 1.0, "threshold": 0.1,  # noqa: E731
                                    "neg": (1 - z) / 2, "zero": z, "pos": (1 - z) / 2}
    return [{"epoch": e, "test_acc": 80.0 + e, "train_loss": 1.0 / e,
             "layers": [layer("layer1.0.conv1", 100, 0.5, 1.0 + e), layer("layer3.2.conv2", 300, 0.1 * e, 2.0)],
             "hist": {"layer1.0.conv1": [1] * 64, "layer3.2.conv2": [2] * 64}} for e in (1, 2, 3)]
