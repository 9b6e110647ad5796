"""Metric suites: the SELD metrics of one DCASE year as a plug-in, and a registry of them.

A suite turns each recording's reference and predicted rows into counts that add up over
recordings, and pooled counts into its scores. Rows are track-wise, one per active (frame,
class, instance): ``(frame, class, track, azimuth, elevation)``, degrees, at the dataset's label
frame rate; a suite that knows no tracks ignores the column. Registered:

* ``dcase2019``: ER and F over one-second blocks, DOA error and frame recall on the 10 degree
  grid, SELD (:mod:`seld.metrics.reference`); the tool's default for DCASE 2019 data.
* ``dcase2019-regr``: the same metrics on continuous directions at any label rate, as the 2019
  baseline scores its regression outputs (:mod:`seld.metrics.regression2019`): the DCASE 2019
  column for the later datasets.
* ``dcase2020``: location-aware detection and class-dependent localization in one-second
  blocks with one direction per class and frame, micro-averaged (:mod:`seld.metrics.dcase2020`).
* ``dcase2021``: the location-aware counts of 2022 (several instances of a class, matched),
  micro-averaged, a spatial false positive weighing one half in F.
* ``dcase2022``: location-aware ER and F within 20 degrees, class-dependent localization
  error and recall, macro-averaged over classes, as DCASE 2022 and 2023 rank
  (:mod:`seld.metrics.location_aware`); ``dcase2022-micro``: the same counts, micro-averaged.
* ``dcase2024``: frame-wise F with a distance gate, DOA and relative distance errors
  (:mod:`seld.metrics.frame_wise`).

Every suite says, for each of its scores, whether higher or lower is better
(:attr:`Metric.higher_is_better`), which is its aggregate (the SELD-style score that ranks
systems and selects models), and whether its submissions are rounded to the 10 degree grid.
Adding a suite is one module with a class like these and a line in :data:`SUITES`.

Jackknife intervals (:func:`jackknife`), as the DCASE 2022 scorer reports them, come from the
counts: each leave-one-recording-out pooling is the total minus that recording's counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import stats

from seld.data.dcase import CLASSES, LABEL_FRAMES_PER_SECOND
from seld.errors import ConfigError
from seld.metrics.dcase2020 import Dcase2020
from seld.metrics.frame_wise import FrameWise
from seld.metrics.location_aware import LocationAware, pool
from seld.metrics.reference import count_file
from seld.metrics.regression2019 import count_recordings as count_regression_2019
from seld.metrics.scores import SeldCounts

__all__ = [
    "SUITES",
    "Metric",
    "MetricSuite",
    "SuiteReport",
    "get_suite",
    "jackknife",
    "score_recordings",
    "suite_report",
]

Counts = dict[str, np.ndarray]
#: one recording to score: track-wise reference rows, predicted rows, label frames
Recording = tuple[np.ndarray, np.ndarray, int]


@dataclass(frozen=True)
class Metric:
    """One score of a suite: its key in results, its column label, its direction."""

    key: str
    label: str
    higher_is_better: bool
    unit: str = ""

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` (NaN is never better)."""
        return bool(a > b) if self.higher_is_better else bool(a < b)


class MetricSuite(Protocol):
    """What a suite module provides (see the module docstring)."""

    name: str
    description: str
    metrics: tuple[Metric, ...]
    aggregate: str
    rounds_to_grid: bool

    def count_many(
        self, recordings: Sequence[Recording], frames_per_second: float, num_classes: int
    ) -> list[Counts]: ...

    def scores(self, counts: Counts) -> dict[str, float]: ...

    def class_scores(self, counts: Counts) -> dict[str, np.ndarray] | None: ...


_SELD_2019 = (
    Metric("er", "ER", False),
    Metric("f", "F", True),
    Metric("doa_error", "DOA error", False, "°"),
    Metric("frame_recall", "frame recall", True),
    Metric("seld", "SELD", False),
)


