"""Exported models: a round trip predicts the same, and a corrupt, edited, hostile or mismatched
archive is refused with a message naming the file and the member."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predictor import random_predictor

from seld.errors import SeldError
from seld.serving.model_archive import MANIFEST, ModelArchiveError, read_archive, write_archive

from conftest import write_wav


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "model.zip"
    write_archive(random_predictor(seed=7), path, {"run": "test"})
    return path


def rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy an archive member by member; ``edit(name, data)`` returns new bytes, or None to
    drop the member; a returned dict adds members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if isinstance(data, dict):
                for extra, content in data.items():
                    zout.writestr(extra, content)
            elif data is not None:
                zout.writestr(name, data)
    return dst


def with_manifest(src: Path, dst: Path, change) -> Path:
    def edit(name, data):
        if name != MANIFEST:
            return data
        manifest = json.loads(data)
        change(manifest)
        return json.dumps(manifest).encode()

    return rewrite(src, dst, edit)


def test_an_exported_model_predicts_what_it_was_made_from(archive: Path, tmp_path: Path):
    original = random_predictor(seed=7)
    loaded = read_archive(archive)
    assert loaded.fold_numbers == (1, 2) and loaded.choice == "default"
    wav = write_wav(tmp_path / "a.wav", seconds=1.5, seed=4)
    a, b = original.predict_file(wav), loaded.predict_file(wav)
    np.testing.assert_array_equal(a.prediction.sed, b.prediction.sed)
    np.testing.assert_array_equal(a.prediction.azimuth, b.prediction.azimuth)
    np.testing.assert_array_equal(a.rows, b.rows)
    with zipfile.ZipFile(archive) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        assert sorted(zf.namelist()) == sorted(
            [MANIFEST, "config.json"]
            + [f"fold{k}/{p}" for k in (1, 2) for p in ("scaler.npz", "sed.pt", "doa.pt")]
        )
    assert manifest["source"] == {"run": "test"}
    assert manifest["postprocessing"] == {"default": {"threshold": 0.5, "median_frames": 1}}
    assert {"python", "torch", "numpy"} <= set(manifest["versions"])


def test_an_archive_from_before_the_dataset_formats_reads_as_dcase2019(archive, tmp_path):
    old = with_manifest(archive, tmp_path / "old.zip", lambda m: m.pop("dataset_format"))
    loaded = read_archive(old)
    assert loaded.labels.dataset_format == "dcase2019" and loaded.labels.num_classes == 11


def test_a_changed_member_is_refused(archive: Path, tmp_path: Path):
    def flip(name, data):
        if name != "fold2/doa.pt":
            return data
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        return bytes(data)

    with pytest.raises(ModelArchiveError, match=r"member fold2/doa.pt does not match its checksum"):
        read_archive(rewrite(archive, tmp_path / "edited.zip", flip))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m.update(format_version=99), "model format version 99"),
        (lambda m: m.update(format="something else"), "not an exported seld model"),
        (lambda m: m["classes"].reverse(), "made for the classes"),
        (lambda m: m.update(dataset_format="tau2019"), "unknown dataset format 'tau2019'"),
        (lambda m: m.update(dataset_format="starss23"), "not starss23's"),
        (lambda m: m.update(stages=["joint"]), r"stages \['joint'\] do not match"),
        (lambda m: m["members"].pop("fold1/scaler.npz"), "not listed: fold1/scaler.npz"),
        (lambda m: m["members"].update({"fold3/sed.pt": {}}), "missing: fold3/sed.pt"),
    ],
)
def test_a_mismatched_manifest_is_refused(archive: Path, tmp_path: Path, change, problem):
    bad = with_manifest(archive, tmp_path / "bad.zip", change)
    with pytest.raises(ModelArchiveError, match=problem) as info:
        read_archive(bad)
    assert str(info.value).startswith(str(bad))
    assert isinstance(info.value, SeldError)  # the CLI makes it a one-line error, exit 2


def _replace_member(archive: Path, dst: Path, member: str, data: bytes) -> Path:
    """Replace a member and fix its checksum in the manifest, as a careful forger would."""

    def edit(name, old):
        if name == member:
            return data
        if name == MANIFEST:
            manifest = json.loads(old)
            digest = hashlib.sha256(data).hexdigest()
            manifest["members"][member] = {"bytes": len(data), "sha256": digest}
            return json.dumps(manifest).encode()
        return old

    return rewrite(archive, dst, edit)


class _Payload:
    """Unpickling this would create ``marker``: code run by loading a model file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_code_in_a_weights_member_is_never_run(archive: Path, tmp_path: Path):
    marker = tmp_path / "code-ran"
    buffer = io.BytesIO()
    torch.save({"model": _Payload(marker), "model_config": {}}, buffer)
    bad = _replace_member(archive, tmp_path / "hostile.zip", "fold1/sed.pt", buffer.getvalue())
    with pytest.raises(ModelArchiveError, match=r"member fold1/sed\.pt: not plain weights"):
        read_archive(bad)
    assert not marker.exists()


def test_weights_of_another_architecture_are_refused(archive: Path, tmp_path: Path):
    with zipfile.ZipFile(archive) as zf:
        state = torch.load(io.BytesIO(zf.read("fold1/doa.pt")), weights_only=True)
    state["model_config"]["rnn_hidden"] = 8
    buffer = io.BytesIO()
    torch.save(state, buffer)
    bad = _replace_member(archive, tmp_path / "other.zip", "fold1/doa.pt", buffer.getvalue())
    with pytest.raises(ModelArchiveError, match="fold1: fold 1 doa: weights do not fit"):
        read_archive(bad)


def test_a_scaler_of_other_features_is_refused(archive: Path, tmp_path: Path):
    buffer = io.BytesIO()
    np.savez(buffer, mean=np.zeros((7, 64)), std=np.ones((7, 64)), frames=1)
    bad = _replace_member(archive, tmp_path / "scaler.zip", "fold2/scaler.npz", buffer.getvalue())
    with pytest.raises(ModelArchiveError, match=r"fold2/scaler.npz: scaler of shape \(7, 64\)"):
        read_archive(bad)


def test_files_that_are_no_archive_are_refused(tmp_path: Path):
    junk = tmp_path / "model.zip"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ModelArchiveError, match="not a model archive"):
        read_archive(junk)
    with pytest.raises(ModelArchiveError, match="no such model file"):
        read_archive(tmp_path / "missing.zip")
    truncated = tmp_path / "cut.zip"
    write_archive(random_predictor(folds=(1,)), truncated)
    truncated.write_bytes(truncated.read_bytes()[:-200])
    with pytest.raises(ModelArchiveError):
        read_archive(truncated)
