"""Cross-validation folds as data: which recordings each fold trains, validates and tests on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from seld.data.dcase import RecordingName, parse_recording_name
from seld.data.formats import TRACKWISE
from seld.errors import ConfigError, SeldError

#: ``dcase2019``: the DCASE 2019 baseline's protocol: fold k tests on split k and validates on
#: the next split. ``seed``: validates on the test split (leaky). Every track-wise dataset
#: format (:data:`seld.data.formats.TRACKWISE`) adds its official split under its name, one
#: fold: ``starss23`` tests on fold 4 (dev-test) and trains on fold 3 (dev-train) less every
#: fourth of its recordings (by name), which validate; ``tau2020`` and ``tau2021`` train,
#: validate and test on those years' folds.
PROTOCOLS = ("dcase2019", "seed", *TRACKWISE)
#: the protocols of a single fold (fold 1): the formats' official splits
SINGLE_FOLD: tuple[str, ...] = tuple(TRACKWISE)


class FoldError(SeldError, ValueError):
    """The dataset's recordings cannot make the folds asked for (too few splits, an empty set)."""


@dataclass(frozen=True)
class Fold:
    """One fold: the splits and recordings of its training, validation and test sets.

    ``leaky`` marks the seed implementation's protocol, where the validation set is the test set
    (model selection on test data): its scores are not a fair estimate.
    """

    index: int
    protocol: str
    train_splits: tuple[int, ...]
    validation_splits: tuple[int, ...]
    test_splits: tuple[int, ...]
    train: tuple[RecordingName, ...]
    validation: tuple[RecordingName, ...]
    test: tuple[RecordingName, ...]

    @property
    def leaky(self) -> bool:
        return bool(set(self.validation_splits) & set(self.test_splits))


def fold_splits(
    fold: int, splits: Sequence[int] = (1, 2, 3, 4), protocol: str = "dcase2019"
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(train, validation, test) splits of ``fold`` (1-based, testing on ``splits[fold-1]``).

    ``dcase2019``: validate on the next split (cyclically), train on the rest; for splits 1-4 this
    is validation 2, 3, 4, 1 and training [3, 4], [4, 1], [1, 2], [2, 3].
    ``seed``: train on all other splits and validate on the test split (leaky).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    splits = tuple(splits)
    if len(splits) < 3 and protocol == "dcase2019":
        raise FoldError(f"the dcase2019 protocol needs at least 3 splits, got {splits}")
    if not 1 <= fold <= len(splits):
        raise ConfigError(f"fold {fold} out of range 1..{len(splits)}")
    test = splits[fold - 1]
    if protocol == "seed":
        return tuple(s for s in splits if s != test), (test,), (test,)
    validation = splits[fold % len(splits)]
    ordered = splits[fold:] + splits[:fold]  # the splits after the test split, cyclically
    train = tuple(s for s in ordered if s not in (test, validation))
    return train, (validation,), (test,)


def make_folds(
    recordings: Iterable[RecordingName | str | Any],
    *,
    protocol: str = "dcase2019",
    splits: Sequence[int] = (1, 2, 3, 4),
    folds: Iterable[int] | None = None,
) -> list[Fold]:
    """Assign recordings to the folds of a protocol. ``recordings``: names with a ``split``
    (DCASE 2019 names, or their strings; :class:`seld.data.formats.StarssName`).

    Raises ``ValueError`` naming the split when a fold would have an empty training, validation
    or test set.
    """
    names = sorted(r if not isinstance(r, str) else parse_recording_name(r) for r in recordings)
    if protocol in TRACKWISE:
        return _official_fold(names, protocol, folds)
    by_split: dict[int, list[RecordingName]] = {s: [] for s in splits}
    for name in names:
        if name.split in by_split:
            by_split[name.split].append(name)
    result = []
    for k in folds if folds is not None else range(1, len(splits) + 1):
        train_s, val_s, test_s = fold_splits(k, splits, protocol)
        parts = []
        for role, chosen in (("training", train_s), ("validation", val_s), ("test", test_s)):
            members = tuple(n for s in chosen for n in by_split[s])
            if not members:
                raise FoldError(f"fold {k}: no {role} recordings (splits {list(chosen)} are empty)")
            parts.append(members)
        result.append(Fold(k, protocol, train_s, val_s, test_s, *parts))
    return result


def _official_fold(names: list[Any], protocol: str, folds: Iterable[int] | None) -> list[Fold]:
    """The one fold of a format's official split (:class:`seld.data.formats.TrackwiseFormat`)."""
    if any(k != 1 for k in folds or (1,)):
        raise ConfigError(f"the {protocol} protocol has one fold (1), not {list(folds or ())}")
    fmt = TRACKWISE[protocol]
    splits = fmt.splits
    parts = []
    for role, chosen in zip(("training", "validation", "test"), splits, strict=True):
        members = tuple(n for n in names if n.split in chosen)
        if not members:
            raise FoldError(f"fold 1: no {role} recordings (folds {list(chosen)} are empty)")
        parts.append(members)
    if fmt.validation_every is not None:  # the validation recordings come out of training
        parts[1] = tuple(parts[0][:: fmt.validation_every])
        parts[0] = tuple(n for n in parts[0] if n not in parts[1])
        if not parts[0]:
            raise FoldError(f"fold 1: no training recordings (folds {list(splits[0])})")
    return [Fold(1, protocol, *splits, *parts)]
