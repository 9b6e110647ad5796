"""Feature extraction benchmark: our extractor against the seed's algorithm, and Ray scaling.

Part 0 (first, and alone with ``--extract-only``): ``extract_features`` of one 20 s 4-channel
recording made at 24 kHz (delayed copies of noise, resampled to each preset's rate beforehand),
median of 5 runs on one core, for the ``tiny`` and ``paper`` presets.
Part 1, one recording (60 s, 4 channels, 48 kHz, synthesized), on one core:
  * ours: ``seld.data.audio.read_audio`` (soxr very-high-quality resampling to 32 kHz) and
    ``seld.features.spectral.extract_features`` with the paper preset;
  * the seed's algorithm, literally (``tests/reference_seed_features.py``): ``librosa.load`` at
    32 kHz, then per channel a 1024-point STFT and log-mel, and per pair two 2048-point STFTs and
    a Python loop over frames for GCC-PHAT;
  * the largest differences of the two outputs on the same resampled audio (log-mel in dB,
    GCC-PHAT), and the peak memory of one extraction in a fresh process.
Part 2, a synthesized dataset: wall time of ``extract_dataset`` (what ``seld-orch extract``
runs) on a local Ray with 1 and with 2 CPUs, after Ray has started.

    python bench/features.py [--seconds 60] [--recordings 16] [--json out.json]
    python bench/features.py --extract-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from seld.config import load_config
from seld.data.audio import read_audio
from seld.features.spectral import extract_features
from seld.synth import SynthConfig, synthesize_recording
from seld.synth.scene import plan_recordings

from reference_seed_features import seed_features

PAPER = load_config("paper-mic").features
TINY = load_config("tiny").features

# VmHWM (the peak resident set of this process image) in kB, read before and after one extraction
PEAK_MEMORY_SCRIPT = """
import re, sys
from seld.data.audio import read_audio
from seld.config import load_config
from seld.features.spectral import extract_features
paper = load_config("paper-mic").features
def hwm():
    return re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
base = hwm()
audio, _ = read_audio(sys.argv[1], sample_rate=32000)
extract_features(audio, paper)
print(base, hwm())
"""


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def extraction_times(configs: dict, seconds: float = 20.0, rate: int = 24_000, repeats: int = 5):
    """Median seconds of ``extract_features`` per named config, on one core."""
    import soxr

    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    source = rng.standard_normal(n + 16)
    delays = (0, 3, 5, 8)  # samples at 24 kHz, the order of a small array's delays
    mic = np.stack([source[16 - d : 16 - d + n] for d in delays], axis=1)
    mic = (0.1 * (mic + 0.1 * rng.standard_normal(mic.shape))).astype(np.float32)
    result = {}
    with threadpool_limits(limits=1):
        for name, config in configs.items():
            audio = soxr.resample(mic, rate, config.sample_rate, quality="VHQ")
            audio = audio.astype(np.float32)
            extract_features(audio, config)  # warm caches
            result[name] = median_of(partial(extract_features, audio, config), repeats)
    return result


def one_recording(seconds: float, tmp: Path, repeats: int) -> dict:
    import librosa

    config = SynthConfig(seconds=seconds, per_split=1, splits=(1,), formats=("mic",))
    _, audio = synthesize_recording(plan_recordings(config)[0], config)
    wav = tmp / "split1_ir0_ov1_0.wav"
    sf.write(wav, audio["mic"], 48_000, subtype="PCM_24")

    def ours():
        samples, _ = read_audio(wav, sample_rate=32_000)
        return extract_features(samples, PAPER)

    def seed():
        samples, _ = librosa.load(wav, sr=32_000, mono=False, dtype=np.float32)
        return seed_features(samples.T)

    with threadpool_limits(limits=1):
        ours()  # warm caches (numba-compiled librosa helpers, mel filters)
        t_ours = best_of(ours, repeats)
        t_seed = best_of(seed, 1)
        resampled, _ = read_audio(wav, sample_rate=32_000)
        a, b = extract_features(resampled, PAPER), seed_features(resampled)
    peak = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_SCRIPT, str(wav)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        "seconds": seconds,
        "ours_s": t_ours,
        "seed_s": t_seed,
        "speedup": t_seed / t_ours,
        "max_diff_logmel_db": float(np.abs(a[:4] - b[:4]).max()),
        "max_diff_gcc": float(np.abs(a[4:] - b[4:]).max()),
        "peak_rss_mb": int(peak[1]) / 1024,
        "import_rss_mb": int(peak[0]) / 1024,
    }


def dataset_throughput(recordings: int, seconds: float, tmp: Path) -> dict:
    import ray

    from orchestrator.extract import extract_dataset
    from orchestrator.synthesize import synthesize_on_ray

    per_split = max(1, recordings // 4)
    data = tmp / "dataset"
    synth = SynthConfig(seconds=seconds, per_split=per_split, formats=("mic",))
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    synthesize_on_ray(data, synth)
    ray.shutdown()
    result = {"recordings": 4 * per_split, "seconds_each": seconds}
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
        summary = extract_dataset(data, tmp / f"ws{cpus}", PAPER, "mic")
        ray.shutdown()
        assert summary.ok and len(summary.written) == 4 * per_split
        result[f"wall_s_{cpus}cpu"] = summary.elapsed_s
        result[f"recordings_per_s_{cpus}cpu"] = 4 * per_split / summary.elapsed_s
    result["scaling"] = result["wall_s_1cpu"] / result["wall_s_2cpu"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--recordings", type=int, default=16)
    parser.add_argument("--dataset-seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--extract-only", action="store_true", help="only part 0")
    args = parser.parse_args()
    extraction = extraction_times({"tiny": TINY, "paper": PAPER})
    print("extract_features, one 20 s 4-channel recording (from 24 kHz), median of 5, 1 core:")
    for name, seconds in extraction.items():
        print(f"  {name:<6} preset                         {seconds:.3f} s")
    if args.extract_only:
        if args.json:
            args.json.write_text(json.dumps({"extraction": extraction}, indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        single = one_recording(args.seconds, Path(tmp), args.repeats)
        print(f"one {single['seconds']:g} s recording, 48 kHz -> 32 kHz, paper preset, 1 core:")
        print(f"  ours (read + resample + features)   {single['ours_s']:.3f} s")
        print(f"  seed algorithm, literal              {single['seed_s']:.3f} s")
        print(f"  speed-up                             {single['speedup']:.1f}x")
        print(f"  max |diff| log-mel                   {single['max_diff_logmel_db']:.2e} dB")
        print(f"  max |diff| GCC-PHAT                  {single['max_diff_gcc']:.2e}")
        print(
            f"  peak RSS of one extraction process   {single['peak_rss_mb']:.0f} MB "
            f"(after imports: {single['import_rss_mb']:.0f} MB)"
        )
        scaling = dataset_throughput(args.recordings, args.dataset_seconds, Path(tmp))
        print(
            f"extract_dataset, {scaling['recordings']} recordings of "
            f"{scaling['seconds_each']:g} s (Ray already started):"
        )
        for cpus in (1, 2):
            print(
                f"  {cpus} Ray CPU(s)  {scaling[f'wall_s_{cpus}cpu']:.2f} s  "
                f"{scaling[f'recordings_per_s_{cpus}cpu']:.2f} recordings/s"
            )
        print(f"  2 vs 1 CPU                           {scaling['scaling']:.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps({"extraction": extraction, "single": single, "scaling": scaling}, indent=2)
        )


if __name__ == "__main__":
    main()
