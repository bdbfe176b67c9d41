"""Object and verb names: cleaning the FHO taxonomy's "noun_(synonym,_synonym)" and comparing names."""

from __future__ import annotations

import re

from ego3s.data.ego4d.config import _NO_VERB
from ego3s.data.schema import InteractionObject

# --------------------------------------------------------------------------------------------
# Names: cleaning the FHO taxonomy's "noun_(synonym,_synonym)" and comparing object names

_ARTICLES = {"a", "an", "the", "my", "some", "this", "that"}


def clean_name(raw: str) -> tuple[str, list[str]]:
    """`"container_(box,_crate)"` -> `("container", ["box", "crate"])`; plain names pass through."""
    s = raw.strip()
    synonyms: list[str] = []
    m = re.match(r"^(.*?)_?\((.*)\)\s*$", s)
    if m:
        s = m.group(1)
        synonyms = [x.strip(" _").replace("_", " ").strip().lower() for x in m.group(2).split(",")]
    name = re.sub(r"\s+", " ", s.replace("_", " ")).strip().lower()
    syn = []
    for x in synonyms:
        if x and x != name and x not in syn:
            syn.append(x)
    return name, syn


def _tokens(name: str) -> list[str]:
    words = re.sub(r"[^a-z0-9 ]+", " ", name.lower().replace("_", " ").replace("-", " ")).split()
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return words


def _singulars(tok: str) -> set[str]:
    out = {tok}
    if len(tok) > 3 and tok.endswith("s") and not tok.endswith("ss"):
        out.add(tok[:-1])
    if len(tok) > 4 and tok.endswith("es"):
        out.add(tok[:-2])
    if len(tok) > 4 and tok.endswith("ies"):
        out.add(tok[:-3] + "y")
    if len(tok) > 4 and tok.endswith("ves"):
        out.update({tok[:-3] + "f", tok[:-3] + "fe"})
    return out


def same_name(a: str, b: str) -> bool:
    """Equal after lower-casing, dropping leading articles and punctuation, and singularising."""
    ta, tb = _tokens(a), _tokens(b)
    if not ta or not tb:
        return False
    if len(ta) == len(tb) and all(_singulars(x) & _singulars(y) for x, y in zip(ta, tb)):
        return True
    return bool(_singulars("".join(ta)) & _singulars("".join(tb)))  # "egg shell" == "eggshell"


def _names_match(slot: str, obj: InteractionObject) -> bool:
    """The query's object (free text) names the FHO object: same name, a synonym, or its head noun."""
    head = _tokens(slot)[-1:] or [""]
    for n in obj.names():
        if same_name(slot, n) or same_name(head[0], n):
            return True
    return False


def _display(name: str) -> str:
    return " ".join(_tokens(name)) or name.strip().lower()


def _verb_forms(raw: str | None) -> set[str]:
    """Verb tokens: `"take_(pick,_grab,_get)"` -> {take, pick, grab, get}; `"[VERB NOT APPLICABLE]"` -> {}."""
    if raw is None or raw.strip().lower() in _NO_VERB:
        return set()
    name, syn = clean_name(raw)
    out = set()
    for n in [name, *syn]:
        for t in n.split():
            out |= _singulars(t)
    return out


def _verb_head(raw: str | None) -> str:
    if raw is None or raw.strip().lower() in _NO_VERB:
        return ""
    name, _ = clean_name(raw)
    return name.split(" ")[0] if name else ""


def _narration_verb(text: str) -> str:
    """`"#C C picks up a cup"` -> `"pick"` (the camera wearer's verb, singularised)."""
    words = re.sub(r"^#\w+\s+", "", text.strip()).split()
    if len(words) >= 2 and words[0].lower() in ("c", "#c"):
        w = re.sub(r"[^a-z]", "", words[1].lower())
        if w.endswith(("ches", "shes", "sses", "xes")):
            return w[:-2]
        if w.endswith("ies") and len(w) > 4:
            return w[:-3] + "y"
        if w.endswith("s") and not w.endswith("ss"):
            return w[:-1]
        return w
    return ""
