"""The shipped text extracts (attnlib.data, data/*.jsonl): counts, labels, integrity, errors."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from attnlib import data as D
from attnlib.paths import data_dir

COUNTS = {"brown": 75, "austen": 73, "polarity": 200, "newsgroups": 200, "spam": 3000}
LABELS = {"polarity": ["neg", "pos"], "newsgroups": ["alt.atheism", "sci.space"], "spam": ["ham", "spam"]}


def test_files_match_manifest_and_stay_small():
    manifest = json.loads((data_dir() / "manifest.json").read_text())
    assert set(manifest) == set(D.TEXT_SETS + D.LABELLED_SETS)
    total = 0
    for name, info in manifest.items():
        payload = (data_dir() / f"{name}.jsonl").read_bytes()
        assert hashlib.sha256(payload).hexdigest() == info["sha256"], f"{name}.jsonl differs from manifest.json"
        assert payload.count(b"\n") == info["rows"] == COUNTS[name]
        total += len(payload)
    assert total < 15e6  # data/ stays under about 15 MB
    assert (data_dir() / "PROVENANCE.md").exists()


@pytest.mark.parametrize("name", D.TEXT_SETS)
def test_load_text(name):
    docs = D.load_text(name)
    assert len(docs) == COUNTS[name]
    assert all(isinstance(d, str) and len(d) > 2000 for d in docs)
    assert docs == D.load_text(name)  # deterministic order


@pytest.mark.parametrize("name", D.LABELLED_SETS)
def test_load_labelled(name):
    texts, labels, names = D.load_labelled(name)
    assert len(texts) == len(labels) == COUNTS[name]
    assert labels.dtype == np.int64 and names == LABELS[name]
    assert np.bincount(labels).tolist() == [COUNTS[name] // 2] * 2  # balanced
    assert all(isinstance(t, str) and t.strip() for t in texts)


def test_spam_and_newsgroups_carry_no_header_giveaways():
    texts, _, _ = D.load_labelled("newsgroups")
    assert not any(t.startswith("Newsgroups:") or "\nNewsgroups:" in t for t in texts)
    texts, _, _ = D.load_labelled("spam")
    # mail headers are dropped except the subject line (bodies may still quote headers: that is content)
    assert not any(t.startswith(("Return-Path:", "From ", "Received:", "Delivered-To:", "X-")) for t in texts)
    assert sum(t.startswith("Subject:") for t in texts) > 900


def test_records_keep_metadata():
    brown = D.load_records("brown")
    assert len({r["genre"] for r in brown}) == 15
    austen = D.load_records("austen")
    assert len({r["book"] for r in austen}) == 6 and all(r["chapter"] >= 1 for r in austen)


@pytest.mark.parametrize("call", [D.load_text, D.load_labelled, D.load_records])
def test_unknown_names_raise_listing_known_ones(call):
    with pytest.raises(ValueError, match="known"):
        call("imdb")


def test_wrong_kind_of_set_is_explained():
    with pytest.raises(ValueError, match="load_labelled"):
        D.load_text("spam")
    with pytest.raises(ValueError, match="load_text"):
        D.load_labelled("brown")
