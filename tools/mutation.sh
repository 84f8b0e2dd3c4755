#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut 3 (>= 3.8: classmethods are mutated too), one
# module at a time against only the test files that exercise it, so each run takes minutes on two
# cores.  Not part of CI; results and the surviving mutants are recorded in docs/TESTING.md.
#
# mutmut rewrites the files it mutates, so it NEVER runs in this working tree: every module gets a
# fresh copy of the committed tree (git archive HEAD; set MUTATION_SOURCE=worktree to take the
# working tree, uncommitted edits included) under $MUTATION_WORK (default /tmp/kfrontend-mutation).
#
#   pip install 'mutmut>=3.8'
#   tools/mutation.sh                      # every module below
#   tools/mutation.sh constructions phones # some of them
#   JOBS=1 tools/mutation.sh features      # fewer parallel test processes (default 2)
#
# Output per module in $MUTATION_WORK/results/: <module>.log (mutmut's progress), <module>.all (every
# mutant and its status), <module>.txt (those not killed) and <module>.diff (their diffs).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python}"
WORK="${MUTATION_WORK:-/tmp/kfrontend-mutation}"
JOBS="${JOBS:-2}"
OUT="$WORK/results"

# module -> "file to mutate|test files|mutant name patterns (empty: every function in the file)|tests
# left out (pytest node ids, optional)"
# Tests that torch.compile the mutated code: mutmut's coverage pass (its trampolines set a ContextVar,
# which Dynamo refuses under fullgraph) fails on them, so they are left out; the custom op that
# torch.compile runs is tested eagerly instead (tests/test_mutation_regressions.py, is_compiling
# patched).
NO_COMPILE="tests/test_frontend_learning.py::test_torch_compile_forward_and_backward tests/test_module_contract.py::test_torch_compile"
declare -A SPEC=(
  # The reference product, its argument checks and dtype rules, the size helpers and the transposed
  # twiddle (the backend dispatch that uses them is the next entry).
  [functional]="kfrontend/reference.py|tests/test_functional.py tests/test_dispatch.py tests/test_layer_features.py|kfrontend.reference.x_is_power_of_two__mutmut_* kfrontend.reference.x_next_power_of_two__mutmut_* kfrontend.reference.x_stride_of__mutmut_* kfrontend.reference.x_block_is_increasing__mutmut_* kfrontend.reference.x_check_butterfly_args__mutmut_* kfrontend.reference.x_compute_dtype__mutmut_* kfrontend.reference.x_output_dtype__mutmut_* kfrontend.reference.x_butterfly_multiply_reference__mutmut_* kfrontend.reference.x_transposed_twiddle__mutmut_*"
  # The backend dispatch (butterfly_multiply, auto_backend, kmatrix_multiply and its transposed
  # form): every backend computes the same numbers, so tests/test_dispatch.py spies on which runs
  # (tests/test_cpu_paths.py checks the backends' numbers; it would make each mutant take ~10 s).
  [dispatch]="kfrontend/functional.py|tests/test_dispatch.py tests/test_functional.py|"
  [constructions]="kfrontend/constructions.py|tests/test_constructions.py tests/test_transforms.py tests/test_mutation_regressions.py|"
  [features]="kfrontend/features.py|tests/test_features.py tests/test_mutation_regressions.py|"
  # The front end's conversions only (the rest of frontend.py is the module's forward pass):
  # the from_* constructors and the helpers that turn their arguments into a configuration.
  [frontend]="kfrontend/conversions.py|tests/test_frontend_conversions.py tests/test_mutation_regressions.py|kfrontend.conversions.x__melspec_config__mutmut_* kfrontend.conversions.x__kaldi_config__mutmut_* kfrontend.conversions.x__librosa_config__mutmut_* kfrontend.conversions.x__split_kwargs__mutmut_* kfrontend.conversions.x_*_config__mutmut_*"
  # The K-matrix stages (LinearStage, TwiddleOffset, _matrix_parts, the kfrontend::kmatrix_dense
  # custom op and its backward, stage_matrix_parts, _packed_matrix): every function.  The front
  # end's tests build and train stages (test_module_contract.py: copies, pickles, gradients);
  # from test_cpu_paths.py (36 s in all) only the DFT stage's packed matrix: its two tests of the
  # stages on 2 threads leave an OpenMP team in mutmut's parent process, and every forked mutant
  # that then runs a multi-threaded op hangs in it.
  [stages]="kfrontend/stages.py|tests/test_frontend.py tests/test_finetune.py tests/test_frontend_learning.py tests/test_module_contract.py tests/test_mutation_regressions.py tests/test_cpu_paths.py::test_dft_stage_packed_matrix_equals_its_parts||$NO_COMPILE"
  # The front end's forward pass (the rest of frontend.py: the constructor's checks, set_trainable,
  # param_groups, repr, the from_* wrappers, is not mutated): the pipeline helpers, the shared
  # configuration properties (_FrontendBase), KaleidoscopeFrontend's forward / _spectrum_kernel /
  # _stage_matrices / to_fixed, and FixedFrontend.
  [forward]="kfrontend/frontend.py|tests/test_frontend.py tests/test_frontend_learning.py tests/test_module_contract.py tests/test_mutation_regressions.py|kfrontend.frontend.x__no_autocast__mutmut_* kfrontend.frontend.x__signal__mutmut_* kfrontend.frontend.x__frames_of__mutmut_* kfrontend.frontend.x__kaldi_energy__mutmut_* kfrontend.frontend.x__mel_energies__mutmut_* kfrontend.frontend.x__post_mel__mutmut_* kfrontend.frontend.x__window_scale__mutmut_* kfrontend.frontend.x__signal_and_energy__mutmut_* kfrontend.frontend.xǁ_FrontendBaseǁ*__mutmut_* kfrontend.frontend.xǁKaleidoscopeFrontendǁforward__mutmut_* kfrontend.frontend.xǁKaleidoscopeFrontendǁ_spectrum_kernel__mutmut_* kfrontend.frontend.xǁKaleidoscopeFrontendǁ_stage_matrices__mutmut_* kfrontend.frontend.xǁKaleidoscopeFrontendǁto_fixed__mutmut_* kfrontend.frontend.xǁKaleidoscopeFrontendǁparam_dtype__mutmut_* kfrontend.frontend.xǁFixedFrontendǁ*__mutmut_*|$NO_COMPILE"
  [phones]="recipes/timit/phones.py|tests/test_timit_phones.py|"
  [evaluate]="recipes/timit/evaluate.py|tests/test_mutation_regressions.py tests/test_timit_evaluate.py|"
  # The CTC decoders (greedy, prefix beam search) of the recipe's model.
  [decoder]="recipes/timit/model.py|tests/test_timit_model.py tests/test_mutation_regressions.py|recipes.timit.model.x_greedy_decode__mutmut_* recipes.timit.model.x_prefix_beam_decode__mutmut_* recipes.timit.model.x__logaddexp__mutmut_*"
)
ORDER=(functional dispatch constructions features frontend stages forward phones evaluate decoder)

