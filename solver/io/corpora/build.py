"""Rebuild the built-in texts from their sources: prose only (PROVENANCE.md says what and why).

Run it on the two joined source texts made as PROVENANCE.md describes (the stdlib data files,
stripped and joined with one blank line)::

    python -m solver.io.corpora.build SOTU_SOURCE.txt MOBY_SOURCE.txt [--out solver/io/corpora]

It writes ``sotu.txt.xz`` and ``moby_dick.txt.xz`` and prints the cut list that PROVENANCE.md
records (character offsets in the joined sources). The cuts are deterministic: the same sources
give byte-identical files.

* Moby-Dick keeps ``CHAPTER 1. Loomings.`` to the end of the Epilogue: the Etymology and the
  Extracts (quotations and word lists) are cut.
* The State of the Union text keeps the speeches: the transcribers' audience reactions
  (``[Laughter]``, ``(Applause.)``...), the editors' footnotes and footnote marks, page marks,
  ``[missing text]`` and the closing "The Address as reported from the floor appears in the
  Congressional Record ..." notes are cut.
"""

from __future__ import annotations

import argparse
import lzma
import re
from dataclasses import dataclass
from pathlib import Path

MOBY_START = "CHAPTER 1. Loomings."
"""Where Moby-Dick's prose starts (the Etymology and Extracts come before it)."""

SOTU_CUTS: tuple[tuple[str, str], ...] = (
    ("audience reaction", r"[\[(](?:[Aa]pplause|[Ll]aughter)\.?[\])]"),
    ("footnote", r"\[Footnote \d+:[^\]]*\]"),
    ("footnote mark", r"\[\d\]"),
    ("page mark", r"\[p\.\d+\]"),
    ("missing-text mark", r"\[missing text\]"),
    (
        "editor's note",
        r"The [Aa]ddress as reported from the floor appears in the Congressional Record"
        r"[^()]*\(vol\. \d+, p\. \d+\)\.",
    ),
)
"""What is cut from the State of the Union text: (what, regular expression)."""


@dataclass(frozen=True)
class Cut:
    """One span cut from a source text: ``[start, end)`` in its characters."""

    what: str
    start: int
    end: int


def moby_dick(source: str) -> tuple[str, list[Cut]]:
    """Moby-Dick from ``CHAPTER 1. Loomings.`` to the end (the Epilogue closes the book).

    Raises:
        ValueError: the source has no ``CHAPTER 1. Loomings.``.
    """
    start = source.index(MOBY_START)
    return source[start:], [Cut("etymology and extracts (front matter)", 0, start)]


def sotu(source: str) -> tuple[str, list[Cut]]:
    """The State of the Union speeches without the transcribers' and editors' insertions.

    Each cut takes the space before it too (or the one after it at the start of a line), so
    no double spaces are left behind.
    """
    spans: list[Cut] = []
    for what, pattern in SOTU_CUTS:
        for match in re.finditer(pattern, source):
            start, end = match.span()
            if start > 0 and source[start - 1] == " ":
                start -= 1
            elif end < len(source) and source[end] == " ":
                end += 1
            spans.append(Cut(what, start, end))
    spans.sort(key=lambda cut: cut.start)
    merged: list[Cut] = []
    for cut in spans:
        if merged and cut.start < merged[-1].end:
            last = merged.pop()
            cut = Cut(last.what, last.start, max(last.end, cut.end))
        merged.append(cut)
    pieces, at = [], 0
    for cut in merged:
        pieces.append(source[at : cut.start])
        at = cut.end
    pieces.append(source[at:])
    return "".join(pieces), merged


def write_xz(path: Path, text: str) -> None:
    """``text`` as UTF-8, ``xz -9e`` compressed."""
    path.write_bytes(lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))


def main(argv: list[str] | None = None) -> None:
    """Build both texts and print the cut list."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sotu_source", type=Path, help="the joined State of the Union files")
    parser.add_argument("moby_source", type=Path, help="the joined Moby-Dick files")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    for name, source, clean in (
        ("sotu.txt.xz", args.sotu_source, sotu),
        ("moby_dick.txt.xz", args.moby_source, moby_dick),
    ):
        text = source.read_text(encoding="utf-8")
        cleaned, cuts = clean(text)
        write_xz(args.out / name, cleaned)
        removed = sum(cut.end - cut.start for cut in cuts)
        print(f"{name}: {len(text):,} -> {len(cleaned):,} characters, {len(cuts)} cuts")
        print(f"  {removed:,} characters removed")
        for cut in cuts:
            shown = text[cut.start : cut.end].strip()
            shown = shown if len(shown) <= 100 else f"{shown[:60]} ... {shown[-30:]}"
            print(f"  [{cut.start}, {cut.end})  {cut.what}: {shown!r}")


if __name__ == "__main__":
    main()
