"""HTML and Markdown of a run report (`trainer.report` gathers what it shows)."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.report import Figure, Report


def render_html(report: Report) -> str:
    e = html.escape
    body = [f"<h1>{e(report.title)}</h1>"]
    for f in report.figures:
        data = base64.b64encode(f.png).decode("ascii")
        body.append(
            f'<h2>{e(f.title)}</h2><img alt="{e(f.title)}" src="data:image/png;base64,{data}">'
        )
    for s in report.sections:
        body.append(f"<h2>{e(s.title)}</h2>")
        if s.rows:
            body.append(
                "<table>"
                + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in s.rows)
                + "</table>"
            )
        if s.table:
            head, rows = s.table
            body.append(
                "<table><tr>"
                + "".join(f"<th>{e(h)}</th>" for h in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                + "</table>"
            )
        if s.note:
            body.append(f"<p class=note>{e(s.note)}</p>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
        "table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;"
        "padding:.25rem .6rem;text-align:left}th{background:#f4f4f4}.note{color:#555}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{e(report.title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def render_markdown(report: Report, link: Callable[[Figure], str]) -> str:
    def cell(x: str) -> str:
        return x.replace("|", "\\|").replace("\n", " ")

    lines = [f"# {report.title}", ""]
    for f in report.figures:
        lines += [f"## {f.title}", "", f"![{f.title}]({link(f)})", ""]
    for s in report.sections:
        lines += [f"## {s.title}", ""]
        if s.rows:
            lines += ["| | |", "| --- | --- |"]
            lines += [f"| {cell(k)} | {cell(v)} |" for k, v in s.rows]
            lines.append("")
        if s.table:
            head, rows = s.table
            lines += ["| " + " | ".join(map(cell, head)) + " |", "|" + " --- |" * len(head)]
            lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
            lines.append("")
        if s.note:
            lines += [s.note, ""]
    return "\n".join(lines)
