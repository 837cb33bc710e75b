"""Find the model weights: birder's registry file, a local ``.pt`` file, or seeded random weights.

Offline is the normal case here, so a missing pretrained file fails fast with a message that says
which file, from where, with which sha256, and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from core.config import ModelConfig
from core.errors import WeightsError, WeightsUnavailableError

logger = logging.getLogger(__name__)

WeightsKind = Literal["pretrained", "file", "random"]


@dataclass(frozen=True)
class WeightsIdentity:
    """What the catalog records about the weights: their kind, their sha256 and where they came from.

    For random weights the sha256 is taken over the initialised parameters, so two machines whose torch
    initialises differently can never mix their vectors in one index.
    """

    kind: WeightsKind
    sha256: str
    source: str


@dataclass(frozen=True)
class PretrainedFile:
    """The registry's facts about a pretrained weights file and where Loupe expects it."""

    weights_name: str
    file_name: str
    url: str
    sha256: str
    size_mb: float
    destination: Path
    native_size: tuple[int, int]


def weights_kind(weights: str) -> WeightsKind:
    """Classify the ``model.weights`` setting."""
    if weights == "pretrained":
        return "pretrained"
    if weights == "random":
        return "random"
    return "file"


def resolved_model_config(model: ModelConfig) -> ModelConfig:
    """``model`` with absolute paths (``models_dir``, a weights file): what is saved beside the index and
    what a Ray worker, whose working directory is not the driver's, loads."""
    resolved = replace(model, models_dir=model.models_dir.expanduser().resolve())
    if weights_kind(model.weights) == "file":
        resolved = replace(resolved, weights=str(Path(model.weights).expanduser().resolve()))
    return resolved


def pretrained_file_name(config: ModelConfig) -> str:
    """The file name of the pretrained weights, as birder names it (``lib.get_pretrained_model_url``),
    known without importing birder (and torch): settings look for it in ``./models`` on every command."""
    return f"{config.network}_{config.tag}.pt"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pretrained_file(config: ModelConfig) -> PretrainedFile:
    """Look the weights up in birder's registry (no network access)."""
    from birder.common import lib
    from birder.model_registry import registry

    weights_name = f"{config.network}_{config.tag}"
    try:
        metadata = registry.get_pretrained_metadata(weights_name)
    except (KeyError, ValueError) as error:
        raise WeightsError(f"birder's registry has no pretrained weights named {weights_name}") from error
    file_name, url = lib.get_pretrained_model_url(weights_name, "pt")
    file_format = metadata["formats"]["pt"]
    return PretrainedFile(
        weights_name=weights_name,
        file_name=file_name,
        url=url,
        sha256=file_format["sha256"],
        size_mb=float(file_format["file_size"]),
        destination=config.models_dir.expanduser().resolve() / file_name,
        native_size=tuple(metadata["resolution"]),  # type: ignore[arg-type]
    )


def unavailable_message(spec: PretrainedFile, cause: str) -> str:
    """The message a curator sees when the pretrained weights are missing."""
    return (
        f"model weights not found: {spec.destination}\n"
        f"  file:   {spec.file_name} ({spec.size_mb} MB)\n"
        f"  from:   {spec.url}\n"
        f"  sha256: {spec.sha256}\n"
        f"  download failed: {cause}\n"
        f"Download the file on a machine with internet access, check its sha256, and put it at\n"
        f"  {spec.destination}\n"
        f"(or set model.models_dir in the config file, or pass --weights /path/to/{spec.file_name}).\n"
        f"For tests and benchmarks, --weights random builds the same network with random weights."
    )


def ensure_pretrained_file(spec: PretrainedFile) -> Path:
    """Return the local path of the verified pretrained file, downloading it with birder if missing."""
    if spec.destination.exists():
        actual = sha256_file(spec.destination)
        if actual != spec.sha256:
            raise WeightsError(
                f"{spec.destination} has sha256 {actual}, expected {spec.sha256}: the file is damaged or "
                f"not {spec.file_name}; delete it and download it again from {spec.url}"
            )
        return spec.destination

    from birder.common import cli

    logger.info("weights %s not in %s; asking birder to download them", spec.file_name, spec.destination.parent)
    try:
        # birder's downloader checks the sha256 and writes through a temporary file.
        spec.destination.parent.mkdir(parents=True, exist_ok=True)
        cli.download_file(spec.url, spec.destination, spec.sha256)
    except (OSError, ValueError) as error:
        # urllib's URLError and HTTPError are OSErrors; a refused or unresolvable host lands here fast.
        raise WeightsUnavailableError(unavailable_message(spec, str(error))) from error
    if not spec.destination.exists():
        raise WeightsUnavailableError(unavailable_message(spec, "birder reported no error but wrote no file"))
    return spec.destination


def local_weights_file(weights: str) -> Path:
    """Check the ``--weights PATH`` file exists."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file not found: {path}\n"
            f"--weights takes 'pretrained', 'random' or the path of a birder .pt file of this network."
        )
    return path.resolve()
