"""Additive noise and room reverberation for the synthetic corpus (``synth --snr/--noise/--reverb``).

The clean espeak corpus is so clean that a fixed MFSC front end reaches a few percent PER; noise and
reverberation give a learnable front end something to adapt to. Everything here is a deterministic
function of the clean utterance, the settings and a seeded generator, so a seed still gives
identical files, and the labels never move:

- reverberation: a room impulse response from the image method (``pyroomacoustics``: random
  shoebox room, source and microphone 0.5 to 3 m apart, wall absorption from Sabine's formula for an RT60 drawn
  uniformly from ``rt60``). The response is cut at its largest peak (the direct path) so that the
  convolution does not delay the speech; the reverberant signal is rescaled to the clean signal's
  energy. The RT60 measured on the response (Schroeder integration, T30 extrapolated) is recorded
  next to the target: the image method with Sabine absorption typically overshoots the target.
- noise: white, pink (1/f power), brown (1/f^2 power, above 20 Hz) or babble (3 to 7 talkers taken
  at random offsets from a pool of espeak utterances by talkers who are not corpus speakers), scaled
  so that ``10 log10(sum s^2 / sum n^2)`` over the whole utterance equals the SNR drawn for it, ``s``
  being the (reverberant) speech including the clean corpus's faint background noise. When the sum
  would clip int16, speech and noise are scaled down together (``gain`` < 1), which keeps the SNR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NOISE_TYPES = ("white", "pink", "brown", "babble")
RT60_LIMITS = (0.1, 1.2)  # below: no room fits Sabine's formula; above: image sources get slow
SAMPLE_RATE = 16000


def _floats(text, name: str) -> tuple[float, ...]:
    """'20,10,5' (or a number, or a sequence) -> floats; errors name the argument."""
    items = text.split(",") if isinstance(text, str) else list(text) if hasattr(text, "__iter__") else [text]
    out = []
    for item in items:
        try:
            out.append(float(str(item).strip()))
        except ValueError:
            raise ValueError(f"{name}: {str(item).strip()!r} is not a number") from None
    if not out:
        raise ValueError(f"{name}: give at least one value")
    return tuple(out)


@dataclass(frozen=True)
class Degradation:
    """What to do to every utterance. ``snr``: dB values, one drawn per utterance ('inf' = no
    noise); empty = no noise. ``noise``: types, one drawn per noisy utterance. ``reverb``: the
    probability that an utterance is reverberant; ``rt60``: its (low, high) range in seconds."""
    snr: tuple = ()
    noise: tuple = NOISE_TYPES
    reverb: float = 0.0
    rt60: tuple = (0.2, 0.8)

    def __post_init__(self):
        snr = _floats(self.snr, "--snr") if self.snr not in ((), "", None) else ()
        if any(math.isnan(s) or s == -math.inf for s in snr):
            raise ValueError(f"--snr: values must be numbers of dB or 'inf', got {self.snr!r}")
        noise = tuple(n.strip() for n in (self.noise.split(",") if isinstance(self.noise, str) else self.noise))
        bad = [n for n in noise if n not in NOISE_TYPES]
        if bad or not noise:
            raise ValueError(f"--noise: unknown noise type(s) {bad or noise!r}; choose from {','.join(NOISE_TYPES)}")
        reverb = _floats(self.reverb, "--reverb")
        if len(reverb) != 1 or not 0.0 <= reverb[0] <= 1.0:
            raise ValueError(f"--reverb is one probability in [0, 1], got {self.reverb!r}")
        reverb = reverb[0]
        rt60 = _floats(self.rt60, "--rt60")
        if len(rt60) == 1:
            rt60 = rt60 * 2
        lo, hi = RT60_LIMITS
        if len(rt60) != 2 or not lo <= rt60[0] <= rt60[1] <= hi:
            raise ValueError(f"--rt60 must be LOW,HIGH seconds with {lo} <= LOW <= HIGH <= {hi}, got {self.rt60!r}")
        for k, v in (("snr", snr), ("noise", noise), ("reverb", reverb), ("rt60", rt60)):
            object.__setattr__(self, k, v)

    @property
    def active(self) -> bool:
        return bool(self.snr) or self.reverb > 0

    @property
    def needs_babble(self) -> bool:
        return "babble" in self.noise and any(math.isfinite(s) for s in self.snr)

    def settings(self) -> dict:
        """For the corpus's completion marker (JSON: 'inf' as a string)."""
        return {"snr": [s if math.isfinite(s) else "inf" for s in self.snr], "noise": list(self.noise),
                "reverb": self.reverb, "rt60": list(self.rt60)}


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power white, pink or brown noise: white Gaussian noise shaped in the frequency domain."""
    w = rng.standard_normal(n)
    if kind != "white":
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[f < 20.0] = 20.0  # no DC / sub-audio blow-up
        spec /= f ** (0.5 if kind == "pink" else 1.0)
        w = np.fft.irfft(spec, n)
    return w / np.sqrt(np.mean(w ** 2))


def babble_noise(pool: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Unit-power babble of 3..7 talkers: stretches of ``pool`` (concatenated unit-RMS utterances)
    from random offsets, wrapping around."""
    talkers = int(rng.integers(3, 8))
    x = sum(np.take(pool, np.arange(n) + int(rng.integers(len(pool))), mode="wrap") for _ in range(talkers))
    return x / np.sqrt(np.mean(x ** 2)), talkers


