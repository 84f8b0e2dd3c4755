"""Small helpers shared by the test modules (tests/ is on sys.path under pytest's rootdir conftest)."""
import contextlib

import torch


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def deterministic_twiddle_grads(x, tw, g, runs: int) -> list:
    """Twiddle gradients of ``runs`` Triton butterfly products of x (output gradient g) under
    ``torch.use_deterministic_algorithms(True)``, for run-to-run comparison."""
    from kfrontend.functional import butterfly_multiply

    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(runs):
            t = tw.clone().requires_grad_()
            butterfly_multiply(x, t, True, backend="triton").backward(g)
            grads.append(t.grad)
    finally:
        torch.use_deterministic_algorithms(prev)
    return grads


# A recognizer small enough to train in seconds, for the recipe's end-to-end tests.
TINY_RECIPE = dict(hidden=16, layers=2, dropout=0.2, batch_size=2, lr=5e-3, warmup_steps=0, log_every_steps=1,
                   save_every_steps=3, eval_batch_size=8, epochs=100)


def tiny_corpus_data(base):
    """A prepared 6-speaker x 4-utterance synthetic corpus under ``base`` (its manifests folder)."""
    from recipes.timit.prepare import prepare
    from recipes.timit.synth import synth_corpus

    corpus = synth_corpus(base / "corpus", speakers=6, utts_per_speaker=4, seed=5, progress=False)
    prepare(corpus, base / "data", progress=False)
    return base / "data"
