"""Estimators and the bundle: exported trees == CatBoost, save/load round trip, OOM is the exact rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from surrogate_fake import fake_simulate

from surrogate import FEATURE_SCHEMA_VERSION, Surrogate, features, features_for_groups, sweep, train
from surrogate._trees import export_trees
from surrogate.dataset import load_dataset
from surrogate.model import LatencyModel, StarvationModel, ThroughputModel
from surrogate.train import design_matrix, usable
from twin.errors import InputError
from twin.spec import Adapter, Instance

LLAMA = "llama-3.1-8b-instruct@h100-64gb"


@pytest.fixture(scope="module")
def fake_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    sweep(80, 3, out, workers=1, quiet=True, simulate=fake_simulate)
    return out


@pytest.fixture(scope="module")
def tiny_models(fake_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    train(fake_sweep, out, iterations=30, depth=4)
    return out


def test_exported_trees_equal_catboost() -> None:
    from catboost import CatBoostClassifier, CatBoostRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = X[:, 0] + np.sin(3 * X[:, 1])
    Xt = rng.normal(size=(200, 5))
    reg = CatBoostRegressor(iterations=40, depth=4, verbose=0, thread_count=1).fit(X, y)
    np.testing.assert_allclose(export_trees(reg).raw(Xt), reg.predict(Xt), rtol=1e-9, atol=1e-9)
    clf = CatBoostClassifier(iterations=40, depth=4, verbose=0, thread_count=1).fit(X, y > 0)
    raw = clf.predict(Xt, prediction_type="RawFormulaVal")
    np.testing.assert_allclose(export_trees(clf).raw(Xt), raw, rtol=1e-9, atol=1e-9)


def test_fit_returns_self_and_learns_the_fake(fake_sweep: Path) -> None:
    frame = usable(load_dataset(fake_sweep))
    X = design_matrix(frame)
    y = frame["sim_throughput_tok_s"].to_numpy()
    model = ThroughputModel(iterations=200, depth=4)
    assert model.fit(X, y) is model
    pred = model.predict(X)
    assert np.median(np.abs(pred - y) / y) < 0.05  # in-sample: it learned something
    clf = StarvationModel(iterations=30, depth=4)
    assert clf.fit(X, frame["sim_starved"].to_numpy()) is clf
    assert set(np.unique(clf.predict(X))) <= {True, False}


def test_save_load_round_trip_predicts_identically(tiny_models: Path, tmp_path: Path) -> None:
    a = Surrogate.load(tiny_models, LLAMA)
    a.save(tmp_path)
    b = Surrogate.load(tmp_path, LLAMA)
    rng = np.random.default_rng(5)
    inst = Instance("t", "llama-3.1-8b-instruct", "h100-64gb",
                    tuple(Adapter(f"a{i}", int(rng.choice([8, 16, 32])), float(rng.uniform(0.01, 1)))
                          for i in range(50)))
    groups = [rng.choice(50, size=int(rng.integers(1, 50)), replace=False) for _ in range(40)]
    pa, pb = a.predict_groups(inst, groups, 8), b.predict_groups(inst, groups, 8)
    np.testing.assert_array_equal(pa.throughput_tok_s, pb.throughput_tok_s)
    np.testing.assert_array_equal(pa.starved_probability, pb.starved_probability)
    assert a.predict(inst, 16) == b.predict(inst, 16)
    side = json.loads((tmp_path / f"{LLAMA}.throughput.cbm.json").read_text())
    assert side["feature_schema"]["version"] == FEATURE_SCHEMA_VERSION and side["meta"]["dataset_hash"]
    bundle = json.loads((tmp_path / f"{LLAMA}.surrogate.json").read_text())
    assert bundle["profile_version"] and bundle["dataset_hash"] == side["meta"]["dataset_hash"]


def test_models_record_the_max_num_seqs_range_they_were_trained_on(fake_sweep: Path, tiny_models: Path,
                                                                    tmp_path: Path) -> None:
    seqs = load_dataset(fake_sweep)["max_num_seqs"]
    assert seqs.nunique() > 1  # the sampler varies it
    bundle = Surrogate.load(tiny_models, LLAMA)
    side = json.loads((tiny_models / "joint.throughput.cbm.json").read_text())
    assert side["meta"]["trained_ranges"]["max_num_seqs"] == [seqs.min(), seqs.max()]
    assert bundle.trained_range("max_num_seqs", "throughput") == (seqs.min(), seqs.max())
    assert bundle.trained_range("max_num_seqs") == (seqs.min(), seqs.max())  # no latency models here
    assert bundle.trained_range("max_num_seqs", "latency") is None
    narrower = Surrogate(bundle.throughput, StarvationModel(), latency={"ttft_p99_s": LatencyModel()})
    narrower.starvation.meta_["trained_ranges"] = {"max_num_seqs": [2048.0, 2048.0]}  # an older model
    assert narrower.trained_range("max_num_seqs") == (2048.0, 2048.0)  # latency model: records nothing
    narrower.starvation.meta_["trained_ranges"] = {"max_num_seqs": [1.0, 16.0]}
    assert narrower.trained_range("max_num_seqs") is None  # no overlap
    with pytest.raises(InputError, match="kind"):
        bundle.trained_range("max_num_seqs", "speed")


def test_single_equals_batched(tiny_models: Path) -> None:
    s = Surrogate.load(tiny_models, LLAMA)
    inst = Instance("t", "llama-3.1-8b-instruct", "h100-64gb",
                    tuple(Adapter(f"a{i}", 16, 0.1 * (i + 1)) for i in range(6)))
    one = s.predict(inst, 4)
    many = s.predict_groups(inst, [np.arange(6)], [4])[0]
    assert one == many


def test_oom_is_the_exact_rule_not_learned(tiny_models: Path) -> None:
    s = Surrogate.load(tiny_models, LLAMA)
    inst = Instance("t", "llama-3.1-8b-instruct", "h100-64gb", (Adapter("a", 64, 0.1),))
    big = s.predict(inst, 400, max_cpu_loras=400)  # 400 slots × rank 64 cannot fit next to a 131k context
    assert big.oom and big.throughput_tok_s == 0.0 and not big.starved
    assert not s.predict(inst, 1).oom


def test_refuses_a_model_of_another_feature_schema(tiny_models: Path, tmp_path: Path) -> None:
    Surrogate.load(tiny_models, LLAMA).save(tmp_path)
    side = tmp_path / f"{LLAMA}.throughput.cbm.json"
    doc = json.loads(side.read_text())
    doc["feature_schema"]["version"] = 999
    side.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="feature schema"):
        Surrogate.load(tmp_path, LLAMA)


def test_wrong_profile_is_an_input_error(tiny_models: Path) -> None:
    s = Surrogate.load(tiny_models, LLAMA)
    qwen = Instance("t", "qwen-2.5-7b-instruct", "h100-64gb", (Adapter("a", 8, 0.1),))
    with pytest.raises(InputError):
        s.predict(qwen, 1)
    assert features(qwen, 1).shape == features_for_groups(qwen, [[0]], 1)[0].shape


def test_models_trained_on_another_profile_version_are_flagged(tiny_models: Path, tmp_path: Path) -> None:
    from surrogate.bundle import StaleSurrogateWarning, load_surrogate, profile_mismatch

    fresh = Surrogate.load(tiny_models, LLAMA)
    assert profile_mismatch(fresh) is None  # trained just now on the current profile
    Surrogate(fresh.throughput, fresh.starvation, name=LLAMA,
              meta={**fresh.meta, "profile_sha256": "0" * 16, "profile_version": "0.9"}).save(tmp_path)
    with pytest.warns(StaleSurrogateWarning, match="v0.9"):
        load_surrogate("llama-3.1-8b-instruct", "h100-64gb", tmp_path)


@pytest.mark.parametrize("name", ["llama-3.1-8b-instruct@h100-64gb", "qwen-2.5-7b-instruct@h100-64gb"])
def test_shipped_models_were_trained_on_the_shipped_profiles(name: str) -> None:
    from surrogate.bundle import default_models_dir, profile_mismatch

    assert profile_mismatch(Surrogate.load(default_models_dir(), name)) is None


@pytest.mark.parametrize("name", ["llama-3.1-8b-instruct@h100-64gb", "qwen-2.5-7b-instruct@h100-64gb"])
def test_shipped_models_record_the_max_num_seqs_they_have_seen(name: str) -> None:
    from surrogate.bundle import default_models_dir

    bundle = Surrogate.load(default_models_dir(), name)
    for kind in ("throughput", "starvation", "latency"):  # trained on sampler-5 sweeps: vLLM's default only
        assert bundle.trained_range("max_num_seqs", kind) == (2048.0, 2048.0)
    assert bundle.trained_range("max_num_seqs") == (2048.0, 2048.0)


@pytest.mark.parametrize(("inputs", "base"), [("features", "none"), ("stacked", "queue")])
def test_latency_model_round_trip_with_stacked_inputs_and_queue_base(fake_sweep: Path, tiny_models: Path,
                                                                    tmp_path: Path, inputs: str,
                                                                    base: str) -> None:
    from catboost import Pool

    from surrogate.model import queue_prior_s, stacked_columns

    frame = usable(load_dataset(fake_sweep))
    X = design_matrix(frame)
    bundle = Surrogate.load(tiny_models, LLAMA)
    pred = bundle.predict_features(X)
    stack = stacked_columns(X, pred.throughput_tok_s, pred.starved_probability)
    y = queue_prior_s(X) * np.exp(0.3 * np.sin(X[:, 0]))  # a latency the prior explains up to a factor
    model = LatencyModel(target="ttft_p99_s", inputs=inputs, base=base, iterations=60, depth=4)
    given = stack if model.stacked else None
    p = model.fit(X, y, given).predict(X, given)
    Z = np.hstack([X, stack]) if model.stacked else X
    offset = np.log(queue_prior_s(X)) if base == "queue" else None
    raw = model.model_.predict(Pool(Z, baseline=offset) if offset is not None else Z)
    np.testing.assert_allclose(np.log(p), raw, atol=1e-5)  # exported trees + base == CatBoost (float32 base)
    model.save(tmp_path / "m.cbm")
    again = LatencyModel.load(tmp_path / "m.cbm")
    assert (again.inputs, again.base) == (inputs, base)
    np.testing.assert_allclose(again.predict(X, given), p, rtol=1e-12)
    if model.stacked:
        with pytest.raises(InputError, match="stack"):
            again.predict(X)


@pytest.mark.parametrize("inputs", ["features", "stacked"])
def test_retraining_throughput_keeps_latency_models_that_do_not_read_it(fake_sweep: Path, tiny_models: Path,
                                                                         tmp_path: Path, inputs: str) -> None:
    # Latency models on the features alone survive a retrain of the throughput and starvation models into
    # the same folder (same predictions, same latency meta); stacked ones read those models' outputs, so
    # they are dropped rather than silently fed by other models.
    from surrogate.model import stacked_columns

    shutil.copytree(tiny_models, tmp_path / "m")
    X = design_matrix(usable(load_dataset(fake_sweep)))
    base = Surrogate.load(tmp_path / "m", LLAMA)
    pred = base.predict_features(X)
    stack = stacked_columns(X, pred.throughput_tok_s, pred.starved_probability)
    model = LatencyModel(target="ttft_p99_s", inputs=inputs, iterations=20, depth=3)
    model.fit(X, 0.1 * np.exp(0.3 * np.sin(X[:, 0])), stack if model.stacked else None)
    for name in (LLAMA, "qwen-2.5-7b-instruct@h100-64gb"):
        b = Surrogate.load(tmp_path / "m", name)
        Surrogate(b.throughput, b.starvation, name=name, meta={**b.meta, "latency": {"recipe": "test"}},
                  latency={"ttft_p99_s": model}).save(tmp_path / "m", models_prefix="joint")
    expected = model.predict(X, stack if model.stacked else None)
    train(fake_sweep, tmp_path / "m", iterations=20, depth=3, seed=1)
    after = Surrogate.load(tmp_path / "m", LLAMA)
    if inputs == "features":
        assert after.latency_targets() == ("ttft_p99_s",) and after.meta["latency"] == {"recipe": "test"}
        np.testing.assert_allclose(after.predict_features(X, ("ttft_p99_s",)).latency["ttft_p99_s"], expected)
    else:
        assert not after.latency and "latency" not in after.meta
