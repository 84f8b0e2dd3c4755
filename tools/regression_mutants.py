"""Check that the issue-15 regression tests kill the bugs they were written for.

Each mutant below is one of the bugs a mutation spot-check put in unnoticed (docs/TESTING.md).  For
each, a copy of the working tree is made in a temporary directory (never the tree itself: others
work in it), the bug is put in the copy, and the named tests are run there; they must fail.  The
same tests must pass on the unmutated copy.  Usage (a minute or two on one core):

    OMP_NUM_THREADS=1 python tools/regression_mutants.py [NAME ...]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
R = "tests/test_mutation_regressions.py::"

# name: (file, original text, mutated text, tests that must fail).  The file may be a tuple of
# candidate paths and the original text a tuple of spellings (the code is being refactored under
# these tests): the first file holding one of them is mutated, at the spelling present.
MUTANTS = {
    "bluestein-size": ("kfrontend/constructions.py",
                       ("next_power_of_two(n + k_out - 1)", "next_power_of_two(n_out + n_in - 1)"),
                       ("next_power_of_two(n + k_out - 2)", "next_power_of_two(n_out + n_in - 2)"),
                       [R + "test_bluestein_onesided_dft_at_asymmetric_chirp_sizes",
                        R + "test_bluestein_dct_at_asymmetric_chirp_sizes"]),
    "window-offset": ("kfrontend/features.py", "return (n_fft - win_length) // 2",
                      "return (n_fft - win_length + 1) // 2",
                      [R + "test_stft_frames_odd_window_offset",
                       R + "test_melspectrogram_odd_window_offset_equals_torchaudio"]),
    "hyp-not-folded": ("recipes/timit/evaluate.py", '"hyp39": fold48to39(h48)', '"hyp39": h48',
                       [R + "test_decode_rows_and_score_hand_worked",
                        R + "test_evaluate_writes_folded_hypotheses_and_hand_scored_per"]),
    "ref-on-48": ("recipes/timit/evaluate.py", '"ref39": rows[i]["phones39"]', '"ref39": rows[i]["phones48"]',
                  [R + "test_decode_rows_and_score_hand_worked",
                   R + "test_evaluate_writes_folded_hypotheses_and_hand_scored_per"]),
    "loss-not-per-phone": ("recipes/timit/evaluate.py",
                           'zero_infinity=False) / batch["target_lengths"].to(device)',
                           "zero_infinity=False)",
                           [R + "test_decode_rows_and_score_hand_worked"]),
    "beam-keeps-worst": ("recipes/timit/model.py", "key=lambda kv: -_logaddexp(*kv[1]))[:beam]",
                         "key=lambda kv: _logaddexp(*kv[1]))[:beam]",
                         [R + "test_prefix_beam_search_narrow_beam_against_exhaustive_search"]),
    "complex-init-scale": ("kfrontend/layers.py", "torch.complex(re, im) * math.sqrt(0.25)",
                           "torch.complex(re, im) * math.sqrt(0.5)",
                           [R + "test_complex_randn_init_variance_and_norm"]),
    "top-db-dropped": (("kfrontend/conversions.py", "kfrontend/frontend.py"),
                       'ours.update(log="db", top_db=a2db.top_db, amin=a2db.amin',
                       'ours.update(log="db", amin=a2db.amin',
                       [R + "test_from_transform_mfcc_keeps_top_db_on_a_batch_with_a_quiet_item"]),
    # Found by the mutation runs themselves (docs/TESTING.md): nblocks with a twiddle ignored, and
    # float permutation indices truncated to integers.
    "nblocks-ignored": ("kfrontend/layers.py", "        if blocks_given is not None and nblocks != blocks_given:",
                        "        if False:",
                        ["tests/test_constructions.py::test_butterfly_nblocks_must_agree_with_the_twiddle"]),
    "float-perm-truncated": ("kfrontend/constructions.py", '    if raw.size and raw.dtype.kind not in "iu":',
                             "    if False:",
                             ["tests/test_constructions.py::test_permutation_refuses_non_integer_indices_and_matrix_"
                              "refuses_complex_values"]),
    # bf16 arithmetic instead of fp32 for bf16 input (the bf16 test's tolerance must see it)
    "bf16-arithmetic": (("kfrontend/reference.py", "kfrontend/functional.py"), "    return torch.promote_types(xd, twiddle.dtype)",
                        "    return x.dtype if x.dtype == torch.bfloat16 else torch.promote_types(xd, twiddle.dtype)",
                        ["tests/test_functional.py::test_bf16_input_is_computed_in_fp32_and_returned_in_bf16"]),
}

IGNORE = shutil.ignore_patterns(".git", ".venv", "exp", "mutants", "__pycache__", ".pytest_cache", "*.egg-info")


def _pytest(tree: Path, tests: list[str]) -> int:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True).returncode


def main(names: list[str]) -> int:
    bad = 0
    with tempfile.TemporaryDirectory(prefix="kfrontend-mutants-") as tmp:
        base = Path(tmp) / "base"
        shutil.copytree(ROOT, base, ignore=IGNORE)
        for name in names or list(MUTANTS):
            path, old, new, tests = MUTANTS[name]
            spellings = old if isinstance(old, tuple) else (old,)
            if isinstance(path, tuple):
                path = next((p for p in path if (base / p).exists()
                             and any(o in (base / p).read_text() for o in spellings)), path[0])
            src = (base / path).read_text()
            if isinstance(old, tuple):
                k = next((i for i, o in enumerate(old) if o in src), 0)
                old, new = old[k], new[k]
            if src.count(old) != 1:
                print(f"{name:20s} NOT APPLIED: {old!r} occurs {src.count(old)} times in {path}")
                bad += 1
                continue
            clean = _pytest(base, tests)
            (base / path).write_text(src.replace(old, new))
            try:
                mutated = [_pytest(base, [t]) for t in tests]  # every listed test alone must kill it
            finally:
                (base / path).write_text(src)
            ok = clean == 0 and all(rc == 1 for rc in mutated)
            bad += not ok
            verdict = ", ".join(f"{t.split('::')[-1]}: {'killed' if rc == 1 else f'SURVIVED rc={rc}'}"
                                for t, rc in zip(tests, mutated))
            print(f"{name:20s} clean: {'pass' if clean == 0 else f'FAIL rc={clean}'}; mutated: {verdict}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
