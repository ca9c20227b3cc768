"""The loss without full logits (`trainer.linear_ce`, `trainer.loss_head`) against the plain
loss over the model's logits: same loss and same gradients.

Tolerance (fp32): relative 1e-5 on the loss and on every gradient (max abs difference over the
largest abs value); measured 1e-7 to 5e-7 (summation order). The strategies run it on two
ranks under ddp, fsdp, zero2, zero3 and offload against a one-process run with the plain loss
(tests/trainer/test_strategies.py).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from trainer.linear_ce import chunked_linear_cross_entropy
from trainer.loss import IGNORE_INDEX, PlainLoss
from trainer.loss_head import (
    PROBE,
    HeadLoss,
    OutputTransform,
    build_loss,
    candidate_transforms,
    identify,
    logit_settings,
)

RTOL = 1e-5


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max abs difference over the largest abs value (0 when both are zero: LoRA's A)."""
    scale = float(want.double().abs().max())
    diff = float((got.double() - want.double()).abs().max())
    return diff / scale if scale > 0 else diff


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_equals_cross_entropy_of_full_logits(softcap: float | None, bias: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    n, hidden, vocab = 300, 16, 1000
    h = torch.randn(n, hidden, generator=gen, requires_grad=True)
    w = (0.3 * torch.randn(vocab, hidden, generator=gen)).requires_grad_()
    b = (0.1 * torch.randn(vocab, generator=gen)).requires_grad_() if bias else None
    targets = torch.randint(0, vocab, (n,), generator=gen)
    params = [p for p in (h, w, b) if p is not None]

    z = h @ w.t() + (b if b is not None else 0)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    want = F.cross_entropy(z, targets, reduction="sum")
    want_grads = torch.autograd.grad(3.0 * want, params)

    got = chunked_linear_cross_entropy(h, w, b, targets, softcap=softcap, rows_per_chunk=64)
    got_grads = torch.autograd.grad(3.0 * got, params)  # the incoming gradient is applied
    assert abs(float(got.detach() - want.detach())) <= RTOL * abs(float(want.detach()))
    for g, r in zip(got_grads, want_grads, strict=True):
        assert _rel(g, r) <= RTOL


def test_chunked_in_bf16_is_at_least_as_close_to_fp64_as_the_plain_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    n, hidden, vocab = 512, 32, 2000
    h64 = torch.randn(n, hidden, generator=gen, dtype=torch.float64)
    w64 = 0.2 * torch.randn(vocab, hidden, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, vocab, (n,), generator=gen)

    def grads(fn: Any, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        h = h64.to(dtype).requires_grad_()
        w = w64.to(dtype).requires_grad_()
        loss = fn(h, w)
        return (loss.detach().double(), *torch.autograd.grad(loss, [h, w]))

    def plain(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy((h @ w.t()).float(), targets, reduction="sum")

    def chunked(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return chunked_linear_cross_entropy(h, w, None, targets, rows_per_chunk=64)

    exact = grads(plain, torch.float64)
    bf16_plain = grads(plain, torch.bfloat16)
    bf16_chunked = grads(chunked, torch.bfloat16)
    for p, c, e in zip(bf16_plain, bf16_chunked, exact, strict=True):
        assert _rel(c, e) <= 1.01 * _rel(p, e) + 1e-6


def test_output_transforms_are_identified_from_the_probe() -> None:
    gemma = candidate_transforms(logit_settings({"final_logit_softcapping": 30.0}))
    cohere = candidate_transforms(logit_settings({"logit_scale": 0.0625}))
    granite = candidate_transforms(logit_settings({"logits_scaling": 8.0}))
    ignored = logit_settings({"attn_logit_softcapping": 50.0, "router_logits": 1.0})
    assert ignored == {}
    assert identify(list(PROBE), gemma) == OutputTransform()
    capped = OutputTransform(softcap=30.0)
    assert identify(capped.apply(list(PROBE)), gemma) == capped
    assert identify([v * 0.0625 for v in PROBE], cohere) == OutputTransform(scale=0.0625)
    assert identify([v / 8.0 for v in PROBE], granite) == OutputTransform(scale=0.125)
    assert identify([v + 1.0 for v in PROBE], gemma) is None  # unknown: the plain loss


def _tiny_lm(model_type: str, **config: Any) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(
        model_type,
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        eos_token_id=1,
        bos_token_id=2,
        pad_token_id=0,
        **config,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).float()


def _loss_and_grads(model: Any, loss: Any, inputs: dict[str, Any], labels: Any) -> Any:
    model.zero_grad()
    value = loss(lambda batch: model(**batch), inputs, labels)
    value.backward()
    return float(value), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize(
    ("model_type", "config", "transform"),
    [
        ("llama", {}, "none"),
        ("gemma2", {"final_logit_softcapping": 3.0}, "soft-capped at 3"),
        ("cohere", {"logit_scale": 0.5}, "logits x 0.5"),
        ("granite", {"logits_scaling": 4.0}, "logits x 0.25"),
    ],
)
def test_head_loss_equals_the_plain_loss(
    model_type: str, config: dict[str, Any], transform: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every parameter trained (the output layer too; tied to the embeddings in Gemma 2)."""
    model = _tiny_lm(model_type, **config)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (2, 24), generator=gen)
    labels = ids.clone()
    labels[0, :7] = IGNORE_INDEX  # a prompt
    labels[1, -5:] = IGNORE_INDEX  # padding
    want = _loss_and_grads(model, PlainLoss(), {"input_ids": ids}, labels)
    head = build_loss("chunked", model, torch.device("cpu"))
    assert isinstance(head, HeadLoss)
    with caplog.at_level(logging.INFO, logger="trainer.loss_head"):
        got = _loss_and_grads(model, head, {"input_ids": ids}, labels)
    assert f"output transform: {transform}" in caplog.text
    assert head.kind == "chunked"
    assert abs(got[0] - want[0]) <= RTOL * abs(want[0])
    assert len(got[1]) == len(want[1]) == len(list(model.parameters()))
    for g, r in zip(got[1], want[1], strict=True):
        assert _rel(g, r) <= RTOL
    assert "forward" not in vars(model.get_output_embeddings())  # the head is itself again
    assert model(input_ids=ids).logits.shape == (2, 24, 300)


def test_unknown_output_transform_falls_back_to_the_plain_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = _tiny_lm("llama")
    forward = model.forward

    def shifted(**kw: Any) -> Any:  # a model that adds something to its logits
        out = forward(**kw)
        out.logits = out.logits + 1.0
        return out

    ids = torch.randint(3, 300, (1, 12))
    head = build_loss("auto", model, torch.device("cpu"))
    with caplog.at_level(logging.WARNING, logger="trainer.loss_head"):
        value = head(lambda batch: shifted(**batch), {"input_ids": ids}, ids)
    assert head.kind == "plain"
    assert "plain loss (full logits)" in caplog.text
    want = PlainLoss()(lambda batch: shifted(**batch), {"input_ids": ids}, ids)
    assert float(value) == pytest.approx(float(want), rel=1e-6)


def test_lora_on_a_tiny_vlm_equals_the_plain_loss(tiny_llava: Any) -> None:
    """The tiny LLaVA with LoRA on its language model and the projector in full, as trained."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava, dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    gen = torch.Generator().manual_seed(0)
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(3, vocab - 10, (2, 20), generator=gen)
    labels = ids.clone()
    labels[:, :6] = IGNORE_INDEX
    want = _loss_and_grads(model, PlainLoss(), {"input_ids": ids}, labels)
    got = _loss_and_grads(
        model, build_loss("auto", model, torch.device("cpu")), {"input_ids": ids}, labels
    )
    assert abs(got[0] - want[0]) <= RTOL * abs(want[0])
    assert len(got[1]) == len(want[1]) > 0
    for g, r in zip(got[1], want[1], strict=True):
        assert _rel(g, r) <= RTOL


def test_liger_is_refused_without_cuda() -> None:
    from vlaunch_core.errors import UserError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match=r"train\.loss=liger needs a CUDA device"):
        build_loss("liger", _tiny_lm("llama"), torch.device("cpu"))


@pytest.mark.gpu
def test_liger_equals_the_plain_loss_on_cuda() -> None:
    """bf16 on a GPU: Liger's kernel (when installed) and the chunked loss against the plain
    loss; relative 2e-2 on gradients (bf16 logits)."""
    device = torch.device("cuda")
    model = _tiny_lm("gemma2", final_logit_softcapping=3.0).to(device, torch.bfloat16)
    ids = torch.randint(3, 300, (2, 64), device="cpu")
    impls = ["chunked"]
    from trainer.linear_ce import liger_available

    if liger_available():
        impls.append("liger")
    want = _loss_and_grads(model, PlainLoss(), {"input_ids": ids.to(device)}, ids)
    for impl in impls:
        got = _loss_and_grads(
            model, build_loss(impl, model, device), {"input_ids": ids.to(device)}, ids
        )
        assert abs(got[0] - want[0]) <= 1e-2 * abs(want[0]), impl
        for g, r in zip(got[1], want[1], strict=True):
            assert _rel(g, r) <= 2e-2, impl
