"""Feature extraction benchmark: our extractor against the seed's algorithm, and Ray scaling.

Part 1, one recording (60 s, 4 channels, 48 kHz, synthesized), on one core:
  * ours: ``seld.audio.read_audio`` (soxr very-high-quality resampling to 32 kHz) and
    ``seld.features.extract_features`` with the paper preset;
  * the seed's algorithm, literally (``tests/reference_seed_features.py``): ``librosa.load`` at
    32 kHz, then per channel a 1024-point STFT and log-mel, and per pair two 2048-point STFTs and
    a Python loop over frames for GCC-PHAT;
  * the largest differences of the two outputs on the same resampled audio (log-mel in dB,
    GCC-PHAT), and the peak memory of one extraction in a fresh process.
Part 2, a synthesized dataset: wall time of ``extract_dataset`` (what ``seld-orch extract``
runs) on a local Ray with 1 and with 2 CPUs, after Ray has started.

    python bench/features.py [--seconds 60] [--recordings 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from seld.audio import read_audio
from seld.features import PRESETS, extract_features
from seld.synth import SynthConfig, synthesize_recording
from seld.synth.scene import plan_recordings

from reference_seed_features import seed_features

PAPER = PRESETS["paper"]

# VmHWM (the peak resident set of this process image) in kB, read before and after one extraction
PEAK_MEMORY_SCRIPT = """
import re, sys
from seld.audio import read_audio
from seld.features import PRESETS, extract_features
def hwm():
    return re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
base = hwm()
audio, _ = read_audio(sys.argv[1], sample_rate=32000)
extract_features(audio, PRESETS["paper"])
print(base, hwm())
"""


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


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
    from seld.features import feature_preset

    per_split = max(1, recordings // 4)
    data = tmp / "dataset"
    synth = SynthConfig(seconds=seconds, per_split=per_split, formats=("mic",))
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    synthesize_on_ray(data, synth)
    ray.shutdown()
    result = {"recordings": 4 * per_split, "seconds_each": seconds}
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
        summary = extract_dataset(data, tmp / f"ws{cpus}", feature_preset("paper"), "mic")
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
    args = parser.parse_args()
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
        args.json.write_text(json.dumps({"single": single, "scaling": scaling}, indent=2))


if __name__ == "__main__":
    main()
