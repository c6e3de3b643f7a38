"""Training formats: the mapping of each strategy's rows, the sinks, ``mstudy export``, and the
exports read by ``datasets`` and trained on by TRL's ``SFTTrainer`` (a few steps, tiny model)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import mstudy
from mstudy.cli import main
from mstudy.config import tomllib
from mstudy.sinks.formats import FORMATS, INSTRUCTIONS, Skip, format_row
from mstudy.sinks.training import (
    AlpacaSink,
    MessagesSink,
    PromptCompletionSink,
    ShareGPTSink,
    TextSink,
)
from tests.conftest import read_jsonl

REVERSE_ROW = {
    "id": "r1",
    "source_id": "s1",
    "strategy": "reverse",
    "input": "Olaf Brandt is the father of Lena Brandt.",
    "text": "Lena Brandt is the daughter of Olaf Brandt.",
    "answer": None,
    "provenance": {"source_id": "s1"},
}
COT_ROW = {
    "id": "c1",
    "strategy": "cot",
    "input": "What is 20 + 21?",
    "text": "20 + 21 = 41.\nFinal answer: 41",
    "answer": "41",
}


def test_a_strategy_row_in_every_format() -> None:
    instruction = INSTRUCTIONS["reverse"]
    user = f"{instruction}\n\n{REVERSE_ROW['input']}"
    reply = REVERSE_ROW["text"]
    assert format_row(REVERSE_ROW, "sft_messages") == {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    }
    assert format_row(REVERSE_ROW, "sft_prompt_completion") == {
        "prompt": user,
        "completion": reply,
    }
    assert format_row(REVERSE_ROW, "sft_prompt_completion", conversational=True) == {
        "prompt": [{"role": "user", "content": user}],
        "completion": [{"role": "assistant", "content": reply}],
    }
    assert format_row(REVERSE_ROW, "text") == {"text": reply}  # the statement alone
    assert format_row(REVERSE_ROW, "alpaca") == {
        "instruction": instruction,
        "input": REVERSE_ROW["input"],
        "output": reply,
    }
    assert format_row(REVERSE_ROW, "sharegpt", system="Be brief.") == {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": user},
            {"from": "gpt", "value": reply},
        ]
    }
    assert format_row(REVERSE_ROW, "text", keep=("id", "source_id")) == {
        "text": reply,
        "id": "r1",
        "source_id": "s1",
    }


def test_a_solution_keeps_its_question() -> None:
    assert format_row(COT_ROW, "sft_prompt_completion") == {
        "prompt": "What is 20 + 21?",
        "completion": COT_ROW["text"],
    }
    assert format_row(COT_ROW, "text") == {"text": f"What is 20 + 21?\n\n{COT_ROW['text']}"}
    assert format_row(COT_ROW, "alpaca") == {
        "instruction": "What is 20 + 21?",
        "input": "",
        "output": COT_ROW["text"],
    }


def test_rows_with_their_own_messages_or_prompt_and_unknown_strategies() -> None:
    chat = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
    ]
    row = {"id": "m", "strategy": "dialogue", "messages": chat}
    assert format_row(row, "sft_messages") == {"messages": chat}
    assert format_row(row, "sharegpt")["conversations"][-1] == {"from": "gpt", "value": "A2"}
    assert format_row(row, "sft_prompt_completion") == Skip("multi_turn", "m")
    assert format_row(row, "sft_prompt_completion", conversational=True)["completion"] == [
        {"role": "assistant", "content": "A2"}
    ]
    assert format_row(row, "alpaca") == Skip("multi_turn", "m")
    assert format_row(row, "text") == {"text": "A2"}

    pair = {"id": "p", "prompt": "Capital of France?", "completion": "Paris."}
    assert format_row(pair, "alpaca") == {
        "instruction": "Capital of France?",
        "input": "",
        "output": "Paris.",
    }
    other = {"id": "o", "strategy": "mine", "input": "In.", "text": "Out."}
    assert format_row(other, "sft_prompt_completion") == {"prompt": "In.", "completion": "Out."}
    told = format_row(other, "alpaca", instructions={"*": "Do it."})
    assert told == {"instruction": "Do it.", "input": "In.", "output": "Out."}

    statement = {"id": "f", "strategy": "facts", "statement": "Paris is in France."}
    assert format_row(statement, "text") == {"text": "Paris is in France."}
    assert format_row(statement, "sft_messages") == Skip("no_prompt", "f")
    assert format_row({"id": "x", "text": ""}, "text") == Skip("no_text", "x")
    with pytest.raises(ValueError, match="unknown training format"):
        format_row(REVERSE_ROW, "chatml")


def test_the_sinks_are_registered_by_name_in_pyproject() -> None:
    pyproject = tomllib.loads(Path("pyproject.toml").read_text())
    sinks = pyproject["project"]["entry-points"]["mstudy.sinks"]
    classes = {
        "sft_messages": MessagesSink,
        "sft_prompt_completion": PromptCompletionSink,
        "text": TextSink,
        "alpaca": AlpacaSink,
        "sharegpt": ShareGPTSink,
    }
    assert set(classes) == set(FORMATS)
    for name, sink in classes.items():
        assert sinks[name] == f"{sink.__module__}:{sink.__qualname__}"
        assert sink.format == name


def test_a_sink_by_name_in_a_study_config(tmp_path: Path) -> None:
    from mstudy import plugins

    try:
        plugins.find("sinks", "sft_messages")
    except mstudy.PluginError:
        pytest.skip("the installed mstudy metadata predates the format sinks (reinstall it)")
    (tmp_path / "facts.jsonl").write_text('{"id": "a", "text": "Ada wrote a program."}\n')
    (tmp_path / "study.toml").write_text(
        '[source]\npath = "facts.jsonl"\n\n'
        '[teacher]\nname = "scripted"\nreply = "A program was written by Ada, they say."\n\n'
        '[[strategies]]\nname = "paraphrase"\n\n'
        '[[sinks]]\nname = "sft_messages"\npath = "out/train.jsonl"\nsystem = "Be exact."\n'
        'keep = ["id"]\ninstructions = { paraphrase = "Reword it." }\n'
    )
    assert main(["run", str(tmp_path / "study.toml"), "--quiet"]) == 0
    (row,) = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][1]["content"] == "Reword it.\n\nAda wrote a program."
    assert set(row) == {"messages", "id"}


# -- a study's rows, through the sinks and through `mstudy export` ----------------------------

FACTS = [
    {"id": f"f{i}", "text": f"Person {i} is the parent of Child {i}.", "subject": f"Person {i}"}
    for i in range(8)
]
REPLIES = {
    "reverse": "Child {{ text.split()[-1].rstrip('.') }} has Person "
    "{{ text.split()[1] }} as a parent.",
    "paraphrase": "The parent of Child {{ text.split()[-1].rstrip('.') }} is "
    "Person {{ text.split()[1] }}.",
    "explain": "Saying {{ text }} means one person raised another, as parents do.",
}


def study_outputs(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    out = tmp_path / "rows.jsonl"
    formats = {
        "sft_messages": MessagesSink(tmp_path / "sink" / "messages.jsonl"),
        "sft_prompt_completion": PromptCompletionSink(tmp_path / "sink" / "pc.jsonl"),
        "text": TextSink(tmp_path / "sink" / "text.jsonl"),
        "alpaca": AlpacaSink(tmp_path / "sink" / "alpaca.jsonl"),
        "sharegpt": ShareGPTSink(tmp_path / "sink" / "sharegpt.jsonl"),
    }
    study = mstudy.Study(
        mstudy.ScriptedTeacher(REPLIES),
        ["reverse", "paraphrase", "explain"],
        sinks=[out, *formats.values()],
    )
    report = study.run(FACTS)
    assert report.accepted == len(read_jsonl(out)) > 12
    return out, {name: sink.path for name, sink in formats.items()}


def test_format_sinks_in_a_study_equal_mstudy_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, sinks = study_outputs(tmp_path)
    for name, written in sinks.items():
        exported = tmp_path / "export" / f"{name}.jsonl"
        assert main(["export", str(rows), "--format", name, "--out", str(exported)]) == 0
        assert exported.read_bytes() == written.read_bytes(), name
        assert f"wrote {len(read_jsonl(rows))} rows" in capsys.readouterr().err
    # Parquet in, Parquet out; a row without text is counted, not written.
    parquet = tmp_path / "rows.parquet"
    table = [*read_jsonl(rows), {"id": "empty", "strategy": "reverse", "text": ""}]
    with mstudy.ParquetSink(parquet) as sink:
        sink.write(table)
    out = tmp_path / "export" / "alpaca.parquet"
    assert main(["export", str(parquet), "--format", "alpaca", "--out", str(out)]) == 0
    assert "not written: 1 (no_text: 1)" in capsys.readouterr().err
    import pyarrow.parquet as pq

    assert pq.read_table(out).to_pylist() == read_jsonl(sinks["alpaca"])


def test_export_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a", "strategy": "reverse", "input": "x", "text": "y"}\n')
    out = str(tmp_path / "o.jsonl")
    assert main(["export", str(rows), "--format", "nope", "--out", out]) == 2
    assert main(["export", str(tmp_path / "no.jsonl"), "--format", "text", "--out", out]) == 2
    assert main(["export", str(rows), "--format", "text", "--out", str(rows)]) == 2
    assert main(["export", str(rows), "--format", "text", "--out", out, "--conversational"]) == 2
    args = ["export", str(rows), "--format", "alpaca", "--out", out, "--instruction", "bad"]
    assert main(args) == 2
    assert "STRATEGY=TEXT" in capsys.readouterr().err
    assert not Path(out).exists()
    args[-1] = "reverse=Turn it round."
    assert main([*args, "--keep", "id"]) == 0
    assert read_jsonl(Path(out)) == [
        {"instruction": "Turn it round.", "input": "x", "output": "y", "id": "a"}
    ]


def test_a_failed_study_leaves_no_format_file(tmp_path: Path) -> None:
    sink = MessagesSink(tmp_path / "train.jsonl")

    def boom(request: Any) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mstudy.Study(mstudy.ScriptedTeacher(boom), ["reverse"], sinks=[sink]).run(FACTS)
    assert not (tmp_path / "train.jsonl").exists()
    assert list(tmp_path.iterdir()) == []  # no partial file either


# -- datasets + TRL ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("trl")
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_every_export_loads_with_datasets_and_trains_with_trl(
    tmp_path: Path, tiny_model: Path
) -> None:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(1)
    _, sinks = study_outputs(tmp_path)
    conversational = tmp_path / "pc-conversational.jsonl"
    with PromptCompletionSink(conversational, conversational=True) as sink:
        sink.write(read_jsonl(tmp_path / "rows.jsonl"))

    def alpaca_text(example: dict[str, str]) -> str:
        return f"{example['instruction']}\n\n{example['input']}\n\n{example['output']}"

    def sharegpt_messages(example: dict[str, Any]) -> dict[str, Any]:
        roles = {"system": "system", "human": "user", "gpt": "assistant"}
        turns = example["conversations"]
        return {"messages": [{"role": roles[t["from"]], "content": t["value"]} for t in turns]}

    cases: list[tuple[str, Path, Any]] = [
        ("sft_messages", sinks["sft_messages"], None),
        ("sft_prompt_completion", sinks["sft_prompt_completion"], None),
        ("sft_prompt_completion conversational", conversational, None),
        ("text", sinks["text"], None),
        ("alpaca", sinks["alpaca"], alpaca_text),
        ("sharegpt", sinks["sharegpt"], sharegpt_messages),
    ]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.pad_token = tokenizer.eos_token
    for name, path, adapt in cases:
        dataset = datasets.load_dataset("json", data_files=str(path), split="train")
        assert len(dataset) == len(read_jsonl(path)) > 12, name
        formatting = None
        if name == "sharegpt":
            dataset = dataset.map(sharegpt_messages, remove_columns=["conversations"])
        elif adapt is not None:
            formatting = adapt
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        before = [p.detach().clone() for p in model.parameters()]
        config = SFTConfig(
            output_dir=str(tmp_path / "trainer" / name.replace(" ", "-")),
            max_steps=2,
            per_device_train_batch_size=4,
            learning_rate=1e-2,
            max_length=128,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            formatting_func=formatting,
        )
        result = trainer.train()
        assert trainer.state.global_step == 2, name
        assert math.isfinite(result.training_loss), name
        after = list(model.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), name
