"""DCASE 2019 metadata CSVs: typed events, reading with validation, writing, frame-level targets."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seld.data.dcase import CLASS_INDEX, CLASSES, METADATA_HEADER, NUM_CLASSES
from seld.errors import SeldError
from seld.fsutil import atomic_path


class DatasetError(SeldError, ValueError):
    """A problem with one file of a dataset; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Event:
    """One sound event of a recording, as in a metadata CSV row.

    Times are in seconds, angles in degrees (azimuth counter-clockwise from the front, elevation
    up from the horizontal plane), distance in metres.
    """

    label: str
    start: float
    end: float
    elevation: float
    azimuth: float
    distance: float

    @property
    def class_index(self) -> int:
        return CLASS_INDEX[self.label]


def parse_metadata(text: str, path: str | os.PathLike[str] = "<metadata>") -> list[Event]:
    """Parse the text of a metadata CSV; every problem raises :class:`DatasetError` naming ``path``
    and the line."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise DatasetError(path, "empty file (expected the header line)")
    header = tuple(cell.strip() for cell in rows[0])
    if header != METADATA_HEADER:
        raise DatasetError(
            path,
            f"malformed CSV header {','.join(header)!r}; expected {','.join(METADATA_HEADER)!r}",
        )
    events = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(METADATA_HEADER):
            raise DatasetError(
                path, f"line {line_no}: malformed CSV row with {len(row)} fields, expected 6"
            )
        label = row[0].strip()
        if label not in CLASS_INDEX:
            raise DatasetError(
                path,
                f"line {line_no}: unknown class label {label!r}; "
                f"valid labels: {', '.join(CLASSES)}",
            )
        try:
            start, end, ele, azi, dist = (float(cell) for cell in row[1:])
        except ValueError:
            raise DatasetError(
                path, f"line {line_no}: malformed CSV row, non-numeric field in {row[1:]!r}"
            ) from None
        if not all(math.isfinite(v) for v in (start, end, ele, azi, dist)):
            raise DatasetError(path, f"line {line_no}: NaN or infinite value in {row[1:]!r}")
        if start < 0:
            raise DatasetError(path, f"line {line_no}: negative start time {start}")
        if end <= start:
            raise DatasetError(path, f"line {line_no}: end time {end} is not after start {start}")
        if not (-180 <= azi <= 180 and -90 <= ele <= 90):
            raise DatasetError(
                path, f"line {line_no}: direction out of range (azi {azi}, ele {ele})"
            )
        if dist <= 0:
            raise DatasetError(path, f"line {line_no}: non-positive distance {dist}")
        events.append(Event(label, start, end, ele, azi, dist))
    return events


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of a dataset file (a leading byte-order mark, as spreadsheet programs
    write, is dropped); :class:`DatasetError` says which ``what`` file is missing or
    unreadable."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(path, f"missing {what} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"unreadable {what} file ({exc})") from None


def read_metadata(path: str | os.PathLike[str], duration_s: float | None = None) -> list[Event]:
    """Read one metadata CSV into events.

    With ``duration_s`` (the length of the matching audio), events ending after the audio are an
    error too.
    """
    path = Path(path)
    events = parse_metadata(read_text_file(path, "metadata"), path)
    if duration_s is not None:
        check_events_fit(events, duration_s, path)
    return events


#: How far an event may end past the audio. The development set itself has events ending up to
#: 0.7 s after its one-minute recordings (e.g. split1_ir0_ov2_11, drawer at 59.86-60.69 s); the
#: official label code clips them to the recording, and so do we.
END_TOLERANCE_S = 1.0


def check_events_fit(
    events: Sequence[Event], duration_s: float, path: str | os.PathLike[str]
) -> None:
    """Raise :class:`DatasetError` for an event that starts at or after the end of the audio, or
    ends more than :data:`END_TOLERANCE_S` after it."""
    for event in events:
        if event.start >= duration_s or event.end > duration_s + END_TOLERANCE_S:
            raise DatasetError(
                path,
                f"event {event.label} at {event.start:.3f}-{event.end:.3f} s lies past the end "
                f"of the audio ({duration_s:.3f} s)",
            )


def format_metadata(events: Iterable[Event]) -> str:
    """The text of a metadata CSV in the development-set format (integer angles and distance)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(METADATA_HEADER)
    for e in events:
        writer.writerow(
            [
                e.label,
                repr(float(e.start)),
                repr(float(e.end)),
                _int_if_whole(e.elevation),
                _int_if_whole(e.azimuth),
                _int_if_whole(e.distance),
            ]
        )
    return out.getvalue()


