"""The batched DCASE 2019 Task 3 scorer: many recordings, many predictions, the same numbers.

The threshold search scores the same recordings once per trial. Here their references are laid
end to end on one frame axis and everything the scorer derives from them is computed once
(:func:`prepare_references` -> :class:`ReferenceFrames`); a prediction is then one uint16 class
mask per label frame (:func:`class_masks`; bit ``c`` set where class ``c`` is detected) and the
grid cell of each class's predicted direction (:func:`seld.metrics.grid.predicted_cells`), and
:func:`count_masks` / :func:`pooled_counts` give, number for number (floats included), what
:func:`seld.metrics.reference.count_file` gives for the submission rows of those detections.

Shapes: ``T`` label frames (20 ms) of all recordings together, ``B`` one-second blocks, ``F``
recordings; angles in degrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from seld.data.dcase import LABEL_FRAMES_PER_SECOND, NUM_CLASSES
from seld.data.submission import check_rows
from seld.metrics.grid import NUM_CELLS, cell_distance_table, cell_keys, min_assignment_cost
from seld.metrics.scores import SeldCounts

__all__ = ["ReferenceFrames", "class_masks", "count_masks", "pooled_counts", "prepare_references"]

#: Number of set bits, and their positions (ascending, padded with 0), of every class mask.
_POPCOUNT = np.array([bin(m).count("1") for m in range(1 << NUM_CLASSES)], dtype=np.int64)
_SET_BITS = np.array(
    [
        [c for c in range(NUM_CLASSES) if m >> c & 1] + [0] * (NUM_CLASSES - bin(m).count("1"))
        for m in range(1 << NUM_CLASSES)
    ],
    dtype=np.intp,
)


def class_masks(activity: np.ndarray) -> np.ndarray:
    """(T, classes) bool -> (T,) uint16 with bit ``c`` set where class ``c`` is active."""
    activity = np.asarray(activity, dtype=bool)
    masks = np.zeros(len(activity), dtype=np.uint16)
    for c in range(activity.shape[1]):
        masks |= activity[:, c].astype(np.uint16) << c
    return masks


@dataclass(frozen=True)
class ReferenceFrames:
    """The references of several recordings, laid end to end on one frame axis, with everything
    the scorer derives from them computed once (for scoring many predictions of the same
    recordings, e.g. one per threshold trial; see :func:`count_masks`).

    ``T`` is the total number of label frames and ``B`` of one-second blocks; class sets are
    bit masks (:func:`class_masks`). Arrays are read-only, so one instance can be shared (also
    through Ray's object store).
    """

    names: tuple[str, ...]
    #: (F + 1,) first frame of each recording on the frame axis, and T at the end
    frame_offsets: np.ndarray
    #: (F + 1,) first block of each recording, and B at the end
    block_offsets: np.ndarray
    #: (T,) recording index of each frame
    recording: np.ndarray
    #: (T,) number of reference 1-cells of each frame
    n_ref: np.ndarray
    #: (T, max 1-cells per frame) reference cells of each frame, in the scorer's order
    ref_cells: np.ndarray
    #: (B,) first frame of each block
    block_starts: np.ndarray
    #: (T,) uint16, all ones for frames that count for SED, 0 for the others (the official
    #: blocks skip each second's last frame)
    sed_frames: np.ndarray
    #: (B,) uint16 class mask of the reference activity of each block
    ref_blocks: np.ndarray

    @property
    def num_frames(self) -> np.ndarray:
        """(F,) label frames of each recording."""
        return np.diff(self.frame_offsets)


def prepare_references(
    refs: Mapping[str, tuple[np.ndarray, int]], *, official_blocks: bool = True
) -> ReferenceFrames:
    """Lay out the references of several recordings for :func:`count_masks`.

    ``refs``: recording name -> ``(ref_rows, num_frames)`` as for
    :func:`seld.metrics.reference.count_file`. Raises ``ValueError`` as it does (bad rows,
    directions off the grid).
    """
    if not refs:
        raise ValueError("no recordings to score")
    block = LABEL_FRAMES_PER_SECOND
    frames = np.array([n for _, n in refs.values()], dtype=np.int64)
    if (frames <= 0).any():
        raise ValueError(f"num_frames must be positive, got {int(frames.min())}")
    blocks = -(-frames // block)
    frame_offsets = np.concatenate([[0], np.cumsum(frames)])
    block_offsets = np.concatenate([[0], np.cumsum(blocks)])
    total = int(frame_offsets[-1])
    per_frame = NUM_CLASSES * NUM_CELLS
    keys = [
        cell_keys(check_rows(rows, "reference rows"), n, prediction=False)
        for rows, n in refs.values()
    ]
    frame = np.concatenate(
        [k // per_frame + o for k, o in zip(keys, frame_offsets[:-1], strict=True)]
    )
    cls = np.concatenate(keys) // NUM_CELLS % NUM_CLASSES
    cell = np.concatenate(keys) % NUM_CELLS
    n_ref = np.bincount(frame, minlength=total)
    # keys are sorted, so each frame's cells are contiguous, in the scorer's order
    slot = np.arange(len(frame)) - (np.cumsum(n_ref) - n_ref)[frame]
    ref_cells = np.zeros((total, max(1, int(n_ref.max(initial=0)))), dtype=np.int16)
    ref_cells[frame, slot] = cell
    recording = np.repeat(np.arange(len(frames), dtype=np.int32), frames)
    local = np.arange(total) - frame_offsets[recording]
    counted = (local % block != block - 1) if official_blocks else np.ones(total, dtype=bool)
    block_of = local // block + block_offsets[recording]
    ref_blocks = np.zeros(int(block_offsets[-1]), dtype=np.uint16)
    kept = counted[frame]
    np.bitwise_or.at(ref_blocks, block_of[frame[kept]], (1 << cls[kept]).astype(np.uint16))
    block_starts = frame_offsets[:-1, None] + np.arange(int(blocks.max())) * block
    block_starts = block_starts[np.arange(block_starts.shape[1]) < blocks[:, None]]
    sed_frames = np.where(counted, np.uint16(0xFFFF), np.uint16(0))
    arrays = (frame_offsets, block_offsets, recording, n_ref, ref_cells, block_starts)
    for array in (*arrays, sed_frames, ref_blocks):
        array.setflags(write=False)
    return ReferenceFrames(tuple(refs), *arrays, sed_frames, ref_blocks)


def count_masks(
    refs: ReferenceFrames, masks: np.ndarray, cells: np.ndarray
) -> dict[str, SeldCounts]:
    """Metric counts of each recording from its detections: what
    :func:`seld.metrics.reference.count_file` gives for the submission rows
    ``(frame, class, azimuth, elevation)`` of every detected class.

    ``masks``: (T,) uint16 class masks of the detections on ``refs``' frame axis
    (:func:`class_masks`); ``cells``: (T, classes) the grid cell of each class's predicted
    direction (:func:`seld.metrics.grid.predicted_cells`), read where detected. Equal, number
    for number, to ``count_file`` of each recording.
    """
    ints, angles = _mask_counts(refs, masks, cells)
    return {
        name: SeldCounts(*row[:6], angle, *row[6:])
        for name, row, angle in zip(refs.names, ints.tolist(), angles, strict=True)
    }


def pooled_counts(refs: ReferenceFrames, masks: np.ndarray, cells: np.ndarray) -> SeldCounts:
    """``sum(count_masks(...).values(), SeldCounts())`` (the same numbers), in one step."""
    ints, angles = _mask_counts(refs, masks, cells)
    row = ints.sum(axis=0).tolist()
    return SeldCounts(*row[:6], sum(angles, 0.0), *row[6:])


def _mask_counts(
    refs: ReferenceFrames, masks: np.ndarray, cells: np.ndarray
) -> tuple[np.ndarray, list[float]]:
    """(F, 10) integer counts per recording (the fields of :class:`SeldCounts` but the summed
    angle, in order) and the summed matched angle of each recording."""
    if masks.shape != refs.n_ref.shape or cells.shape != (len(masks), NUM_CLASSES):
        raise ValueError(
            f"masks and cells must have shapes ({len(refs.n_ref)},) and ({len(refs.n_ref)}, "
            f"{NUM_CLASSES}), got {masks.shape} and {cells.shape}"
        )
    # SED: one-second blocks x classes
    pred_blocks = np.bitwise_or.reduceat(masks & refs.sed_frames, refs.block_starts)
    ref_blocks = refs.ref_blocks
    fp = _POPCOUNT[pred_blocks & ~ref_blocks]
    fn = _POPCOUNT[ref_blocks & ~pred_blocks]
    per_block = np.stack(
        [
            np.minimum(fp, fn),
            np.maximum(0, fn - fp),
            np.maximum(0, fp - fn),
            _POPCOUNT[pred_blocks & ref_blocks],
            _POPCOUNT[ref_blocks],
            _POPCOUNT[pred_blocks],
        ],
        axis=1,
    )
    sed = np.add.reduceat(per_block, refs.block_offsets[:-1], axis=0)
    # DOA: one direction per detected (frame, class)
    n_pred = _POPCOUNT[masks]
    per_frame = np.stack([n_pred, n_pred == refs.n_ref], axis=1)
    doa = np.add.reduceat(per_frame, refs.frame_offsets[:-1], axis=0)
    sizes = np.stack([np.diff(refs.frame_offsets), np.diff(refs.block_offsets)], axis=1)
    ints = np.concatenate([sed, doa, sizes], axis=1)
    return ints, _matched_angles(refs, masks, cells, n_pred)


def _matched_angles(
    refs: ReferenceFrames, masks: np.ndarray, cells: np.ndarray, n_pred: np.ndarray
) -> list[float]:
    """Summed matched angle (degrees) of each recording, added up in exactly the order
    :func:`seld.metrics.reference.count_file` adds them (by frame shape, then frame), so that
    the floats are equal."""
    n_ref = refs.n_ref
    both = np.flatnonzero((n_ref > 0) & (n_pred > 0))
    totals = [0.0] * len(refs.names)
    if not len(both):
        return totals
    # frames grouped by shape (reference count, predicted count); frames are laid out
    # recording after recording, so a stable sort keeps each shape's frames by recording, then
    # in frame order: runs of one (shape, recording) are the per-file
    # scorer's shape groups
    shapes = n_ref[both] * (NUM_CLASSES + 1) + n_pred[both]
    if shapes.max() < 1 << 16:
        shapes = shapes.astype(np.uint16)  # a stable sort of 16-bit keys is a radix sort
    order = np.argsort(shapes, kind="stable")
    shapes, frames = shapes[order], both[order]
    owner = refs.recording[frames]
    table = cell_distance_table().ravel()
    cost = np.empty(len(frames))
    bounds = (np.flatnonzero(np.diff(shapes)) + 1).tolist()
    for first, stop in zip([0, *bounds], [*bounds, len(frames)], strict=True):
        group = frames[first:stop]
        n, m = divmod(int(shapes[first]), NUM_CLASSES + 1)
        ref = refs.ref_cells[group, :n].astype(np.int64)
        pred = cells[group[:, None], _SET_BITS[masks[group], :m]]  # in class order
        pairs = table.take(ref[:, :, None] * NUM_CELLS + pred[:, None, :])  # (G, n, m)
        cost[first:stop] = min_assignment_cost(pairs)
    runs = (np.flatnonzero((np.diff(shapes) != 0) | (np.diff(owner) != 0)) + 1).tolist()
    owners = owner[[0, *runs]].tolist()
    for k, first, stop in zip(owners, [0, *runs], [*runs, len(frames)], strict=True):
        totals[k] += float(cost[first:stop].sum())  # shapes ascend within each recording
    return totals
