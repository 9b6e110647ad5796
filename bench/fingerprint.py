"""Cost of the input fingerprints that every extraction and cv run checks.

Writes N one-minute 4-channel 48 kHz PCM-16 WAVs (the DCASE 2019 development set's size: 400 x
23 MB = 9.2 GB by default) and their metadata, then times, per recording: the fingerprints
alone, and the whole up-to-date check of extraction (fingerprints plus opening each feature
file's attributes), against reading every audio file whole (what a content hash would cost),
all in one run. Run it twice in a row to see cold and warm page caches; the first pass after
writing is warm.

    python bench/fingerprint.py --out /tmp/fp --recordings 400 [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make(out: Path, recordings: int) -> list[tuple[Path, Path]]:
    from seld.data.metadata import Event, write_metadata

    rng = np.random.default_rng(0)
    block = (0.05 * rng.standard_normal((48_000 * 60, 4))).astype(np.float32)
    pairs = []
    for i in range(recordings):
        stem = f"split{i % 4 + 1}_ir{i % 5}_ov{i % 2 + 1}_{i}"
        wav, csv = out / "mic_dev" / f"{stem}.wav", out / "metadata_dev" / f"{stem}.csv"
        if not wav.exists():
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, np.roll(block, i, axis=0), 48_000, subtype="PCM_16")
            write_metadata(csv, [Event("speech", 1.0, 2.0, 10, 20, 1)])
        pairs.append((wav, csv))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recordings", type=int, default=400)
    parser.add_argument("--keep", action="store_true", help="keep the files for a cold rerun")
    args = parser.parse_args()

    import h5py

    from seld.data.fingerprint import input_fingerprints

    pairs = make(args.out, args.recordings)
    started = time.perf_counter()
    prints = {wav.stem: input_fingerprints(wav, csv) for wav, csv in pairs}
    fingerprint_s = time.perf_counter() - started

    h5_dir = args.out / "features"
    h5_dir.mkdir(exist_ok=True)
    for wav, _ in pairs:  # stand-ins for feature files: the check opens their attributes
        path = h5_dir / f"{wav.stem}.h5"
        if not path.exists():
            with h5py.File(path, "w") as h5:
                h5.attrs.update({f"input_{k}": v for k, v in prints[wav.stem].items()})
    started = time.perf_counter()
    stale = 0
    for wav, csv in pairs:
        current = input_fingerprints(wav, csv)
        with h5py.File(h5_dir / f"{wav.stem}.h5", "r") as h5:
            stale += any(h5.attrs[f"input_{k}"] != v for k, v in current.items())
    check_s = time.perf_counter() - started
    assert stale == 0

    started = time.perf_counter()
    for wav, _ in pairs:
        hashlib.sha1(wav.read_bytes()).hexdigest()
    whole_s = time.perf_counter() - started
    n = len(pairs)
    size_gb = sum(w.stat().st_size for w, _ in pairs) / 1e9
    print(f"recordings: {n} x 60 s, {size_gb:.1f} GB of audio")
    print(f"fingerprints: {fingerprint_s:.3f} s ({fingerprint_s / n * 1e3:.2f} ms per recording)")
    print(f"up-to-date check (fingerprints + feature file attributes): {check_s:.3f} s")
    print(f"reference, a hash of every audio file's content: {whole_s:.1f} s")
    print(
        f"ratio: the check costs {check_s / whole_s:.4f} of the content hash "
        f"({whole_s / check_s:.0f}x less)"
    )
    if not args.keep:
        shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
