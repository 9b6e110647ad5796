"""Prediction speed: where the time of ``seld-orch predict`` goes, the fold ensemble against one
fold, and recordings per minute, for the tiny and paper presets on CPU.

Part 1, one recording (60 s, 4 channels, 48 kHz, a 16-bit WAV of noise), on one core (one torch
thread, one BLAS thread), median of ``--repeats`` runs per step, per preset:
  read (soundfile), resample (soxr very high quality, to the preset's rate), features, models
  (the 4-fold ensemble: 8 models for the two-stage method; and one fold's 2), post-processing
  (threshold, median filter, events), CSV (atomic write). End to end = read + resample +
  features + ensemble + post-processing + CSV; its real-time factor is 60 s / that.
  References measured in the same run: the same models as the cross-validation runs them
  (``seld.methods.inference.run_model`` on the trained modules: batch norm not folded, default
  memory order), against the prediction copies (``seld.methods.models.inference_model``); and one
  fold against the ensemble.
Part 2, ``orchestrator.predict.predict_recordings`` (what the CLI runs) from an exported model
file on ``--recordings`` recordings of 60 s, on a local Ray of ``--num-cpus`` CPUs (started
before the clock): cold (features extracted on Ray tasks) and warm (features from the cache),
in recordings per minute; plots off (a figure costs about 0.3 s).

The models have untrained weights of each preset's architecture: a forward pass costs the same
whatever the weights, and nothing here depends on what they predict.

    python bench/predict.py [--repeats 3] [--recordings 4] [--paper-repeats 1]
        [--paper-recordings 1] [--presets tiny,paper-mic] [--num-cpus 2] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from threadpoolctl import threadpool_limits

from seld.config import load_config
from seld.data.audio import read_audio, resample
from seld.data.submission import write_submission
from seld.features.spectral import extract_features
from seld.features.store import Scaler
from seld.methods.inference import Postprocessing, run_model
from seld.methods.models import build_model
from seld.serving.model_archive import write_archive
from seld.serving.predict import FoldModels, Predictor

SECONDS = 60.0
RATE = 48_000


def untrained_predictor(preset: str, folds: int = 4) -> Predictor:
    """The preset's method with untrained models (seeded) and identity scalers."""
    experiment = load_config(preset)
    channels = experiment.features.num_channels()
    shape = (channels, experiment.features.n_mels)
    members = []
    for k in range(1, folds + 1):
        torch.manual_seed(k)
        states = {}
        for stage in experiment.stages:
            model = build_model(
                experiment.model.name, in_channels=channels, **experiment.model.kwargs()
            )
            states[stage] = {"model": model.state_dict(), "model_config": model.config}
        scaler = Scaler(np.zeros(shape, np.float32), np.ones(shape, np.float32), 1)
        members.append(FoldModels.from_states(k, scaler, states))
    post = {"default": Postprocessing.from_params(experiment.inference.model_dump())}
    return Predictor(experiment, members, post, source=f"untrained {preset}")


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def write_noise(path: Path, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    audio = (0.05 * rng.standard_normal((int(seconds * RATE), 4))).astype(np.float32)
    sf.write(path, audio, RATE, subtype="PCM_16")
    return path


def trained_modules(predictor: Predictor) -> list[tuple[Scaler, list[torch.nn.Module]]]:
    """The reference's models: each fold's modules as training leaves them and the cross-
    validation runs them (batch norm separate, default memory order)."""
    out = []
    for member in predictor.folds:
        models = []
        for state in member.states.values():
            kwargs = dict(state["model_config"])
            model = build_model(kwargs.pop("name"), **kwargs)
            model.load_state_dict(state["model"])
            models.append(model.eval())
        out.append((member.scaler, models))
    return out


def unprepared_ensemble(members, features: np.ndarray) -> None:
    for scaler, models in members:
        scaled = scaler.apply(features)
        for model in models:
            run_model(model, scaled)


def steps(preset: str, wav: Path, out: Path, repeats: int) -> dict:
    """Part 1: each step of one 60 s recording on one core."""
    predictor = untrained_predictor(preset)
    single = predictor.select([1])
    config = predictor.features_config
    t = {}
    t["read"], (audio, rate) = median_time(lambda: read_audio(wav, channels=4), repeats)
    t["resample"], resampled = median_time(
        lambda: resample(audio, rate, config.sample_rate), repeats
    )
    t["features"], features = median_time(lambda: extract_features(resampled, config), repeats)
    t["ensemble"], prediction = median_time(
        lambda: predictor.predict_features(features, SECONDS, "noise"), repeats
    )
    t["one_fold"], _ = median_time(
        lambda: single.predict_features(features, SECONDS, "noise"), repeats
    )
    modules = trained_modules(predictor)
    t["ensemble_unprepared"], _ = median_time(
        lambda: unprepared_ensemble(modules, features), repeats
    )
    t["postprocessing"], result = median_time(
        lambda: predictor.finish(prediction, SECONDS), repeats
    )
    t["csv"], _ = median_time(lambda: write_submission(out / "noise.csv", result.rows), repeats)
    end_to_end = sum(t[k] for k in ("read", "resample", "features", "ensemble"))
    end_to_end += t["postprocessing"] + t["csv"]
    return {
        "preset": preset,
        "parameters_per_model": sum(
            p.numel() for p in build_model(**_config(predictor)).parameters()
        ),
        "models_in_ensemble": sum(len(m.models) for m in predictor.folds),
        "seconds": t,
        "end_to_end_s": end_to_end,
        "real_time_factor": SECONDS / end_to_end,
        "ensemble_over_one_fold": t["ensemble"] / t["one_fold"],
        "prepared_speedup": t["ensemble_unprepared"] / t["ensemble"],
    }


def _config(predictor: Predictor) -> dict:
    return dict(next(iter(predictor.folds[0].states.values()))["model_config"])


def throughput(preset: str, wavs: list[Path], folder: Path, num_cpus: int) -> dict:
    """Part 2: the CLI's function on a local Ray, cold then warm feature cache."""
    from orchestrator.predict import PredictRequest, predict_recordings
    from orchestrator.ray_utils import ray_session

    model = folder / f"{preset}.zip"
    write_archive(untrained_predictor(preset), model)
    workspace = folder / f"ws-{preset}"
    out = {}
    with ray_session(num_cpus=num_cpus):
        for kind in ("cold", "warm"):
            request = PredictRequest(
                inputs=tuple(wavs),
                out=folder / f"out-{preset}-{kind}",
                model=model,
                workspace=workspace,
                plots=False,
            )
            start = time.perf_counter()
            summary = predict_recordings(request)
            wall = time.perf_counter() - start
            assert summary.ok and len(summary.written) == len(wavs), summary.failed
            out[kind] = {
                "wall_s": wall,
                "recordings_per_minute": 60 * len(wavs) / wall,
                "cached": summary.cached,
                "timings": summary.timings,
            }
    return {"preset": preset, "recordings": len(wavs), "num_cpus": num_cpus, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recordings", type=int, default=4)
    parser.add_argument(
        "--paper-repeats", type=int, default=1, help="paper presets: seconds per model pass"
    )
    parser.add_argument("--paper-recordings", type=int, default=1)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--presets", default="tiny,paper-mic")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    presets = args.presets.split(",")
    results = {"steps": [], "throughput": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wavs = [write_noise(folder / f"rec{i}.wav", SECONDS, i) for i in range(args.recordings)]
        torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            for preset in presets:
                # the first prediction pays one-off costs (librosa's numba compile, oneDNN's
                # kernel choice): done before the clock
                untrained_predictor(preset, folds=1).predict_file(wavs[0])
                repeats = args.paper_repeats if preset.startswith("paper") else args.repeats
                results["steps"].append(steps(preset, wavs[0], folder, repeats))
                print_steps(results["steps"][-1])
        torch.set_num_threads(args.num_cpus)
        for preset in presets:
            count = args.paper_recordings if preset.startswith("paper") else args.recordings
            results["throughput"].append(throughput(preset, wavs[:count], folder, args.num_cpus))
            print_throughput(results["throughput"][-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_steps(r: dict) -> None:
    t = r["seconds"]
    print(
        f"{r['preset']}: one {SECONDS:g} s recording, 4 ch, {RATE} Hz, one core "
        f"({r['models_in_ensemble']} models of {r['parameters_per_model']:,} parameters)"
    )
    for key in ("read", "resample", "features", "ensemble", "one_fold", "postprocessing", "csv"):
        print(f"  {key:<28} {t[key]:8.3f} s")
    print(f"  {'end to end (4-fold ensemble)':<28} {r['end_to_end_s']:8.3f} s "
          f"({r['real_time_factor']:.0f}x real time)")  # fmt: skip
    print(f"  ensemble / one fold          {r['ensemble_over_one_fold']:8.2f}x")
    print(
        f"  ensemble as the cv runs its models {t['ensemble_unprepared']:.3f} s: prediction "
        f"copies {r['prepared_speedup']:.2f}x faster"
    )
    sys.stdout.flush()


def print_throughput(r: dict) -> None:
    for kind in ("cold", "warm"):
        k = r[kind]
        steps_s = ", ".join(
            f"{name} {k['timings'][name]:.2f} s"
            for name in ("load", "features", "model", "postprocessing", "csv")
        )
        print(
            f"{r['preset']}: predict_recordings, {r['recordings']} x {SECONDS:g} s, Ray "
            f"{r['num_cpus']} CPUs, {kind} cache: {k['wall_s']:.1f} s, "
            f"{k['recordings_per_minute']:.1f} recordings/min ({steps_s})"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
