"""``seld-orch predict``: new recordings and evaluation sets through a run's fold ensemble.

1. Inputs: a DCASE 2019 layout root (its ``<format>_eval`` recordings, else ``<format>_dev``),
   the root of a track-wise layout (STARSS23, TAU-NIGENS 2020/2021: every recording of its
   ``<format>_dev`` sub-folders), a folder of WAV (or FLAC) files, or single files; names must
   not repeat, since each gives ``<out>/<name>.csv``.
2. Features: one Ray task per recording reads it, resamples it once and extracts, into a cache
   keyed by the hash of the file's bytes and the feature config
   (``<workspace>/features/<hash>/content/<sha256>.h5``): a cached file serves only the very
   content it was made from, under any name. Without a workspace (``--model`` alone) they go
   to a temporary folder in ``--out``, removed at the end. An unreadable, truncated, not
   4-channel or too short recording is reported with its reason; the others go on.
3. Prediction on this machine with the :class:`seld.serving.predict.Predictor` (loaded once), then
   one CSV in the submission form of the model's dataset format (DCASE 2019's, or the
   track-wise form of the 2020-2024 challenges) (atomically: never half a file) and one plot
   per recording. A failed recording's
   CSV and plot from an earlier prediction into the same folder are removed, so the folder
   only holds results of these inputs.
4. With reference metadata (``<ref>/<name>.csv``, or one sub-folder down, as STARSS23's
   ``metadata_dev`` has them), the predicted recordings are scored as ``seld-orch score``
   does: with DCASE 2019's metrics, or the default suite of the model's dataset format.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.export import run_predictor
from orchestrator.ray_utils import ray_session, run_tasks
from seld.data.dataset import DatasetLayout
from seld.data.fingerprint import content_fingerprint
from seld.data.formats import dataset_format_of, get_format
from seld.data.metadata import DatasetError, read_metadata
from seld.data.submission import empty_rows, events_to_rows
from seld.errors import ConfigError
from seld.features.spectral import FeatureConfig
from seld.features.store import (
    LabelFacts,
    content_feature_path,
    feature_root,
    read_features,
    stale_reason,
    write_content_features,
)
from seld.fsutil import atomic_path
from seld.metrics.reference import count_file
from seld.metrics.scores import ScoreReport, report_from_counts
from seld.metrics.suites import SuiteReport, get_suite, score_recordings
from seld.serving.model_archive import read_archive
from seld.serving.plots import plot_recording
from seld.serving.predict import Predictor, recording_features, write_rows

AUDIO_SUFFIXES = (".wav", ".flac")
#: progress(step, recording name, ok): step is "features" or "predicted"
Progress = Callable[[str, str, bool], None]


@dataclass(frozen=True)
class PredictRequest:
    """What to predict with which models: exactly one of ``run`` (a cv run of ``workspace``)
    and ``model`` (an exported model file). ``folds``: some of its folds only; ``post``:
    auto, default or tuned post-processing; ``ref``: a metadata folder to score against."""

    inputs: tuple[Path, ...]
    out: Path
    run: str | None = None
    model: Path | None = None
    workspace: Path | None = None
    folds: tuple[int, ...] | None = None
    post: str = "auto"
    ref: Path | None = None
    plots: bool = True
    device: str = "cpu"
    address: str | None = None
    num_cpus: int | None = None


@dataclass
class PredictSummary:
    """What a prediction did: the model, one CSV (and plot) per predicted recording, each
    failed recording's reason (name -> "path: problem"), how many feature files came from the
    cache, scores (with a reference: DCASE 2019's, or a :class:`SuiteReport` of the format's
    default suite), and seconds per step."""

    model: dict[str, Any]
    out: Path
    written: dict[str, str] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    cached: int = 0
    scores: ScoreReport | SuiteReport | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        data["scores"] = self.scores.as_dict() if self.scores is not None else None
        return data


def load_predictor(request: PredictRequest) -> Predictor:
    """The request's models, loaded once."""
    if (request.run is None) == (request.model is None):
        raise ConfigError("give either --run RUN or --model MODEL_FILE (exactly one)")
    if request.model is not None:
        predictor = read_archive(request.model, device=request.device)
        return predictor.select(request.folds, request.post)
    workspace = request.workspace or Path("workspace")
    return run_predictor(
        workspace, request.run, folds=request.folds, choice=request.post, device=request.device
    )


