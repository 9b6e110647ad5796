"""The results of the DCASE 2019 Task 3 scorers: counts, the five scores, reports of many files.

Both scorers (:mod:`seld.metrics.reference`, file by file, and :mod:`seld.metrics.batched`, many
recordings and predictions at once) end in :class:`SeldCounts`, from which the official formulas
give the scores:

* SED, over one-second blocks x classes: ER = (S + D + I) / Nref in [0, 1] (it may exceed 1)
  and F = 2PR / (P + R) in [0, 1], with P = TP / Nsys and R = TP / Nref.
* DOA error: the summed matched great-circle angle (degrees) divided by the number of predicted
  1-cells (frame, class, grid cell) in all frames; frame recall in [0, 1]: the share of frames
  whose reference and predicted counts of 1-cells agree.
* SELD = mean(ER, 1 - F, DOA / 180, 1 - frame recall); lower is better.

Counts are summed over the files of a group before any ratio is taken (micro average), as the
official script does for all files and per split, ov and ir (:func:`report_from_counts`).

With no predicted directions at all, DOA error is 0/0 = NaN (and so is the SELD score); with no
reference activity, ER is NaN ("n/a"). The official code gives inf there when the system detected
something; a score that cannot be computed is reported as missing rather than as infinitely bad,
so that tables, JSON and MLflow stay valid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from seld.data.dcase import parse_recording_name

__all__ = ["GROUPS", "ScoreReport", "SeldCounts", "SeldScores", "report_from_counts"]

logger = logging.getLogger(__name__)

#: Ways the official script groups recordings, in its order (besides "all").
GROUPS: tuple[str, ...] = ("split", "ov", "ir")

_EPS = float(np.finfo(float).eps)


@dataclass(frozen=True)
class SeldScores:
    """The four DCASE 2019 metrics and the SELD score (lower is better).

    ``er`` and ``f`` in [0, 1] (ER may exceed 1), ``doa_error`` in degrees, ``frame_recall`` in
    [0, 1]. NaN where the official formula divides zero by zero.
    """

    er: float
    f: float
    doa_error: float
    frame_recall: float
    seld: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class SeldCounts:
    """Everything the metrics of a set of files are computed from; add counts to pool files.

    SED counts are over one-second blocks x classes; ``doa_cost_deg`` is the sum of matched
    great-circle angles (degrees), ``n_pred_doa`` the number of predicted 1-cells, and
    ``n_good_frames`` the frames whose reference and predicted 1-cell counts agree, out of
    ``n_frames``.
    """

    S: int = 0
    D: int = 0
    I: int = 0
    TP: int = 0
    Nref: int = 0
    Nsys: int = 0
    doa_cost_deg: float = 0.0
    n_pred_doa: int = 0
    n_good_frames: int = 0
    n_frames: int = 0
    n_blocks: int = 0

    def __add__(self, other: SeldCounts) -> SeldCounts:
        if not isinstance(other, SeldCounts):
            return NotImplemented
        return SeldCounts(
            **{name: getattr(self, name) + getattr(other, name) for name in _COUNT_FIELDS}
        )

    def scores(self) -> SeldScores:
        """ER, F, DOA error, frame recall and SELD score, with the official formulas and eps."""
        values = scores_of_arrays(self.as_array())
        return SeldScores(*(float(values[name]) for name in SeldScores.__dataclass_fields__))

    def as_array(self) -> np.ndarray:
        """The counts as one float vector, in the order of the dataclass fields."""
        return np.array([getattr(self, name) for name in _COUNT_FIELDS], dtype=np.float64)

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> SeldCounts:
        return cls(**{name: type(getattr(cls(), name))(data[name]) for name in _COUNT_FIELDS})


def scores_of_arrays(counts: np.ndarray) -> dict[str, np.ndarray]:
    """The five scores of pooled counts, vectorised: ``counts[..., i]`` is the ``i``-th field
    of :class:`SeldCounts` (as :meth:`SeldCounts.as_array` orders them), so a bootstrap can
    score thousands of resampled poolings at once. NaN where a denominator is zero."""
    c = {name: counts[..., i] for i, name in enumerate(_COUNT_FIELDS)}
    er = _ratio(c["S"] + c["D"] + c["I"], c["Nref"])
    precision = c["TP"] / (c["Nsys"] + _EPS)
    recall = c["TP"] / (c["Nref"] + _EPS)
    f = 2 * precision * recall / (precision + recall + _EPS)
    doa_error = _ratio(c["doa_cost_deg"], c["n_pred_doa"])
    frame_recall = _ratio(c["n_good_frames"], c["n_frames"])
    seld = (er + (1 - f) + doa_error / 180 + (1 - frame_recall)) / 4
    return {"er": er, "f": f, "doa_error": doa_error, "frame_recall": frame_recall, "seld": seld}


_COUNT_FIELDS = tuple(SeldCounts.__dataclass_fields__)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``; NaN (not computable) where the denominator is zero."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, math.nan, numerator / safe)


@dataclass
class ScoreReport:
    """Scores of a set of files: all together, per file, and per split / ov / ir value."""

    overall: SeldScores
    per_file: dict[str, SeldScores] = field(default_factory=dict)
    groups: dict[str, dict[int, SeldScores]] = field(default_factory=dict)
    #: each recording's counts, from which any pooling of them can be scored again
    counts: dict[str, SeldCounts] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready nesting of plain dicts (NaN stays a float NaN)."""
        return {
            "overall": self.overall.as_dict(),
            "per_file": {name: s.as_dict() for name, s in self.per_file.items()},
            "groups": {
                group: {str(key): s.as_dict() for key, s in sorted(per_key.items())}
                for group, per_key in self.groups.items()
            },
        }


def report_from_counts(counts: Mapping[str, SeldCounts]) -> ScoreReport:
    """Pool per-recording counts into overall, per-file and per split / ov / ir scores."""
    grouped: dict[str, dict[int, SeldCounts]] = {group: {} for group in GROUPS}
    for name, c in counts.items():
        try:
            parsed = parse_recording_name(name)
        except ValueError:
            logger.warning("%s is not a DCASE 2019 recording name; scored in 'all' only", name)
            continue
        for group in GROUPS:
            key = getattr(parsed, group)
            grouped[group][key] = grouped[group].get(key, SeldCounts()) + c
    return ScoreReport(
        overall=sum(counts.values(), SeldCounts()).scores(),
        per_file={name: c.scores() for name, c in counts.items()},
        groups={
            group: {key: c.scores() for key, c in sorted(per_key.items())}
            for group, per_key in grouped.items()
        },
        counts=dict(counts),
    )
