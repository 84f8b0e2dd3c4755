"""Every Triton kernel specialisation the dispatcher can launch compiles for sm_90, on a CPU machine.

The interpreter accepts code the GPU compiler rejects (tl.dot with K < 8 or 16, a constexpr reassigned
inside tl.static_range; it neither emulates TF32 nor always faults out of bounds), so the interpreter
tests alone prove nothing about the GPU build.  This test runs this file as a script in a
subprocess with ``TRITON_INTERPRET=0`` (the real ``JITFunction``): it drives the public path
(forward and backward, every dtype the kernel takes, N = 2 .. 4096, 1-3 blocks, both stride
orders, plus larger N that chunk) with CPU tensors while a hook records each launch instead of
running it, derives the exact specialisation Triton's JIT would build for those arguments (same
binder, same signature, constexprs and alignment attributes), and compiles each distinct one with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` down to a cubin.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
SIZES = [2**k for k in range(1, 13)]  # N = 2 .. 4096
EXTRA_SIZES = [8192]  # chunked in the forward too


def test_every_specialisation_compiles_for_sm90(tmp_path):
    out = tmp_path / "report.json"
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"compile check failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    report = json.loads(out.read_text())
    # The dispatcher must have used the kernels for every size, forward and backward.
    assert sorted(report["sizes_fwd"]) == sorted(SIZES + EXTRA_SIZES)
    assert sorted(report["sizes_bwd"]) == sorted(SIZES + EXTRA_SIZES)
    names = {(s["kernel"], s["dtypes"]) for s in report["specialisations"]}
    for kernel in ("_bfly_fwd_kernel", "_bfly_bwd_kernel"):
        for dtypes in ("fp32", "bf16", "complex"):
            assert (kernel, dtypes) in names, (kernel, dtypes, names)
    assert not report["failed"]
    assert all(s["cubin_bytes"] > 0 for s in report["specialisations"])


# ------------------------------------------------------------------------------------------
# The script part (runs with TRITON_INTERPRET=0; no GPU needed)
# ------------------------------------------------------------------------------------------


def _collect():
    import torch

    from kfrontend.kernels import butterfly as kb

    assert not kb._is_interpreted(), "run with TRITON_INTERPRET=0"
    launches = []
    sizes_fwd, sizes_bwd = set(), set()
    current = {}

    def hook(kernel, grid, args, meta):
        launches.append((kernel, args, dict(meta)))
        (sizes_bwd if kernel is kb._bfly_bwd_kernel else sizes_fwd).add(current["n"])

    kb._LAUNCH_HOOK = hook
    try:
        for n in SIZES + EXTRA_SIZES:
            current["n"] = n
            log_n = n.bit_length() - 1
            for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.complex64):
                tw_dtype = torch.complex64 if dtype.is_complex else torch.float32
                for nblocks in (1, 3):
                    for inc in (True, False):
                        x = torch.zeros(3, n, dtype=dtype, requires_grad=True)
                        tw = torch.zeros(nblocks, log_n, n // 2, 2, 2, dtype=tw_dtype, requires_grad=True)
                        y = kb.butterfly_multiply_triton(x, tw, inc)
                        y.real.sum().backward() if y.is_complex() else y.float().sum().backward()
            # real x with complex twiddles (converted to complex64 outside the op)
            x = torch.zeros(3, n, requires_grad=True)
            tw = torch.zeros(1, log_n, n // 2, 2, 2, dtype=torch.complex64, requires_grad=True)
            kb.butterfly_multiply_triton(x, tw, True).real.sum().backward()
    finally:
        kb._LAUNCH_HOOK = None
    return launches, sizes_fwd, sizes_bwd


def _specialisation(kernel, args, meta, backend):
    """What ``JITFunction.run`` would compile for these arguments (triton 3.6 logic, no driver)."""
    from triton import knobs
    from triton.runtime.jit import create_function_from_signature

    kwargs = dict(meta)
    kwargs["debug"] = kwargs.get("debug", kernel.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    return options, signature, constexprs, attrs


_SPECS: list = []  # filled before the worker processes fork


def _compile_one(i: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel, options, signature, constexprs, attrs = _SPECS[i]
    ptr_types = sorted({v for k, v in signature.items() if v.startswith("*") and k != "steps_ptr"})
    const = {kernel.arg_names[k[0]]: v for k, v in constexprs.items()}
    dtypes = "complex" if const.get("IS_COMPLEX") else ("bf16" if "*bf16" in ptr_types else "fp32")
    info = {"kernel": kernel.fn.__name__, "dtypes": dtypes, "pointers": ptr_types,
            "constexprs": {k: (v if isinstance(v, (int, bool)) else str(v)) for k, v in const.items()},
            "num_warps": options.num_warps}
    t1 = time.time()
    try:
        compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs),
                                  target=GPUTarget("cuda", 90, 32), options=options.__dict__)
    except Exception as exc:  # report every failure, not just the first
        info["error"] = repr(exc)[-3000:]
        return info
    cubin = compiled.asm.get("cubin", b"")
    info.update(seconds=round(time.time() - t1, 1), cubin_bytes=len(cubin), shared=compiled.metadata.shared,
                **_resource_usage(cubin))
    return info


def _resource_usage(cubin: bytes) -> dict:
    """Registers and spill stack per thread, as ptxas allotted them (informative: spills cost
    speed, not correctness)."""
    import re
    import tempfile

    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists() or not cubin:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return {"registers": int(m.group(1)), "stack_bytes": int(m.group(2))} if m else {}


def main(out_path: str, jobs: int = 2) -> int:
    import multiprocessing

    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", 90, 32))
    t0 = time.time()
    launches, sizes_fwd, sizes_bwd = _collect()
    seen = set()
    for kernel, args, meta in launches:
        options, signature, constexprs, attrs = _specialisation(kernel, args, meta, backend)
        key = (kernel.fn.__name__, repr(sorted(signature.items())), repr(sorted(constexprs.items())),
               repr(sorted(attrs.items())), repr(sorted(options.__dict__.items())))
        if key not in seen:
            seen.add(key)
            _SPECS.append((kernel, options, signature, constexprs, attrs))
    print(f"{len(launches)} launches, {len(_SPECS)} distinct specialisations "
          f"(collected in {time.time() - t0:.1f}s); compiling with {jobs} processes", flush=True)
    # Big kernels first, so the two processes finish together.
    order = sorted(range(len(_SPECS)), key=lambda i: (_SPECS[i][0] is not _bwd_kernel(),))
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_compile_one, order, chunksize=1)
    else:
        results = [_compile_one(i) for i in order]
    failed = [r for r in results if "error" in r]
    for r in results:
        desc = f"{r['kernel']} {r['dtypes']} {r['pointers']} {r['constexprs']} warps={r['num_warps']}"
        if "error" in r:
            print(f"FAILED {desc}: {r['error']}", flush=True)
        else:
            print(f"ok {desc}: {r['seconds']}s, {r['cubin_bytes']} B cubin, shared {r['shared']} B, "
                  f"{r.get('registers', '?')} registers, {r.get('stack_bytes', '?')} B spill stack")
    report = {"sizes_fwd": sorted(sizes_fwd), "sizes_bwd": sorted(sizes_bwd),
              "specialisations": [r for r in results if "error" not in r], "failed": failed}
    Path(out_path).write_text(json.dumps(report, indent=1))
    print(f"total {time.time() - t0:.1f}s, {len(failed)} failed", flush=True)
    return 1 if failed else 0


def _bwd_kernel():
    from kfrontend.kernels import butterfly as kb

    return kb._bfly_bwd_kernel


if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "0"
    sys.exit(main(sys.argv[1], int(os.environ.get("KFRONTEND_COMPILE_JOBS", "2"))))
