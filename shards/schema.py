"""The sample schema: one row per member of a shard sample, the only place members are named.

A sample ``<key>`` is stored as the tar members ``<key>.<file>``, where ``file`` is the member's
``pattern`` (``merged.png``, ``fg.jpg``, ``json``). The compositor, the index, ``verify``, the
shard reader, training and evaluation all iterate ``MEMBERS``: adding a member (a foreground
colour estimate, say) is one row here plus the code that makes its bytes in ``pipeline.compose``.

Decoded colour images are RGB everywhere in this project (``shards.codec``), greys (H, W) uint8,
``json`` a dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from shards.mattes import TRIMAP_VALUES

SPLITS = ("train", "validation")
LEAN_SPLITS = ("train",)  # the splits whose samples a lean build trims to the train members

Codec = Literal["color", "grey", "json"]


@dataclass(frozen=True)
class Member:
    """One member of every sample of the splits that carry it.

    Attributes:
        name: the member's name, the first part of its file name (``fg`` in ``<key>.fg.jpg``).
        pattern: its file name after the key; ``{ext}`` is the source file's extension for
            members stored as the input's bytes untouched (``fg.{ext}``).
        codec: how it decodes: ``color`` (H, W, 3) uint8 RGB, ``grey`` (H, W) uint8, ``json``.
        splits: the splits whose samples carry it.
        hashed: its size and sha256 are recorded per sample in ``samples.parquet``
            (columns ``<name>_size``, ``<name>_sha256``) and checked by ``verify --deep``.
        checked: ``verify --deep`` decodes it (and applies ``sized`` and ``values``).
        train: the training loader decodes it (the others are skipped in the tar stream).
        scored: validation and ``evaluate run`` decode it (the composite, trimap and truth).
        sized: it has the sample's height and width (the ``json`` record's); False for a
            source kept at its own size (``bg``, fitted at load time).
        values: the only pixel values it may hold, or None for any.
        shared: byte-identical in every sample of one foreground, so the training loader
            decodes it once per visit (``training.data.decode_cache``); it must also be ``hashed``,
            whose recorded sha256 tells the loader which later samples hold the same bytes.
    """

    name: str
    pattern: str
    codec: Codec
    splits: tuple[str, ...] = SPLITS
    hashed: bool = True
    checked: bool = True
    train: bool = False
    scored: bool = False
    sized: bool = True
    values: tuple[int, ...] | None = None
    shared: bool = False

    def file(self, ext: str | None = None) -> str:
        """The member's file name after the key: ``merged.png``; ``fg.jpg`` given ``ext="jpg"``.

        Raises:
            ValueError: the member keeps its source's extension and none (or a bad one) is given.
        """
        if "{ext}" not in self.pattern:
            return self.pattern
        if not ext or "." in ext or "/" in ext:
            raise ValueError(f"member {self.name} needs its source's extension, got {ext!r}")
        return self.pattern.format(ext=ext.lower())


MEMBERS: tuple[Member, ...] = (
    # every member is in both splits, hashed and deep-checked unless a row says otherwise
    Member("merged", "merged.png", "color", scored=True),  # alpha*fg + (1-alpha)*fit(bg)
    Member("alpha", "alpha.png", "grey", train=True, scored=True, shared=True),  # the truth
    Member("fg", "fg.{ext}", "color", train=True, shared=True),  # the original photo, untouched
    Member("bg", "bg.{ext}", "color", train=True, sized=False),  # the background photo's bytes
    Member("trimap", "trimap.png", "grey", scored=True, values=TRIMAP_VALUES),
    Member("json", "json", "json", train=True, sized=False),  # the sample's record (bg_fit, ...)
)
BY_NAME: dict[str, Member] = {m.name: m for m in MEMBERS}
TRAIN_MEMBERS = tuple(m.name for m in MEMBERS if m.train)  # what the training loader decodes
SCORED_MEMBERS = tuple(m.name for m in MEMBERS if m.scored)  # what validation decodes
# what the training loader decodes once per foreground visit (hashed, so their sha256 is known)
SHARED_MEMBERS = tuple(m.name for m in MEMBERS if m.train and m.shared and m.hashed)


def member(name: str) -> Member:
    """The schema row of ``name``; a ``KeyError`` naming the known members otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no shard member {name!r}; members: {', '.join(BY_NAME)}") from None


def member_file(name: str, ext: str | None = None) -> str:
    """``member(name).file(ext)``: the file name after the key, e.g. ``bg.jpg``."""
    return member(name).file(ext)


def name_of(file: str) -> str:
    """The member name of a file name after the key: ``fg.jpg`` -> ``fg``, ``json`` -> ``json``."""
    return file.split(".", 1)[0]


def members_of(split: str, lean: bool = False) -> tuple[Member, ...]:
    """The members every sample of ``split`` carries, in schema order; in a lean set
    (``pipeline build --lean-train``) a ``train`` sample carries only the ``train`` members."""
    trimmed = lean and split in LEAN_SPLITS
    return tuple(m for m in MEMBERS if split in m.splits and (m.train or not trimmed))


def held_members(meta: Mapping, split: str) -> tuple[str, ...]:
    """The member names the samples of ``split`` hold in the set whose ``index.json`` metadata
    is ``meta`` (its ``members``; a set built before they were recorded holds them all)."""
    recorded = meta.get("members", {}).get(split)
    if recorded is not None:
        return tuple(recorded)
    return tuple(m.name for m in members_of(split, bool(meta.get("lean_train"))))


class MissingMembers(ValueError):
    """A command needs members that a set's samples do not hold (a lean set's train split)."""


def require_members(meta: Mapping, split: str, names: Iterable[str], where: str) -> None:
    """Raise ``MissingMembers`` when the samples of ``split`` lack any of ``names``, saying what
    they hold and how to get a set that has them; ``where``: the set or shards, for the message.
    """
    held = held_members(meta, split)
    missing = [n for n in names if n not in held]
    if not missing:
        return
    lean = " (a lean set: built with --lean-train)" if meta.get("lean_train") else ""
    raise MissingMembers(
        f"{where}: the {split} samples of this shard set{lean} hold only {', '.join(held)}; "
        f"this needs {', '.join(missing)} too. Rebuild the set without --lean-train (`indexnet "
        "pipeline build` with the same options and another --out), or use its validation "
        "split, which holds every member"
    )


def hash_columns() -> tuple[str, ...]:
    """``samples.parquet``'s per-member columns: ``<name>_size`` then ``<name>_sha256``."""
    hashed = [m.name for m in MEMBERS if m.hashed]
    return (*(f"{n}_size" for n in hashed), *(f"{n}_sha256" for n in hashed))
