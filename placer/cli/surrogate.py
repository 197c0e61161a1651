"""``placer surrogate predict | sweep | train | eval``: the CatBoost surrogates from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from placer.cli.common import (
    JSON_HELP,
    MODELS_HELP,
    PROFILE_HELP,
    console,
    load_context,
    print_json,
    say_if_compiling,
)


def _table(title: str, values: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    for k, v in values.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    return table


def register(app: typer.Typer) -> None:
    """Add the surrogate commands to ``app`` (the ``surrogate`` group)."""

    @app.command("predict")
    def predict(
        instance: Path = typer.Argument(..., help="Instance file (YAML or JSON); all adapters on one GPU."),
        max_loras: int = typer.Option(..., "--max-loras", help="GPU adapter slots."),
        max_cpu_loras: int | None = typer.Option(None, "--max-cpu-loras",
                                                 help="Host-cached adapters (default: all)."),
        max_lora_rank: int | None = typer.Option(None, "--max-lora-rank",
                                                 help="Default: the largest rank present."),
        models: Path | None = typer.Option(None, "--models", help=MODELS_HELP),
        profile: Path | None = typer.Option(None, "--profile", help=PROFILE_HELP),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Predict throughput, starvation and OOM of all adapters of INSTANCE on one GPU."""
        from placer.problem.io import read_instance
        inst = read_instance(instance)
        bundle = load_context(profile, models).surrogate_for(inst)
        pred = bundle.predict(inst, max_loras, max_cpu_loras, max_lora_rank)
        if as_json:
            print_json(pred.to_dict())
        else:
            console.print(_table(f"{inst.name}: {inst.n_adapters} adapters, max_loras={max_loras}",
                                 pred.to_dict()))

    @app.command("sweep")
    def sweep(
        samples: int = typer.Option(..., "--samples", help="Number of twin runs."),
        seed: int = typer.Option(0, "--seed", help="Sweep seed (sample i is drawn from (seed, i))."),
        out: Path = typer.Option(..., "--out", help="Dataset directory (re-run to resume)."),
        workers: int = typer.Option(2, "--workers", help="Parallel twin runs."),
        backend: str = typer.Option("local", "--backend", help="local (process pool) or ray."),
        profiles: str | None = typer.Option(None, "--profiles", help="Comma-separated model@gpu list."),
        profile_files: list[Path] = typer.Option(
            [], "--profile", help="A profile JSON of your own (e.g. from 'placer twin calibrate'); "
            "repeatable. Sweeps it (with --profiles: also the named ones)."),
        chunk_size: int = typer.Option(16, "--chunk-size", help="Runs per parquet chunk."),
        label_seeds: int = typer.Option(1, "--label-seeds", min=1,
                                        help="Twin seeds averaged into each row's labels (k runs per sample; "
                                             "2 lowers the label noise ~0.77x)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Run a twin sweep into a chunked, resumable parquet dataset."""
        from surrogate.dataset import DEFAULT_PROFILES
        from surrogate.dataset import sweep as run_sweep
        from twin.profile import Profile

        own = tuple(Profile.load(f) for f in profile_files)
        names = tuple(p.strip() for p in profiles.split(",")) if profiles else DEFAULT_PROFILES
        if own and profiles:
            names = tuple(dict.fromkeys([*names, *(p.name for p in own)]))
        say_if_compiling()
        stats = run_sweep(samples, seed, out, profiles=names, workers=workers, backend=backend,
                          chunk_size=chunk_size, quiet=quiet or as_json, user_profiles=own,
                          label_seeds=label_seeds)
        if as_json:
            print_json(stats.to_dict())
        else:
            console.print(_table("sweep", stats.to_dict()))

    @app.command("train")
    def train(
        datasets: list[Path] = typer.Argument(..., help="Sweep directories."),
        out: Path = typer.Option(..., "--out", help="Model directory to write."),
        iterations: int = typer.Option(1000, "--iterations"),
        depth: int = typer.Option(6, "--depth"),
        learning_rate: float = typer.Option(0.08, "--learning-rate"),
        threads: int = typer.Option(1, "--threads", help="CatBoost threads."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Train one surrogate per profile found in DATASETS and write them to --out."""
        from surrogate.train import train as run_train

        result = run_train([str(d) for d in datasets], out, iterations=iterations, depth=depth,
                           learning_rate=learning_rate, thread_count=threads,
                           recipe=f"placer surrogate train {' '.join(map(str, datasets))} --out {out} "
                                  f"--iterations {iterations} --depth {depth}")
        summary = {name: s.meta["validation"] for name, s in result.items()}
        if as_json:
            print_json(summary)
        else:
            for name, val in summary.items():
                console.print(_table(f"{name} (validation)", val))

    @app.command("eval")
    def evaluate(
        models: Path | None = typer.Option(None, "--models", help=MODELS_HELP),
        samples: int = typer.Option(300, "--samples", help="Fresh twin runs to score on."),
        seed: int = typer.Option(7, "--seed", help="Seed of the fresh sweep (not a training seed)."),
        dataset: Path | None = typer.Option(None, "--dataset", help="Keep the fresh sweep here (resumable)."),
        workers: int = typer.Option(2, "--workers"),
        real_runs: Path | None = typer.Option(
            None, "--real-runs", help="The real runs CSV (default: real_runs.csv of the calibration folder, "
            "PLACER_CALIBRATION_DIR or as twin.external finds it; skipped when not found)."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Score the surrogates on a fresh twin sweep and on the real dt_real runs."""
        from surrogate.evaluate import evaluate as run_eval
        from surrogate.evaluate import flat_metrics

        say_if_compiling()
        report = run_eval(models, n_samples=samples, seed=seed, dataset_dir=dataset, workers=workers,
                          real_runs=real_runs, quiet=as_json)
        if as_json:
            print_json({**flat_metrics(report), "report": report})
        else:
            console.print(_table("surrogate evaluation", flat_metrics(report)))
