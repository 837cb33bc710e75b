"""Which software made a catalog's vectors: torch and birder versions, precision and device.

The provenance (:class:`core.catalog.Provenance`) holds what must be equal for vectors to be
comparable at all: model, weights, image size. Library versions, the precision and the CPU kind need not
be equal (their vectors agree to a cosine near 1), but they decide the exact bytes, so whoever compares
two builds or reports a bug needs them. Every build that embeds photos adds its photos to the row of its
maker (one row per distinct maker); ``status`` lists them.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import torch
from sqlalchemy import BigInteger, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column

from core.catalog import Base, Catalog

logger = logging.getLogger(__name__)


class VectorMakerRecord(Base):
    """One combination of software and hardware that embedded photos into this catalog."""

    __tablename__ = "vector_makers"
    __table_args__ = (
        UniqueConstraint("torch_version", "birder_version", "precision", "device", name="uq_vector_maker"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    torch_version: Mapped[str] = mapped_column(String(64))
    birder_version: Mapped[str] = mapped_column(String(64))
    precision: Mapped[str] = mapped_column(String(16))
    device: Mapped[str] = mapped_column(String(200))
    images: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]


@dataclass(frozen=True)
class VectorMaker:
    """What made some of the vectors, and how many."""

    torch_version: str
    birder_version: str
    precision: str
    device: str
    images: int = 0


def describe_device(device: torch.device) -> str:
    """The device with what decides its kernels: the CPU's vector ISA, or the GPU's name."""
    if device.type == "cpu":
        from core.encoder import cpu_bf16_units

        capability = str(torch.backends.cpu.get_cpu_capability())
        units = cpu_bf16_units()
        return f"cpu ({capability}{f', {units}' if units else ''})"
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def current_maker(precision: str, device: str) -> VectorMaker:
    """This process's maker for vectors computed in ``precision`` on ``device`` (a description)."""
    return VectorMaker(
        torch_version=torch.__version__,
        birder_version=importlib.metadata.version("birder"),
        precision=precision,
        device=device,
    )


def record_maker(catalog: Catalog, maker: VectorMaker, images: int) -> None:
    """Add ``images`` embedded photos to ``maker``'s row (created on first use), in one transaction."""
    if images <= 0:
        return
    now = datetime.now(UTC)
    key = (maker.torch_version, maker.birder_version, maker.precision, maker.device)
    with catalog.session() as session, session.begin():
        row = session.scalars(
            select(VectorMakerRecord).where(
                VectorMakerRecord.torch_version == key[0],
                VectorMakerRecord.birder_version == key[1],
                VectorMakerRecord.precision == key[2],
                VectorMakerRecord.device == key[3],
            )
        ).one_or_none()
        if row is None:
            session.add(
                VectorMakerRecord(
                    torch_version=key[0],
                    birder_version=key[1],
                    precision=key[2],
                    device=key[3],
                    images=images,
                    first_at=now,
                    last_at=now,
                )
            )
        else:
            row.images += images
            row.last_at = now
    logger.info("%d photos embedded by torch %s, birder %s, %s on %s", images, *key)


def makers_of(catalog: Catalog) -> list[VectorMaker]:
    """Every maker of this catalog's vectors, the one that embedded the most photos first."""
    with catalog.session() as session:
        rows = session.scalars(select(VectorMakerRecord).order_by(VectorMakerRecord.images.desc())).all()
        return [VectorMaker(r.torch_version, r.birder_version, r.precision, r.device, r.images) for r in rows]
