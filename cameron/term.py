"""Terminal output for the CLI: tables, colour when stdout is a terminal, a progress bar,
and a job's task tree."""

import os
import shutil
import sys

_COLOURS = {"done": "32", "running": "33", "scheduled": "36", "cancelled": "35", "error": "31",
            "bold": "1", "dim": "2"}


def use_colour(stream=None) -> bool:
    stream = stream or sys.stdout
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, style: str) -> str:
    """`text` in the colour of `style` (a state name, bold or dim) on a terminal, else as is."""
    code = _COLOURS.get(style)
    return f"\033[{code}m{text}\033[0m" if code and use_colour() else text


def width() -> int:
    return shutil.get_terminal_size((100, 24)).columns


def table(headers: list[str], rows: list[list], styles: dict | None = None) -> str:
    """Columns as wide as their widest cell; on a terminal the last column is cut to fit it.
    `styles` maps a column index to a function giving a cell's style."""
    cells = [[str(c) if c is not None else "-" for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if sys.stdout.isatty():  # a pipe or a file gets every character
        room = width() - sum(widths[:-1]) - 2 * (len(widths) - 1)
        widths[-1] = max(min(widths[-1], room), len(headers[-1]))

    def line(row, style_row=None):
        out = []
        for i, cell in enumerate(row):
            cell = cell if len(cell) <= widths[i] else cell[:max(widths[i] - 1, 0)] + "…"
            padded = cell.ljust(widths[i]) if i < len(row) - 1 else cell
            style = (styles or {}).get(i)
            out.append(paint(padded, style(style_row[i])) if style and style_row else padded)
        return "  ".join(out).rstrip()
    return "\n".join([paint(line(headers), "bold")] + [line(r, r) for r in cells])


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`1 process`, `2 processes`."""
    return f"{n} {noun if n == 1 else nouns or noun + ('es' if noun.endswith('s') else 's')}"


def progress_bar(done: int, total: int, bar_width: int = 30) -> str:
    filled = bar_width * done // total if total else 0
    return "[" + "#" * filled + "." * (bar_width - filled) + f"] {done}/{total}"


def task_tree(tasks: list[dict]) -> list[str]:
    """One line per task, children under their parent, in start order."""
    children = {}
    for t in tasks:
        children.setdefault(t["parent"], []).append(t)
    lines = []

    def walk(parent, prefix):
        kids = children.get(parent, [])
        for i, t in enumerate(kids):
            last = i == len(kids) - 1
            branch = "" if parent is None else ("└─ " if last else "├─ ")
            state = t["status"]["current"]
            took = f" {t['duration_ms']} ms" if "duration_ms" in t else ""
            error = ""
            if state == "error" and isinstance(t.get("data"), dict):
                error = f"  {t['data'].get('error', '')}"
            lines.append(f"{prefix}{branch}{t['index']}:{t['name']}  {paint(state, state)}{took}{error}")
            walk(t["index"], prefix + ("" if parent is None else ("   " if last else "│  ")))
    walk(None, "")
    return lines
