"""A synthetic TIMIT-layout corpus from espeak-ng, with phone timings.

Speech comes from libespeak-ng (the ``espeakng-loader`` wheel bundles the library and its data, so
no system package is needed), driven through ctypes: ``espeak_Initialize`` with
``espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA`` makes the synth callback receive,
besides the 22.05 kHz samples, one event per phoneme (its IPA name and sample position) and one per
word (its position in the text). The audio is resampled to 16 kHz and the phonemes are mapped to
the TIMIT 61-phone set with :data:`IPA_TO_TIMIT`; stops and affricates get a closure label
(``bcl b``, ``tcl ch``...) placed on the low-energy stretch before the burst; leading/trailing silence
is ``h#`` and mid-sentence pauses ``pau``.

Determinism: espeak-ng keeps synthesis state (random generator, wave-generator phase) in static
variables that neither ``espeak_Terminate`` nor ``espeak_ng_SetRandSeed`` fully resets, so the same
call can give slightly different audio depending on what was synthesised before in the process.
Each utterance is therefore synthesised in a fresh worker process (``maxtasksperchild=1``) whose
espeak state is pristine, and all other randomness (speaker parameters, sentences, noise, silence)
comes from generators seeded from ``(seed, speaker, utterance)``. A given seed gives identical files.

Optional noise and reverberation (``snr``, ``noise``, ``reverb``, ``rt60``; :mod:`recipes.timit.degrade`)
are applied to the clean utterance after labelling, from their own seeded stream: the labels, and
the clean speech inside the noisy files, are those of the clean corpus with the same seed.
"""
from __future__ import annotations

import ctypes
import json
import math
import multiprocessing as mp
import os
import random
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recipes.timit import sentences
from recipes.timit.degrade import NOISE_TYPES, Degradation, degrade
from recipes.timit.phones import PHONES61
from recipes.timit.sphere import write_riff, write_sphere

ESPEAK_RATE = 22050
SAMPLE_RATE = 16000

# espeak-ng's speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EV_LIST_TERMINATED, _EV_WORD, _EV_END, _EV_PHONEME = 0, 1, 5, 7
_P_RATE, _P_VOLUME, _P_PITCH, _P_RANGE = 1, 2, 3, 4

# Dialect region -> espeak-ng English accent. TIMIT is American English, so half the regions use
# en-us; the others add accent variety (New York, Caribbean, Scottish, British RP).
ACCENTS = {1: "en-us", 2: "en-us-nyc", 3: "en-us", 4: "en-029", 5: "en-us", 6: "en-gb-scotland",
           7: "en-us", 8: "en-gb-x-rp"}
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
# --voices extended adds the bundled espeak-ng variants that sound like ordinary adult voices
# (Klatt-synthesiser voices and named variants; robots, whisper, croak etc. left out), all checked
# to synthesise English with phoneme events. "standard" keeps the corpora made before it identical.
VOICE_SETS = {
    "standard": (MALE_VARIANTS, FEMALE_VARIANTS),
    "extended": (MALE_VARIANTS + ("klatt", "klatt2", "klatt3", "klatt4", "Andy", "Denis", "Lee", "michel",
                                  "travis", "victor", "adam", "edward"),
                 FEMALE_VARIANTS + ("Annie", "Andrea", "anika", "aunty", "belinda", "linda", "steph", "steph2")),
}

