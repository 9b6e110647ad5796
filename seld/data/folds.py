"""Cross-validation folds as data: which recordings each fold trains, validates and tests on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from seld.data.dcase import RecordingName, parse_recording_name
from seld.errors import ConfigError, SeldError

#: ``dcase2019``: the DCASE 2019 baseline's protocol: fold k tests on split k and validates on
#: the next split. ``seed``: validates on the test split (leaky). ``starss23``: STARSS22/23's
#: official split, one fold: test on fold 4 (dev-test), train on fold 3 (dev-train) less every
#: ``STARSS_VALIDATION_EVERY``-th of its recordings (by name), which validate. ``tau2020`` and
#: ``tau2021``: TAU-NIGENS 2020 and 2021's official splits (:data:`OFFICIAL_SPLITS`), one fold.
PROTOCOLS = ("dcase2019", "seed", "starss23", "tau2020", "tau2021")
#: official splits of one fold: (training, validation, test) fold numbers of the recordings'
#: names (``fold<F>_...``): TAU-NIGENS 2020 tests on fold 1 and validates on fold 2; 2021 trains
#: on folds 1-4 and validates on fold 5
OFFICIAL_SPLITS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "tau2020": ((3, 4, 5, 6), (2,), (1,)),
    "tau2021": ((1, 2, 3, 4), (5,), (6,)),
}
#: the protocols of a single fold (fold 1)
SINGLE_FOLD: tuple[str, ...] = ("starss23", *OFFICIAL_SPLITS)
STARSS_VALIDATION_EVERY = 4
STARSS_TRAIN_SPLIT, STARSS_TEST_SPLIT = 3, 4


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
    if protocol == "starss23":
        return _starss_folds(names, folds)
    if protocol in OFFICIAL_SPLITS:
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


def _starss_folds(names: list[Any], folds: Iterable[int] | None) -> list[Fold]:
    if any(k != 1 for k in folds or (1,)):
        raise ConfigError(f"the starss23 protocol has one fold (1), not {list(folds or ())}")
    dev_train = [n for n in names if n.split == STARSS_TRAIN_SPLIT]
    validation = tuple(dev_train[::STARSS_VALIDATION_EVERY])
    train = tuple(n for n in dev_train if n not in validation)
    test = tuple(n for n in names if n.split == STARSS_TEST_SPLIT)
    for role, members, split in (
        ("training", train, STARSS_TRAIN_SPLIT),
        ("validation", validation, STARSS_TRAIN_SPLIT),
        ("test", test, STARSS_TEST_SPLIT),
    ):
        if not members:
            raise FoldError(f"fold 1: no {role} recordings (fold {split} of the dataset)")
    split = (STARSS_TRAIN_SPLIT,)
    return [Fold(1, "starss23", split, split, (STARSS_TEST_SPLIT,), train, validation, test)]


def _official_fold(names: list[Any], protocol: str, folds: Iterable[int] | None) -> list[Fold]:
    if any(k != 1 for k in folds or (1,)):
        raise ConfigError(f"the {protocol} protocol has one fold (1), not {list(folds or ())}")
    splits = OFFICIAL_SPLITS[protocol]
    parts = []
    for role, chosen in zip(("training", "validation", "test"), splits, strict=True):
        members = tuple(n for n in names if n.split in chosen)
        if not members:
            raise FoldError(f"fold 1: no {role} recordings (folds {list(chosen)} are empty)")
        parts.append(members)
    return [Fold(1, protocol, *splits, *parts)]
