"""The package layout of issue 11 (docs/DESIGN.md): imports run one way, kernels/ is packaged with no
import hook, the public names stay where users import them from, and a stacked K-matrix multiplies
out through the one route (cpu.kmatrix_rows)."""
import ast
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Modules a file imports (at any depth, lazily or not)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_imports_run_one_way():
    """reference.py is the bottom (torch only); the backends (cpu, kernels) never import the
    dispatcher (functional) nor each other's privates; stages/conversions never import frontend."""
    ref = _imports(ROOT / "kfrontend" / "reference.py")
    assert {m for m in ref if m.startswith("kfrontend")} == set()
    for backend in (ROOT / "kfrontend" / "cpu.py", ROOT / "kernels" / "butterfly.py", ROOT / "kernels" / "__init__.py"):
        mods = _imports(backend)
        assert not any(m == "kfrontend.functional" or m.startswith("kfrontend.functional.") for m in mods), backend
        assert not any(m.split(".")[-1].startswith("_") and m.startswith("kfrontend.") and not
                       m.startswith("kfrontend._contract") for m in mods), backend
    for low in ("stages.py", "conversions.py"):
        assert not any(m.startswith("kfrontend.frontend") for m in _imports(ROOT / "kfrontend" / low)), low


def test_no_import_hook_and_kernels_from_packaging():
    import kfrontend
    import kfrontend.kernels

    assert not [f for f in sys.meta_path if getattr(f, "__module__", "").startswith("kfrontend")]
    assert "meta_path" not in (ROOT / "kfrontend" / "__init__.py").read_text()
    assert Path(kfrontend.kernels.__file__).parent.name in ("kernels",)  # kernels/ or kfrontend/kernels/


def test_frontend_keeps_its_public_names():
    from kfrontend import frontend, stages

    for name in ("KaleidoscopeFrontend", "FixedFrontend", "STAGES", "TwiddleOffset", "DEFAULT_STEP_SCALE",
                 "LinearStage"):
        assert hasattr(frontend, name), name
    assert frontend.TwiddleOffset is stages.TwiddleOffset and frontend.LinearStage is stages.LinearStage


@pytest.mark.parametrize("out_f", [5, 8, 13, 24])
def test_stacked_kmatrix_rows_equal_the_reference(out_f):
    """kmatrix_rows of stacked twiddles == kmatrix_multiply (backend torch) of identity rows."""
    from kfrontend.cpu import kmatrix_rows
    from kfrontend.functional import kmatrix_multiply
    from kfrontend.layers import twiddle_init

    torch.manual_seed(0)
    tw = twiddle_init((3, 2, 3, 4, 2, 2), "randn", True, torch.float64)
    eye = torch.eye(8, dtype=torch.complex128)
    ref = kmatrix_multiply(eye, tw, out_f, True, "torch")
    torch.testing.assert_close(kmatrix_rows(tw, True, out_f, 0, 8), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kmatrix_rows(tw, True, out_f, 2, 7), ref[2:7], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="nstacks"):
        kmatrix_rows(tw, True, 25, 0, 8)


def test_retired_config_key_is_ignored_in_files_and_refused_as_override(tmp_path):
    pytest.importorskip("torchaudio")
    from recipes.timit.train import load_config

    for name in ("small", "paper"):
        assert "kill_after_steps" not in json.loads((ROOT / "recipes/timit/configs" / f"{name}.json").read_text())
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"hidden": 8, "kill_after_steps": None}))
    cfg = load_config(str(old))
    assert cfg["hidden"] == 8 and "kill_after_steps" not in cfg
    with pytest.raises(ValueError, match="unknown config key 'kill_after_steps'"):
        load_config("small", ["kill_after_steps=7"])