def room_rir(rt60: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Image-method RIR for a random shoebox room with the given RT60, peak (direct path) first."""
    try:
        import pyroomacoustics as pra
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("--reverb needs pyroomacoustics: pip install pyroomacoustics") from e
    for _ in range(100):  # small RT60s only fit small rooms (absorption <= 1): draw until one fits
        dim = rng.uniform([3.0, 3.0, 2.5], [10.0, 8.0, 4.0])
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dim)
        except ValueError:
            continue
        margin = 0.5
        src, mic = (rng.uniform([margin, margin, 1.0], [dim[0] - margin, dim[1] - margin, 2.0]) for _ in range(2))
        if 0.5 <= np.linalg.norm(src - mic) <= 3.0:  # a talker across a room, not a lecture hall
            break
    else:  # pragma: no cover - RT60_LIMITS keep this unreachable
        raise RuntimeError(f"no room found for RT60 {rt60} s")
    room = pra.ShoeBox(dim, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    h = np.asarray(room.rir[0][0], dtype=np.float64)
    try:
        measured = float(pra.experimental.measure_rt60(h, fs=SAMPLE_RATE, decay_db=30))
    except Exception:  # pragma: no cover - a response too short to fit; the target is still recorded
        measured = float("nan")
    info = {"rt60": round(rt60, 3), "rt60_measured": round(measured, 3),
            "room_m": [round(float(d), 2) for d in dim], "src_mic_m": round(float(np.linalg.norm(src - mic)), 2)}
    return h[int(np.argmax(np.abs(h))):], info


def degrade(audio: np.ndarray, deg: Degradation, rng: np.random.Generator,
            babble: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """int16 clean utterance -> (int16 degraded utterance of the same length, record)."""
    from scipy.signal import fftconvolve
    x = audio.astype(np.float64)
    rec: dict = {"reverb": False, "noise": "none", "snr_db": "inf", "gain": 1.0}
    # every draw happens whatever the outcome, so one setting's draws never shift another's
    reverberant = rng.random() < deg.reverb
    rt60 = rng.uniform(*deg.rt60)
    snr = float(rng.choice(deg.snr)) if deg.snr else math.inf
    kind = str(rng.choice(deg.noise))
    if reverberant:
        h, info = room_rir(rt60, rng)
        y = fftconvolve(x, h)[:len(x)]
        x = y * np.sqrt(np.sum(x ** 2) / max(np.sum(y ** 2), 1e-12))
        rec.update(reverb=True, **info)
    if math.isfinite(snr):
        if kind == "babble":
            if babble is None:
                raise ValueError("babble noise needs the babble pool")
            v, rec["talkers"] = babble_noise(babble, len(x), rng)
        else:
            v = coloured_noise(kind, len(x), rng)
        x = x + v * np.sqrt(np.mean(x ** 2) / 10 ** (snr / 10))
        rec.update(noise=kind, snr_db=snr)
    peak = np.abs(x).max()
    if peak > 32000:
        rec["gain"] = round(32000 / peak, 6)
        x = x * (32000 / peak)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16), rec
