"""Rebuild the shipped default models: one twin sweep, then training — one command.

    python -m surrogate.build_default [--samples N] [--seed S] [--workers W] [--data DIR] [--out DIR]

The sweep goes to ``--data`` (default ``build/surrogate-sweep-<seed>-v<sampler version>``; resumable:
re-run the same command after an interruption) and the models to ``--out`` (default: the package's
``surrogate/models/``). The exact command line is recorded in every model sidecar (``meta.recipe``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from surrogate.bundle import default_models_dir
from surrogate.dataset import DEFAULT_PROFILES, sweep
from surrogate.sampling import SAMPLER_VERSION
from surrogate.train import train

DEFAULT_SAMPLES = 12000
DEFAULT_SEED = 2026
DEFAULT_ITERATIONS = 1200
DEFAULT_DEPTH = 6


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m surrogate.build_default``."""
    args_list = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m surrogate.build_default", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="twin runs in the training sweep")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="sweep seed (evaluation uses another)")
    p.add_argument("--workers", type=int, default=2, help="parallel twin runs")
    p.add_argument("--backend", default="local", choices=("local", "ray"))
    p.add_argument("--data", type=Path, default=None, help="sweep directory (resumable)")
    p.add_argument("--extra-data", type=Path, nargs="*", default=[], help="more sweeps to train on")
    p.add_argument("--label-seeds", type=int, default=1,
                   help="twin seeds averaged into each training label (k runs per sample)")
    p.add_argument("--batch", choices=("sampled", "default"), default="sampled",
                   help="max_num_seqs drawn per sample (sampled) or always vLLM's default (as sampler 5)")
    p.add_argument("--out", type=Path, default=None, help="model directory (default: surrogate/models/)")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    p.add_argument("--depth", type=int, default=DEFAULT_DEPTH)
    p.add_argument("--learning-rate", type=float, default=0.06)
    p.add_argument("--threads", type=int, default=2, help="CatBoost threads")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(args_list)
    data = args.data or Path("build") / f"surrogate-sweep-{args.seed}-v{SAMPLER_VERSION}"
    out = args.out or default_models_dir()
    recipe = "python -m surrogate.build_default " + " ".join(shlex.quote(a) for a in args_list)
    stats = sweep(args.samples, args.seed, data, profiles=DEFAULT_PROFILES, workers=args.workers,
                  backend=args.backend, quiet=args.quiet, label_seeds=args.label_seeds, batch=args.batch)
    if not args.quiet:
        print(json.dumps(stats.to_dict(), indent=2))
    models = train([data, *args.extra_data], out, iterations=args.iterations, depth=args.depth,
                   learning_rate=args.learning_rate, seed=0, thread_count=args.threads, recipe=recipe.strip())
    print(json.dumps({name: s.meta["validation"] for name, s in models.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