@dataclass(frozen=True)
class Dcase2019:
    """The DCASE 2019 Task 3 metrics (the official ``calculate_SELD_metrics.py``), through
    :func:`seld.metrics.reference.count_file`; 50 label frames per second only."""

    name: str = "dcase2019"
    description: str = (
        "DCASE 2019: ER and F over 1 s blocks, DOA error and frame recall, micro-averaged"
    )
    metrics: tuple[Metric, ...] = _SELD_2019
    aggregate: str = "seld"
    rounds_to_grid: bool = True
    official_blocks: bool = True

    def count_many(
        self, recordings: Sequence[Recording], frames_per_second: float, num_classes: int
    ) -> list[Counts]:
        problem = self.label_problem(frames_per_second, num_classes)
        if problem:
            raise ValueError(problem)
        out = []
        for reference, prediction, frames in recordings:
            counts = count_file(
                untracked(reference),
                untracked(prediction),
                frames,
                official_blocks=self.official_blocks,
            )
            out.append({k: np.float64(v) for k, v in asdict(counts).items()})
        return out

    def label_problem(self, frames_per_second: float, num_classes: int) -> str | None:
        """Why labels at ``frames_per_second`` of ``num_classes`` classes cannot be scored."""
        if frames_per_second == LABEL_FRAMES_PER_SECOND and num_classes == len(CLASSES):
            return None
        return (
            f"the {self.name} suite scores DCASE 2019 labels ({LABEL_FRAMES_PER_SECOND} frames "
            f"per second, {len(CLASSES)} classes), not {frames_per_second:g} and {num_classes}"
        )

    def scores(self, counts: Counts) -> dict[str, float]:
        return SeldCounts.from_dict(counts).scores().as_dict()

    def class_scores(self, counts: Counts) -> dict[str, np.ndarray] | None:
        return None  # the 2019 counts are not kept per class


@dataclass(frozen=True)
class Dcase2019Regression:
    """The DCASE 2019 metrics on continuous directions, in one-second blocks at any label
    rate and class count (:mod:`seld.metrics.regression2019`)."""

    name: str = "dcase2019-regr"
    description: str = (
        "DCASE 2019 on continuous directions (the 2019 baseline's regression scorer): ER and F "
        "over 1 s blocks, DOA error and frame recall, one direction per class and frame, "
        "micro-averaged"
    )
    metrics: tuple[Metric, ...] = _SELD_2019
    aggregate: str = "seld"
    rounds_to_grid: bool = False
    absent_note: str = ""

    def count_many(
        self, recordings: Sequence[Recording], frames_per_second: float, num_classes: int
    ) -> list[Counts]:
        per_block = _frames_per_block(frames_per_second)
        return [
            {k: np.float64(v) for k, v in asdict(c).items()}
            for c in count_regression_2019(recordings, per_block, num_classes)
        ]

    def scores(self, counts: Counts) -> dict[str, float]:
        return SeldCounts.from_dict(counts).scores().as_dict()

    def class_scores(self, counts: Counts) -> dict[str, np.ndarray] | None:
        return None  # the 2019 counts are not kept per class


#: the scores of the location-aware suites (DCASE 2020-2023)
_LOCATION_AWARE = (
    Metric("er", "ER20°", False),
    Metric("f", "F20°", True),
    Metric("le", "LE_CD", False, "°"),
    Metric("lr", "LR_CD", True),
    Metric("seld", "SELD", False),
)


def _frames_per_block(frames_per_second: float) -> int:
    """Label frames in a one-second block; a rate that is not whole is refused."""
    per_block = round(frames_per_second)
    if abs(per_block - frames_per_second) > 1e-9:
        raise ValueError(f"{frames_per_second} label frames per second is not whole")
    return per_block


@dataclass(frozen=True)
class LocationAwareSuite:
    """:class:`seld.metrics.location_aware.LocationAware` as a suite, in one-second blocks."""

    name: str
    description: str
    average: str = "macro"
    threshold_deg: float = 20.0
    spatial_fp_weight: float = 1.0
    metrics: tuple[Metric, ...] = _LOCATION_AWARE
    aggregate: str = "seld"
    rounds_to_grid: bool = False
    _scorer: LocationAware = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_scorer",
            LocationAware(
                self.name,
                self.average,
                self.threshold_deg,
                spatial_fp_weight=self.spatial_fp_weight,
            ),
        )

    def count_many(
        self, recordings: Sequence[Recording], frames_per_second: float, num_classes: int
    ) -> list[Counts]:
        return self._scorer.count_many(
            recordings, _frames_per_block(frames_per_second), num_classes
        )

    def scores(self, counts: Counts) -> dict[str, float]:
        return self._scorer.scores(counts)

    def class_scores(self, counts: Counts) -> dict[str, np.ndarray] | None:
        return self._scorer.class_scores(counts)

    @property
    def absent_note(self) -> str:
        """How a class neither in the references nor predicted enters the overall scores."""
        return "F 0, LE 180°, LR 0" if self.average == "macro" else ""


