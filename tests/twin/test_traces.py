"""The shipped traces load, are immutable, and bad trace files give one-line InputErrors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twin.errors import InputError
from twin.traces import load_trace, shipped_traces


def test_shipped_traces_match_their_published_summary() -> None:
    assert set(shipped_traces()) == {"azure_conv_2023", "azure_code_2023"}
    conv = load_trace("azure_conv_2023")
    assert conv.n_requests == 19_366
    assert conv.span_s == pytest.approx(3501.721937)
    assert conv.input_tokens.mean() == pytest.approx(1155, abs=1)
    assert conv.output_tokens.mean() == pytest.approx(211, abs=1)
    code = load_trace("azure_code_2023")
    assert code.n_requests == 8_819
    assert np.all(np.diff(code.arrival_s) >= 0)


def test_trace_arrays_are_read_only() -> None:
    tr = load_trace("azure_code_2023")
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
    with pytest.raises(InputError, match=r"trace: unknown trace \(got 'azure_chat'"):
        load_trace("azure_chat")
    with pytest.raises(InputError, match="cannot read trace"):
        load_trace(tmp_path / "nope.csv")
