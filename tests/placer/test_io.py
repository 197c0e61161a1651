"""Instance files: one broken file per validation rule (exact one-line error, exit code 2), round trips."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from placer.cli.app import main
from placer.problem.generate import generate
from placer.problem.io import instance_from_dict, instance_to_dict, read_instance, write_instance
from twin.catalogue import load_profile
from twin.errors import InputError
from twin.spec import ALLOWED_RANKS

EXAMPLES = Path(__file__).resolve().parents[2] / "instances" / "examples"
RANKS = str(list(ALLOWED_RANKS))
TOP = "format_version, name, model, gpu, server, workload, slo, adapters, adapters_csv, rate_profile"

HEAD = "name: t\nmodel: llama-3.1-8b-instruct\ngpu: h100-64gb\n"
ADAPTERS = "adapters:\n  - {id: a0, rank: 16, rate_rps: 0.4}\n  - {id: a1, rank: 8, rate_rps: 0.05}\n"
GOOD = HEAD + ADAPTERS
CSV_HEAD = HEAD + "adapters_csv: t.csv\n"

# (case id, instance file name, {file name: content}, expected error; {f} = instance path, {c} = CSV path)
CASES: list[tuple[str, str, dict[str, str], str]] = [
    ("unknown-top-field", "i.yaml", {"i.yaml": GOOD + "colour: red\n"},
     f"{{f}}: colour: unknown field (allowed: {TOP}) (got 'colour')"),
    ("unknown-server-field", "i.yaml", {"i.yaml": GOOD + "server: {max_loras: 8}\n"},
     "{f}: server.max_loras: unknown field (allowed: max_num_batched_tokens, max_num_seqs, max_model_len, "
     "gpu_memory_utilization) (got 'max_loras')"),
    ("unknown-workload-field", "i.yaml", {"i.yaml": GOOD + "workload: {rate: 3}\n"},
     "{f}: workload.rate: unknown field (allowed: duration_s, arrival, cv, trace, lengths) (got 'rate')"),
    ("unknown-adapter-field", "i.yaml", {"i.yaml": HEAD + "adapters:\n  - {id: a0, rank: 16, rate: 0.4}\n"},
     "{f}: adapters[0].rate: unknown field (allowed: id, rank, rate_rps) (got 'rate')"),
    ("missing-name", "i.yaml", {"i.yaml": GOOD.replace("name: t\n", "")}, "{f}: name: is missing"),
    ("missing-model", "i.yaml", {"i.yaml": GOOD.replace("model: llama-3.1-8b-instruct\n", "")},
     "{f}: model: is missing"),
    ("missing-gpu", "i.yaml", {"i.yaml": GOOD.replace("gpu: h100-64gb\n", "")}, "{f}: gpu: is missing"),
    ("missing-adapters", "i.yaml", {"i.yaml": HEAD},
     "{f}: adapters: is missing (give adapters or adapters_csv)"),
    ("missing-adapter-rate", "i.yaml", {"i.yaml": HEAD + "adapters:\n  - {id: a0, rank: 16}\n"},
     "{f}: adapters[0].rate_rps: is missing"),
    ("both-adapter-sources", "i.yaml", {"i.yaml": GOOD + "adapters_csv: t.csv\n"},
     "{f}: adapters_csv: cannot be given together with adapters (got 't.csv')"),
    ("wrong-type-name", "i.yaml", {"i.yaml": GOOD.replace("name: t", "name: 5")},
     "{f}: name: must be a non-empty string (got 5)"),
    ("wrong-type-rank", "i.yaml", {"i.yaml": GOOD.replace("rank: 16", "rank: '16'")},
     f"{{f}}: adapters[0].rank: must be one of {RANKS} (got '16')"),
    ("wrong-type-rate", "i.yaml", {"i.yaml": GOOD.replace("0.4", "fast")},
     "{f}: adapters[0].rate_rps: must be a number (got 'fast')"),
    ("wrong-type-adapters", "i.yaml", {"i.yaml": HEAD + "adapters: {id: a0}\n"},
     "{f}: adapters: must be a list of {{id, rank, rate_rps}} (got {{'id': 'a0'}})"),
    ("wrong-type-server-int", "i.yaml", {"i.yaml": GOOD + "server: {max_num_seqs: 20.5}\n"},
     "{f}: server.max_num_seqs: must be an integer (got 20.5)"),
    ("wrong-type-top", "i.yaml", {"i.yaml": "- a\n- b\n"},
     "{f}: must be a mapping with name, model, gpu, adapters (got 'list')"),
    ("empty-file", "i.yaml", {"i.yaml": ""},
     "{f}: is empty (expected a mapping with name, model, gpu, adapters)"),
    ("zero-rate", "i.yaml", {"i.yaml": GOOD.replace("0.4", "0")},
     "{f}: adapters[0].rate_rps: must be positive (got 0)"),
    ("negative-rate", "i.yaml", {"i.yaml": GOOD.replace("0.05", "-0.05")},
     "{f}: adapters[1].rate_rps: must be positive (got -0.05)"),
    ("nan-rate", "i.yaml", {"i.yaml": GOOD.replace("0.05", ".nan")},
     "{f}: adapters[1].rate_rps: must be finite (got nan)"),
    ("zero-duration", "i.yaml", {"i.yaml": GOOD + "workload: {duration_s: 0}\n"},
     "{f}: workload.duration_s: must be positive (got 0)"),
    ("utilization-above-1", "i.yaml", {"i.yaml": GOOD + "server: {gpu_memory_utilization: 1.5}\n"},
     "{f}: server.gpu_memory_utilization: must be in (0, 1] (got 1.5)"),
    ("duplicate-id", "i.yaml", {"i.yaml": GOOD.replace("id: a1", "id: a0")},
     "{f}: adapters[1].id: is a duplicate adapter id (got 'a0')"),
    ("rank-not-allowed", "i.yaml", {"i.yaml": GOOD.replace("rank: 8", "rank: 7")},
     f"{{f}}: adapters[1].rank: must be one of {RANKS} (got 7)"),
    ("no-adapters", "i.yaml", {"i.yaml": HEAD + "adapters: []\n"},
     "{f}: adapters: must list at least one adapter (got [])"),
    ("unknown-model", "i.yaml", {"i.yaml": GOOD.replace("llama-3.1-8b-instruct", "gpt-5")},
     "{f}: model: unknown model profile (got 'gpt-5'; accepted: gemma-2-9b-it, llama-2-13b-chat, "
     "llama-2-7b-chat, llama-3.1-8b-instruct, mistral-7b-instruct-v0.3, opt-1.3b, opt-2.7b, "
     "phi-3-medium-4k-instruct, qwen-2.5-14b-instruct, qwen-2.5-7b-instruct)"),
    ("unknown-gpu", "i.yaml", {"i.yaml": GOOD.replace("h100-64gb", "a100-40gb")},
     "{f}: gpu: unknown GPU profile (got 'a100-40gb'; accepted: a100-80gb, h100-64gb, h100-80gb, "
     "h100-pcie-80gb, h200-141gb, l40s-48gb)"),
    ("format-version", "i.yaml", {"i.yaml": "format_version: 2\n" + GOOD},
     "{f}: format_version: must be 1 (got 2)"),
    ("unknown-arrival", "i.yaml", {"i.yaml": GOOD + "workload: {arrival: bursty}\n"},
     "{f}: workload.arrival: must be one of ['poisson', 'gamma', 'unpredictable', 'trace'] (got 'bursty')"),
    ("gamma-without-cv", "i.yaml", {"i.yaml": GOOD + "workload: {arrival: gamma}\n"},
     "{f}: workload.cv: is required with arrival: gamma (got None)"),
    ("unknown-trace", "i.yaml", {"i.yaml": GOOD + "workload: {arrival: trace, trace: azure_chat}\n"},
     "{f}: workload.trace: is neither a known trace (azure-like-code, azure-like-conv, azure_code_2023, "
     "azure_conv_2023) nor a readable file (got 'azure_chat')"),
    ("unknown-lengths", "i.yaml", {"i.yaml": GOOD + "workload: {lengths: alpaca}\n"},
     "{f}: workload.lengths: must be 'sharegpt', {{trace: NAME}} or {{input_mean, input_std, output_mean, "
     "output_std}} (got 'alpaca')"),
    ("lengths-missing-key", "i.yaml",
     {"i.yaml": GOOD + "workload: {lengths: {input_mean: 100, input_std: 10, output_mean: 50}}\n"},
     "{f}: workload.lengths.output_std: is missing"),
    ("missing-file", "nope.yaml", {},
     "{f}: cannot read instance file (FileNotFoundError: No such file or directory)"),
    ("bad-yaml", "i.yaml", {"i.yaml": HEAD + "adapters: [\n"},
     "{f}: invalid YAML (line 5, column 1: did not find expected node content)"),
    ("bad-json", "i.json", {"i.json": '{"name": "t",, "model": 1}'},
     "{f}: invalid JSON (line 1, column 14: Expecting property name enclosed in double quotes)"),
    ("duplicate-yaml-key", "i.yaml", {"i.yaml": GOOD + "name: u\n"},
     "{f}: invalid YAML (line 7, column 1: duplicate key 'name')"),
    ("duplicate-json-key", "i.json", {"i.json": '{"name": "t", "model": "m", "name": "u"}'},
     "{f}: invalid JSON (duplicate key 'name')"),
    ("csv-missing-file", "i.yaml", {"i.yaml": CSV_HEAD},
     "{c}: cannot read adapters CSV (FileNotFoundError: No such file or directory)"),
    ("csv-missing-column", "i.yaml", {"i.yaml": CSV_HEAD, "t.csv": "id,rank\na0,16\n"},
     "{c}: line 1: column rate_rps: is missing"),
    ("csv-unknown-column", "i.yaml", {"i.yaml": CSV_HEAD, "t.csv": "id,rank,rate_rps,slo\na0,16,0.4,1\n"},
     "{c}: line 1: unknown column (allowed: id, rank, rate_rps) (got 'slo')"),
    ("csv-bad-rank", "i.yaml", {"i.yaml": CSV_HEAD, "t.csv": "id,rank,rate_rps\na0,16,0.4\na1,7,0.1\n"},
     f"{{c}}: line 3: rank: must be one of {RANKS} (got 7)"),
    ("csv-float-rank", "i.yaml", {"i.yaml": CSV_HEAD, "t.csv": "id,rank,rate_rps\na0,16.0,0.4\n"},
     "{c}: line 2: rank: must be an integer (got '16.0')"),
    ("csv-bad-rate", "i.yaml", {"i.yaml": CSV_HEAD, "t.csv": "id,rank,rate_rps\na0,16,lots\n"},
     "{c}: line 2: rate_rps: must be a number (got 'lots')"),
    ("csv-zero-rate", "i.yaml", {"i.yaml": CSV_HEAD, "t.csv": "id,rank,rate_rps\na0,16,0\n"},
     "{c}: line 2: rate_rps: must be positive (got 0.0)"),
    ("csv-duplicate-id", "i.yaml", {"i.yaml": CSV_HEAD, "t.csv": "id,rank,rate_rps\na0,16,0.4\na0,8,0.1\n"},
     "{c}: line 3: id: is a duplicate adapter id (got 'a0')"),
    ("csv-short-row", "i.yaml", {"i.yaml": CSV_HEAD, "t.csv": "id,rank,rate_rps\na0,16\n"},
     "{c}: line 2: expected 3 fields (got 2)"),
    ("csv-empty", "i.yaml", {"i.yaml": CSV_HEAD, "t.csv": "id,rank,rate_rps\n"},
     "{c}: lists no adapters (need at least one row)"),
]


def _materialise(tmp_path: Path, name: str, files: dict[str, str]) -> tuple[Path, Path]:
    for fname, content in files.items():
        (tmp_path / fname).write_text(content)
    return tmp_path / name, tmp_path / "t.csv"


def run_main(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
             ) -> tuple[int, str, str]:
    """Run the console script's ``main`` in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["placer", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.mark.parametrize(("name", "files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_file_gives_exact_error(tmp_path: Path, name: str, files: dict[str, str],
                                       expected: str) -> None:
    path, csv_path = _materialise(tmp_path, name, files)
    with pytest.raises(InputError) as info:
        read_instance(path)
    assert str(info.value) == expected.format(f=path, c=csv_path)