@dataclass(frozen=True)
class Dcase2020Suite:
    """:class:`seld.metrics.dcase2020.Dcase2020` as a suite, in one-second blocks."""

    name: str = "dcase2020"
    description: str = (
        "DCASE 2020: location-aware ER and F (20°), class-dependent LE, LR as the F-measure of "
        "localized detections, one direction per class and frame, micro-averaged"
    )
    metrics: tuple[Metric, ...] = _LOCATION_AWARE
    aggregate: str = "seld"
    rounds_to_grid: bool = False
    absent_note: str = ""

    def count_many(
        self, recordings: Sequence[Recording], frames_per_second: float, num_classes: int
    ) -> list[Counts]:
        per_block = _frames_per_block(frames_per_second)
        return Dcase2020(self.name).count_many(recordings, per_block, num_classes)

    def scores(self, counts: Counts) -> dict[str, float]:
        return Dcase2020(self.name).scores(counts)

    def class_scores(self, counts: Counts) -> dict[str, np.ndarray] | None:
        return Dcase2020(self.name).class_scores(counts)


@dataclass(frozen=True)
class FrameWiseSuite:
    """:class:`seld.metrics.frame_wise.FrameWise` as a suite: DCASE 2024, frame by frame, with
    distances (rows of six columns)."""

    name: str
    description: str
    average: str = "macro"
    metrics: tuple[Metric, ...] = (
        Metric("f", "F20°/RDE1", True),
        Metric("doae", "DOAE_CD", False, "°"),
        Metric("rde", "RDE_CD", False),
        Metric("de", "DE_CD", False, "m"),
        Metric("lr", "LR_CD", True),
        Metric("er", "ER", False),
        Metric("seld", "SELD", False),
    )
    aggregate: str = "seld"
    rounds_to_grid: bool = False
    needs_distance: bool = True
    _scorer: FrameWise = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_scorer", FrameWise(self.name, self.average))

    def count_many(
        self, recordings: Sequence[Recording], frames_per_second: float, num_classes: int
    ) -> list[Counts]:
        return self._scorer.count_many(recordings, num_classes)

    def scores(self, counts: Counts) -> dict[str, float]:
        return self._scorer.scores(counts)

    def class_scores(self, counts: Counts) -> dict[str, np.ndarray] | None:
        return self._scorer.class_scores(counts)

    @property
    def absent_note(self) -> str:
        """How a class neither in the references nor predicted enters the overall scores."""
        return (
            "F 0 and LR 0 (its DOA and distance errors are left out)"
            if self.average == "macro"
            else ""
        )


#: every registered suite by name: one line a suite
SUITES: dict[str, MetricSuite] = {
    s.name: s
    for s in (
        Dcase2019(),
        Dcase2019Regression(),
        Dcase2020Suite(),
        LocationAwareSuite(
            "dcase2021",
            "DCASE 2021: the location-aware counts of 2022, micro-averaged, a spatial false "
            "positive counted as a false positive (one half in F)",
            average="micro",
            spatial_fp_weight=0.5,
        ),
        LocationAwareSuite(
            "dcase2022",
            "DCASE 2022/2023: location-aware ER and F (20°), class-dependent LE and LR, "
            "macro-averaged over classes",
        ),
        LocationAwareSuite(
            "dcase2022-micro",
            "the DCASE 2022 counts micro-averaged (every count summed over classes)",
            average="micro",
        ),
        FrameWiseSuite(
            "dcase2024",
            "DCASE 2024: frame-wise F within 20° and a relative distance error of 1, "
            "class-dependent DOA error, (relative) distance error and recall, macro-averaged",
        ),
    )
}


