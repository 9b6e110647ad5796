"""Exported models: one self-contained file that predicts without the workspace it came from.

An archive is a zip file of plain data, nothing executable::

    manifest.json           format and version, the dataset format and its classes, method,
                            folds and stages, the post-processing (default and tuned), package
                            versions, where it came from, and the size and SHA-256 of every
                            other member
    config.json             the experiment config (features, model, inference, ...)
    fold<k>/<stage>.pt      a stage's weights: {"model": state dict, "model_config": {...}}
    fold<k>/scaler.npz      the fold's feature scaler (mean, std, frames)

Reading is safe against a hostile file: JSON is parsed as JSON, scalers are read with
``allow_pickle=False``, and weights with ``torch.load(weights_only=True)``, which unpickles
tensors and plain containers only and never code. Nothing is extracted to disk. The checksums
catch a corrupt or edited member (not a forger, who could rewrite the manifest too: they are
integrity, not a signature). A file that is not such an archive, or one this version cannot
use (another format version, an unknown dataset format or a class list other than its
format's, weights that do not fit their architecture, a scaler of other features) is refused
with :class:`ModelArchiveError`, naming the file and the member.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import io
import json
import os
import pickle
import platform
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seld.config import validate_config
from seld.data.dcase import NUM_CHANNELS
from seld.data.formats import get_format
from seld.errors import ConfigError, SeldError
from seld.features.store import LabelFacts, Scaler
from seld.fsutil import atomic_path
from seld.methods.inference import Postprocessing
from seld.serving.predict import FoldModels, Predictor

FORMAT = "seld-orchestrator model"
#: Bumped when the layout changes in a way older readers cannot follow.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: A member larger than this is refused before it is read (a zip bomb, or not our file): the
#: paper's CRNN10 weights are 24 MB.
MAX_MEMBER_BYTES = 1 << 30
_PACKAGES = ("seld-orchestrator", "torch", "numpy")


class ModelArchiveError(SeldError, ValueError):
    """A model file that cannot be used: corrupt, edited, not an exported model, or made for
    something this version does not match. The message names the file and the member."""

    def __init__(self, path: str | os.PathLike[str], problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _weights_bytes(models: FoldModels, stage: str) -> bytes:
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in models.states[stage]["model"].items()}
    torch.save({"model": state, "model_config": dict(models.states[stage]["model_config"])}, buffer)
    return buffer.getvalue()


def _scaler_bytes(scaler: Scaler) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, mean=scaler.mean, std=scaler.std, frames=scaler.frames)
    return buffer.getvalue()


def write_archive(
    predictor: Predictor, path: str | os.PathLike[str], source: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write every fold and stage of ``predictor`` to one archive at ``path`` (atomically);
    returns its manifest. ``source`` (e.g. the run and its config hash) is recorded as is."""
    members: dict[str, bytes] = {
        "config.json": json.dumps(predictor.experiment.to_dict(), indent=2).encode()
    }
    for fold in predictor.folds:
        members[f"fold{fold.fold}/scaler.npz"] = _scaler_bytes(fold.scaler)
        for stage in predictor.experiment.stages:
            members[f"fold{fold.fold}/{stage}.pt"] = _weights_bytes(fold, stage)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source or {}),
        "versions": _versions(),
        "dataset_format": predictor.labels.dataset_format,
        "classes": list(predictor.labels.classes),
        "method": predictor.experiment.method,
        "stages": list(predictor.experiment.stages),
        "folds": list(predictor.fold_numbers),
        "postprocessing": {name: p.to_params() for name, p in predictor.postprocessing.items()},
        "members": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in members.items()
        },
    }
    with atomic_path(Path(path)) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2))
        for name, data in members.items():
            zf.writestr(name, data)
    return manifest


