from __future__ import annotations

import pytest

from seld.data.dcase import RecordingName
from seld.data.folds import fold_splits, make_folds


def names(per_split=3):
    return [
        RecordingName(s, i % 5, 1 + i % 2, (s - 1) * per_split + i)
        for s in (1, 2, 3, 4)
        for i in range(per_split)
    ]


def test_dcase2019_protocol_matches_the_baseline():
    expected = {
        1: ((3, 4), (2,), (1,)),
        2: ((4, 1), (3,), (2,)),
        3: ((1, 2), (4,), (3,)),
        4: ((2, 3), (1,), (4,)),
    }
    for fold, splits in expected.items():
        assert fold_splits(fold) == splits


def test_folds_partition_recordings_and_never_validate_on_test():
    recs = names()
    folds = make_folds(recs)
    assert [f.index for f in folds] == [1, 2, 3, 4]
    for f in folds:
        assert not f.leaky
        train, val, test = set(f.train), set(f.validation), set(f.test)
        assert train | val | test == set(recs)
        assert not (train & val or train & test or val & test)
        assert {n.split for n in test} == {f.index}
    # every recording is tested exactly once over the four folds
    tested = [n for f in folds for n in f.test]
    assert sorted(tested) == sorted(recs)


def test_seed_protocol_is_labelled_leaky():
    folds = make_folds(names(), protocol="seed")
    for f in folds:
        assert f.leaky and f.validation == f.test and len(f.train_splits) == 3


def test_errors():
    with pytest.raises(ValueError, match="unknown protocol 'x'"):
        fold_splits(1, protocol="x")
    with pytest.raises(ValueError, match="fold 5 out of range"):
        fold_splits(5)
    only_three = [n for n in names() if n.split != 2]
    with pytest.raises(ValueError, match=r"fold 1: no validation recordings \(splits \[2\]"):
        make_folds(only_three)
    assert [f.index for f in make_folds(names(), folds=[2, 4])] == [2, 4]