# espeak-ng IPA phoneme name (stress marks removed) -> TIMIT-61 labels. Stops and affricates are
# listed as their release label; the closure (bcl, tcl, ...) is added from the signal (see
# _split_closures). r-coloured and centring diphthongs that espeak emits as one phoneme become two
# TIMIT labels sharing the duration 60/40. Vowels TIMIT lacks map to the nearest TIMIT vowel
# (British/Scottish/Caribbean: a -> ae, ɒ -> aa, e -> ey, o -> ow, ɐ -> ax).
IPA_TO_TIMIT: dict[str, tuple[str, ...]] = {
    # stops, flaps, glottal stop
    "p": ("p",), "b": ("b",), "t": ("t",), "d": ("d",), "k": ("k",), "ɡ": ("g",), "g": ("g",),
    "t̪": ("t",), "d̪": ("d",), "ɾ": ("dx",), "ʔ": ("q",),
    # affricates
    "tʃ": ("ch",), "dʒ": ("jh",),
    # fricatives
    "f": ("f",), "v": ("v",), "θ": ("th",), "ð": ("dh",), "s": ("s",), "z": ("z",), "ʃ": ("sh",),
    "ʒ": ("zh",), "h": ("hh",), "x": ("hh",), "ç": ("hh",), "ʍ": ("w",),
    # nasals, liquids, glides (syllabic ones to TIMIT's syllabic labels)
    "m": ("m",), "n": ("n",), "ŋ": ("ng",), "n̩": ("en",), "m̩": ("em",), "l": ("l",), "ɫ": ("l",),
    "l̩": ("el",), "əl": ("el",), "ɹ": ("r",), "r": ("r",), "w": ("w",), "j": ("y",),
    # monophthongs
    "iː": ("iy",), "i": ("iy",), "ɪ": ("ih",), "ᵻ": ("ix",), "e": ("ey",), "ɛ": ("eh",),
    "æ": ("ae",), "a": ("ae",), "aː": ("aa",), "ɑː": ("aa",), "ɑ": ("aa",), "ɒ": ("aa",),
    "ɔː": ("ao",), "ɔ": ("ao",), "o": ("ow",), "oː": ("ow",), "ʌ": ("ah",), "ʊ": ("uh",),
    "uː": ("uw",), "u": ("uw",), "ʉ": ("ux",), "ʉː": ("ux",), "ə": ("ax",), "ɐ": ("ax",),
    "ɚ": ("axr",), "ɜː": ("er",), "ɜ": ("er",), "ɝ": ("er",), "əɹ": ("er",), "ɜːɹ": ("er",),
    # diphthongs
    "eɪ": ("ey",), "aɪ": ("ay",), "ɑɪ": ("ay",), "ʌɪ": ("ay",), "aʊ": ("aw",), "ʌʊ": ("aw",),
    "ʌʉ": ("aw",), "oʊ": ("ow",), "əʊ": ("ow",), "ɔɪ": ("oy",), "əɪ": ("ah", "ih"),
    # r-coloured (rhotic accents)
    "ɑːɹ": ("aa", "r"), "ɑɹ": ("aa", "r"), "ɔːɹ": ("ao", "r"), "ɔɹ": ("ao", "r"),
    "oːɹ": ("ao", "r"), "oɹ": ("ao", "r"), "ɛɹ": ("eh", "r"), "eɹ": ("eh", "r"),
    "ɪɹ": ("ih", "r"), "iɹ": ("ih", "r"), "ʊɹ": ("uh", "r"), "ʉɹ": ("ux", "r"),
    "aɪɚ": ("ay", "axr"), "aɪɹ": ("ay", "r"), "aʊɚ": ("aw", "axr"), "aʊɹ": ("aw", "r"),
    # centring diphthongs (non-rhotic accents)
    "iə": ("ih", "ax"), "ɪə": ("ih", "ax"), "eə": ("eh", "ax"), "ɛə": ("eh", "ax"),
    "ʊə": ("uh", "ax"), "oə": ("ow", "ax"), "ɔə": ("ao", "ax"), "ɑə": ("aa", "ax"),
    "aɪə": ("ay", "ax"), "aʊə": ("aw", "ax"), "ʌɹ": ("ah", "r"),
    # en-029 / en-gb-scotland spellings of long vowels
    "aa": ("aa",), "a:": ("aa",), "eː": ("ey",),
    # palatalisation modifier espeak emits as its own event: no TIMIT label, its (short)
    # duration goes to the preceding phone
    "ʲ": (),
}
_STRESS = "ˈˌ"
CLOSURE = {"b": "bcl", "d": "dcl", "g": "gcl", "p": "pcl", "t": "tcl", "k": "kcl",
           "ch": "tcl", "jh": "dcl"}