# The whole run is one function, parsed before it starts: editing this file during a run (for the
# next one) cannot change the run under way.
main() {
  mkdir -p "$OUT"
  "$PY" -c 'import mutmut, sys; v = tuple(int(p) for p in mutmut.__version__.split(".")[:2]); sys.exit(v < (3, 8))' 2>/dev/null \
    || { echo "needs mutmut >= 3.8 for $PY: pip install 'mutmut>=3.8'" >&2; exit 2; }

  for module in "${@:-${ORDER[@]}}"; do
    [[ -n "${SPEC[$module]:-}" ]] || { echo "unknown module $module (one of: ${ORDER[*]})" >&2; exit 2; }
    IFS='|' read -r file tests names skip <<< "${SPEC[$module]}"
    dir="$WORK/$module"
    rm -rf "$dir"
    mkdir -p "$dir"
    if [[ "${MUTATION_SOURCE:-HEAD}" == worktree ]]; then
      (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -c 2>/dev/null) | tar -x -C "$dir"
    else
      git -C "$ROOT" archive HEAD | tar -x -C "$dir"
    fi
    {
      echo "[mutmut]"
      echo "source_paths ="
      echo "    kfrontend/"
      echo "    recipes/"
      echo "only_mutate = $file"
      echo "pytest_add_cli_args_test_selection ="
      for t in $tests; do echo "    $t"; done
      echo "pytest_add_cli_args ="
      echo "    -p"
      echo "    no:cacheprovider"
      for t in $skip; do echo "    --deselect"; echo "    $t"; done
      # the git-based change detection and dependency cache are for incremental runs in a project;
      # each run here starts from a fresh copy
      echo "use_git_change_detection = false"
    } > "$dir/setup.cfg"
    echo "== $module: mutating $file against $tests"
    start=$(date +%s)
    # shellcheck disable=SC2086
    (cd "$dir" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 "$PY" -m mutmut run --max-children "$JOBS" $names \
        > "$OUT/$module.log" 2>&1) || echo "   mutmut exited $? (see $OUT/$module.log)"
    # One process for the report (mutmut show per mutant costs a second or two each): every mutant's
    # status in <module>.all, the ones not killed in <module>.txt with their diffs in <module>.diff.
    (cd "$dir" && "$PY" - "$OUT/$module" <<'PYEOF'
import sys
from mutmut.__main__ import (SourceFileMutationData, get_diff_for_mutant, status_by_exit_code,
                             walk_mutatable_files)
from mutmut.configuration import config

out = sys.argv[1]
with open(out + ".all", "w") as fa, open(out + ".txt", "w") as ft, open(out + ".diff", "w") as fd:
    for path in walk_mutatable_files():
        if not config().should_mutate(path):
            continue
        m = SourceFileMutationData(path=path)
        m.load()
        for name, code in m.exit_code_by_key.items():
            status = status_by_exit_code[code]
            fa.write(f"{name}: {status}\n")
            if status not in ("killed", "not checked"):  # not checked: outside the names run
                ft.write(f"{name}: {status}\n")
                fd.write(f"# {name}: {status}\n{get_diff_for_mutant(name, path=path)}\n")
PYEOF
    ) || echo "   report failed"
    echo "   $(( $(date +%s) - start )) s; $(tail -c 400 "$OUT/$module.log" | tr '\r' '\n' | grep -E '[0-9]+/[0-9]+' | tail -1)"
    echo "   not killed: $(grep -c . "$OUT/$module.txt" || true) (list: $OUT/$module.txt, diffs: $OUT/$module.diff)"
  done
}

main "$@"
exit
