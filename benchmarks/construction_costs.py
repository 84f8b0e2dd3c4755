"""Parameters and multiply FLOPs of the exact K-matrix constructions beside their dense matrices.

    python benchmarks/construction_costs.py
"""
import warnings

import torch
import torchaudio

from kfrontend import constructions as C


def main() -> None:
    warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
    stages = {}
    for n_fft in (256, 400, 512, 1024, 2048, 4096):
        stages[f"rfft n_fft={n_fft}"] = C.dft(n_fft, onesided=True)
    for n_fft, n_mels in ((400, 40), (400, 80), (512, 40), (512, 80), (1024, 128), (2048, 128)):
        fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, 8000.0, n_mels, 16000)
        stages[f"mel {n_fft // 2 + 1} bins -> {n_mels}"] = C.mel(fb)
    for n_mels, n_mfcc in ((23, 13), (40, 13), (40, 40), (80, 40), (128, 128)):
        stages[f"dct {n_mels} -> {n_mfcc}"] = C.dct(n_mels, n_mfcc)
    stages["permutation 512"] = C.permutation(torch.randperm(512))
    stages["hadamard 1024"] = C.hadamard(1024)
    print(C.cost_table(stages))
    print("\nFLOPs are real floating-point operations per input row; a complex 2x2 block costs 28,")
    print("a real one 6; dense counts 2 * in * out (x4 when complex).")


if __name__ == "__main__":
    main()