assert all(lab in PHONES61 for labs in IPA_TO_TIMIT.values() for lab in labs)
assert all(len(labs) <= 2 for labs in IPA_TO_TIMIT.values())  # label_utterance splits 60/40



class UnmappedPhoneme(ValueError):
    pass


def ipa_to_timit(name: str) -> tuple[str, ...]:
    """TIMIT-61 labels for one espeak IPA phoneme name ("" = pause)."""
    key = name.strip(_STRESS).replace("ˈ", "").replace("ˌ", "")
    if key in IPA_TO_TIMIT:
        return IPA_TO_TIMIT[key]
    raise UnmappedPhoneme(f"espeak phoneme {name!r} has no TIMIT mapping in IPA_TO_TIMIT")


# ----------------------------------------------------------------------------------------------
# espeak-ng through ctypes (call only in a fresh process, see the module docstring)

class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


def espeak_synthesize(text: str, voice: str, *, rate: int, pitch: int, pitch_range: int,
                      seed: int) -> tuple[np.ndarray, list[tuple]]:
    """Synthesise ``text`` -> (int16 samples at 22.05 kHz, events).

    Events are ``("phoneme", sample, ipa_name)`` and ``("word", sample, text_position, length)``
    (text_position 1-based, in characters). Raises RuntimeError when espeak-ng cannot be loaded.
    """
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("the synthetic corpus needs espeak-ng: pip install espeakng-loader") from e
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                               espeakng_loader.get_data_path().encode(),
                               _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT)
    if sr != ESPEAK_RATE:
        raise RuntimeError(f"espeak_Initialize failed or gave rate {sr} (expected {ESPEAK_RATE})")
    chunks: list[np.ndarray] = []
    events: list[tuple] = []

    def callback(wav, n, ev):
        if wav and n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while ev[i].type != _EV_LIST_TERMINATED:
            e = ev[i]
            if e.type == _EV_PHONEME:
                events.append(("phoneme", e.sample, bytes(e.id).split(b"\0")[0].decode("utf-8")))
            elif e.type == _EV_WORD:
                events.append(("word", e.sample, e.text_position, e.length))
            elif e.type == _EV_END:
                events.append(("end", e.sample))
            i += 1
        return 0

    cb = _CALLBACK(callback)  # keep a reference while espeak may call it
    lib.espeak_SetSynthCallback(cb)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise RuntimeError(f"espeak-ng has no voice {voice!r}")
    for param, value in ((_P_RATE, rate), (_P_PITCH, pitch), (_P_RANGE, pitch_range),
                         (_P_VOLUME, 100)):
        lib.espeak_SetParameter(param, int(value), 0)
    lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
    data = text.encode("utf-8")
    if lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
        raise RuntimeError(f"espeak_Synth failed for {text!r}")
    lib.espeak_Synchronize()
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return samples.astype(np.int16), events


# ----------------------------------------------------------------------------------------------
# labelling

