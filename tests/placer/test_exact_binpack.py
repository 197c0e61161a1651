"""Classic bin packing: BPPLIB reading (table of broken files), known optima, triplets, arc-flow decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_run import run_cli

from placer.exact.arcflow import build_graph, decode, packing_flows
from placer.exact.binpack import (
    BinPackInstance,
    packing_model,
    parse_bpp,
    read_bpp,
    solve_binpack,
    triplet_instance,
)
from placer.exact.packing import first_fit_decreasing
from twin.errors import InputError

SHIPPED = Path(__file__).resolve().parents[2] / "instances" / "binpack"


@pytest.fixture()
def invoke():
    """Run the console script in-process: (exit code, stdout, stderr)."""
    return run_cli


@pytest.mark.parametrize("solver", ["cpsat", "ilp", "ffd"])
@pytest.mark.parametrize("name,optimum", [("tiny_n6.txt", 3), ("small_n8.txt", 3)])
def test_known_optima_of_small_files(solver: str, name: str, optimum: int) -> None:
    result = solve_binpack(read_bpp(SHIPPED / name), solver=solver, time_limit=10)
    assert result.num_bins == optimum and result.lower_bound == optimum and result.status == "optimal"
    weights = read_bpp(SHIPPED / name).weights
    assert sorted(i for b in result.bins for i in b) == list(range(len(weights)))
    assert all(weights[list(b)].sum() <= read_bpp(SHIPPED / name).capacity for b in result.bins)


def test_exact_solvers_beat_ffd_when_ffd_is_not_optimal() -> None:
    # capacity 10: FFD packs 4+4 | 3+3+2+... badly; the optimum {4,3,3} {4,3,3}... is 2 bins of exactly 10
    inst = BinPackInstance("t", 10, np.array([4, 4, 3, 3, 3, 3]))
    assert solve_binpack(inst, solver="ffd").num_bins == 3
    for solver in ("cpsat", "ilp"):
        r = solve_binpack(inst, solver=solver, time_limit=10)
        assert (r.num_bins, r.status) == (2, "optimal")


BROKEN = [
    ("", "header: expected the item count and the capacity on the first two lines"),
    ("3\n", "header: expected the item count and the capacity on the first two lines"),
    ("x\n10\n1\n", "line 1: item count must be an integer (got 'x')"),
    ("2\n0\n1\n1\n", "line 2: capacity must be positive (got 0)"),
    ("2\n10\n1\n", "line 3: item count 2 does not match the 1 weights listed"),
    ("1\n10\n1\n2\n", "line 4: item count 1 does not match the 2 weights listed"),
    ("2\n10\n1\n2.5\n", "line 4: weight must be an integer (got '2.5')"),
    ("2\n10\n1\n-3\n", "line 4: weight must be positive (got -3)"),
    ("2\n10\n1\n11\n", "line 4: weight 11 exceeds the capacity 10"),
    ("2\n10\n1 2\n3\n", "line 3: expected one number per line (got '1 2')"),
]


@pytest.mark.parametrize("text,message", BROKEN)
def test_broken_files_give_one_line_errors_and_exit_2(tmp_path: Path, invoke, text: str,
                                                      message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_bpp(path)
    assert str(info.value) == f"{path}: {message}"
    code, out, err = invoke("binpack", str(path))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_missing_file_and_unknown_solver_exit_2(tmp_path: Path, invoke) -> None:
    code, _, err = invoke("binpack", str(tmp_path / "nope.txt"))
    assert code == 2 and "cannot read bin-packing file" in err
    code, _, err = invoke("binpack", str(SHIPPED / "tiny_n6.txt"), "--solver", "magic")
    assert code == 2 and "unknown bin-packing solver" in err


def test_cli_json(invoke) -> None:
    code, out, _ = invoke("binpack", str(SHIPPED / "small_n8.txt"), "--solver", "cpsat", "--json")
    assert code == 0
    doc = json.loads(out)
    assert (doc["num_bins"], doc["lower_bound"], doc["status"]) == (3, 3, "optimal")


def test_text_round_trip() -> None:
    inst = triplet_instance(60, 3)
    again = parse_bpp(inst.to_text())
    assert again.capacity == inst.capacity and (again.weights == inst.weights).all()


@pytest.mark.parametrize("n,seed", [(60, 0), (120, 1), (249, 2)])
def test_triplets_are_triplets(n: int, seed: int) -> None:
    inst = triplet_instance(n, seed)
    w = inst.weights
    assert w.size == n and w.sum() == 1000 * n // 3
    assert (w > 250).all() and (w < 500).all()  # so every bin holds exactly 3 items in an optimal packing
    assert (triplet_instance(n, seed).weights == w).all()  # seeded
    with pytest.raises(InputError):
        triplet_instance(61, 0)


def test_arcflow_round_trip_of_a_packing() -> None:
    inst = triplet_instance(30, 5)
    model = packing_model(inst)
    start = first_fit_decreasing(model)
    graph = build_graph(model.weights, inst.capacity)
    assert graph is not None
    flow, loss = packing_flows(graph, model, start)
    back = decode(graph, model, flow, loss)
    assert back is not None and back.is_valid(model) and back.num_bins == start.num_bins


def test_triplet_60_is_solved_to_optimality_by_the_ilp() -> None:
    inst = triplet_instance(60, 0)
    r = solve_binpack(inst, solver="ilp", time_limit=60)
    assert (r.num_bins, r.lower_bound, r.status) == (20, 20, "optimal")


def test_triplet_60_is_solved_to_optimality_by_cpsat() -> None:
    r = solve_binpack(triplet_instance(60, 0), solver="cpsat", time_limit=60)
    assert (r.num_bins, r.lower_bound, r.status) == (20, 20, "optimal")


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["cpsat", "ilp"])
def test_triplet_120_is_solved_to_optimality(solver: str) -> None:
    r = solve_binpack(triplet_instance(120, 1), solver=solver, time_limit=60)
    assert (r.num_bins, r.lower_bound, r.status) == (40, 40, "optimal")
