"""Token-normalised loss: the gradient does not depend on how a step is cut into micro batches."""

from __future__ import annotations

import torch

from trainer.loss import IGNORE_INDEX, summed_cross_entropy, target_tokens


def _toy_batch(rows: int, length: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    labels = torch.randint(0, vocab, (rows, length), generator=gen)
    # Different numbers of target tokens per row (a short and a long answer, prompts masked).
    for r in range(rows):
        keep = int(torch.randint(1, length, (1,), generator=gen))
        labels[r, : length - keep] = IGNORE_INDEX
    return labels


def test_accumulated_gradient_equals_full_batch_mean_over_tokens() -> None:
    gen = torch.Generator().manual_seed(0)
    vocab, length = 11, 9
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, 8), torch.nn.Linear(8, vocab))
    inputs = torch.randint(0, vocab, (6, length), generator=gen)
    labels = _toy_batch(6, length, vocab, gen)

    # Reference: one batch, mean over every target token.
    model.zero_grad()
    (summed_cross_entropy(model(inputs), labels) / target_tokens(labels)).backward()
    reference = [p.grad.clone() for p in model.parameters()]

    # The loop's way: micro batches of uneven token counts, each scaled by the step total.
    model.zero_grad()
    chunks = [(0, 1), (1, 4), (4, 6)]
    total = sum(target_tokens(labels[a:b]) for a, b in chunks)
    for a, b in chunks:
        (summed_cross_entropy(model(inputs[a:b]), labels[a:b]) / total).backward()
    for got, want in zip((p.grad for p in model.parameters()), reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)

    # Averaging per micro batch (the common mistake) gives a different gradient here.
    model.zero_grad()
    for a, b in chunks:
        part = summed_cross_entropy(model(inputs[a:b]), labels[a:b]) / target_tokens(labels[a:b])
        (part / len(chunks)).backward()
    assert not torch.allclose(next(iter(model.parameters())).grad, reference[0], atol=1e-6)


def test_target_tokens_counts_shifted_labels() -> None:
    labels = torch.tensor([[5, IGNORE_INDEX, 3, 4], [IGNORE_INDEX] * 4])
    assert target_tokens(labels) == 2  # the first position is never predicted