class _Reader:
    """Reads and checks the members of one open archive."""

    def __init__(self, path: Path, zf: zipfile.ZipFile):
        self.path, self.zf = path, zf
        self.manifest: dict[str, Any] = {}

    def fail(self, problem: str) -> ModelArchiveError:
        return ModelArchiveError(self.path, problem)

    def raw(self, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise self.fail(f"member {name} missing") from None
        if info.file_size > limit:
            raise self.fail(f"member {name} is {info.file_size} bytes, more than {limit}")
        try:
            return self.zf.read(info)
        except (zipfile.BadZipFile, zlib.error, OSError) as exc:
            raise self.fail(f"member {name} is corrupt ({exc})") from None

    def read_manifest(self) -> dict[str, Any]:
        names = self.zf.namelist()
        if len(names) != len(set(names)):
            raise self.fail("a member name appears twice (an edited archive?)")
        try:
            manifest = json.loads(self.raw(MANIFEST, 1 << 20))
        except (ValueError, UnicodeDecodeError):
            raise self.fail(f"{MANIFEST} is not valid JSON") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise self.fail(f"not an exported seld model ({MANIFEST} does not say {FORMAT!r})")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise self.fail(
                f"model format version {version!r}; this version of seld-orchestrator reads "
                f"version {FORMAT_VERSION} (export it again, or use the version that wrote it)"
            )
        # archives written before other dataset formats were DCASE 2019's
        name = manifest.setdefault("dataset_format", "dcase2019")
        try:
            dataset_format = get_format(name)
        except ConfigError as exc:
            raise self.fail(str(exc)) from None
        if manifest.get("classes") != list(dataset_format.classes):
            raise self.fail(
                f"made for the classes {manifest.get('classes')}, not {name}'s "
                f"{list(dataset_format.classes)}"
            )
        listed = manifest.get("members")
        if not isinstance(listed, dict):
            raise self.fail(f"{MANIFEST} lists no members")
        present = set(names) - {MANIFEST}
        extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
        if extra or missing:
            raise self.fail(
                "members differ from the manifest: "
                + "; ".join(
                    part
                    for part in (
                        f"not listed: {', '.join(extra)}" if extra else "",
                        f"missing: {', '.join(missing)}" if missing else "",
                    )
                    if part
                )
            )
        self.manifest = manifest
        return manifest

    @property
    def labels(self) -> LabelFacts:
        """The labels of the manifest's dataset format."""
        fmt = get_format(self.manifest["dataset_format"])
        return LabelFacts(fmt.name, fmt.label_frames_per_second, fmt.classes)

    def member(self, name: str) -> bytes:
        """A member's bytes, checked against the manifest's size and SHA-256."""
        entry = self.manifest["members"].get(name)
        if not isinstance(entry, dict):
            raise self.fail(f"member {name} is not listed in {MANIFEST}")
        data = self.raw(name)
        if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get(
            "sha256"
        ):
            raise self.fail(f"member {name} does not match its checksum (corrupt or edited)")
        return data

    def weights(self, name: str) -> dict[str, Any]:
        try:
            state = torch.load(io.BytesIO(self.member(name)), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise self.fail(f"member {name}: not plain weights ({first})") from None
        if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
            raise self.fail(f"member {name}: expected model weights and model_config")
        return state

    def scaler(self, name: str, shape: tuple[int, int]) -> Scaler:
        try:
            with np.load(io.BytesIO(self.member(name)), allow_pickle=False) as data:
                scaler = Scaler(data["mean"], data["std"], int(data["frames"]))
        except (ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
            raise self.fail(f"member {name}: not a feature scaler ({exc})") from None
        if scaler.mean.shape != shape or scaler.std.shape != shape:
            raise self.fail(
                f"member {name}: scaler of shape {scaler.mean.shape}, the features are {shape}"
            )
        return scaler


def read_archive(
    path: str | os.PathLike[str], *, choice: str = "auto", device: str = "cpu"
) -> Predictor:
    """Load an exported model as a :class:`Predictor` (``choice``: its post-processing,
    ``"auto"`` = the tuned one when it has one). Raises :class:`ModelArchiveError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelArchiveError(path, "no such model file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelArchiveError(path, f"not a model archive ({exc})") from None
    with zf:
        reader = _Reader(path, zf)
        manifest = reader.read_manifest()
        try:
            config = json.loads(reader.member("config.json"))
            experiment = validate_config(config, f"{path}: config.json")
        except ConfigError as exc:
            raise reader.fail(f"config.json does not validate ({exc})") from None
        except ValueError:
            raise reader.fail("config.json is not valid JSON") from None
        if manifest.get("stages") != list(experiment.stages):
            raise reader.fail(
                f"stages {manifest.get('stages')} do not match method {experiment.method}"
            )
        features = experiment.features
        shape = (features.num_channels(NUM_CHANNELS), features.n_mels)
        folds = []
        for k in manifest.get("folds") or []:
            states = {s: reader.weights(f"fold{k}/{s}.pt") for s in experiment.stages}
            for stage, state in states.items():
                channels = dict(state["model_config"]).get("in_channels")
                if channels != shape[0]:
                    raise reader.fail(
                        f"fold{k}/{stage}.pt: a model of {channels} input channels, the "
                        f"features have {shape[0]}"
                    )
            scaler = reader.scaler(f"fold{k}/scaler.npz", shape)
            try:
                folds.append(FoldModels.from_states(int(k), scaler, states, device))
            except (ValueError, TypeError, KeyError) as exc:
                raise reader.fail(f"fold{k}: {exc}") from None
        if not folds:
            raise reader.fail(f"{MANIFEST} lists no folds")
        try:
            labels = reader.labels
            post = {
                name: Postprocessing.from_params(
                    params, experiment.inference.threshold, labels.classes
                )
                for name, params in manifest.get("postprocessing", {}).items()
            }
            predictor = Predictor(
                experiment, folds, post, choice="default", source=str(path), labels=labels
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise reader.fail(f"{MANIFEST}: {exc}") from None
    return predictor.select(choice=choice)
