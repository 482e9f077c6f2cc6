"""Audio clips for audio-LLM data (the CSV `audio` column): read, mix to mono, resample; and
synthetic tones for tests and demos.

WAV (PCM 8/16/24/32-bit) is read with the standard library; other containers (FLAC, OGG, MP3) need
`pip install "lmforge[audio]"` (soundfile). Resampling uses scipy's polyphase filter when scipy is
installed, else linear interpolation after a moving-average low-pass. Errors are one line naming the
file (and the CSV row when the caller passes it).
"""

from __future__ import annotations

import math
import os
import wave

import numpy as np

from lmforge.errors import LmforgeError

DEFAULT_SAMPLING_RATE = 16000  # Whisper / Qwen2-Audio feature extractors


def _where(path: str, row: str | None) -> str:
    return f"{row}: audio {path}" if row else str(path)


def _read_wav(path: str, row: str | None) -> tuple[np.ndarray, int]:
    try:
        with wave.open(path, "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            raw = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as e:
        raise LmforgeError(f"{_where(path, row)}: not a readable PCM WAV file ({e})") from None
    if width == 1:  # unsigned 8-bit
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise LmforgeError(f"{_where(path, row)}: {8 * width}-bit WAV samples are not supported")
    return x.reshape(-1, channels).mean(axis=1), rate


def _read_other(path: str, row: str | None) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError:
        raise LmforgeError(
            f"{_where(path, row)}: reading {os.path.splitext(path)[1] or 'this'} audio needs "
            'soundfile: pip install "lmforge[audio]" (WAV works without it)'
        ) from None
    try:
        x, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises its own LibsndfileError / RuntimeError
        raise LmforgeError(f"{_where(path, row)}: unreadable audio ({e})") from None
    return x.mean(axis=1), rate


def resample(x: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """`x` (1-D) from `orig_rate` to `target_rate` Hz."""
    if orig_rate == target_rate or len(x) == 0:
        return x.astype(np.float32)
    try:
        from scipy.signal import resample_poly
    except ImportError:
        resample_poly = None
    if resample_poly is not None:
        g = math.gcd(orig_rate, target_rate)
        return resample_poly(x, target_rate // g, orig_rate // g).astype(np.float32)
    if target_rate < orig_rate:  # crude anti-alias: average over the decimation factor
        k = max(1, round(orig_rate / target_rate))
        x = np.convolve(x, np.ones(k) / k, mode="same")
    n = round(len(x) * target_rate / orig_rate)
    t = np.arange(n) * (orig_rate / target_rate)
    return np.interp(t, np.arange(len(x)), x).astype(np.float32)


def load_audio(
    path: str, sampling_rate: int = DEFAULT_SAMPLING_RATE, *, row: str | None = None
) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at `sampling_rate`. `row` ("file.csv:7") prefixes errors."""
    if not path:
        raise LmforgeError(f"{row or 'audio'}: empty audio path")
    if not os.path.isfile(path):
        raise LmforgeError(f"{_where(path, row)}: no such file (relative paths follow --base_dir)")
    reader = _read_wav if path.lower().endswith(".wav") else _read_other
    x, rate = reader(path, row)
    if len(x) == 0:
        raise LmforgeError(f"{_where(path, row)}: the clip has no samples")
    return resample(x, rate, sampling_rate)


def tone(
    freq: float,
    seconds: float = 1.0,
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    *,
    amplitude: float = 0.5,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """A sine at `freq` Hz plus optional Gaussian noise: a synthetic clip with a learnable label."""
    t = np.arange(round(seconds * sampling_rate)) / sampling_rate
    x = amplitude * np.sin(2 * np.pi * freq * t)
    if noise:
        x = x + noise * np.random.default_rng(seed).standard_normal(len(t))
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def write_wav(path: str, samples: np.ndarray, sampling_rate: int = DEFAULT_SAMPLING_RATE) -> str:
    """Write mono float samples in [-1, 1] as 16-bit PCM WAV; returns `path`."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767).round().astype("<i2")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sampling_rate)
        f.writeframes(pcm.tobytes())
    return path


# Pitch classes of the synthetic clip task: a label a model can only get right by listening.
TONE_LABELS = {"low": 300.0, "mid": 1000.0, "high": 3000.0}
TONE_PROMPT = "Is this tone low, mid or high?"


def synth_clips(
    out_dir: str, num_clips: int = 300, seed: int = 0, test_fraction: float = 0.2
) -> dict[str, str]:
    """Labelled tone clips for audio-LLM demos and tests: `clips/*.wav` (0.5-1.5 s, pitch within
    ±20% of its class, noise), and mdl-toolkit CSVs `audio_train.csv` / `audio_test.csv` with columns
    audio (relative to `out_dir`, so pass `--base_dir out_dir`), user_prompt, prediction."""
    import csv

    rng = np.random.default_rng(seed)
    labels = list(TONE_LABELS)
    os.makedirs(os.path.join(out_dir, "clips"), exist_ok=True)
    rows = []
    for i in range(num_clips):
        label = labels[int(rng.integers(len(labels)))]
        freq = TONE_LABELS[label] * float(rng.uniform(0.8, 1.25))
        clip = tone(
            freq,
            float(rng.uniform(0.5, 1.5)),
            noise=0.05,
            amplitude=float(rng.uniform(0.3, 0.7)),
            seed=seed * 100003 + i,
        )
        rel = f"clips/tone_{i:05d}.wav"
        write_wav(os.path.join(out_dir, rel), clip)
        rows.append({"audio": rel, "user_prompt": TONE_PROMPT, "prediction": label})
    n_test = max(1, round(num_clips * test_fraction))
    paths = {}
    for name, part in (("audio_train", rows[n_test:]), ("audio_test", rows[:n_test])):
        path = os.path.join(out_dir, f"{name}.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["audio", "user_prompt", "prediction"])
            w.writeheader()
            w.writerows(part)
        paths[name] = path
    return paths
