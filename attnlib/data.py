"""The real English text shipped in data/ (see data/PROVENANCE.md), loaded offline with `datasets`.

Running text (for perplexity):
    ``load_text("brown")``   75 Brown corpus documents (5 from each of the 15 genres), ~2,000 words each
    ``load_text("austen")``  73 chapters: the opening chapters of each of Jane Austen's six novels

Labelled text (for linear probes on encoder embeddings):
    ``load_labelled("polarity")``    200 movie-review sentences, neg / pos (Pang & Lee)
    ``load_labelled("newsgroups")``  200 Usenet posts (headers removed), alt.atheism / sci.space
    ``load_labelled("spam")``        3,000 SpamAssassin e-mails (subject + body), ham / spam, balanced

The jsonl files are built by ``python scripts/build_data.py`` from the original registry packages;
``data/manifest.json`` holds their row counts and sha256 sums.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import paths

# Local files only: `datasets` must never try a hub.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["TEXT_SETS", "LABELLED_SETS", "load_text", "load_labelled", "load_records", "data_file"]

TEXT_SETS = ("brown", "austen")
LABELLED_SETS = ("polarity", "newsgroups", "spam")


def data_file(name: str) -> Path:
    """Path of ``data/<name>.jsonl``; ValueError for unknown names, FileNotFoundError if it is missing."""
    known = TEXT_SETS + LABELLED_SETS
    if name not in known:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(known)}")
    path = paths.data_dir() / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; rebuild the extracts with: python scripts/build_data.py")
    return path


def load_records(name: str) -> list[dict]:
    """All rows of one data set as dicts (every field kept: ids, genres, books, labels, ...)."""
    path = data_file(name)
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(path), split="train",
                               cache_dir=str(paths.cache_dir("hf_datasets")))
    return ds.to_list()


def load_text(name: str) -> list[str]:
    """Documents of a running-text set (``TEXT_SETS``), in file order. Paragraphs are separated by a blank line."""
    if name not in TEXT_SETS:
        raise ValueError(f"unknown text set {name!r}; known text sets: {', '.join(TEXT_SETS)}"
                         + (" (labelled sets load with load_labelled)" if name in LABELLED_SETS else ""))
    return [r["text"] for r in load_records(name)]


def load_labelled(name: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, labels, label_names) of a labelled set (``LABELLED_SETS``).

    labels: int64 array (N,) with values 0..C-1; label_names[c] names class c.
    """
    if name not in LABELLED_SETS:
        raise ValueError(f"unknown labelled set {name!r}; known labelled sets: {', '.join(LABELLED_SETS)}"
                         + (" (running text loads with load_text)" if name in TEXT_SETS else ""))
    rows = load_records(name)
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    names: dict[int, str] = {}
    for r in rows:
        if names.setdefault(int(r["label"]), r["label_name"]) != r["label_name"]:
            raise ValueError(f"{name}: label {r['label']} has two names ({names[int(r['label'])]!r}, {r['label_name']!r})")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{name}: labels must be 0..C-1, got {sorted(names)}")
    return [r["text"] for r in rows], labels, [names[i] for i in range(len(names))]
