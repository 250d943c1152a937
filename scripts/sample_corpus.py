#!/usr/bin/env python3
"""Cleans the raw sample texts fetched by get_sample_corpus.sh into JSON Lines documents.

Usage: sample_corpus.py RAW_DIR OUT_DIR
RAW_DIR holds web.txt (diatheke), kjv.txt (bible), jargon.txt, wordnet/ (data.noun, ...) and
shakespeare/ (*.txt). Writes OUT_DIR/<source>.jsonl, one {"text", "source", "id"} record per
document, and prints per-source counts as JSON.
"""
import json
import pathlib
import re
import sys


def web_bible(path):
    """World English Bible from diatheke: "Book C:V: text" lines, poetry continuing on bare lines.
    A psalm's superscription stands after a blank line before an indented verse (repeated before
    each of its verses): kept once, as the heading of its chapter."""
    verse = re.compile(r"^(\s*)((?:[1-3I]+ )?[A-Z][A-Za-z ]+?) (\d+):(\d+): ?(.*)$")
    chapters, key, heading = {}, None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("(engWEB"):
            continue
        m = verse.match(line)
        if not m:
            if not line.strip():
                if key and heading:  # what came before a blank line continues the verse
                    chapters[key].extend(heading)
                heading = []
            else:
                heading.append(line.strip())
            continue
        new_key = f"{m.group(2)} {m.group(3)}"
        if m.group(1):  # indented: the lines since the blank are a superscription
            if new_key != key:
                chapters.setdefault(new_key, []).extend(heading)
        elif key:
            chapters[key].extend(heading)
        heading, key = [], new_key
        chapters.setdefault(key, []).append(m.group(5).strip())
    if key:
        chapters[key].extend(heading)
    for key, lines in chapters.items():
        # The module's markup drops a space after some punctuation ("Jude,a servant").
        text = "\n".join(re.sub(r"([,;:.!?])(?=[A-Za-z])", r"\1 ", l) for l in lines if l)
        yield key, f"{key}\n\n{text}"


def kjv_bible(path):
    """King James Version from `bible`: a "Book C" header, then "  N text" verse lines."""
    key, verses = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.match(r"^[1-3I]*\s*[A-Z][A-Za-z ]+ \d+$", line):
            if key and verses:
                yield key, f"{key}\n\n" + "\n".join(verses)
            key, verses = line.strip(), []
        elif line.strip():
            verses.append(re.sub(r"^\s*\d+\s+", "", line).strip())
    if key and verses:
        yield key, f"{key}\n\n" + "\n".join(verses)


def jargon(path):
    """The Jargon File: one document per ":term:" entry of the lexicon (front matter skipped)."""
    entry = re.compile(r"^   :([^:]+):")
    name, lines = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = entry.match(line)
        if m:
            if name:
                yield name, "\n".join(lines).strip()
            name, lines = m.group(1), []
        if name is not None:
            lines.append(line[3:] if line.startswith("   ") else line)
    if name:
        yield name, "\n".join(lines).strip()


def wordnet(directory, per_document=100):
    """WordNet glosses, "word, synonym: gloss", grouped by part of speech, 100 synsets a document."""
    for pos in ["noun", "verb", "adj", "adv"]:
        entries = []
        for line in (directory / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            fields, gloss = line.split("|", 1)
            parts = fields.split()
            count = int(parts[3], 16)
            words = [parts[4 + 2 * i].replace("_", " ") for i in range(count)]
            words = [re.sub(r"\([a-z]+\)$", "", w) for w in words]  # adjective markers like (a)
            entries.append(f"{', '.join(words)}: {gloss.strip()}")
        for start in range(0, len(entries), per_document):
            yield f"{pos} {start // per_document}", "\n".join(entries[start:start + per_document])


def shakespeare(directory):
    """The plays and poems of the `shakespeare` package (the *_gut.txt edition of each work)."""
    for path in sorted(directory.glob("*_gut.txt")):
        text = path.read_bytes().decode("utf-8", errors="replace")
        text = re.sub(r"\r\n?", "\n", text).strip()
        yield path.stem.removesuffix("_gut"), text


def main():
    raw, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    sources = {
        "web": web_bible(raw / "web.txt"),
        "kjv": kjv_bible(raw / "kjv.txt"),
        "jargon": jargon(raw / "jargon.txt"),
        "wordnet": wordnet(raw / "wordnet"),
        "shakespeare": shakespeare(raw / "shakespeare"),
    }
    counts = {}
    for name, documents in sources.items():
        n = size = 0
        tmp = out / f"{name}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for key, text in documents:
                if not text.strip():
                    continue
                f.write(json.dumps({"text": text, "source": name, "id": key}, ensure_ascii=False) + "\n")
                n += 1
                size += len(text.encode("utf-8"))
        tmp.rename(out / f"{name}.jsonl")
        counts[name] = {"documents": n, "text_bytes": size}
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
