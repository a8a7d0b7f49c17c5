"""Build the tutorial notebooks from their sources and execute them; the executed notebooks are committed.

    PYTHONPATH=src .venv/bin/python docs/notebooks/_make.py                 # all, in order, from scratch
    PYTHONPATH=src .venv/bin/python docs/notebooks/_make.py align predex    # some (reuses tutorial_models/)
    PYTHONPATH=src .venv/bin/python docs/notebooks/_make.py --prose-only finetune_embed   # Markdown edits only

Sources are ``sources/{name}.py`` in the percent format: ``# %%`` starts a code cell, ``# %% [markdown]`` a
Markdown cell whose lines are written as ``# text``. Sphinx renders the committed outputs
(``nb_execution_mode = "off"``), so the documentation build never runs a model.

The fine-tuning tutorial saves its models to ``tutorial_models/``, which the later tutorials load instead of
training again (they train themselves when it is missing, with the same seed, so the result is the same). A run
of all notebooks starts by emptying that folder, so that the committed outputs come from one fresh run.
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "sources"
ORDER = ["finetune_embed", "align", "annotate", "decompose", "retrieve", "predex", "visium"]
MODELS = HERE / "tutorial_models"
TIMEOUT_S = 3600  # per cell; a contended machine trains slowly


def cells_of(source: str) -> list:
    """Split a percent-format script into notebook cells."""
    cells, kind, lines = [], None, []

    def flush():
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            text = "\n".join(line.removeprefix("# ").removeprefix("#") for line in text.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(text))
        elif kind == "code" and text:
            cells.append(nbformat.v4.new_code_cell(text))

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build(name: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook(cells=cells_of((SOURCES / f"{name}.py").read_text()))
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    return notebook


def execute(notebook: nbformat.NotebookNode) -> float:
    # the kernel imports omiclip from this checkout's src/
    src = str(HERE.parents[1] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    client = NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(HERE)}},
        record_timing=False,
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    for cell in notebook.cells:  # tqdm's note that ipywidgets is missing: about this machine, not the tutorial
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if "IProgress not found" not in o.get("text", "")]
    return seconds


def keep_outputs(notebook: nbformat.NotebookNode, path: Path) -> None:
    """Take the outputs of the executed notebook at ``path``, whose code cells must be exactly those of ``notebook``."""
    old = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    new = [c for c in notebook.cells if c.cell_type == "code"]
    if [c.source for c in old] != [c.source for c in new]:
        raise SystemExit(f"{path.name}: code cells changed since it was executed; run without --prose-only.")
    for before, after in zip(old, new, strict=True):
        after.outputs, after.execution_count = before.outputs, before.execution_count


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", help=f"notebooks to build, of {ORDER} (default: all)")
    parser.add_argument("--prose-only", action="store_true", help="rebuild Markdown, keep the executed outputs")
    args = parser.parse_args()
    names = args.names or ORDER
    unknown = set(names) - set(ORDER)
    if unknown:
        parser.error(f"unknown notebooks {sorted(unknown)}; choose from {ORDER}")
    if not args.names and not args.prose_only and MODELS.exists():
        shutil.rmtree(MODELS)
    for name in names:
        notebook = build(name)
        path = HERE / f"{name}.ipynb"
        if args.prose_only:
            keep_outputs(notebook, path)
            done = "outputs kept"
        else:
            done = f"executed in {execute(notebook):.0f} s"
        nbformat.write(notebook, path)
        print(f"{name}: {done}, {path.stat().st_size / 1024:.0f} KiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
