#!/usr/bin/env bash
# A new user's install, with nothing but the package's own metadata: `pip install .` into a fresh
# virtual environment (no lock, no extras), then
#   1. the core imports and runs with torch alone (torchaudio, librosa, matplotlib absent), and a
#      feature that needs an optional package fails with an error naming it;
#   2. `pip install torchaudio` beside it (whatever pip resolves) loads, and the front end equals
#      torchaudio's MelSpectrogram.
# Usage: bash tools/fresh_install_check.sh [VENV_DIR]   (default: a temporary folder, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ $# -ge 1 ]; then
    VENV=$1
else
    # A throwaway venv holds a full torch install (about 5.5 GB): remove it however the check ends,
    # or repeated runs fill the disk (they did: CI then failed with "No space left on device").
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    VENV=$TMP/venv
fi
# pip's wheel cache would keep a second copy of every wheel it downloads.
export PIP_NO_CACHE_DIR=1
echo "== fresh install check in $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet .
"$VENV/bin/python" -m pip check
"$VENV/bin/python" - <<'PY'
import importlib.util, torch, kfrontend
from kfrontend import Butterfly, KaleidoscopeFrontend, constructions as C
for missing in ("torchaudio", "librosa", "matplotlib"):
    assert importlib.util.find_spec(missing) is None, f"{missing} came with a plain `pip install .`"
x = torch.randn(16, 400, dtype=torch.float64)
dft = C.dft(400, onesided=True, dtype=torch.complex128)
err = (dft(x) - torch.fft.rfft(x)).abs().max().item()
assert err < 1e-9, err
fe = KaleidoscopeFrontend.from_melspectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=40)
print("core without torchaudio: DFT error", err, "features", tuple(fe(torch.randn(1, 16000)).shape))
try:
    kfrontend.frontend.KaleidoscopeFrontend.from_librosa_melspectrogram(sr=16000)
except ImportError as e:
    assert "librosa" in str(e) and "pip install" in str(e), e
    print("librosa missing ->", e)
else:
    raise AssertionError("from_librosa_melspectrogram worked without librosa")
PY
"$VENV/bin/python" -m pip install --quiet torchaudio
"$VENV/bin/python" - <<'PY'
import torch, torchaudio
from kfrontend import KaleidoscopeFrontend
kw = dict(sample_rate=16000, n_fft=400, hop_length=160, n_mels=40)
wave = torch.randn(2, 16000, dtype=torch.float64)
ref = torchaudio.transforms.MelSpectrogram(**kw).double()(wave)
out = KaleidoscopeFrontend.from_melspectrogram(**kw, dtype=torch.float64)(wave)
err = ((out - ref).abs().max() / ref.abs().max()).item()
print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}: max error / max = {err:.2e} (bound 1e-9)")
assert err < 1e-9, err
PY
echo "== fresh install check passed"