def resolve_inputs(paths: Sequence[Path], fmt: str) -> dict[str, Path]:
    """Recording name -> audio file of every input: a DCASE layout root gives its
    ``<fmt>_eval`` recordings (else ``<fmt>_dev``), a track-wise layout root every recording
    of its ``<fmt>_dev`` sub-folders, a folder its audio files, a file itself. A missing path,
    an empty folder or two recordings of one name is a usage error."""
    found: dict[str, list[Path]] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise DatasetError(path, "no such file or folder")
        files = [path]
        if path.is_dir():
            files = _layout_files(path, fmt)
            if files is None:
                files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
                if not files:
                    raise DatasetError(path, f"no audio files ({', '.join(AUDIO_SUFFIXES)})")
        for file in files:
            found.setdefault(file.stem, []).append(file)
    twice = {name: files for name, files in found.items() if len(files) > 1}
    if twice:
        name, files = next(iter(twice.items()))
        raise DatasetError(
            files[1],
            f"{len(twice)} recording name(s) given twice, e.g. {name} "
            f"({', '.join(map(str, files))}); each name becomes one CSV",
        )
    return {name: files[0] for name, files in sorted(found.items())}


def _layout_files(path: Path, fmt: str) -> list[Path] | None:
    """The audio files of ``fmt`` in a dataset root of a registered layout; ``None`` when
    ``path`` is no dataset root."""
    layout = dataset_format_of(path)
    if layout.name != "dcase2019":
        files = [r.audio[fmt] for r in layout.recordings(path) if fmt in r.audio]
        if not files:
            raise DatasetError(path, f"a {layout.name} layout without {fmt}_dev audio")
        return files
    try:
        dcase = DatasetLayout.discover(path)
    except DatasetError:
        return None
    for subset in ("eval", "dev"):
        if (fmt, subset) in dcase.audio_dirs:
            folder = dcase.audio_dirs[(fmt, subset)]
            return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    raise DatasetError(path, f"a DCASE layout without {fmt}_eval or {fmt}_dev (the model's format)")


def _features_task(item: tuple[str, Path], config: FeatureConfig, root: Path) -> dict[str, Any]:
    """Runs on a Ray worker: the recording's cached features, or extract them. Bad input is
    an expected outcome, returned rather than raised."""
    _, audio = item
    try:
        content = content_fingerprint(audio)
        path = content_feature_path(root, content)
        if stale_reason(path, config) is None:
            return {"ok": True, "path": str(path), "cached": True}
        features, duration_s = recording_features(audio, config)
        write_content_features(
            path, features, config=config, duration_s=duration_s, content=content
        )
        return {"ok": True, "path": str(path), "cached": False}
    except DatasetError as exc:
        return {"ok": False, "reason": str(exc)}
    except OSError as exc:
        return {"ok": False, "reason": f"{audio}: {exc.strerror or exc}"}


def reference_file(ref: Path, name: str) -> Path | None:
    """``<ref>/<name>.csv``, else the one ``<ref>/*/<name>.csv`` (a metadata folder of
    sub-folders, as STARSS23's); ``None`` when there is none."""
    direct = ref / f"{name}.csv"
    if direct.is_file():
        return direct
    nested = sorted(p for p in ref.glob(f"*/{name}.csv") if p.is_file())
    if len(nested) > 1:
        raise DatasetError(ref, f"{len(nested)} references for {name}: {nested[0]}, {nested[1]}")
    return nested[0] if nested else None


def read_reference(path: Path, labels: LabelFacts, duration_s: float | None = None) -> Any:
    """A reference metadata file as rows of the model's dataset format: DCASE 2019 submission
    rows, or track-wise rows; checked against the recording's length when it is given."""
    frames = None if duration_s is None else labels.num_frames(duration_s)
    if labels.dataset_format == "dcase2019":
        events = read_metadata(path, duration_s=duration_s)
        return events if frames is None else events_to_rows(events, frames)
    return get_format(labels.dataset_format).read_reference(path, frames)


def predict_recordings(
    request: PredictRequest,
    progress: Progress | None = None,
    on_inputs: Callable[[int], None] | None = None,
) -> PredictSummary:
    """Predict every input recording (see the module docstring); the summary names each
    failed recording and why. ``on_inputs`` hears how many recordings there are, once they
    are known; ``progress`` hears of each one's features and prediction."""
    started = time.perf_counter()
    predictor = load_predictor(request)
    inputs = resolve_inputs(request.inputs, predictor.experiment.format)
    refs: dict[str, Path] = {}
    if request.ref is not None:  # every reference is there and readable before any work
        found = {n: reference_file(request.ref, n) for n in inputs}
        missing = [n for n, path in found.items() if path is None]
        if missing:
            raise DatasetError(request.ref, f"no reference for {len(missing)}: {missing[:5]}")
        refs = {n: path for n, path in found.items() if path is not None}
        for path in refs.values():
            read_reference(path, predictor.labels)
    if on_inputs is not None:
        on_inputs(len(inputs))
    summary = PredictSummary(predictor.describe(), request.out)
    summary.timings["load"] = time.perf_counter() - started
    config = predictor.features_config
    out = Path(request.out)
    out.mkdir(parents=True, exist_ok=True)
    temporary = None
    if request.workspace is not None or request.run is not None:
        root = feature_root(request.workspace or Path("workspace"), config)
    else:
        root = temporary = Path(tempfile.mkdtemp(prefix=".features-", dir=out))
    try:
        paths = _extract(inputs, config, root, request, summary, progress)
        _predict(predictor, inputs, paths, refs, request, summary, progress)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    for name in summary.failed:
        (out / f"{name}.csv").unlink(missing_ok=True)
        (out / "plots" / f"{name}.png").unlink(missing_ok=True)
    summary.timings["total"] = time.perf_counter() - started
    with atomic_path(out / "predict.json") as tmp:
        record = {**summary.as_dict(), "inputs": {n: str(p) for n, p in inputs.items()}}
        tmp.write_text(json.dumps(record, indent=2))
    return summary


