"""kfrontend.filterbanks against torchaudio itself: the ported formulas must give torchaudio's
matrices bit for bit (same operations, same order, same dtype), and the core must import and build
front ends without torchaudio."""
import subprocess
import sys
import warnings

import pytest
import torch

from kfrontend import filterbanks as FB

taF = pytest.importorskip("torchaudio.functional")
kaldi = pytest.importorskip("torchaudio.compliance.kaldi")


@pytest.mark.parametrize("n_freqs,f_min,f_max,n_mels,sr", [
    (201, 0.0, 8000.0, 40, 16000), (257, 20.0, 7600.0, 80, 16000), (1025, 0.0, 11025.0, 128, 22050),
    (129, 300.0, 3400.0, 23, 8000), (201, 0.0, 8000.0, 128, 16000),  # the last has empty filters
    (513, 50.0, 20000.0, 96, 44100)])
@pytest.mark.parametrize("norm", [None, "slaney"])
@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_melscale_fbanks_equals_torchaudio(n_freqs, f_min, f_max, n_mels, sr, norm, scale):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchaudio warns about empty filters
        ref = taF.melscale_fbanks(n_freqs, f_min, f_max, n_mels, sr, norm, scale)
    got = FB.melscale_fbanks(n_freqs, f_min, f_max, n_mels, sr, norm, scale)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert torch.equal(got, ref)


@pytest.mark.parametrize("n_mfcc,n_mels", [(13, 40), (40, 40), (20, 80), (1, 23), (128, 128)])
@pytest.mark.parametrize("norm", [None, "ortho"])
def test_create_dct_equals_torchaudio(n_mfcc, n_mels, norm):
    assert torch.equal(FB.create_dct(n_mfcc, n_mels, norm), taF.create_dct(n_mfcc, n_mels, norm))


@pytest.mark.parametrize("bins,padded,sf,low,high", [
    (23, 512, 16000.0, 20.0, 0.0), (40, 512, 16000.0, 20.0, 0.0), (80, 1024, 16000.0, 64.0, -400.0),
    (30, 256, 8000.0, 0.0, 3800.0), (64, 2048, 44100.0, 40.0, 18000.0)])
@pytest.mark.parametrize("vtln", [(1.0, 100.0, -500.0), (0.9, 100.0, -500.0), (1.1, 300.0, 3000.0)])
def test_kaldi_mel_banks_equal_torchaudio(bins, padded, sf, low, high, vtln):
    warp, vlow, vhigh = vtln
    nyq = sf / 2
    high_eff = high + nyq if high <= 0 else high
    vh = vhigh + nyq if vhigh < 0 else vhigh
    if warp != 1.0 and not (low < vlow < high_eff and 0 < vh < high_eff and vlow < vh):
        pytest.skip("VTLN range outside this mel range (refused by both)")
    ref, _ = kaldi.get_mel_banks(bins, padded, sf, low, high, vlow, vhigh, warp)
    got = FB.kaldi_mel_banks(bins, padded, sf, low, high, vlow, vhigh, warp)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert torch.equal(got, ref)


def test_bad_norms_are_refused():
    with pytest.raises(ValueError, match="norm"):
        FB.melscale_fbanks(201, 0.0, 8000.0, 40, 16000, norm="area")
    with pytest.raises(ValueError, match="mel_scale"):
        FB.melscale_fbanks(201, 0.0, 8000.0, 40, 16000, mel_scale="bark")
    with pytest.raises(ValueError, match="norm"):
        FB.create_dct(13, 40, norm="unitary")


_BLOCK = r"""
import sys
class _Block:  # torchaudio / librosa / matplotlib behave as if absent or broken
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torchaudio", "librosa", "matplotlib"):
            raise ImportError(f"blocked {name} for the test")
sys.meta_path.insert(0, _Block())
import torch
import kfrontend
from kfrontend import KaleidoscopeFrontend, constructions as C
fe = KaleidoscopeFrontend.from_mfcc(sample_rate=16000, n_mfcc=13, melkwargs=dict(n_fft=400, hop_length=160, n_mels=40))
fk = KaleidoscopeFrontend.from_kaldi_fbank(num_mel_bins=40)
assert fe(torch.randn(1, 8000)).shape[-2] == 13
assert fk(torch.randn(1, 8000)).shape[-1] == 40
assert "torchaudio" not in sys.modules and "librosa" not in sys.modules
try:
    KaleidoscopeFrontend.from_librosa_melspectrogram(sr=16000)
except ImportError as e:
    print("ERR", e)
"""


def test_core_works_without_optional_packages():
    """The core imports and every torchaudio-free constructor works with torchaudio, librosa and
    matplotlib unimportable; a feature that needs one names it and the fix."""
    out = subprocess.run([sys.executable, "-c", _BLOCK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ERR librosa" in out.stdout and "pip install" in out.stdout, out.stdout


def test_broken_torchaudio_names_the_versions_and_fix(monkeypatch):
    """A torchaudio that is installed but does not load (its compiled extension built for another
    torch) gives one ImportError naming both versions and the matching pair to install."""
    import importlib

    from kfrontend import _optional

    def broken(name, *a, **k):
        raise OSError("Could not load this library: libtorchaudio.so: undefined symbol")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ImportError) as e:
        _optional.require("torchaudio.transforms")
    msg = str(e.value)
    assert "torchaudio" in msg and torch.__version__ in msg and "failed to import" in msg
    assert "torchaudio==" in msg and "undefined symbol" in msg
