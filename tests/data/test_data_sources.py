"""Sources: files in every supported format, hf with local json data_files, offline errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from moectl.config import DataConfig, HFDatasetSpec
from moectl.data.collect import TextCollector
from moectl.data.sources import load_domain
from moectl.errors import DataError, OfflineError


def _files_config(patterns: list[str], **kwargs) -> DataConfig:
    return DataConfig(source="files", domains=["d"], files={"d": patterns}, **kwargs)


def test_plain_text_files_are_one_document_each(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha text")
    (tmp_path / "b.md").write_text("# beta\n\nmarkdown")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.py").write_text("print('gamma')\n")
    (tmp_path / "sub" / "empty.txt").write_text("")
    loaded = load_domain(_files_config([str(tmp_path)]), "d")
    assert loaded.texts == ["alpha text", "# beta\n\nmarkdown", "print('gamma')\n"]
    assert loaded.sources[0].kind == "files"
    assert loaded.sources[0].details["files_matched"] == 4
    assert len(loaded.sources[0].fingerprint or "") == 16
    globbed = load_domain(_files_config([str(tmp_path / "**" / "*.py")]), "d")
    assert globbed.texts == ["print('gamma')\n"]


def test_table_formats(tmp_path: Path) -> None:
    rows = [{"text": f"row {i}", "other": i} for i in range(3)]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "t.json").write_text(json.dumps(rows))
    with (tmp_path / "t.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "other"])
        writer.writeheader()
        writer.writerows(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    for suffix in ("jsonl", "json", "csv", "parquet"):
        loaded = load_domain(_files_config([str(tmp_path / f"t.{suffix}")]), "d")
        assert loaded.texts == ["row 0", "row 1", "row 2"], suffix


def test_named_text_column_and_missing_column(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text(json.dumps({"body": "the body", "x": 1}) + "\n")
    loaded = load_domain(_files_config([str(tmp_path / "t.jsonl")], text_column="body"), "d")
    assert loaded.texts == ["the body"]
    with pytest.raises(DataError, match="no 'text' column") as info:
        load_domain(_files_config([str(tmp_path / "t.jsonl")]), "d")
    assert "--text-column" in (info.value.hint or "")


def test_budget_and_filters_apply_to_files(tmp_path: Path) -> None:
    rows = [{"text": "x" * n} for n in (5, 50, 500, 60, 70)]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    config = _files_config(
        [str(tmp_path / "t.jsonl")], size_mb=100e-6, min_example_chars=10, max_example_chars=100
    )
    loaded = load_domain(config, "d")
    assert [len(t) for t in loaded.texts] == [50, 50]


def test_missing_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no files match"):
        load_domain(_files_config([str(tmp_path / "nothing*.txt")]), "d")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(DataError, match="hold no text"):
        load_domain(_files_config([str(tmp_path / "*.txt")]), "d")
    with pytest.raises(DataError, match="has no input files"):
        load_domain(DataConfig(source="files", domains=["d"]), "d")


def _gsm_like(path: Path, n: int) -> None:
    rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}"} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows))


def test_hf_source_with_local_json_data_files_tops_up(tmp_path: Path) -> None:
    _gsm_like(tmp_path / "gsm.jsonl", 3)
    (tmp_path / "math.jsonl").write_text(
        "\n".join(json.dumps({"problem": f"Solve x = {i}", "solution": "x"}) for i in range(20))
    )
    config = DataConfig(
        source="hf",
        domains=["math"],
        size_mb=120e-6,
        hf_datasets={
            "math": [
                HFDatasetSpec(
                    path="json",
                    data_files=[str(tmp_path / "gsm.jsonl")],
                    text_fields=["question", "answer"],
                ),
                HFDatasetSpec(
                    path="json",
                    data_files=[str(tmp_path / "math.jsonl")],
                    text_fields=["problem", "solution"],
                ),
            ]
        },
    )
    loaded = load_domain(config, "math")
    assert loaded.texts[0] == "What is 0 + 1?\n\n0 + 1 = 1"
    assert sum(map(len, loaded.texts)) == 120
    assert loaded.texts[3].startswith("Solve x = 0")
    first, second = loaded.sources
    assert (first.kind, first.dataset, first.split) == ("hf", "json", "train")
    assert first.details["texts"] == 3 and second.details["texts"] == len(loaded.texts) - 3
    assert first.details["data_files"] == [str(tmp_path / "gsm.jsonl")]
    assert first.fingerprint != second.fingerprint


def test_hf_missing_field_is_named(tmp_path: Path) -> None:
    _gsm_like(tmp_path / "gsm.jsonl", 2)
    spec = HFDatasetSpec(path="json", data_files=[str(tmp_path / "gsm.jsonl")])
    config = DataConfig(source="hf", domains=["math"], hf_datasets={"math": [spec]})
    with pytest.raises(DataError, match="no field 'text'"):
        load_domain(config, "math")


def test_hf_offline_hub_dataset_is_offline_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = DataConfig(source="hf", domains=["math"])
    with pytest.raises(OfflineError, match="openai/gsm8k") as info:
        load_domain(config, "math")
    assert "--source builtin" in (info.value.hint or "")
    assert "--source files" in (info.value.hint or "")


def test_hf_domain_without_dataset() -> None:
    with pytest.raises(DataError, match="no Hugging Face dataset"):
        load_domain(DataConfig(source="hf", domains=["poetry"]), "poetry")


def test_collector_keeps_going_across_sources() -> None:
    collector = TextCollector(budget_chars=10)
    collector.add_from(["abcd"])
    assert not collector.full
    collector.add_from(["efghijkl"])
    assert collector.texts == ["abcd", "efghij"]