@pytest.mark.parametrize(("name", "files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_file_exits_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], name: str,
                                           files: dict[str, str], expected: str) -> None:
    path, csv_path = _materialise(tmp_path, name, files)
    code, out, err = run_main(["show", str(path)], monkeypatch, capsys)
    assert code == 2
    assert out == ""
    assert err == "error: " + expected.format(f=path, c=csv_path) + "\n"
    assert "Traceback" not in err


@pytest.mark.parametrize("case", ["unknown-model", "bad-yaml", "csv-bad-rank"])
def test_console_script_exit_code_2(tmp_path: Path, case: str) -> None:
    _, name, files, expected = next(c for c in CASES if c[0] == case)
    path, csv_path = _materialise(tmp_path, name, files)
    proc = subprocess.run([sys.executable, "-m", "placer", "show", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == "error: " + expected.format(f=path, c=csv_path)
    assert proc.stderr.count("\n") == 1


def test_good_file_reads_with_defaults(tmp_path: Path) -> None:
    path, _ = _materialise(tmp_path, "i.yaml", {"i.yaml": GOOD})
    inst = read_instance(path)
    assert inst.ids == ("a0", "a1")
    assert inst.ranks.tolist() == [16, 8]
    assert inst.total_rate_rps == pytest.approx(0.45)
    assert inst.workload.arrival == "poisson" and inst.workload.duration_s == 3600.0
    assert inst.workload.lengths.kind == "sharegpt"


def test_lengths_spellings(tmp_path: Path) -> None:
    path = tmp_path / "i.yaml"
    path.write_text(GOOD + "workload:\n  lengths: {trace: azure-like-code}\n")
    lengths = read_instance(path).workload.lengths
    assert (lengths.kind, lengths.trace) == ("trace", "azure-like-code")
    path.write_text(GOOD + "workload:\n  lengths: {input_mean: 100, input_std: 10, output_mean: 50, "
                    "output_std: 0}\n")
    lengths = read_instance(path).workload.lengths
    assert (lengths.kind, lengths.input_mean, lengths.output_std) == ("normal", 100.0, 0.0)


def test_public_trace_not_found_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PLACER_TRACES_DIR", str(tmp_path / "none"))
    path = tmp_path / "i.yaml"
    path.write_text(GOOD + "workload: {arrival: trace, trace: azure_conv_2023}\n")
    code, out, err = run_main(["show", str(path)], monkeypatch, capsys)
    assert code == 2 and out == ""
    line = err.strip()
    assert "\n" not in line
    assert line.startswith(f"error: {path}: workload.trace: azure_conv_2023 is not shipped: ")
    assert "https://github.com/Azure/AzurePublicDataset" in line and "PLACER_TRACES_DIR" in line


def test_public_trace_name_is_kept_when_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLACER_TRACES_DIR", str(tmp_path))
    (tmp_path / "azure_code_2023.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                                                  "0,5,5\n2,6,6\n")
    path = tmp_path / "i.yaml"
    path.write_text(GOOD + "workload: {arrival: trace, trace: azure_code_2023}\n")
    inst = read_instance(path)
    assert inst.workload.trace == "azure_code_2023"  # a name, never the machine's path
    write_instance(inst, tmp_path / "j.yaml")
    assert "trace: azure_code_2023\n" in (tmp_path / "j.yaml").read_text()


def test_trace_path_is_relative_to_the_instance_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    trace_csv = "arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\n2,6,6\n"
    (tmp_path / "data" / "my.csv").write_text(trace_csv)
    path = tmp_path / "i.yaml"
    path.write_text(GOOD + "workload: {arrival: trace, trace: data/my.csv}\n")
    inst = read_instance(path)
    assert Path(str(inst.workload.trace)) == (tmp_path / "data" / "my.csv").resolve()
    out = tmp_path / "j.yaml"
    write_instance(inst, out)
    assert "trace: data/my.csv" in out.read_text()
    assert read_instance(out) == inst


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_are_valid_and_canonical(tmp_path: Path, example: str) -> None:
    inst = read_instance(EXAMPLES / example)
    out = tmp_path / example
    write_instance(inst, out)
    assert out.read_text() == (EXAMPLES / example).read_text()  # writing what was read gives the same content
    for csv_file in tmp_path.glob("*.csv"):
        assert csv_file.read_text() == (EXAMPLES / csv_file.name).read_text()
    assert read_instance(out) == inst


def test_example_sizes() -> None:
    sizes = {p.stem: read_instance(p).n_adapters for p in EXAMPLES.glob("*.yaml")}
    assert 4 <= sizes["tiny"] <= 6
    assert sizes["medium"] == 128
    assert sizes["large"] == 2000
    assert read_instance(EXAMPLES / "qwen.yaml").model == "qwen-2.5-7b-instruct"
    assert read_instance(EXAMPLES / "trace.yaml").workload.arrival == "trace"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_write_read_write_is_stable(tmp_path: Path, suffix: str) -> None:
    inst = generate("dirichlet", 300, seed=3, arrival="gamma", cv=2.5)
    first = tmp_path / f"a{suffix}"
    write_instance(inst, first)
    again = read_instance(first)
    assert again == inst
    second = tmp_path / f"b{suffix}"
    write_instance(again, second)
    assert second.read_text() == first.read_text().replace("a.adapters.csv", "b.adapters.csv")


def test_dict_round_trip_and_csv_choice(tmp_path: Path) -> None:
    inst = generate("zipf", 5, seed=1)
    assert instance_from_dict(instance_to_dict(inst)) == inst
    small = write_instance(inst, tmp_path / "s.yaml")
    assert [p.name for p in small] == ["s.yaml"]
    forced = write_instance(inst, tmp_path / "f.yaml", adapters_csv=True)
    assert [p.name for p in forced] == ["f.yaml", "f.adapters.csv"]
    assert (tmp_path / "f.adapters.csv").read_text().splitlines()[0] == "id,rank,rate_rps"
    big = write_instance(generate("zipf", 201, seed=1), tmp_path / "b.yaml")
    assert [p.name for p in big] == ["b.yaml", "b.adapters.csv"]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_10k_adapter_instance_loads_fast(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"big{suffix}"
    write_instance(generate("zipf", 10_000, seed=0), path)
    read_instance(path)  # warm imports and caches
    start = time.perf_counter()
    inst = read_instance(path)
    elapsed = time.perf_counter() - start
    assert inst.n_adapters == 10_000
    assert elapsed < 1.0, f"10k-adapter {suffix} load took {elapsed:.3f} s"  # bench/instance_io.md: ~0.15 s


def test_show_summarises_the_tiny_example(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["show", str(EXAMPLES / "tiny.yaml"), "--json"], monkeypatch, capsys)
    assert (code, err) == (0, "")
    s = json.loads(out)
    assert s["adapters"] == 5
    assert s["by_rank"] == {"8": {"adapters": 2, "rate_rps": pytest.approx(0.6)},
                            "16": {"adapters": 2, "rate_rps": pytest.approx(0.5)},
                            "32": {"adapters": 1, "rate_rps": pytest.approx(0.1)}}
    assert s["rate_rps"]["total"] == pytest.approx(1.2)
    scale = load_profile("llama-3.1-8b-instruct", "h100-64gb").output_scale  # EOS stops before the reference
    assert scale < 1
    assert s["offered_tok_s"] == pytest.approx(1.2 * (222.7 + scale * 196.5))  # ShareGPT means, Llama outputs
    assert s["expected_requests"] == pytest.approx(1.2 * 3600)
    code, out, _ = run_main(["show", str(EXAMPLES / "tiny.yaml")], monkeypatch, capsys)
    assert code == 0 and "tiny" in out and "offered load" in out
