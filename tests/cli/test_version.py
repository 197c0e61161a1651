"""``placer --version`` / ``-V``: the installed version, or plainly that it is not installed."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pytest

import placer.cli.app as cli_app


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_installed_metadata_version(cli, flag: str) -> None:
    code, out, err = cli(flag)
    assert (code, err) == (0, "")
    assert out == f"placer {version('lora-placer')}\n"


def test_version_without_the_distribution_says_so(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(cli_app, "version", missing)
    code, out, _ = cli("--version")
    assert code == 0
    assert out.startswith("placer unknown (lora-placer is not installed")
