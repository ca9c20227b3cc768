"""Regenerating docs/benchmarks.md keeps everything outside the markers."""

from __future__ import annotations

from pathlib import Path

from bench import packing, report
from bench.common import machine


def test_blocks_are_replaced_and_prose_kept(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(
        "# Benchmarks\n\nHand-written intro.\n\n"
        "<!-- bench:gpu -->\nold table\n<!-- /bench:gpu -->\n"
        "\n## Host memory\n\nAnother engineer's section.\n"
    )
    text = report.update_page(page, {"gpu": "new table", "cli_latency": "cli table"})
    assert "Hand-written intro." in text and "Another engineer's section." in text
    assert "old table" not in text and "<!-- bench:gpu -->\nnew table\n<!-- /bench:gpu -->" in text
    assert text.rstrip().endswith(
        "<!-- bench:cli_latency -->\ncli table\n<!-- /bench:cli_latency -->"
    )
    again = report.update_page(page, {"gpu": "newer", "cli_latency": "cli table"})
    assert again.count("<!-- bench:cli_latency -->") == 1 and "newer" in again


def test_gpu_table_says_not_measured_without_gpu_results() -> None:
    assert "Not yet measured" in report.gpu(None)
    assert "Not yet measured" in report.gpu({"tiny": True, "device": "cpu", "rows": []})


def test_gpu_table_compares_each_loss_with_the_plain_one() -> None:
    def row(config: str, loss: str, allocated: int, trainer: str = "vlaunch loop") -> dict:
        return {
            "config": config,
            "trainer": trainer,
            "loss": loss,
            "tokens_per_s": 1000.0,
            "mfu": 0.3,
            "measured": {"allocated": allocated * 2**30, "reserved": allocated * 2**30},
            "predicted": {"total": allocated * 2**30},
            "memory_error": 0.0,
            "step_time_s": 1.0,
        }

    rows = [
        row("a lora", "liger", 4),
        row("a lora", "plain", 12, trainer="transformers.Trainer + peft"),
        row("a lora loss=plain", "plain", 10),
        row("a lora loss=chunked", "chunked", 5),
        row("b full", "liger", 30),
    ]
    text = report.gpu(
        {"device": "H100", "command": "c", "steps": 3, "warmup_steps_skipped": 1, "rows": rows}
    )
    assert "| a lora loss=chunked | vlaunch loop | chunked |" in text
    assert (
        "Peak allocated against the plain loss (full logits), a lora: liger 0.40, chunked 0.50."
        in text
    )
    assert "b full" not in text.split("\n\n")[-1]  # no plain run of it: no ratio


def test_every_cpu_block_is_written_even_unmeasured() -> None:
    result = packing.run(num_samples=256)
    result["load_average"] = {"before": [2.5, 2.0, 1.0], "after": [0.5, 0.5, 0.5]}
    out = report.blocks({"machine": machine(), "benchmarks": {"packing": result}}, None)
    assert set(out) == {*report.RENDERERS, "gpu"}
    assert (
        "Not yet measured" in out["ray_overhead"] and "--only ray_overhead" in out["ray_overhead"]
    )
    text = out["packing"]
    assert "| random order, padded |" in text and "not measured in this run" in text
    # a busy machine is called out under the table
    assert "load average 2.50 before" in text and "other work competed" in text


def test_failed_benchmark_says_so() -> None:
    results = {"machine": machine(), "benchmarks": {"cli_latency": {"error": "OSError: boom"}}}
    assert "Failed in the last run" in report.blocks(results, None)["cli_latency"]
