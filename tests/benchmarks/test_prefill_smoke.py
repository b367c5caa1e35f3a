"""bench/prefill.py end to end at a toy size (2 layers, a 4 s clip, one repeat, no recompile sweep): the
benchmark runs with the current configuration rules (it once failed for weeks unnoticed, when a new check
refused its SEATS options), prunes, and writes the columns the report reads."""

from __future__ import annotations

import json

import pytest

from bench import prefill


@pytest.mark.slow
def test_the_prefill_benchmark_runs_prunes_and_writes_its_columns(tmp_path):
    out = tmp_path / "prefill.json"
    result = prefill.main(["--layers", "2", "--seconds", "4", "--repeats", "1", "--no-sweep", "--json", str(out)])
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    seats = rows["backend=seats R=0.1"]
    assert set(rows) == {"plain eager", "plain Inductor", "backend=seats R=0.1", "eager SEATS reference R=0.1"}
    assert seats["glue_host_reads"] <= 3 and seats["glue_ops"] > 0 and seats["glue_uploads"] >= 1
    assert seats["layer_tokens"][0] < result["counts"]["tokens"]  # pruned before the first layer
    assert len(result["methods"]) == len(prefill.RETENTIONS) * len(prefill.METHODS) and result["sweep"] == []
