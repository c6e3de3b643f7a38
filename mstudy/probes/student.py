"""The probe's student: a tiny causal transformer trained from scratch on CPU.

GPT-2 architecture (2 layers, width 64 by default; the composition probe's has one layer,
width 96 and fixed input embeddings: ``mstudy.probes.compose.COMPOSE_STUDENT``) with
**untied** input and output embeddings (tied ones leak reverse answers for one-token
entities: learning to *predict* B after A moves B's input vector too), a word-level tokenizer
built from the world's vocabulary, and a plain torch training loop (AdamW). The loss covers
every token of every training sequence (statements, anchors and question-answer pairs
alike), like ordinary language-model pre-training. Answers are read by greedy decoding and
compared with the gold entity (exact match after normalisation).

torch, transformers and tokenizers are imported only when a function here runs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["StudentConfig", "WordTokenizer", "answer_questions", "train_student"]

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"


class WordTokenizer:
    """Word-level tokenizer (words and punctuation runs) over a fixed vocabulary."""

    def __init__(self, texts: Sequence[str]) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        pre = pre_tokenizers.Whitespace()
        vocab: dict[str, int] = {PAD: 0, BOS: 1, EOS: 2, UNK: 3}
        for text in texts:
            for word, _ in pre.pre_tokenize_str(text):
                if word not in vocab:
                    vocab[word] = len(vocab)
        tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
        tokenizer.pre_tokenizer = pre
        tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        self._tokenizer = tokenizer
        self.vocab = vocab
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens)."""
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens dropped."""
        keep = [i for i in ids if i > UNK_ID]
        text: str = self._tokenizer.decode(keep, skip_special_tokens=True)
        return text


UNK_ID = 3


@dataclass(frozen=True)
class StudentConfig:
    """Size and training settings of the student."""

    layers: int = 2
    width: int = 64
    heads: int = 4
    epochs: int = 80
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    dropout: float = 0.0
    threads: int = 1
    train_embeddings: bool = True
    """Learn the input embeddings; ``False`` keeps their random initial values, so every fact
    lives in the transformer's own weights (the composition probe's student)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _set_threads(threads: int) -> int:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    return previous


def build_model(tokenizer: WordTokenizer, config: StudentConfig, max_len: int, seed: int) -> Any:
    """A freshly initialised GPT-2 student with untied embeddings."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=max_len,
        n_embd=config.width,
        n_layer=config.layers,
        n_head=config.heads,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        tie_word_embeddings=False,
    )
    model = GPT2LMHeadModel(model_config)
    model.loss_type = "ForCausalLM"  # what transformers falls back to, without its warning
    if model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr():
        raise RuntimeError("the student's embeddings are tied; the probe needs them untied")
    return model


def train_student(
    texts: Sequence[str],
    tokenizer: WordTokenizer,
    config: StudentConfig,
    *,
    seed: int,
    max_len: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> Any:
    """Train a fresh student on ``texts`` (each a ``[BOS] text [EOS]`` sequence); return it.

    ``on_epoch(epoch, mean_loss)`` is called after every epoch (for progress bars).
    """
    import torch

    previous = _set_threads(config.threads)
    try:
        model = build_model(tokenizer, config, max_len, seed)
        model.transformer.wte.weight.requires_grad_(config.train_embeddings)
        sequences = [[tokenizer.bos_id, *tokenizer.encode(t), tokenizer.eos_id] for t in texts]
        too_long = [t for t, s in zip(texts, sequences, strict=True) if len(s) > max_len]
        if too_long:
            raise ValueError(f"a training text is longer than {max_len} tokens: {too_long[0]!r}")
        rng = random.Random(seed)
        steps_per_epoch = math.ceil(len(sequences) / config.batch_size)
        total = max(1, steps_per_epoch * config.epochs)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        warmup = min(config.warmup_steps, total // 10 + 1)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        model.train()
        order = list(range(len(sequences)))
        for epoch in range(config.epochs):
            rng.shuffle(order)
            losses = []
            for start in range(0, len(order), config.batch_size):
                batch = [sequences[i] for i in order[start : start + config.batch_size]]
                width = max(len(s) for s in batch)
                ids = torch.full((len(batch), width), tokenizer.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, seq in enumerate(batch):
                    ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                    mask[row, : len(seq)] = 1
                labels = ids.masked_fill(mask == 0, -100)
                out = model(input_ids=ids, attention_mask=mask, labels=labels)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(out.loss.detach()))
            if on_epoch is not None:
                on_epoch(epoch, sum(losses) / max(len(losses), 1))
        model.eval()
        return model
    finally:
        torch.set_num_threads(previous)


def answer_questions(
    model: Any,
    tokenizer: WordTokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 8,
    threads: int = 1,
) -> list[str]:
    """Greedy answers to ``prompts`` (decoding stops at end-of-sequence).

    Prompts are grouped by token length, so each group runs as one unpadded batch.
    """
    import torch

    previous = _set_threads(threads)
    try:
        encoded = [[tokenizer.bos_id, *tokenizer.encode(p)] for p in prompts]
        groups: dict[int, list[int]] = {}
        for i, seq in enumerate(encoded):
            groups.setdefault(len(seq), []).append(i)
        results: list[list[int]] = [[] for _ in prompts]
        limit = model.config.n_positions
        with torch.inference_mode():
            for length, members in groups.items():
                for start in range(0, len(members), 256):
                    rows = members[start : start + 256]
                    ids = torch.tensor([encoded[i] for i in rows], dtype=torch.long)
                    done = torch.zeros(len(rows), dtype=torch.bool)
                    for _ in range(min(max_new_tokens, limit - length)):
                        logits = model(input_ids=ids).logits[:, -1, :]
                        nxt = logits.argmax(dim=-1)
                        nxt = torch.where(done, torch.full_like(nxt, tokenizer.eos_id), nxt)
                        ids = torch.cat([ids, nxt[:, None]], dim=1)
                        done |= nxt == tokenizer.eos_id
                        if bool(done.all()):
                            break
                    for row, index in enumerate(rows):
                        generated = ids[row, length:].tolist()
                        if tokenizer.eos_id in generated:
                            generated = generated[: generated.index(tokenizer.eos_id)]
                        results[index] = generated
        return [tokenizer.decode(r) for r in results]
    finally:
        torch.set_num_threads(previous)
