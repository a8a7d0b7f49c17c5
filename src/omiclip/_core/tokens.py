"""CLIP-BPE token counts of words, as open_clip's tokenizer makes them, without importing torch or open_clip.

open_clip's ``SimpleTokenizer`` (the OmiCLIP tokenizer) cleans the text (ftfy, HTML unescaping twice,
whitespace collapsed, lower case), splits it with one regular expression into pieces that never cross
whitespace, and BPE-encodes each piece. A sentence's token count is therefore the sum of its words' counts,
and each word is counted once per process. Importing ``open_clip`` would import torch (seconds); its BPE
merges file is read directly instead, located without importing the package.
"""

from __future__ import annotations

import html
import importlib.util
import re
import zlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import numpy as np

# coca_ViT-L-14 and every OmiCLIP model read 76 text tokens; start and end tokens take two of them
CONTEXT_LENGTH = 76
CONTENT_TOKENS = CONTEXT_LENGTH - 2

_MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2  # the merges open_clip's SimpleTokenizer reads (after the header line)
_DECOMPRESS_CHUNK = 1 << 18
_SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
_word_counts: dict[str, int] = {}


def word_token_counts(words: Iterable[str]) -> np.ndarray:
    """Number of CLIP-BPE tokens of each word, as ``len(open_clip SimpleTokenizer().encode(word))``.

    Parameters
    ----------
    words
        Words (gene symbols); each distinct word is tokenised once per process.

    Returns
    -------
    ``int64`` array, one count per word.
    """
    counts = _word_counts
    return np.fromiter(
        (counts[word] if word in counts else _count_and_remember(word) for word in words), dtype=np.int64
    )


def genes_in_context(sentences: Iterable[str], budget: int = CONTENT_TOKENS) -> np.ndarray:
    """Leading whole words of each sentence that fit in ``budget`` tokens.

    Parameters
    ----------
    sentences
        Space-separated words.
    budget
        Content tokens the tokenizer keeps (context length minus the start and end tokens).

    Returns
    -------
    ``int32`` array, one count per sentence.
    """
    result = []
    for sentence in sentences:
        used = np.cumsum(word_token_counts(sentence.split()))
        result.append(int(np.searchsorted(used, budget, side="right")))
    return np.asarray(result, dtype=np.int32)


def _count_and_remember(word: str) -> int:
    # ftfy and HTML unescaping leave printable ASCII without "&" unchanged, and on ASCII the letter and number
    # classes are [a-z] and [0-9]: such words (nearly every gene symbol) need neither ftfy nor the regex module
    if word.isascii() and word.isprintable() and "&" not in word:
        pieces = _ASCII_PIECES.findall(" ".join(word.split()).lower())
    else:
        pieces = _unicode_pieces().findall(_clean(word))
    count = sum(len(_bpe(piece.encode("utf-8"))) for piece in pieces)
    _word_counts[word] = count
    return count


def _clean(text: str) -> str:
    """open_clip's ``_clean_lower``: ftfy, HTML unescaped twice, whitespace collapsed, lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


_SPECIAL = "|".join(_SPECIAL_TOKENS) + "|'s|'t|'re|'ve|'m|'ll|'d|"
_ASCII_PIECES = re.compile(_SPECIAL + r"[a-z]+|[0-9]|[^\sa-z0-9]+")


@cache
def _unicode_pieces():
    """open_clip's splitting pattern; its Unicode letter and number classes need the regex module (from open_clip)."""
    import regex

    return regex.compile(_SPECIAL + r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", regex.IGNORECASE)


def _bpe(piece: bytes) -> tuple[str, ...]:
    """BPE symbols of one piece: its bytes as CLIP's byte characters, the last marked ``</w>``, merged by rank."""
    if piece.decode("utf-8", "replace") in _SPECIAL_TOKENS:
        return (piece.decode(),)
    byte_chars = _byte_characters()
    word = [byte_chars[b] for b in piece]
    word[-1] += "</w>"
    ranks = _merge_ranks()
    while len(word) > 1:
        pairs = {f"{word[i]} {word[i + 1]}" for i in range(len(word) - 1)}
        best = min(pairs, key=lambda pair: ranks.get(pair, _N_MERGES))
        if best not in ranks:
            break
        first, second = best.split(" ")
        merged = []
        i = 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return tuple(word)


@cache
def _byte_characters() -> list[str]:
    """CLIP's reversible map from the 256 byte values to printable characters (``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    characters = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in characters:
            characters[b] = chr(256 + extra)
            extra += 1
    return [characters[b] for b in range(256)]


@cache
def _merge_ranks() -> dict[str, int]:
    """Rank of each merge, keyed by its line ``"first second"`` (BPE symbols never contain a space)."""
    # the merges used are the first quarter of the 3 MB file: decompress only until they are in
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    text = decompressor.decompress(merges_path().read_bytes(), _DECOMPRESS_CHUNK)
    while text.count(b"\n") <= _N_MERGES and decompressor.unconsumed_tail:
        text += decompressor.decompress(decompressor.unconsumed_tail, _DECOMPRESS_CHUNK)
    complete_lines = text[: text.rfind(b"\n")].decode("utf-8")  # a chunk may end inside a UTF-8 character
    lines = complete_lines.split("\n", _N_MERGES + 1)[1 : _N_MERGES + 1]
    return dict(zip(lines, range(len(lines)), strict=True))


def merges_path() -> Path:
    """open_clip's BPE merges file, found without importing open_clip (which imports torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "open_clip is not installed; its tokenizer vocabulary is needed: `pip install open-clip-torch`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _MERGES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"open_clip's BPE vocabulary {str(path)!r} is missing; reinstall open-clip-torch.")
    return path