def write_metadata(path: str | os.PathLike[str], events: Iterable[Event]) -> None:
    """Write a metadata CSV atomically (temporary name in the same folder, then rename)."""
    atomic_write_text(Path(path), format_metadata(events))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers never see a partial file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def _int_if_whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


@dataclass(frozen=True)
class FrameTargets:
    """Frame-level targets of one recording.

    ``activity``: (frames, classes) in {0, 1}; ``azimuth`` and ``elevation``: (frames, classes) in
    degrees, 0 where the class is inactive: one direction per class and frame. ``tracks``:
    (frames, :data:`MAX_TRACKS`, classes, 3) float32, every instance of a class in the frame (up
    to :data:`MAX_TRACKS`, in source-index order; DCASE 2019: in event order) as the unit
    vector ``(x, y, z)`` of its direction, zeros where there is none: the targets of the
    methods that predict several instances of a class (multi-ACCDOA). ``distances``: (frames,
    :data:`MAX_TRACKS`, classes) float32, the distance in metres of the instance in the same
    slot of ``tracks``, 0 where there is none; ``None`` where the labels carry no distances
    (a STARSS23 release before DCASE 2024, TAU-NIGENS): the targets of a method that predicts
    distances too (multi-ACCDDOA).
    """

    activity: np.ndarray
    azimuth: np.ndarray
    elevation: np.ndarray
    tracks: np.ndarray | None = None
    distances: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return self.activity.shape[0]


def event_frame_span(event: Event, hop_s: float, num_frames: int) -> tuple[int, int]:
    """First and one-past-last frame of an event at ``hop_s``, the official code's convention.

    The official DCASE 2019 code marks frames ``floor(start * rate)`` to ``ceil(end * rate)``
    inclusive (rate = frames per second, multiplied, not divided: ``ceil(0.14 * 50)`` is 8),
    clipped to the recording.
    """
    rate = round(1.0 / hop_s, 9)
    first = math.floor(event.start * rate)
    last = math.ceil(event.end * rate)
    return min(first, num_frames), min(last + 1, num_frames)


#: the most instances of one class per frame that the track targets hold (the DCASE 2022-2024
#: baselines' multi-ACCDOA tracks); further instances are left out of them
MAX_TRACKS = 3


