"""A committed result as the docs show it, and the helpers that format it from its JSON.

A :class:`Record` is one measurement: when, what setting, the command that produced it, and the
numbers, each formatted from the JSON (never typed by hand). ``results_readers.py`` turns every
JSON under ``benchmarks/results`` into records; ``results_pages.py`` renders them.
"""

from __future__ import annotations

import ast
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = "DATA"  # shown instead of the measuring machine's data folder


@dataclass
class Record:
    """One committed measurement, formatted for the docs."""

    source: str  # the JSON, relative to the repository root
    date: str
    topics: tuple[str, ...]  # learner names (their pages) and topics (kernels, distributed, ...)
    setting: str
    command: str
    results: list[str] = field(default_factory=list)
    note: str = ""


def g(v: float | None, unit: str = "") -> str:
    """Four significant digits, as the JSON holds it (0.9837, 0.789, 1.468); None as n/a."""
    return "n/a" if v is None else f"{v:.4g}{unit}"


def n_of(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def sec(v: float) -> str:
    return f"{v:.1f} s"


def mib(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 2**20:.2f} MiB"


def data_arg(text: str) -> str:
    """A recorded command with the measuring machine's data folder replaced by ``DATA``."""
    return re.sub(r"(--data-dir[ =])\S+", rf"\g<1>{DATA}", text)


def script_defaults(script: Path) -> dict[str, Any]:
    """The literal defaults of a benchmark script's argparse flags (dest -> default)."""
    out: dict[str, Any] = {}
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            flag = node.args[0]
            if not (isinstance(flag, ast.Constant) and str(flag.value).startswith("--")):
                continue
            dest = str(flag.value)[2:].replace("-", "_")
            for kw in node.keywords:
                if kw.arg == "default":
                    try:
                        out[dest] = ast.literal_eval(kw.value)
                    except ValueError:
                        pass  # not a literal: always printed
                elif kw.arg == "action" and getattr(kw.value, "value", "") == "store_true":
                    out[dest] = False
    return out


SKIP_ARGS = ("out", "json", "progress", "run_dir")


def command(name: str, args: dict[str, Any], root: Path = ROOT) -> str:
    """``python benchmarks/<name>.py`` with the flags whose value differs from the script's default
    (every flag when the script has since been removed, which the command then says)."""
    script = root / "benchmarks" / f"{name}.py"
    defaults = script_defaults(script) if script.is_file() else {}
    parts = [f"python benchmarks/{name}.py"]
    for dest, value in args.items():
        flag = "--" + dest.replace("_", "-")
        if dest == "data_dir":  # always shown: the default is the measuring machine's folder
            parts.append(f"{flag} {DATA}")
        elif dest in SKIP_ARGS or (dest in defaults and str(defaults[dest]) == str(value)) or value is None:
            continue
        elif value is True:
            parts.append(flag)
        elif value is not False:
            parts.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    text = " ".join(parts)
    return text if script.is_file() else f"{text} (script since removed)"


def flag_value(cmd: str, name: str) -> str:
    """The value of ``--name`` in a recorded command line."""
    found = re.search(rf"--{name.replace('_', '-')}[ =](\S+)", cmd)
    return found.group(1) if found else "?"


def date_from(src: str) -> str:
    found = re.findall(r"\d{4}-\d{2}-\d{2}", src)
    return found[-1] if found else "not recorded"


def committed_date(src: str, root: Path = ROOT) -> str:
    """The date of the commit that last changed ``src`` (for results whose JSON holds no date)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%cs", "--", src],
                             capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        out = ""
    return out or date_from(src)


def arch_flags(arch: str) -> str:
    """A run's ``arch`` as the command-line flags that give it: ``--arch SPEC``, or for a model spec
    (``model:SOURCE blocks=K balance=KIND KEY=VALUE``) ``--model``, ``--blocks``, ``--balance``, ``--model-opt``."""
    if not arch.startswith("model:"):
        return f"--arch {arch}"
    source, *pairs = arch[len("model:"):].split()
    flags = [f"--model {source}"]
    for key, value in (p.split("=", 1) for p in pairs):
        if key in ("blocks", "balance"):
            flags += [] if (key, value) == ("balance", "activations") else [f"--{key} {value}"]
        else:
            flags.append(f"--model-opt {key}={value}")
    return " ".join(flags)
