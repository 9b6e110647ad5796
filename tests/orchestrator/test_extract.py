"""Feature extraction over a dataset on a real local Ray."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from orchestrator.extract import extract_dataset
from seld.features.store import feature_path

from conftest import tiny_features

CONFIG = tiny_features("mic")


def test_extract_resumes_and_reports_bad_recordings(local_ray, make_dataset, tmp_path: Path):
    stems = ["split1_ir0_ov1_0", "split2_ir1_ov2_1", "split3_ir2_ov1_2", "split4_ir3_ov2_3"]
    root = make_dataset(stems, seconds=2.0)
    workspace = tmp_path / "ws"
    bad_wav = root / "mic_dev" / "split3_ir2_ov1_2.wav"
    bad_wav.write_bytes(bad_wav.read_bytes()[:3000])  # truncated
    seen = []
    summary = extract_dataset(
        root, workspace, CONFIG, "mic", progress=lambda rec, ok: seen.append((rec.stem, ok))
    )
    assert sorted(seen) == sorted((s, s != "split3_ir2_ov1_2") for s in stems)
    assert len(summary.written) == 3 and not summary.skipped
    assert list(summary.failed) == [str(bad_wav)]
    assert "truncated WAV" in summary.failed[str(bad_wav)]
    out_dir = summary.root / "mic_dev"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        f"{s}.h5" for s in stems if s != "split3_ir2_ov1_2"
    )  # no partial file for the bad one
    with h5py.File(out_dir / "split1_ir0_ov1_0.h5") as h5:
        assert h5["features"].shape == (10, 201, 64)
        assert h5["activity"].shape == (201, 11)
        speech = h5["activity"][:, 5]
        assert speech[10] == 1 and speech[95] == 0 and speech[:10].sum() == 0

    # a rerun after fixing the file (and with a leftover temporary file of a killed writer)
    # does only what is missing
    bad_wav.write_bytes((root / "mic_dev" / "split1_ir0_ov1_0.wav").read_bytes())
    (out_dir / ".split3_ir2_ov1_2.h5.x1.tmp").write_bytes(b"partial")
    before = {p: p.stat().st_mtime_ns for p in out_dir.glob("*.h5")}
    again = extract_dataset(root, workspace, CONFIG, "mic")
    assert [p.name for p in again.written] == ["split3_ir2_ov1_2.h5"] and len(again.skipped) == 3
    assert again.ok
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert not list(out_dir.glob(".*.tmp"))


def test_ray_features_equal_in_process_features(local_ray, make_dataset, tmp_path: Path):
    from seld.data.audio import read_audio
    from seld.features.spectral import extract_features

    root = make_dataset(["split1_ir0_ov1_0"], seconds=1.5, formats=("foa",))
    summary = extract_dataset(root, tmp_path / "ws", tiny_features("foa", "logmel_iv"), "foa")
    audio, _ = read_audio(root / "foa_dev" / "split1_ir0_ov1_0.wav", sample_rate=16_000)
    expected = extract_features(audio, tiny_features("foa", "logmel_iv"))
    path = feature_path(summary.root, "foa", "dev", "split1_ir0_ov1_0")
    with h5py.File(path) as h5:
        assert np.array_equal(h5["features"][()], expected) and expected.shape[0] == 7
