"""twin.external: where the data from elsewhere is found, in which order, and the error when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.errors import InputError
from twin.external import checkout_root, data_dir, data_file, find_data_dir


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("PLACER_SHARED_DIR", "PLACER_TRACES_DIR", "PLACER_CALIBRATION_DIR"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_checkout_root_is_this_repository() -> None:
    root = checkout_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    assert (root / "twin" / "external.py").is_file()


def test_order_kind_variable_then_shared_variable_then_checkout(tmp_path: Path,
                                                               clean_env: pytest.MonkeyPatch) -> None:
    root = checkout_root()
    assert root is not None
    sibling = root.parent / "shared" / "traces"
    assert find_data_dir("traces") == (sibling if sibling.is_dir() else None)
    (tmp_path / "s" / "traces").mkdir(parents=True)
    clean_env.setenv("PLACER_SHARED_DIR", str(tmp_path / "s"))
    assert find_data_dir("traces") == tmp_path / "s" / "traces"
    assert find_data_dir("calibration") is None  # the variable wins: no fallback to another copy
    (tmp_path / "t").mkdir()
    clean_env.setenv("PLACER_TRACES_DIR", str(tmp_path / "t"))
    assert data_dir("traces") == tmp_path / "t"


def test_a_wrong_variable_is_not_replaced_by_another_copy(tmp_path: Path,
                                                          clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PLACER_CALIBRATION_DIR", str(tmp_path / "missing"))
    assert find_data_dir("calibration") is None
    with pytest.raises(InputError) as info:
        data_dir("calibration")
    message = str(info.value)
    assert message.startswith("calibration: the calibration folder is not available; tried "
                              f"$PLACER_CALIBRATION_DIR = {tmp_path / 'missing'}: download it from "
                              "https://github.com/FerranAgulloLopez/GPULLMAdapterOptimization")
    assert "\n" not in message


def test_data_file_takes_the_first_name_present(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PLACER_TRACES_DIR", str(tmp_path))
    (tmp_path / "b.csv").write_text("x")
    assert data_file("traces", "a.csv", "b.csv") == tmp_path / "b.csv"
    (tmp_path / "a.csv").write_text("x")
    assert data_file("traces", "a.csv", "b.csv") == tmp_path / "a.csv"
    with pytest.raises(InputError, match=r"^traces: c\.csv is not available; tried \$PLACER_TRACES_DIR"):
        data_file("traces", "c.csv")
