"""The probes' tiny student: what its settings change in training."""

from __future__ import annotations

from typing import Any

import pytest

from mstudy.probes.compose import COMPOSE_STUDENT, run_compose_probe
from mstudy.probes.student import (
    StudentConfig,
    WordTokenizer,
    answer_questions,
    build_model,
    train_student,
)

TEXTS = ["Zapoth's mentor is Rigux.", "Rigux lives in Fadukov.", "Q: Who mentors Zapoth? A: Rigux"]


def _train(config: StudentConfig) -> tuple[Any, Any, WordTokenizer]:
    tokenizer = WordTokenizer(TEXTS)
    before = build_model(tokenizer, config, max_len=24, seed=0)
    after = train_student(TEXTS, tokenizer, config, seed=0, max_len=24)
    return before, after, tokenizer


@pytest.mark.parametrize("train_embeddings", [True, False])
def test_fixed_input_embeddings_stay_as_initialised(train_embeddings: bool) -> None:
    pytest.importorskip("torch")
    import torch

    config = StudentConfig(layers=1, width=32, epochs=30, train_embeddings=train_embeddings)
    before, after, tokenizer = _train(config)
    same_input = torch.equal(before.transformer.wte.weight, after.transformer.wte.weight)
    same_output = torch.equal(before.lm_head.weight, after.lm_head.weight)
    assert same_input is not train_embeddings
    assert not same_output  # the rest of the student learns either way
    # ...and learns the texts: the fixed embeddings are not in its way
    answers = answer_questions(after, tokenizer, ["Q: Who mentors Zapoth? A:"])
    assert answers == ["Rigux"]


def test_the_compose_probe_trains_its_own_student_by_default() -> None:
    pytest.importorskip("torch")
    result = run_compose_probe(teacher="rules", people=8, seeds=1, epochs=1)
    student = result.settings["student"]
    assert student == {**COMPOSE_STUDENT.to_dict(), "epochs": 1}
    assert student["layers"] == 1 and student["train_embeddings"] is False
    # the reversal probe's student learns its embeddings
    assert StudentConfig().train_embeddings is True