def unit_vectors(azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """Directions ``(..., 3)`` of azimuths and elevations in degrees (x front, y left, z up)."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return np.stack([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)], axis=-1)


def events_to_targets(events: Iterable[Event], num_frames: int, hop_s: float) -> FrameTargets:
    """Turn events into frame-level targets at any hop (seconds per frame).

    Where two events of the same class overlap, the later one in the list sets the direction;
    the ``tracks`` keep both (in list order), and ``distances`` their distances.
    """
    activity = np.zeros((num_frames, NUM_CLASSES), dtype=np.float32)
    azimuth = np.zeros((num_frames, NUM_CLASSES), dtype=np.float32)
    elevation = np.zeros((num_frames, NUM_CLASSES), dtype=np.float32)
    tracks = np.zeros((num_frames, MAX_TRACKS, NUM_CLASSES, 3), dtype=np.float32)
    distances = np.zeros((num_frames, MAX_TRACKS, NUM_CLASSES), dtype=np.float32)
    taken = np.zeros((num_frames, NUM_CLASSES), dtype=np.int64)
    for event in events:
        first, stop = event_frame_span(event, hop_s, num_frames)
        c = event.class_index
        activity[first:stop, c] = 1.0
        azimuth[first:stop, c] = event.azimuth
        elevation[first:stop, c] = event.elevation
        frames = np.arange(first, stop)
        slot = taken[first:stop, c]
        room = slot < MAX_TRACKS
        tracks[frames[room], slot[room], c] = unit_vectors(event.azimuth, event.elevation)
        distances[frames[room], slot[room], c] = event.distance
        taken[first:stop, c] += 1
    return FrameTargets(activity, azimuth, elevation, tracks, distances)


def rows_to_targets(
    rows: np.ndarray,
    label_frames_per_second: float,
    num_frames: int,
    hop_s: float,
    num_classes: int,
) -> FrameTargets:
    """Turn track-wise label rows ``(frame, class, source, azimuth, elevation, ...)`` (degrees,
    at ``label_frames_per_second``) into frame-level targets at a feature hop of ``hop_s``:
    feature frame ``i`` takes the label frame its start time falls in. The targets carry one
    direction per class and frame: where several sources of one class sound at once, the one
    of the lowest source index (the other instances are dropped; the format's score ceiling
    says what that costs). Every instance is in ``tracks`` (up to :data:`MAX_TRACKS`), with its
    distance (metres, a sixth column) in ``distances`` where every row has one, else no
    ``distances``."""
    activity = np.zeros((num_frames, num_classes), dtype=np.float32)
    azimuth = np.zeros((num_frames, num_classes), dtype=np.float32)
    elevation = np.zeros((num_frames, num_classes), dtype=np.float32)
    tracks = np.zeros((num_frames, MAX_TRACKS, num_classes, 3), dtype=np.float32)
    distances = None
    if rows.shape[1] > 5 and np.isfinite(rows[:, 5]).all():
        distances = np.zeros((num_frames, MAX_TRACKS, num_classes), dtype=np.float32)
    if len(rows):
        label = np.floor(np.arange(num_frames) * hop_s * label_frames_per_second + 1e-9)
        frames = int(label.max()) + 1
        at = label.astype(int)
        tracks[...] = _label_tracks(rows, num_classes, frames)[at]
        if distances is not None:
            distances[...] = _label_tracks(rows, num_classes, frames, distances=True)[at]
        # the lowest source index of each (frame, class) written last, so it wins
        order = np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))
        lookup: dict[int, list[int]] = {}
        for i in order:
            lookup.setdefault(int(rows[i, 0]), []).append(int(i))
        for f, label_frame in enumerate(label.astype(int)):
            for i in lookup.get(int(label_frame), ()):
                c = int(rows[i, 1])
                activity[f, c] = 1.0
                azimuth[f, c] = rows[i, 3]
                elevation[f, c] = rows[i, 4]
    return FrameTargets(activity, azimuth, elevation, tracks, distances)


def _label_tracks(
    rows: np.ndarray, num_classes: int, num_frames: int, *, distances: bool = False
) -> np.ndarray:
    """(label frames, MAX_TRACKS, classes, 3): each (frame, class)'s instances as unit
    vectors in source-index order (the first MAX_TRACKS); rows at or past ``num_frames`` are
    left out. With ``distances``: (label frames, MAX_TRACKS, classes), their distances (the
    sixth column) in the same slots."""
    shape = (num_frames, MAX_TRACKS, num_classes) + (() if distances else (3,))
    out = np.zeros(shape, dtype=np.float32)
    rows = rows[rows[:, 0] < num_frames]
    if not len(rows):
        return out
    order = np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))
    rows = rows[order]
    cell = rows[:, 0].astype(np.int64) * num_classes + rows[:, 1].astype(np.int64)
    first = np.r_[0, np.flatnonzero(np.diff(cell)) + 1]
    rank = np.arange(len(rows)) - np.repeat(first, np.diff(np.r_[first, len(rows)]))
    kept = rank < MAX_TRACKS
    rows, rank = rows[kept], rank[kept]
    values = rows[:, 5] if distances else unit_vectors(rows[:, 3], rows[:, 4])
    out[rows[:, 0].astype(np.int64), rank, rows[:, 1].astype(np.int64)] = values
    return out
