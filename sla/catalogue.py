"""Closed lists of named things — the policy's products, the members directory — and how a
name typed by a person becomes the slug an event stores.

A member or a product typed as free text used to be stored as typed: « Local Trust MPE »
was not ``local-trust-mpe``, so its exclusion was lost, and a typo in the web form created a
new member. A ``Catalogue`` resolves the slug, the name or an alias, case-, accent- and
punctuation-insensitively (« local trust mpe », « LOCAL-TRUST-MPE »), to the slug, and
refuses anything else with the closest entries (``difflib``), so the person can correct it.

Pure: the members directory is read from its file by the entry points; the product
catalogue is part of the policy (``sla.policy``).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
# How many close entries a refusal names, and how many entries it lists when none is close.
_CLOSE, _LISTED = 3, 12


def folded(text: str) -> str:
    """``text`` compared as a person reads it: no accents, no case, punctuation and hyphens
    as single spaces (« Lycée Descartes (Tours) » → « lycee descartes tours »)."""
    bare = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _NOT_ALNUM.sub(" ", bare.casefold()).strip()


@dataclass(frozen=True)
class Entry:
    slug: str
    name: str
    aliases: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How a refusal names it: « Local Trust MPE (local-trust-mpe) »."""
        return self.name if folded(self.name) == folded(self.slug) else f"{self.name} ({self.slug})"


class UnknownName(ValueError):
    """A name that is no entry's slug, name or alias; ``message`` is the French refusal
    with the closest entries."""

    def __init__(self, what: str, text: str, close: tuple[Entry, ...], known: tuple[Entry, ...]) -> None:
        self.what, self.text, self.close = what, text, close
        noun, plural = _NOUNS.get(what, (what, what + "s"))
        if close:
            hint = f"{plural} proches : {', '.join(e.label for e in close)}"
        elif known:
            more = "…" if len(known) > _LISTED else ""
            hint = f"aucun {noun} proche ; {plural} connus : {', '.join(e.label for e in known[:_LISTED])}{more}"
        else:
            hint = f"aucun {noun} n'est connu"
        self.message = f"{noun.capitalize()} inconnu : « {text} » ({hint})."
        super().__init__(self.message)


_NOUNS = {"product": ("produit", "produits"), "member": ("membre", "membres")}


@dataclass(frozen=True)
class Catalogue:
    """``what`` (product, member) → its entries; ``resolve`` gives a slug or raises ``UnknownName``.
    An empty catalogue knows nothing: the caller decides whether that means « no check »."""

    what: str
    entries: tuple[Entry, ...] = ()
    _by_key: Mapping[str, Entry] = field(default_factory=dict, repr=False, compare=False)
    _by_slug: Mapping[str, Entry] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys: dict[str, Entry] = {}
        for entry in self.entries:
            for text in (entry.slug, entry.name, *entry.aliases):
                key = folded(text)
                other = keys.get(key)
                if not key or (other is not None and other.slug != entry.slug):
                    raise ValueError(f"{self.what} {text!r} of {entry.slug!r} "
                                     + (f"also names {other.slug!r}" if other else "is empty once folded"))
                keys[key] = entry
        object.__setattr__(self, "_by_key", keys)
        object.__setattr__(self, "_by_slug", {e.slug: e for e in self.entries})

    @classmethod
    def of(cls, what: str, entries: Iterable[Entry]) -> Catalogue:
        return cls(what, tuple(entries))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __contains__(self, slug: object) -> bool:
        return slug in self._by_slug

    def resolve(self, text: str) -> str:
        """The slug ``text`` names (its slug, name or an alias, folded), else ``UnknownName``."""
        entry = self._by_slug.get(text) or self._by_key.get(folded(text))  # (a slug: no folding, per command)
        if entry is None:
            close = difflib.get_close_matches(folded(text), list(self._by_key), n=_CLOSE * 3, cutoff=0.6)
            unique = tuple(dict.fromkeys(self._by_key[k] for k in close))[:_CLOSE]
            raise UnknownName(self.what, text, unique, self.entries)
        return entry.slug

    def name(self, slug: str) -> str:
        """What a page shows for a stored value: the entry's name, else the value as stored
        (an event written before the catalogue, in free text, is shown as it was typed)."""
        entry = self._by_slug.get(slug)
        return slug if entry is None else entry.name