def get_suite(name: str) -> MetricSuite:
    """A registered suite; :class:`ConfigError` naming the registered ones otherwise."""
    try:
        return SUITES[name]
    except KeyError:
        raise ConfigError(
            f"unknown metric suite {name!r}; choose one of {', '.join(SUITES)}"
        ) from None


def untracked(rows: np.ndarray) -> np.ndarray:
    """Track-wise rows -> the 2019 submission rows (frame, class, azimuth, elevation), whole
    degrees as the 2019 format writes them."""
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows.reshape(-1, rows.shape[-1] if rows.ndim == 2 else 5)
    return np.rint(rows[:, [0, 1, 3, 4]]).astype(np.int64)


def label_problem(
    suite: MetricSuite, frames_per_second: float, num_classes: int, distances: bool
) -> str | None:
    """Why ``suite`` cannot score labels at ``frames_per_second`` of ``num_classes`` classes
    from a method that predicts (or not) ``distances``; None when it can."""
    if isinstance(suite, Dcase2019):
        problem = suite.label_problem(frames_per_second, num_classes)
        if problem:
            return problem
    if getattr(suite, "needs_distance", False) and not distances:
        return f"the {suite.name} suite scores source distances, and the method predicts none"
    return None


def tracked(rows: np.ndarray, track: int = 0) -> np.ndarray:
    """DCASE 2019 rows (frame, class, azimuth, elevation) -> track-wise rows with one track."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return np.insert(rows, 2, float(track), axis=1)


@dataclass
class SuiteReport:
    """One suite's scores of a set of recordings: all together, per class (where the suite
    keeps classes apart), per recording, and jackknife intervals when asked for."""

    suite: str
    overall: dict[str, float]
    per_class: dict[str, list[float]] | None = None
    per_file: dict[str, dict[str, float]] = field(default_factory=dict)
    #: metric -> (low, high) 95% interval (overall) and, per class, metric -> [(low, high)]
    intervals: dict[str, tuple[float, float]] | None = None
    class_intervals: dict[str, list[tuple[float, float]]] | None = None
    #: classes neither in the references nor predicted; a macro average still counts them
    #: (as the official code does: F 0, LE 180, LR 0)
    absent_classes: list[int] = field(default_factory=list)
    #: each recording's counts (for paired comparisons); not in :meth:`as_dict`
    counts: dict[str, Counts] = field(default_factory=dict, repr=False)

    def recording_counts(self) -> dict[str, Any]:
        """The per-recording counts as plain lists: ``{"suite": ..., "recordings": ...}``, what
        a run's ``test_counts`` files hold for a suite."""
        recordings = {
            name: {k: np.asarray(v).tolist() for k, v in c.items()}
            for name, c in self.counts.items()
        }
        return {"suite": self.suite, "recordings": recordings}

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "overall": self.overall,
            "per_class": self.per_class,
            "per_file": self.per_file,
            "intervals": self.intervals,
            "class_intervals": self.class_intervals,
            "absent_classes": self.absent_classes,
        }


def score_recordings(
    suite: MetricSuite,
    recordings: Mapping[str, Recording],
    *,
    frames_per_second: float = LABEL_FRAMES_PER_SECOND,
    num_classes: int = len(CLASSES),
    with_jackknife: bool = False,
) -> SuiteReport:
    """Score recordings (name -> ``(reference, prediction, frames)``) with one suite."""
    if not recordings:
        raise ValueError("no recordings to score")
    names = list(recordings)
    each = suite.count_many([recordings[n] for n in names], frames_per_second, num_classes)
    return suite_report(suite, dict(zip(names, each, strict=True)), with_jackknife=with_jackknife)


def suite_report(
    suite: MetricSuite, counts: Mapping[str, Counts], *, with_jackknife: bool = False
) -> SuiteReport:
    """A suite's report of recordings' counts (name -> counts): pooled, per class, per
    recording, and jackknife intervals when asked for and there are two recordings or more."""
    names, each = list(counts), list(counts.values())
    total = pool(each)
    per_class = suite.class_scores(total)
    report = SuiteReport(
        suite.name,
        suite.scores(total),
        None if per_class is None else {k: [float(x) for x in v] for k, v in per_class.items()},
        {n: suite.scores(c) for n, c in zip(names, each, strict=True)},
        counts=dict(counts),
    )
    if per_class is not None:
        seen = sum(v for k, v in total.items() if np.ndim(v) == 1 and k != "total_DE")
        report.absent_classes = [int(c) for c in np.flatnonzero(np.asarray(seen) == 0)]
    if with_jackknife and len(each) > 1:
        report.intervals, report.class_intervals = jackknife(suite, each)
    return report


