"""Traces load (public ones from the external folder, trace-like ones from the package), are immutable, and
bad trace files or missing public traces give one-line InputErrors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from external_data import external_file

from twin.errors import InputError
from twin.traces import load_trace, public_traces, shipped_traces


def test_public_traces_match_their_published_summary() -> None:
    external_file("traces", "azure_conv_2023.csv")
    external_file("traces", "azure_code_2023.csv")
    conv = load_trace("azure_conv_2023")
    assert conv.n_requests == 19_366
    assert conv.span_s == pytest.approx(3501.721937)
    assert conv.input_tokens.mean() == pytest.approx(1155, abs=1)
    assert conv.output_tokens.mean() == pytest.approx(211, abs=1)
    code = load_trace("azure_code_2023")
    assert code.n_requests == 8_819
    assert np.all(np.diff(code.arrival_s) >= 0)


def test_shipped_names_are_the_trace_like_ones_and_load_anywhere() -> None:
    assert set(shipped_traces()) == {"azure-like-conv", "azure-like-code"}
    assert set(public_traces()) == {"azure_conv_2023", "azure_code_2023"}
    conv = load_trace("azure-like-conv")
    assert conv.name == "azure-like-conv"
    assert 0.95 * 19_366 < conv.n_requests < 1.05 * 19_366  # the measured volume, one seeded sample
    assert conv.span_s < 3501.721937


def test_trace_arrays_are_read_only() -> None:
    tr = load_trace("azure-like-code")
    with pytest.raises(ValueError):
        tr.arrival_s[0] = 5.0
    with pytest.raises(ValueError):
        tr.output_tokens[0] = 5


def test_trace_from_path_is_sorted(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("num_decode_tokens,arrived_at,num_prefill_tokens\n5,2.0,10\n7,0.5,20\n")
    tr = load_trace(p)
    assert tr.arrival_s.tolist() == [0.5, 2.0]
    assert tr.input_tokens.tolist() == [20, 10]
    assert tr.output_tokens.tolist() == [7, 5]
    assert tr.span_s == 1.5
    assert tr.name == str(p)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("arrived_at,num_prefill_tokens\n0,1\n1,2\n", "num_decode_tokens: missing column"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,-2,3\n",
         "num_prefill_tokens: must be finite and non-negative (got -2 on line 3)"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,x,3\n", "not a numeric trace"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n", "needs at least two requests"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,0\n1,1,1\n",
         "num_decode_tokens: must be an integer ≥ 1 (got 0 on line 2)"),
        ("", "empty trace file"),
    ],
)
def test_bad_trace_files(tmp_path: Path, content: str, expected: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(InputError) as info:
        load_trace(p)
    message = str(info.value)
    assert message.startswith(f"{p}: ")
    assert expected in message
    assert "\n" not in message


def test_unknown_trace_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"trace: unknown trace \(got 'azure_chat'; known: azure-like-code"):
        load_trace("azure_chat")
    with pytest.raises(InputError, match="cannot read trace"):
        load_trace(tmp_path / "nope.csv")


def test_public_trace_missing_says_where_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLACER_TRACES_DIR", str(tmp_path))
    with pytest.raises(InputError) as info:
        load_trace("azure_conv_2023")
    message = str(info.value)
    assert message.startswith("trace: azure_conv_2023 is not shipped: azure_conv_2023.csv is not available")
    assert "https://github.com/Azure/AzurePublicDataset" in message and "PLACER_TRACES_DIR" in message
    assert "\n" not in message


def test_public_trace_read_from_the_folder_in_either_layout(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLACER_TRACES_DIR", str(tmp_path))
    (tmp_path / "AzureLLMInferenceTrace_code.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,4808,10\n"
        "2023-11-16 18:15:46.7325900,3180,8\n"
        "2023-11-16 18:16:47.0000000,110,27\n")
    code = load_trace("azure_code_2023")  # the original download
    assert code.arrival_s.tolist() == pytest.approx([0.0, 0.052, 60.31941])
    assert code.input_tokens.tolist() == [4808, 3180, 110] and code.output_tokens.tolist() == [10, 8, 27]
    (tmp_path / "azure_code_2023.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                                                  "0.0,4808,10\n0.052,3180,8\n")
    assert load_trace("azure_code_2023").n_requests == 2  # the processed file is preferred


def test_bad_azure_timestamp_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n2023-11-16 18:15:46,1,1\n")
    with pytest.raises(InputError, match=r"a\.csv: not a readable Azure trace \(") as info:
        load_trace(p)
    assert "\n" not in str(info.value)
