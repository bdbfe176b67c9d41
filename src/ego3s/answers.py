"""Answer extraction and open-answer metrics, shared by selection, training and evaluation.

Everything here takes whatever a model wrote (or `None`, or garbage) and never raises.

- `extract_answer`: the content of the last `<answer>` tag, else a fallback on the raw text.
- `extract_letter`: the option letter a close-QA completion commits to, or None when unsure.
- `extract_think`, `format_ok`: the reasoning and the strict `<think>..</think><answer>..</answer>` check.
- `normalize_text`, `exact_match`, `rouge_l_f`: open-answer metrics.

The rules, in the order `extract_letter` applies them, are in docs/rewards.md.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from functools import lru_cache

from ego3s.data.schema import LETTERS

__all__ = [
    "extract_answer",
    "extract_letter",
    "extract_think",
    "format_ok",
    "normalize_text",
    "exact_match",
    "rouge_l_f",
    "as_text",
]

# Longer inputs are cut (from the front: the answer is at the end) before any parsing, so that a
# runaway completion costs bounded time.
MAX_CHARS = 200_000
# ROUGE-L is an O(n*m) table in pure Python: the LCS looks at this many tokens per side at most.
MAX_ROUGE_TOKENS = 1024


def as_text(x) -> str:
    """Any completion-ish value as a clean `str`: None -> "", bytes decoded, TRL conversational
    lists (`[{"role": "assistant", "content": ...}]`, content possibly a list of `{"type": "text"}`
    parts) joined, lone surrogates replaced, cut to the last MAX_CHARS characters. Never raises."""
    try:
        return _as_text(x)
    except Exception:  # a hostile object (recursive list, failing __str__)
        return ""


def _as_text(x) -> str:
    if x is None:
        return ""
    if isinstance(x, (bytes, bytearray)):
        s = bytes(x).decode("utf-8", errors="replace")
    elif isinstance(x, str):
        s = x
    elif isinstance(x, dict):
        s = _as_text(x.get("content", x.get("text", "")))
    elif isinstance(x, (list, tuple)):
        msgs = [m for m in x if not (isinstance(m, dict) and m.get("role") not in (None, "assistant"))]
        s = "".join(_as_text(m) for m in msgs)
    else:
        s = str(x)
    if len(s) > MAX_CHARS:
        s = s[-MAX_CHARS:]
    # Lone surrogates (from bad decoding upstream) break tokenizers and encoders downstream.
    return s.encode("utf-8", errors="replace").decode("utf-8")


# ----------------------------------------------------------------------------------------------
# Tags

_ANSWER_TAG = re.compile(r"<\s*(/\s*)?answer\s*>", re.IGNORECASE)
_THINK_TAG = re.compile(r"<\s*(/\s*)?think\s*>", re.IGNORECASE)
_SPECIAL = re.compile(r"<\|[^|<>]{0,40}\|>")  # <|im_end|>, <|endoftext|> left in by a decoder


def _answer_span(text: str) -> tuple[str, bool]:
    """(answer text, whether it came from an answer tag)."""
    text = _SPECIAL.sub(" ", text)
    tags = list(_ANSWER_TAG.finditer(text))
    opens = [m for m in tags if not m.group(1)]
    if opens:
        last = opens[-1]
        close = next((m for m in tags if m.group(1) and m.start() >= last.end()), None)
        end = close.start() if close else len(text)
        content = text[last.end() : end]
        if close is None:  # unclosed: stop at a following think tag, if any
            t = _THINK_TAG.search(content)
            content = content[: t.start()] if t else content
        return content.strip(), True
    closes = [m for m in tags if m.group(1)]
    think_ends = [m for m in _THINK_TAG.finditer(text) if m.group(1)]
    if closes:  # "...</think> B</answer>": the text before the last closing tag
        end = closes[-1].start()
        start = max([m.end() for m in think_ends if m.end() <= end] + [m.end() for m in closes[:-1]] + [0])
        return _THINK_TAG.sub(" ", text[start:end]).strip(), False
    if think_ends:
        after = text[think_ends[-1].end() :].strip()
        if after:
            return _THINK_TAG.sub(" ", after).strip(), False
    return _THINK_TAG.sub(" ", text).strip(), False


def extract_answer(text) -> str | None:
    """The content of the last `<answer>...</answer>` (tags case- and whitespace-insensitive; a
    missing closing tag means "to the end"). Without an answer tag: the text after the last
    `</think>`, else the whole text without think tags. None when that is empty."""
    try:
        content, _ = _answer_span(as_text(text))
    except Exception:  # never raise on model output
        return None
    return content or None


def extract_think(text) -> str:
    """The reasoning: the content of every `<think>...</think>` block, joined by newlines (an
    unclosed block runs to the next answer tag or the end). Empty when there is none."""
    try:
        s = as_text(text)
        out = []
        tags = list(_THINK_TAG.finditer(s))
        i = 0
        while i < len(tags):
            if tags[i].group(1):  # a stray closing tag
                i += 1
                continue
            j = i + 1
            while j < len(tags) and not tags[j].group(1):
                j += 1
            if j < len(tags):
                out.append(_THINK_TAG.sub(" ", s[tags[i].end() : tags[j].start()]))
                i = j + 1
            else:  # unclosed: to the next answer tag or the end
                rest = s[tags[i].end() :]
                a = _ANSWER_TAG.search(rest)
                out.append(_THINK_TAG.sub(" ", rest[: a.start()] if a else rest))
                break
        return "\n".join(t.strip() for t in out).strip()
    except Exception:
        return ""


_ANY_TAG = re.compile(r"</?\s*(?:think|answer)\s*>", re.IGNORECASE)
_FORMAT_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]


def format_ok(text) -> bool:
    """Exactly one `<think>...</think>` followed by exactly one `<answer>...</answer>`, nothing else
    but whitespace around them. Tags are the literal lowercase ones the prompt asks for (any other
    spelling of a think/answer tag anywhere fails); the contents may be empty."""
    try:
        s = as_text(text)
        tags = list(_ANY_TAG.finditer(s))
        if [t.group(0) for t in tags] != _FORMAT_TAGS:
            return False
        return not (
            s[: tags[0].start()].strip() or s[tags[1].end() : tags[2].start()].strip() or s[tags[3].end() :].strip()
        )
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------
# Letters

_MD = re.compile(r"[*_`#$\"“”‘’]+")
# Every pattern below is linear: no two adjacent quantifiers can eat the same characters, and
# runs of brackets are bounded, so a hostile completion ("((((...", "answer      ...") costs
# linear time.
_CONNECT = r"(?:is|would\s+be|should\s+be|must\s+be|will\s+be|=|:)"
_CUE_PREFIX = (
    r"(?:(?:so|thus|therefore|hence)(?:\s*,)?\s+)?(?:(?:the|my|our)\s+)?"
    r"(?:(?:final|correct|best|right|most\s+likely)\s+)?"
    r"(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be))?(?:\s*[:=\-])?\s*"
    r"|答案(?:\s*(?:是|为|為))?(?:\s*:)?\s*|选(?:择|項|项)?(?:\s*(?:是|为))?\s*"
)
# The whole answer is a letter: "B", "(B)", "B.", "[B]", "Option B", "The answer is B", "answer: (b)".
_WHOLE = re.compile(
    rf"(?:{_CUE_PREFIX})?(?:(?:option|choice|letter)\s+)?"
    r"(?:[(\[{<]\s*)?([a-j])(?:\s*[)\]}>])?(?:\s*(?:选项|項|项))?",
    re.IGNORECASE,
)
# A letter leads the answer: "B. the red cup", "(B) red cup", "Option B: red cup".
_LEAD_BRACKET = re.compile(
    rf"(?:{_CUE_PREFIX})?(?:(?:option|choice)\s+)?[(\[]\s*([a-j])\s*[)\]](.*)", re.IGNORECASE | re.DOTALL
)
_LEAD_DELIM = re.compile(
    rf"(?!(?:i\.?\s?e|e\.?\s?g)\.)(?:{_CUE_PREFIX})?(?:(?:option|choice)\s+)?"
    r"([A-J]|[a-j](?=\s*[.)]))\s*[.):]\s*(\S.*)",
    re.IGNORECASE | re.DOTALL,
)
_LEAD_SPACE = re.compile(r"([A-J])\s+(\S.*)", re.DOTALL)
# Explicit statements anywhere; the last one wins.
_OPEN, _CLOSE = r"(?P<open>[*(\[{\"'`]{0,4})", r"(?P<close>[*)\]}\"'`]{0,4})"
_CUES = [
    # "answer is B", "Answer: (B)", "answer B"; "option"/"choice" need a verb or colon ("the
    # correct option is B"), since reasoning walks through "option A ..., option B ...".
    re.compile(
        rf"(?:answer(?:\s*{_CONNECT})?|(?:choice|option)\s*{_CONNECT})\s*"
        rf"(?:(?:option|choice|letter)\s+)?{_OPEN}(?P<L>[A-Za-z]){_CLOSE}",
        re.IGNORECASE,
    ),
    re.compile(
        rf"\b(?:choose|chose|pick|select|go\s+with|going\s+with)\s+(?:(?:option|choice)\s+)?"
        rf"{_OPEN}(?P<L>[A-Za-z]){_CLOSE}",
        re.IGNORECASE,
    ),
    re.compile(
        r"(?:答案|选项|選項|选择|選擇|应选|選)\s*(?:(?:是|为|為|应该是|應該是|:)\s*)?"
        r"(?P<open>[(\[]{0,2})(?P<L>[A-Za-z])(?P<close>[)\]]{0,2})"
    ),
    re.compile(r"\\boxed\s*\{\s*(?:\\text\s*\{\s*)?(?P<open>\(?)(?P<L>[A-Za-z])(?P<close>\)?)\s*\}"),
    re.compile(
        r"(?<![A-Za-z0-9])(?:(?i:option|choice)\s+)?(?P<open>[*(\[]{0,2})(?P<L>[A-J])(?P<close>[*)\]]{0,2})"
        r"\s+(?:is|seems|appears|looks)\s+(?:to\s+be\s+)?(?:the\s+)?"
        r"(?:correct|right|best|most\s+(?:likely|accurate|appropriate|plausible))\b"
    ),
]
# Words after an uppercase "A"/"I" that make it a letter rather than the article/pronoun.
_LETTER_FOLLOWERS = {
    "is",
    "was",
    "seems",
    "appears",
    "looks",
    "matches",
    "fits",
    "because",
    "since",
    "as",
    "which",
    "best",
    "would",
    "should",
    "must",
    "correctly",
    "or",
    "and",
}
_I_FOLLOWERS = {"is", "seems", "matches", "fits", "best"}  # "I would", "I think" are the pronoun


def _letter_word(L: str, after: str) -> bool:
    """Whether an uppercase "A"/"I" followed by `after` reads as a letter, not the article/pronoun."""
    if L == "I" and re.match(r"\s*['’]", after):
        return False  # I'm, I'd
    w = re.match(r"\s+([A-Za-z]+)", after)
    if not w:
        return True
    return w.group(1).lower() in (_LETTER_FOLLOWERS if L == "A" else _I_FOLLOWERS)


_AMBIGUOUS_TAIL = re.compile(r"\s*(?:,|/|&|\bor\b|\band\b)\s*(?:option\s+)?[(\[]?[A-J][)\]]?(?![A-Za-z0-9])")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'’\-])(?:\(([A-Ja-j])\)|\[([A-Ja-j])\]|([A-J]))(?![A-Za-z0-9'’\-])")
_OPTION_PREFIX = re.compile(r"\s*[(\[]?([A-J])[)\].:]\s+")


def _clean_options(options) -> list[str] | None:
    if not isinstance(options, (list, tuple)) or not options:
        return None
    opts = [as_text(o) for o in options]
    # Tolerate options written with their letters ("A. red cup", "B. blue cup").
    prefixes = [_OPTION_PREFIX.match(o) for o in opts]
    if all(p and p.group(1) == LETTERS[i] for i, p in enumerate(prefixes) if i < len(LETTERS)):
        opts = [o[p.end() :] if p else o for o, p in zip(opts, prefixes)]
    return opts


def _match_option_exact(region: str, norm_opts: list[str]) -> int | None:
    if len(region) > 20 * max(map(len, norm_opts), default=0) + 200:
        return None  # far too long to be one option's text
    r = normalize_text(_strip_cue(region))
    if not r:
        return None
    hits = [i for i, o in enumerate(norm_opts) if o and o == r]
    return hits[0] if len(hits) == 1 else None


def _match_option_near(region: str, norm_opts: list[str]) -> int | None:
    if len(region) > 20 * max(map(len, norm_opts), default=0) + 200:
        return None
    r = normalize_text(_strip_cue(region))
    valid = [(i, o) for i, o in enumerate(norm_opts) if o]
    if not r or not valid:
        return None
    longest = max(len(o) for _, o in valid)
    if len(r) > 3 * longest + 60:  # a long text that mentions options is not a choice of one
        return None
    # Near-exact: similarity ratio >= 0.9, unique.
    close = [i for i, o in valid if difflib.SequenceMatcher(None, r, o, autojunk=False).ratio() >= 0.9]
    if len(close) == 1:
        return close[0]
    if close:
        return None
    # Containment as whole words: unique, or one contained option that contains all the others.
    padded = f" {r} "
    inside = [i for i, o in valid if f" {o} " in padded]
    if len(inside) == 1:
        return inside[0]
    if inside:
        best = max(inside, key=lambda i: len(norm_opts[i]))
        if all(f" {norm_opts[i]} " in f" {norm_opts[best]} " for i in inside):
            return best
    return None


def _strip_cue(s: str) -> str:
    s = _MD.sub("", s).strip()
    m = re.match(rf"(?:{_CUE_PREFIX})", s, re.IGNORECASE)
    return s[m.end() :] if m and m.end() > 0 else s


def _rest_matches(rest: str, norm_opt: str | None) -> bool:
    if not norm_opt:
        return False
    r = normalize_text(rest)
    return (
        r == norm_opt
        or r.startswith(norm_opt + " ")
        or (len(r) <= 2 * len(norm_opt) + 10 and difflib.SequenceMatcher(None, r, norm_opt).ratio() >= 0.9)
    )


_NONE, _AMBIG = object(), object()


def _cue_letter(region: str, valid: str, norm_opts: list[str] | None):
    """The last explicit answer statement: a letter, _AMBIG ("A or B"), _NONE (a letter out of
    range), or None when there is no statement."""
    matches = sorted((m for pat in _CUES for m in pat.finditer(region)), key=lambda m: m.start(), reverse=True)
    for m in matches:
        r = _read_cue(m, region, valid, norm_opts)
        if r is not None:
            return r
    return None


def _read_cue(m: re.Match, region: str, valid: str, norm_opts: list[str] | None):
    L, opened, closed = m.group("L"), m.group("open").strip(), m.group("close").strip()
    after = region[m.end() : m.end() + 200]
    bracketed = bool(opened) and bool(closed)
    if not bracketed and re.match(r"[A-Za-z0-9]", after[:1] or " "):
        return None  # "answer is Bob"
    upper = L.upper()
    # EgoSchema-style option texts starting with a letter ("C picks up the knife").
    if norm_opts and not bracketed:
        tail = re.split(r"[.\n;!?]", region[m.start("L") : m.start("L") + 400], maxsplit=1)[0]
        hit = _match_option_exact(tail, norm_opts)
        if hit is not None and normalize_text(tail) != upper.lower():
            return LETTERS[hit]
    if _AMBIGUOUS_TAIL.match(after):
        return _AMBIG
    word = re.match(r"\s+([A-Za-z]+)", after) if not closed else None
    if word and not bracketed:
        if L.islower():
            return None  # "the answer is a cup"
        if (
            upper in "AI"
            and not _letter_word(upper, after)
            and not (norm_opts and upper in valid and _rest_matches(after, norm_opts[valid.index(upper)]))
        ):
            return None  # "the answer is A cup", "answer: I think..."
    elif not bracketed and L.islower() and not re.match(r"\s*(?:[.,;:!?)\]]|$)", after):
        return None
    return upper if upper in valid else _NONE


def _standalone_letter(region: str, valid: str, options: list[str] | None) -> str | None:
    # Letters that option texts themselves use as words ("C" = the camera wearer in EgoSchema)
    # say nothing on their own.
    noisy = set()
    for o in options or []:
        noisy.update(re.findall(r"(?<![A-Za-z0-9])([A-J])(?![A-Za-z0-9])", o))
    seen = set()
    for m in _STANDALONE.finditer(region):
        bracket = m.group(1) or m.group(2)
        L = (bracket or m.group(3)).upper()
        if not bracket:
            if L in noisy:
                continue
            named = re.search(r"(?:option|choice)\s+$", region[max(0, m.start() - 12) : m.start()], re.IGNORECASE)
            if L in "AI" and not named and not _letter_word(L, region[m.end() : m.end() + 40]):
                continue  # article / pronoun
        if L in valid:
            seen.add(L)
    return seen.pop() if len(seen) == 1 else None


def _letter_in(region: str, valid: str, options: list[str] | None) -> str | None:
    norm_opts = [normalize_text(o) for o in options] if options else None
    core = _MD.sub("", region).strip()
    core = core.rstrip(" \t\r\n\f\v.。!?,;:")
    if not core:
        return None
    # 1. The whole answer is a letter.
    m = _WHOLE.fullmatch(core)
    if m:
        L = m.group(1).upper()
        return L if L in valid else None
    # 2. The whole answer is an option's text.
    if norm_opts:
        hit = _match_option_exact(core, norm_opts)
        if hit is not None:
            return LETTERS[hit]
    # 3. A letter leads: "(B) red cup", "B. red cup", "B red cup" (the latter only if the text fits B).
    first_line = core.split("\n", 1)[0].strip()
    for pat in (_LEAD_BRACKET, _LEAD_DELIM):
        m = pat.fullmatch(first_line)
        if m and not _AMBIGUOUS_TAIL.match(first_line[m.end(1) :].lstrip(")]. ")):
            L = m.group(1).upper()
            if L in valid:
                return L
            if len(core) < 200:
                return None  # explicit letter out of range
    m = _LEAD_SPACE.fullmatch(first_line)
    if m and norm_opts and m.group(1) in valid and _rest_matches(m.group(2), norm_opts[valid.index(m.group(1))]):
        return m.group(1)
    # 4. The last explicit statement ("the answer is B", "答案是B", "\boxed{B}", "B is correct").
    cue = _cue_letter(region, valid, norm_opts)
    if cue is _AMBIG or cue is _NONE:
        return None
    if cue is not None:
        return cue
    # 5. Exactly one letter standing alone.
    L = _standalone_letter(region, valid, options)
    if L is not None:
        return L
    # 6. Near-exact or contained option text, unique.
    if norm_opts:
        hit = _match_option_near(core, norm_opts)
        if hit is not None and LETTERS[hit] in valid:
            return LETTERS[hit]
    return None


def extract_letter(text, options: list[str] | None = None, n_options: int | None = None) -> str | None:
    """The option letter ("A".."J") a completion commits to, or None when not confident.

    `options` are the option texts (without letters); they let an answer given as text count,
    and bound the letters. `n_options` bounds the letters when options are not at hand (default:
    len(options), else all of A..J). The answer tag's content is used when there is one (so
    "several letters" resolve to the tagged one); otherwise the text after `</think>`, else the
    whole text. See docs/rewards.md for the rules in order."""
    try:
        s = unicodedata.normalize("NFKC", as_text(text))
        region, _tagged = _answer_span(s)
        if not region:
            return None
        opts = _clean_options(options)
        n = (
            n_options
            if isinstance(n_options, int) and not isinstance(n_options, bool) and n_options > 0
            else (len(opts) if opts else len(LETTERS))
        )
        valid = LETTERS[: min(n, len(LETTERS))]
        if opts is not None:
            opts = [unicodedata.normalize("NFKC", o) for o in opts[: len(valid)]]
        return _letter_in(region, valid, opts)
    except Exception:  # never raise on model output
        return None


# ----------------------------------------------------------------------------------------------
# Open answers

_ARTICLES = {"a", "an", "the"}


def normalize_text(text) -> str:
    """SQuAD-style normalisation: NFKC, lowercase, apostrophes dropped, other punctuation and
    symbols to spaces, articles (a, an, the) removed, whitespace collapsed."""
    s = unicodedata.normalize("NFKC", as_text(text)).lower()
    s = re.sub(r"['’`]", "", s)
    s = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in s)
    return " ".join(w for w in s.split() if w not in _ARTICLES)


def exact_match(pred, ref) -> float:
    """1.0 when the normalised texts are equal and non-empty, else 0.0."""
    p, r = normalize_text(pred), normalize_text(ref)
    return float(bool(r) and p == r)


_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


class _Tokenizer:
    """rouge-score's default tokenizer (lowercase, alphanumeric runs, Porter stem on words longer
    than 3) made Unicode-aware: on ASCII text it gives the same tokens; accented words are kept
    whole instead of being cut at the accent, and CJK characters are one token each instead of
    being dropped (the default makes any Chinese answer score 0)."""

    def __init__(self):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        return [self.stem(t) for t in _TOKEN.findall(text.lower())]

    def stem(self, t: str) -> str:
        return self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t


@lru_cache(maxsize=1)
def _rouge():
    """The scorer and its tokenizer. A missing package raises: returning 0 instead would score
    every open answer 0 and make an open-answer reward give nothing, silently."""
    try:
        from rouge_score import rouge_scorer

        tok = _Tokenizer()
    except ImportError as e:
        raise ImportError(
            f"ROUGE-L needs the packages rouge-score and nltk (dependencies of ego3s): {e}. "
            "Install them (`pip install rouge-score nltk`; for a GPU image without them, "
            "benchmarks/gpu_wheels.sh builds their wheels)"
        ) from e
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=tok), tok


def rouge_l_f(pred, ref) -> float:
    """ROUGE-L F-measure in [0, 1] with Porter stemming, computed by the `rouge-score` package
    (its LCS) over the tokenizer above. 0.0 when either side has no tokens. Beyond
    MAX_ROUGE_TOKENS tokens on a side, the LCS is taken over the first MAX_ROUGE_TOKENS tokens
    (same formula, own code) while precision/recall still divide by the full lengths, so a
    runaway completion costs bounded time and scores no higher than it would in full."""
    scorer, tok = _rouge()  # outside the try: a missing package must raise, not score 0
    try:
        p, r = as_text(pred).lower(), as_text(ref).lower()
        praw, rraw = _TOKEN.findall(p), _TOKEN.findall(r)
        if not praw or not rraw:
            return 0.0
        if len(praw) > MAX_ROUGE_TOKENS or len(rraw) > MAX_ROUGE_TOKENS:
            pt = [tok.stem(t) for t in praw[:MAX_ROUGE_TOKENS]]
            rt = [tok.stem(t) for t in rraw[:MAX_ROUGE_TOKENS]]
            return _lcs_f(pt, rt, len(praw), len(rraw))
        f = scorer.score(r, p)["rougeL"].fmeasure
        return min(1.0, max(0.0, float(f))) if f == f else 0.0
    except Exception:
        return 0.0


def _lcs_f(pt: list[str], rt: list[str], n_pred: int, n_ref: int) -> float:
    """ROUGE-L F (rouge-score's formula) from the LCS of two token lists and the full lengths."""
    prev = [0] * (len(rt) + 1)
    for a in pt:
        cur = [0]
        for j, b in enumerate(rt):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / n_pred, lcs / n_ref
    return 2 * p * r / (p + r)