def jackknife(
    suite: MetricSuite, each: Sequence[Counts], level: float = 0.95
) -> tuple[dict[str, tuple[float, float]], dict[str, list[tuple[float, float]]] | None]:
    """Leave-one-recording-out jackknife intervals of every score (and per class score), as
    the DCASE 2022 scorer computes them: from the ``n`` partial estimates ``p_i``, bias
    ``(n - 1)(mean(p) - global)``, estimate ``global - bias``, standard error
    ``sqrt((n - 1) mean((p - mean(p))^2))``, and the interval ``estimate +- t * se`` with
    Student's t at ``1 - (1 - level) / 2`` and ``n - 1`` degrees of freedom."""
    n = len(each)
    if n < 2:
        raise ValueError("a jackknife needs at least two recordings")
    total = pool(each)
    partial = [{k: total[k] - c[k] for k in total} for c in each]
    t = stats.t.ppf(1 - (1 - level) / 2, n - 1)

    def interval(global_value: np.ndarray, estimates: np.ndarray) -> np.ndarray:
        mean = estimates.mean(axis=0)
        bias = (n - 1) * (mean - global_value)
        se = np.sqrt((n - 1) * np.mean((estimates - mean) ** 2, axis=0))
        estimate = global_value - bias
        return np.stack([estimate - t * se, estimate + t * se], axis=-1)

    keys = [m.key for m in suite.metrics]
    overall = interval(
        np.array([suite.scores(total)[k] for k in keys]),
        np.array([[suite.scores(p)[k] for k in keys] for p in partial]),
    )
    intervals = {k: (float(lo), float(hi)) for k, (lo, hi) in zip(keys, overall, strict=True)}
    class_total = suite.class_scores(total)
    if class_total is None:
        return intervals, None
    class_keys = list(class_total)
    per_class = interval(
        np.array([class_total[k] for k in class_keys]),
        np.array([[suite.class_scores(p)[k] for k in class_keys] for p in partial]),
    )  # (metrics, classes, 2)
    return intervals, {
        k: [(float(lo), float(hi)) for lo, hi in per_class[i]] for i, k in enumerate(class_keys)
    }


def one_direction_per_class(rows: np.ndarray) -> np.ndarray:
    """Track-wise reference rows as a method with one direction per class and frame would at
    best predict them: of several instances of a class in a frame, the one of the lowest source
    index (what :func:`seld.data.metadata.rows_to_targets` trains on)."""
    rows = np.asarray(rows, dtype=np.float64)
    if len(rows) == 0:
        return rows
    order = np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))
    rows = rows[order]
    first = np.r_[True, np.any(rows[1:, :2] != rows[:-1, :2], axis=1)]
    return rows[first]


@dataclass
class Ceiling:
    """The best a one-direction-per-class method can score on some references: the suite's
    scores of the references against their :func:`one_direction_per_class` selves, and the
    share of active (frame, class) cells holding several instances."""

    suite: str
    overall: dict[str, float]
    overlapping_cells: float


def one_direction_ceiling(
    suite: MetricSuite,
    references: Sequence[tuple[np.ndarray, int]],
    frames_per_second: float,
    num_classes: int,
) -> Ceiling:
    """:class:`Ceiling` of ``suite`` on ``(rows, frames)`` references."""
    recordings, cells, overlapping = [], 0, 0
    for rows, frames in references:
        best = one_direction_per_class(rows)
        recordings.append((rows, best, frames))
        if len(rows):
            _, instances = np.unique(np.asarray(rows)[:, :2], axis=0, return_counts=True)
            cells += len(instances)
            overlapping += int((instances > 1).sum())
    counts = suite.count_many(recordings, frames_per_second, num_classes)
    return Ceiling(suite.name, suite.scores(pool(counts)), overlapping / cells if cells else 0.0)