def _extract(
    inputs: dict[str, Path],
    config: FeatureConfig,
    root: Path,
    request: PredictRequest,
    summary: PredictSummary,
    progress: Progress | None,
) -> dict[str, Path]:
    """Features of every input: name -> feature file; failures into ``summary``. Inputs whose
    content is cached already are found here (hashing is cheap next to extracting) and need no
    Ray at all; the others are extracted on Ray tasks."""
    started = time.perf_counter()
    paths: dict[str, Path] = {}
    todo = []
    for name, audio in inputs.items():
        try:
            cached = content_feature_path(root, content_fingerprint(audio))
        except OSError:
            cached = None  # the task reports why it cannot be read
        if cached is not None and stale_reason(cached, config) is None:
            paths[name] = cached
            summary.cached += 1
            if progress is not None:
                progress("features", name, True)
        else:
            todo.append((name, audio))

    def done(item: tuple[str, Path], result: dict | None, error: str | None) -> None:
        name, audio = item
        result = result or {"ok": False, "reason": f"{audio}: {error}"}
        if result["ok"]:
            paths[name] = Path(result["path"])
            summary.cached += int(result["cached"])
        else:
            summary.failed[name] = result["reason"]
        if progress is not None:
            progress("features", name, result["ok"])

    if todo:
        with ray_session(request.address, request.num_cpus):
            run_tasks(_features_task, todo, (config, root), on_done=done)
    summary.timings["features"] = time.perf_counter() - started
    return paths


def _predict(
    predictor: Predictor,
    inputs: dict[str, Path],
    paths: dict[str, Path],
    refs: dict[str, Path],
    request: PredictRequest,
    summary: PredictSummary,
    progress: Progress | None,
) -> None:
    """Models, post-processing, CSV and plot of each recording with features, in name order."""
    out = Path(request.out)
    spent = dict.fromkeys(("model", "postprocessing", "csv", "plots"), 0.0)
    folds = predictor.fold_numbers
    which = f"fold {folds[0]}" if len(folds) == 1 else f"ensemble of folds {folds}"
    label = f"{which}, {predictor.choice} post-processing"
    labels = predictor.labels
    scored = {}
    for name in sorted(paths):
        tick = time.perf_counter()
        features, duration_s = read_features(paths[name])
        prediction = predictor.predict_features(features, duration_s, name)
        spent["model"] += time.perf_counter() - tick
        tick = time.perf_counter()
        result = predictor.finish(prediction, duration_s)
        spent["postprocessing"] += time.perf_counter() - tick
        tick = time.perf_counter()
        write_rows(out / f"{name}.csv", result.rows)
        summary.written[name] = str(out / f"{name}.csv")
        spent["csv"] += time.perf_counter() - tick
        ref, frames = empty_rows(), labels.num_frames(duration_s)
        if name in refs:
            ref = read_reference(refs[name], labels, duration_s)
            scored[name] = (ref, result.rows, frames)
        if request.plots:
            tick = time.perf_counter()
            title = f"{name} ({inputs[name].name}): {label}"
            png = out / "plots" / f"{name}.png"
            plot = plot_recording(ref, result.rows, frames, title, png, labels)
            summary.plots[name] = str(plot)
            spent["plots"] += time.perf_counter() - tick
        if progress is not None:
            progress("predicted", name, True)
    summary.timings.update(spent)
    if not scored:
        return
    if labels.dataset_format == "dcase2019":
        summary.scores = report_from_counts({n: count_file(*r) for n, r in scored.items()})
    else:
        summary.scores = score_recordings(
            get_suite(get_format(labels.dataset_format).default_suite),
            scored,
            frames_per_second=labels.label_frames_per_second,
            num_classes=labels.num_classes,
            with_jackknife=True,
        )
