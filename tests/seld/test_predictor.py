"""The prediction API without a cluster: ensembles, events, input checks, arrays against files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from seld.config import load_config
from seld.data.dcase import CLASSES, NUM_CLASSES
from seld.data.metadata import DatasetError
from seld.features.store import Scaler
from seld.methods.inference import Postprocessing, Prediction, ensemble
from seld.methods.models import build_model, inference_model
from seld.serving.predict import FoldModels, Predictor, check_audio, detected_events

from conftest import write_wav


def prediction(sed, azimuth, elevation, stem="rec") -> Prediction:
    shape = (2, NUM_CLASSES)
    return Prediction(
        stem,
        np.full(shape, sed, np.float32),
        np.full(shape, azimuth, np.float32),
        np.full(shape, elevation, np.float32),
    )


def random_predictor(seed: int = 0, folds=(1, 2), **post) -> Predictor:
    """A predictor of the tiny preset with untrained models (seeded) and random scalers: real
    models, so every path of the ensemble runs; what they predict does not matter here."""
    experiment = load_config("tiny")
    channels = experiment.features.num_channels()
    members = []
    for k in folds:
        torch.manual_seed(seed + k)
        rng = np.random.default_rng(seed + k)
        scaler = Scaler(
            rng.normal(-5, 1, (channels, experiment.features.n_mels)).astype(np.float32),
            rng.uniform(1, 3, (channels, experiment.features.n_mels)).astype(np.float32),
            100,
        )
        states = {}
        for stage in experiment.stages:
            model = build_model(
                experiment.model.name, in_channels=channels, **experiment.model.kwargs()
            )
            states[stage] = {"model": model.state_dict(), "model_config": model.config}
        members.append(FoldModels.from_states(k, scaler, states))
    default = Postprocessing.from_params({"threshold": post.get("threshold", 0.5)})
    return Predictor(experiment, members, {"default": default}, source="random")


def test_ensemble_averages_probabilities_and_directions_as_unit_vectors():
    a, b = prediction(0.2, 170.0, 20.0), prediction(0.6, -170.0, 20.0)
    mean = ensemble([a, b])
    assert np.allclose(mean.sed, 0.4)
    # the mean direction of 170° and -170° is 180°, where the mean angle would say 0°
    assert np.allclose(np.abs(mean.azimuth), 180.0, atol=1e-4)
    # the great circle between them bows upwards: atan(tan 20° / cos 10°) = 20.28°
    expected = np.degrees(np.arctan(np.tan(np.radians(20)) / np.cos(np.radians(10))))
    assert np.allclose(mean.elevation, expected, atol=1e-4)
    # same azimuth: elevations 10° and 30° meet half-way, on the great circle between them
    up = ensemble([prediction(0.5, 40.0, 10.0), prediction(0.5, 40.0, 30.0)])
    assert np.allclose(up.elevation, 20.0, atol=1e-4) and np.allclose(up.azimuth, 40.0, atol=1e-4)
    assert ensemble([a]) is a
    with pytest.raises(ValueError, match="do not match"):
        ensemble([a, prediction(0.1, 0, 0, stem="other")])


def test_events_group_consecutive_frames_per_class_at_their_mean_direction():
    pred = Prediction("rec", *(np.zeros((100, NUM_CLASSES), np.float32) for _ in range(3)))
    pred.azimuth[10:20, 5] = 50.0
    pred.elevation[10:20, 5] = np.linspace(10, 30, 10)  # symmetric about 20° on one meridian
    pred.azimuth[40:45, 5] = -90.0
    pred.azimuth[12:14, 0] = 170.0
    rows = np.array(
        [[f, 5, 50, 20] for f in range(10, 20)]
        + [[f, 5, -90, 0] for f in range(40, 45)]
        + [[f, 0, 170, 0] for f in range(12, 14)]
    )
    events = detected_events(rows, pred)
    assert [(e.label, e.onset_s, e.offset_s) for e in events] == [
        ("speech", 0.2, 0.4),
        ("knock", 0.24, 0.28),
        ("speech", 0.8, 0.9),
    ]
    assert events[0].azimuth == pytest.approx(50.0)
    assert events[0].elevation == pytest.approx(20.0)
    assert events[2].azimuth == pytest.approx(-90.0)
    assert CLASSES[events[1].class_index] == "knock"
    assert detected_events(np.zeros((0, 4), np.int64), pred) == []


@pytest.mark.parametrize(
    ("shape", "rate", "problem"),
    [
        ((48_000, 2), 48_000, "wrong channel count"),
        ((4, 48_000), 48_000, "transpose"),
        ((24_000, 4), 48_000, "too short: 0.500 s"),
    ],
)
def test_audio_that_cannot_be_predicted_is_named(shape, rate, problem):
    with pytest.raises(DatasetError, match=problem) as info:
        check_audio(np.zeros(shape, np.float32), rate, "clip.wav")
    assert str(info.value).startswith("clip.wav: ")


def test_an_array_and_its_file_predict_the_same(tmp_path: Path):
    """Any sample rate: a 44.1 kHz array and the same samples read from a file go through
    the same resampling, features and models."""
    predictor = random_predictor()
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal((int(2.5 * 44_100), 4))).astype(np.float32)
    path = tmp_path / "clip.wav"
    sf.write(path, audio, 44_100, subtype="FLOAT")
    from_array = predictor.predict(audio, 44_100, name="clip")
    from_file = predictor.predict_file(path)
    assert from_file.name == "clip" and from_file.duration_s == pytest.approx(2.5)
    np.testing.assert_array_equal(from_array.prediction.sed, from_file.prediction.sed)
    np.testing.assert_array_equal(from_array.rows, from_file.rows)
    assert len(from_array.prediction.sed) == 125  # 2.5 s at 50 label frames per second
    assert from_array.events == from_file.events


def test_one_fold_of_an_ensemble_and_its_post_processing(tmp_path: Path):
    predictor = random_predictor(threshold=0.5)
    wav = write_wav(tmp_path / "a.wav", seconds=2.0, sr=48_000, seed=1)
    both = predictor.predict_file(wav)
    one, two = (predictor.select([k]).predict_file(wav) for k in (1, 2))
    np.testing.assert_allclose(
        both.prediction.sed, (one.prediction.sed + two.prediction.sed) / 2, atol=1e-6
    )
    assert predictor.select([2]).fold_numbers == (2,)
    # rows are the thresholded prediction: every row's probability is above the threshold
    rows = both.rows
    assert (both.prediction.sed[rows[:, 0], rows[:, 1]] > 0.5).all()
    with pytest.raises(ValueError, match="no fold 3"):
        predictor.select([3])
    with pytest.raises(ValueError, match="no tuned post-processing"):
        predictor.select(choice="tuned")
    assert predictor.select(choice="auto").choice == "default"


def test_postprocessing_round_trips_through_plain_values():
    per_class = Postprocessing(np.linspace(0.1, 0.6, NUM_CLASSES, dtype=np.float32), 5)
    again = Postprocessing.from_params(per_class.to_params())
    np.testing.assert_array_equal(again.thresholds, per_class.thresholds)
    assert again.median_frames == 5
    assert Postprocessing.from_params({"threshold": 0.4}).to_params() == {
        "threshold": pytest.approx(0.4),
        "median_frames": 1,
    }


def test_the_prediction_copy_of_a_model_gives_its_outputs():
    """Batch norms folded into the convolutions and channels-last order change only the float
    rounding, for batch-norm statistics far from the identity too; the model stays as it was."""
    experiment = load_config("tiny")
    torch.manual_seed(0)
    model = build_model(experiment.model.name, in_channels=10, **experiment.model.kwargs())
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-2, 2)
            module.running_var.uniform_(0.1, 4)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_model(model)
    x = torch.randn(1, 10, 300, 64)
    with torch.no_grad():
        want, got = model(x), fast(x)
    for key in ("sed_logits", "azimuth", "elevation"):
        torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_recording_longer_than_the_window_is_predicted_in_overlapping_windows(monkeypatch):
    """Past WINDOW_S a recording goes through the models in windows that overlap by half;
    every label frame is predicted, and a window as long as the recording changes nothing.
    (The models are untrained: how close the windowed outputs come is not the question.)"""
    import seld.serving.predict

    predictor = random_predictor(folds=(1,))
    audio = (0.05 * np.random.default_rng(5).standard_normal((16_000 * 4, 4))).astype(np.float32)
    whole = predictor.predict(audio, 16_000)
    monkeypatch.setattr(seld.serving.predict, "WINDOW_S", 1.5)
    windowed = predictor.predict(audio, 16_000)
    assert windowed.prediction.sed.shape == whole.prediction.sed.shape == (200, NUM_CLASSES)
    assert np.isfinite(windowed.prediction.azimuth).all()
    # the windows see less context than the whole recording, so the outputs differ
    assert not np.array_equal(windowed.prediction.sed, whole.prediction.sed)
    monkeypatch.setattr(seld.serving.predict, "WINDOW_S", 4.0)
    np.testing.assert_array_equal(
        predictor.predict(audio, 16_000).prediction.sed, whole.prediction.sed
    )
