"""NIST SPHERE writing (the LDC TIMIT audio format) and audio reading for SPHERE or RIFF files.

Reading goes through libsndfile (``soundfile``), which understands both formats. Writing SPHERE is
done here because the synthetic corpus mimics the LDC release byte for byte in layout: a 1024-byte
ASCII header starting ``NIST_1A`` followed by little-endian 16-bit PCM.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

HEADER_BYTES = 1024


def sphere_header(num_samples: int, sample_rate: int, *, utterance_id: str = "",
                  sample_min: int = 0, sample_max: int = 0, database_id: str = "TIMIT") -> bytes:
    """The 1024-byte header, fields as in the LDC TIMIT release (``-sN`` string of N bytes,
    ``-i`` integer); padded with spaces like the original files."""
    fields = [("database_id", database_id), ("database_version", "1.0")]
    if utterance_id:
        fields.append(("utterance_id", utterance_id))
    fields += [("channel_count", 1), ("sample_count", int(num_samples)),
               ("sample_rate", int(sample_rate)), ("sample_min", int(sample_min)),
               ("sample_max", int(sample_max)), ("sample_n_bytes", 2),
               ("sample_byte_format", "01"), ("sample_sig_bits", 16)]
    lines = ["NIST_1A", f"{HEADER_BYTES:7d}"]
    for key, value in fields:
        if isinstance(value, str):
            lines.append(f"{key} -s{len(value.encode('ascii'))} {value}")
        else:
            lines.append(f"{key} -i {value}")
    lines.append("end_head")
    # the LDC files have four blank lines after end_head, then space padding
    text = ("\n".join(lines) + "\n" * 5).encode("ascii")
    if len(text) > HEADER_BYTES:
        raise ValueError(f"SPHERE header fields too long ({len(text)} > {HEADER_BYTES} bytes)")
    return text + b" " * (HEADER_BYTES - len(text))


def write_sphere(path, samples: np.ndarray, sample_rate: int = 16000, *, utterance_id: str = "") -> None:
    """Write mono int16 ``samples`` as NIST SPHERE (atomically: temp file then rename)."""
    samples = np.asarray(samples)
    if samples.ndim != 1 or samples.dtype != np.int16:
        raise TypeError(f"samples must be a 1-D int16 array, got shape {samples.shape} dtype {samples.dtype}")
    hdr = sphere_header(len(samples), sample_rate, utterance_id=utterance_id,
                        sample_min=int(samples.min()) if len(samples) else 0,
                        sample_max=int(samples.max()) if len(samples) else 0)
    _atomic_write(path, hdr + samples.astype("<i2").tobytes())


def write_riff(path, samples: np.ndarray, sample_rate: int = 16000) -> None:
    samples = np.asarray(samples)
    if samples.ndim != 1 or samples.dtype != np.int16:
        raise TypeError(f"samples must be a 1-D int16 array, got shape {samples.shape} dtype {samples.dtype}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(str(tmp), samples, sample_rate, format="WAV", subtype="PCM_16")
    os.replace(tmp, path)


def _atomic_write(path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def sphere_declared_samples(path) -> int | None:
    """``sample_count`` from a SPHERE header, or None when the file is not SPHERE. libsndfile trusts
    the file size, so a truncated SPHERE file is only detectable by comparing with the header."""
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if not head.startswith(b"NIST_1A"):
        return None
    for line in head.split(b"\n"):
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"sample_count":
            return int(parts[2])
    return None


def riff_declared_samples(path) -> int | None:
    """Samples the ``data`` chunk of a 16-bit mono RIFF/WAVE file declares, or None when the file is
    not RIFF (libsndfile silently shortens a truncated RIFF file to the bytes present)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 2
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if cid == b"fmt ":
                fmt = f.read(size + (size & 1))
                block_align = int.from_bytes(fmt[12:14], "little") or 2
            elif cid == b"data":
                return size // block_align
            else:
                f.seek(size + (size & 1), 1)


def read_audio(path) -> tuple[np.ndarray, int]:
    """Read a mono 16-bit SPHERE or RIFF file -> (int16 samples, sample rate).

    Raises ValueError (with the path) for unreadable, multi-channel, non-16-bit or truncated files.
    """
    path = Path(path)
    try:
        info = sf.info(str(path))
        data, sr = sf.read(str(path), dtype="int16", always_2d=True)
    except Exception as e:  # libsndfile's errors are RuntimeError / LibsndfileError
        raise ValueError(f"{path}: unreadable audio ({e})") from e
    if data.shape[1] != 1:
        raise ValueError(f"{path}: expected mono audio, got {data.shape[1]} channels")
    if info.subtype != "PCM_16":
        raise ValueError(f"{path}: expected 16-bit PCM, got {info.subtype}")
    declared = sphere_declared_samples(path)
    if declared is not None and declared != data.shape[0]:
        raise ValueError(f"{path}: truncated or inconsistent SPHERE file: header sample_count "
                         f"{declared}, data holds {data.shape[0]} samples")
    declared = riff_declared_samples(path)
    if declared is not None and declared > data.shape[0]:
        raise ValueError(f"{path}: truncated RIFF file: the data chunk declares {declared} samples, "
                         f"the file holds {data.shape[0]}")
    return data[:, 0], sr