def _envelope(x: np.ndarray, hop: int = 16, win: int = 80) -> np.ndarray:
    """RMS over ``win`` samples every ``hop`` samples (5 ms / 1 ms at 16 kHz); frame f ~ sample f*hop."""
    pad = np.pad(x.astype(np.float64), (win // 2, win // 2))
    c = np.concatenate([[0.0], np.cumsum(pad * pad)])
    starts = np.arange(0, len(x), hop)
    return np.sqrt((c[starts + win] - c[starts]) / win)


def _split_closures(segs: list[list], x: np.ndarray) -> list[list]:
    """Insert a closure before every stop/affricate release label.

    The closure is the last low-energy run (RMS below 8% of the utterance's 95th-percentile RMS,
    at least 6 ms) that ends inside the stop's segment (or at most 10 ms before it), searched
    from up to 60 ms (and at most 60% of the previous phone) before the segment: espeak often
    puts the silent closure at the end of the preceding phone, which is then shortened. Without
    such a run the first 40% of the segment is the closure (voiced closures with a voice bar).
    Segments are [start, end, label, word]; the closure belongs to the word of its release.
    """
    env = _envelope(x)
    thr = 0.08 * np.percentile(env, 95)
    out: list[list] = []
    for a, b, lab, wd in segs:
        if lab not in CLOSURE or b - a < 160:  # < 10 ms: too short to split
            out.append([a, b, lab, wd])
            continue
        prev = out[-1] if out else None
        silent_prev = prev is not None and prev[2] in ("pau", "h#")
        if prev is None:
            lo = a
        elif silent_prev:
            lo = a  # after a pause the closure starts with the stop's own segment
        else:
            lo = max(a - 960, prev[0] + int(0.4 * (prev[1] - prev[0])))
        hi = b - 80  # keep >= 5 ms of release
        f_lo, f_hi = lo // 16, max(lo // 16, hi // 16)
        low = env[f_lo:f_hi] < thr
        run = None
        f = len(low) - 1
        while f >= 0:  # backwards: the last run of >= 6 low frames that ends after a
            if low[f]:
                g = f
                while g >= 0 and low[g]:
                    g -= 1
                start_s, end_s = (f_lo + g + 1) * 16, (f_lo + f + 1) * 16
                if f - g >= 6 and end_s >= a - 160:  # may end up to 10 ms before the event
                    run = (start_s, end_s)
                    break
                f = g
            f -= 1
        if run is None:
            c0, c1 = a, a + int(0.4 * (b - a))
        else:
            c0, c1 = min(a, max(run[0], lo)), max(a + 16, min(run[1], hi))
        if prev is not None and c0 < a:
            prev[1] = c0  # the preceding phone gives its silent tail to the closure
        out.append([c0, c1, CLOSURE[lab], wd])
        out.append([c1, b, lab, wd])
    return out


def _assign_words(phones: list[list], text_words: list[str]) -> list[tuple[int, int, str]]:
    """(begin, end, word) for every text word from the word index carried by each phone.

    A word without phones of its own (espeak merged it with the previous word) shares that word's
    phones: the merged group is cut into consecutive runs of phones in proportion to the words'
    letter counts (at least one phone each when there are enough).
    """
    groups: dict[int, list[tuple[int, int]]] = {}
    for a, b, lab, wd in phones:
        if wd >= 0 and lab not in ("h#", "pau"):
            groups.setdefault(wd, []).append((a, b))
    clean = [re.sub(r"[^a-z']", "", w.lower()) for w in text_words]
    out, i = [], 0
    while i < len(clean):
        j = i + 1
        while j < len(clean) and j not in groups:
            j += 1  # words i+1..j-1 have no phones: they share word i's
        if i in groups:
            segs, run = groups[i], [k for k in range(i, j) if clean[k]]
            weights = np.cumsum([len(clean[k]) for k in run]) / max(1, sum(len(clean[k]) for k in run))
            cuts = [0] + [min(len(segs) - (len(run) - r - 1), max(r + 1, int(weights[r] * len(segs))))
                          for r in range(len(run) - 1)] + [len(segs)]
            for r, k in enumerate(run):
                part = segs[cuts[r]:cuts[r + 1]] or segs[-1:]
                out.append((part[0][0], part[-1][1], clean[k]))
        i = j
    return out


def label_utterance(samples16: np.ndarray, events: list[tuple], text: str, lead: int):
    """espeak events (sample positions at 22.05 kHz) -> TIMIT segments at 16 kHz.

    ``lead`` samples of silence were prepended to ``samples16``. Returns (phones, words): phones
    a list of (begin, end, label61) covering [0, len(samples16)) without gaps; words a list of
    (begin, end, word) spanning each word's phones.
    """
    n = len(samples16)
    scale = SAMPLE_RATE / ESPEAK_RATE
    end_ev = [e for e in events if e[0] == "end"]
    speech_end = lead + round(end_ev[-1][1] * scale) if end_ev else n
    # A word event precedes its phonemes in the event stream and gives the word's character
    # position, which identifies the text word (espeak occasionally merges two words, e.g. "the
    # huge" in en-us-nyc, and emits one event for both; see _assign_words).
    text_words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    ph, w = [], -1
    for e in events:
        if e[0] == "word":
            pos = e[2] - 1
            w = next((i for i, (a, b, _) in enumerate(text_words) if a <= pos < b),
                     next((i for i, (a, _, _) in enumerate(text_words) if a >= pos), len(text_words) - 1))
        elif e[0] == "phoneme":
            ph.append((lead + round(e[1] * scale), e[2], w))
    segs: list[list] = [[0, ph[0][0] if ph else n, "h#", -1]]
    for i, (start, name, wd) in enumerate(ph):
        end = min(ph[i + 1][0] if i + 1 < len(ph) else speech_end, n)
        if end - start < 16:  # < 1 ms: not realised (espeak emits some zero-length phonemes)
            continue
        if name.strip(_STRESS) == "":
            labels, wd = ("pau",), -1
        else:
            labels = ipa_to_timit(name)
            if not labels:
                continue
        bounds = [start] + [start + int(0.6 * (end - start))] * (len(labels) - 1) + [end]
        for k, lab in enumerate(labels):
            segs.append([bounds[k], bounds[k + 1], lab, wd])
    if all(s[2] in ("pau", "h#") for s in segs):
        raise ValueError(f"espeak produced no phonemes for {text!r}")
    segs.append([speech_end, n, "h#", -1])
    # contiguous segments; pauses at the ends become h#, adjacent silences merge
    merged: list[list] = []
    for s in segs:
        if s[1] <= s[0] and s[2] in ("pau", "h#") and merged:
            continue
        if merged and s[2] in ("pau", "h#") and merged[-1][2] in ("pau", "h#"):
            merged[-1][1] = max(merged[-1][1], s[1])
            continue
        if merged:
            merged[-1][1] = s[0]
        merged.append(list(s))
    if merged[-1][2] == "pau":
        merged[-1][2] = "h#"
    merged[-1][1] = n
    phones = _split_closures(merged, samples16)
    words = _assign_words(phones, [w for _, _, w in text_words])
    for (a, b, lab, _), nxt in zip(phones, phones[1:] + [None]):
        if b <= a and lab != "h#" or (nxt is not None and nxt[0] != b):
            raise AssertionError(f"labelling bug: segment {lab} [{a}, {b}) in {text!r}")
    return [(int(a), int(b), lab) for a, b, lab, _ in phones], words


# ----------------------------------------------------------------------------------------------
# corpus

@dataclass
class Speaker:
    speaker: str          # TIMIT-style ID: sex letter, three initials, digit (e.g. "MJAB0")
    sex: str              # "F" | "M"
    dialect_region: int   # 1..8
    subset: str           # "TRAIN" | "TEST"
    voice: str            # espeak voice name, accent + variant (e.g. "en-us+m3")
    rate: int             # words per minute
    pitch: int            # espeak pitch 0..100
    pitch_range: int      # espeak pitch range 0..100
    snr_db: float         # background noise level
    utterances: list      # [(utt_id, sentence)]


def make_speakers(n_speakers: int, utts_per_speaker: int, seed, voices: str = "standard") -> list[Speaker]:
    """Speakers and their sentences, deterministic for ``seed``.

    Utterances follow TIMIT's scheme: SA1, SA2 (two sentences read by every speaker; only when
    ``utts_per_speaker >= 4``), then SX (each sentence shared by up to 7 speakers) and SI
    (unique) in TIMIT's 5:3 ratio. About 30% of the speakers (at least 4 when there are 12 or
    more, 2 when fewer) are TEST speakers, like TIMIT's 168 of 630.
    """
    if n_speakers < 1 or utts_per_speaker < 1:
        raise ValueError(f"need speakers >= 1 and utts-per-speaker >= 1, got {n_speakers}, {utts_per_speaker}")
    if voices not in VOICE_SETS:
        raise ValueError(f"--voices must be one of {', '.join(VOICE_SETS)}, got {voices!r}")
    male, female = VOICE_SETS[voices]
    from recipes.timit.prepare import CORE_TEST_SPEAKERS, DEV_SPEAKERS
    reserved = set(CORE_TEST_SPEAKERS) | set(DEV_SPEAKERS)
    rng = random.Random(f"speakers-{seed}")
    srng = random.Random(f"sentences-{seed}")
    n_sa = 2 if utts_per_speaker >= 4 else 0
    n_rest = utts_per_speaker - n_sa
    n_sx = round(n_rest * 5 / 8)
    n_si = n_rest - n_sx
    sa = [sentences.sentence(srng) for _ in range(n_sa)]
    sx_pool = [sentences.sentence(srng) for _ in range(max(1, math.ceil(n_speakers * n_sx / 7)))]
    n_test = 0 if n_speakers < 3 else max(round(0.3 * n_speakers), 4 if n_speakers >= 12 else 2)
    test_idx = set(rng.sample(range(n_speakers), n_test))
    used, out, si_counter = set(), [], 0
    for i in range(n_speakers):
        sex = "M" if rng.random() < 0.6 else "F"
        while True:
            sid = sex + "".join(rng.choice("ABCDEFGHIJKLMNOPRSTVWY") for _ in range(3)) + str(rng.randrange(10) % 2)
            if sid.lower() not in reserved and sid not in used:
                break
        used.add(sid)
        dr = 1 + i % 8
        variant = rng.choice(male if sex == "M" else female)
        utts = [(f"SA{k + 1}", sa[k]) for k in range(n_sa)]
        for k in range(n_sx):
            j = (i * n_sx + k) % len(sx_pool)
            utts.append((f"SX{3 + j}", sx_pool[j]))
        for k in range(n_si):
            utts.append((f"SI{453 + si_counter}", sentences.sentence(srng)))
            si_counter += 1
        out.append(Speaker(
            speaker=sid, sex=sex, dialect_region=dr, subset="TEST" if i in test_idx else "TRAIN",
            voice=f"{ACCENTS[dr]}+{variant}", rate=rng.randint(140, 190),
            pitch=rng.randint(30, 70) if sex == "M" else rng.randint(40, 80),
            pitch_range=rng.randint(30, 70), snr_db=round(rng.uniform(30.0, 45.0), 1),
            utterances=utts))
    return out


def _utt_seed(seed: int, speaker: str, utt: str) -> int:
    # a stable hash (Python's hash() is salted per process)
    import hashlib
    return int.from_bytes(hashlib.sha256(f"{seed}/{speaker}/{utt}".encode()).digest()[:4], "little")


def render_utterance(spk: Speaker, utt: str, text: str, seed: int):
    """Audio (int16, 16 kHz) and TIMIT labels for one utterance; call in a fresh process."""
    from scipy.signal import resample_poly
    useed = _utt_seed(seed, spk.speaker, utt)
    rng = np.random.default_rng(useed)
    rate = int(round(spk.rate * rng.uniform(0.95, 1.05)))
    raw, events = espeak_synthesize(text, spk.voice, rate=rate, pitch=spk.pitch,
                                    pitch_range=spk.pitch_range, seed=useed)
    x = resample_poly(raw.astype(np.float64), 320, 441)  # 22050 -> 16000
    lead = int(rng.integers(1600, 4800))   # 100-300 ms of leading and trailing silence, like TIMIT
    tail = int(rng.integers(1600, 4800))
    peak = rng.uniform(0.25, 0.6) * 32767
    x = x * (peak / max(1.0, np.abs(x).max()))
    x = np.concatenate([np.zeros(lead), x, np.zeros(tail)])
    speech_rms = np.sqrt(np.mean(x[lead:-tail] ** 2)) if len(x) > lead + tail else 1.0
    x = x + rng.standard_normal(len(x)) * speech_rms * 10 ** (-spk.snr_db / 20)
    audio = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    phones, words = label_utterance(audio, events, text, lead)
    return audio, phones, words


def _paths(root: Path, spk: Speaker, utt: str, layout: str, case: str):
    c = str.upper if case == "upper" else str.lower
    if layout == "ldc":
        d = root / c(spk.subset) / c(f"DR{spk.dialect_region}") / c(spk.speaker)
    else:
        d = root / c(f"dr{spk.dialect_region}-{spk.speaker}")
    return d, c(utt), c(".wav"), c(".phn"), c(".wrd"), c(".txt")


def _write_one(args):
    root, spk, utt, text, seed, layout, case, audio_format, deg = args
    d, stem, wav, phn, wrd, txt = _paths(Path(root), spk, utt, layout, case)
    if all((d / (stem + e)).exists() for e in (wav, phn, wrd, txt)):
        return utt, 0
    audio, phones, words = render_utterance(spk, utt, text, seed)
    d.mkdir(parents=True, exist_ok=True)
    if deg.active:
        # labels come from the clean signal (closures are placed by its energy) and stay valid:
        # the degradation does not move the speech in time
        babble = np.load(Path(root) / BABBLE_FILE) if deg.needs_babble else None
        rng = np.random.default_rng(_utt_seed(seed, spk.speaker, utt + "/degrade"))  # own stream
        audio, rec = degrade(audio, deg, rng, babble)
        rec = {"subset": spk.subset, "speaker": spk.speaker, "utt": utt, **rec}
        _write_text(Path(root) / CONDITIONS_DIR / f"{spk.speaker}_{utt}.json", json.dumps(rec))
    _write_text(d / (stem + phn), "".join(f"{a} {b} {lab}\n" for a, b, lab in phones))
    _write_text(d / (stem + wrd), "".join(f"{a} {b} {w}\n" for a, b, w in words))
    _write_text(d / (stem + txt), f"0 {len(audio)} {text}\n")
    # the audio goes last: its presence marks a complete utterance for a resumed run
    if audio_format == "sphere":
        write_sphere(d / (stem + wav), audio, SAMPLE_RATE,
                     utterance_id=f"{spk.speaker[1:].lower()}_{utt.lower()}")
    else:
        write_riff(d / (stem + wav), audio, SAMPLE_RATE)
    return utt, len(audio)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


BABBLE_FILE = "SYNTH_BABBLE.npy"
BABBLE_TALKERS = 16
CONDITIONS_DIR = "SYNTH_CONDITIONS"
CONDITIONS_FILE = "SYNTH_CONDITIONS.tsv"
_CONDITION_COLUMNS = ("subset", "speaker", "utt", "noise", "snr_db", "talkers", "reverb", "rt60",
                      "rt60_measured", "room_m", "src_mic_m", "gain")


def _babble_one(args):
    spk, utt, text, seed = args
    audio, phones, _ = render_utterance(spk, utt, text, seed)
    x = audio[phones[0][1]:phones[-1][0]].astype(np.float64)  # the speech, without the h# ends
    return x / np.sqrt(np.mean(x ** 2))


def _babble_pool(seed: int, voices: str, pool, progress: bool) -> np.ndarray:
    """Speech of BABBLE_TALKERS talkers who are not corpus speakers (so that no test speaker's voice
    is in the training noise), one unique sentence each, concatenated at unit RMS."""
    from tqdm import tqdm
    spks = make_speakers(BABBLE_TALKERS, 3, f"babble-{seed}", voices)
    tasks = [(s, u, t, seed) for s in spks for u, t in s.utterances if u.startswith("SI")]
    parts = list(tqdm(pool.imap(_babble_one, tasks), total=len(tasks), desc="babble", unit="utt",
                      disable=not progress))
    return np.concatenate(parts).astype(np.float32)


def _save_npy(path: Path, x: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, x)
    os.replace(tmp, path)


def _write_conditions(root: Path, spks: list[Speaker]) -> Path:
    """One row per utterance (what was done to it) from the per-utterance records."""
    lines = ["\t".join(_CONDITION_COLUMNS)]
    for s in spks:
        for u, _ in s.utterances:
            rec = json.loads((root / CONDITIONS_DIR / f"{s.speaker}_{u}.json").read_text())
            lines.append("\t".join("" if rec.get(c) is None else str(rec.get(c)) for c in _CONDITION_COLUMNS))
    out = root / CONDITIONS_FILE
    _write_text(out, "\n".join(lines) + "\n")
    return out


def synth_corpus(out, *, speakers: int = 12, utts_per_speaker: int = 10, seed: int = 0,
                 layout: str = "ldc", case: str = "upper", audio_format: str = "sphere",
                 jobs: int | None = None, progress: bool = True, snr=(), noise=NOISE_TYPES,
                 reverb: float = 0.0, rt60=(0.2, 0.8), voices: str = "standard") -> Path:
    """Build the corpus under ``out`` (idempotent: complete utterances are kept, so an interrupted
    run can be restarted; a finished corpus with the same settings is left alone).

    ``snr`` (dB values, e.g. ``"20,10,5"`` or ``(20, 10, 5)``; ``inf`` = clean), ``noise``, ``reverb``
    (probability) and ``rt60`` (range, s) degrade every utterance as described in
    :mod:`recipes.timit.degrade`, recording what was drawn in ``SYNTH_CONDITIONS.tsv``; the clean
    speech and the labels are those of the clean corpus with the same seed. ``voices``: ``standard``
    or ``extended`` (:data:`VOICE_SETS`)."""
    if layout not in ("ldc", "flat"):
        raise ValueError(f"layout must be 'ldc' or 'flat', got {layout!r}")
    if case not in ("upper", "lower"):
        raise ValueError(f"case must be 'upper' or 'lower', got {case!r}")
    if audio_format not in ("sphere", "riff"):
        raise ValueError(f"audio_format must be 'sphere' or 'riff', got {audio_format!r}")
    deg = Degradation(snr=snr, noise=noise, reverb=reverb, rt60=rt60)
    root = Path(out)
    settings = dict(speakers=speakers, utts_per_speaker=utts_per_speaker, seed=seed, layout=layout,
                    case=case, audio_format=audio_format)
    # new settings only when used, so the markers of corpora made before them still match
    if deg.active:
        settings["degrade"] = deg.settings()
    if voices != "standard":
        settings["voices"] = voices
    marker = root / "SYNTH_COMPLETE.json"
    if marker.exists():
        done = json.loads(marker.read_text())
        if done == settings:
            if progress:
                print(f"synth: {root} is already complete ({settings})")
            return root
        raise ValueError(f"{root} holds a synthetic corpus made with other settings {done}; "
                         f"use another --out (demo: --work)")
    spks = make_speakers(speakers, utts_per_speaker, seed, voices)
    root.mkdir(parents=True, exist_ok=True)
    if deg.active:
        (root / CONDITIONS_DIR).mkdir(exist_ok=True)
    _write_text(root / "SYNTH_SPEAKERS.json", json.dumps([asdict(s) for s in spks], indent=1))
    tasks = [(str(root), s, u, t, seed, layout, case, audio_format, deg) for s in spks for u, t in s.utterances]
    jobs = jobs or min(len(tasks), os.cpu_count() or 1)
    # a fresh process per utterance (maxtasksperchild=1): espeak-ng state must not carry over
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    if ctx.get_start_method() == "fork":
        # loaded once here and inherited by every forked worker (scipy.signal takes ~1 s to import);
        # mapping the library does not touch espeak's state, only espeak_Initialize does
        import scipy.signal  # noqa: F401
        import espeakng_loader
        ctypes.CDLL(espeakng_loader.get_library_path())
    from tqdm import tqdm
    with ctx.Pool(jobs, maxtasksperchild=1) as pool:
        if deg.needs_babble and not (root / BABBLE_FILE).exists():
            _save_npy(root / BABBLE_FILE, _babble_pool(seed, voices, pool, progress))
        it = pool.imap_unordered(_write_one, tasks)
        for _ in tqdm(it, total=len(tasks), desc="synth", disable=not progress, unit="utt"):
            pass
    if deg.active:
        conditions = _write_conditions(root, spks)
        if progress:
            print(f"synth: per-utterance noise and reverberation in {conditions}")
    _write_text(marker, json.dumps(settings))
    return root
