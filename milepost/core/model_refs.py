"""What a model reference names: one rule for ``NAME:3``, ``NAME@champion``,
``NAME@sha256:HEX`` and hash prefixes, wherever a version is given.

A version's text (the part after the name) is read as:

- empty or ``latest``: the newest version (the highest number);
- digits: the version with that number (numbers count from 1 per model name);
  a hash prefix made of digits only is written ``sha256:PREFIX``;
- ``sha256:HEX`` or ``@sha256:HEX``: the version with that content digest, or
  whose digest starts with HEX;
- ``@ALIAS``: the version the alias names now;
- other hexadecimal text: a digest prefix;
- anything else: an alias.

The coordinator resolves references against its registry (an ambiguous prefix
is INVALID_ARGUMENT listing the candidates); an agent's data plane, which knows
only the versions it serves, matches them with ``serves``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from milepost.core.errors import InvalidArgument, shown
from milepost.core.names import check_name

SHA256 = "sha256:"
LATEST = "latest"
_HEX = re.compile(r"^[0-9a-f]{1,64}$")


@dataclass(frozen=True)
class VersionRef:
    """What a version's text asks for: at most one field is set (none: the newest)."""

    number: int | None = None  # 0 too is a number (one no version has)
    digest: str = ""  # lowercase hex: a whole content hash or a prefix of one
    alias: str = ""

    @property
    def newest(self) -> bool:
        return self.number is None and not (self.digest or self.alias)

    def __str__(self) -> str:
        if self.number is not None:
            return str(self.number)
        if self.digest:
            return SHA256 + self.digest
        return f"@{self.alias}" if self.alias else LATEST


def parse_version(text: str) -> VersionRef:
    """The reference a version's text makes (see the module docstring); InvalidArgument only
    for a ``sha256:`` that is not followed by hexadecimal digits."""
    text = text.strip()
    if text.startswith("@"):
        text = text[1:]
        if not text:
            raise InvalidArgument("version '@' names no alias: expected @ALIAS or @sha256:HEX")
        if not text.startswith(SHA256):
            return VersionRef() if text == LATEST else VersionRef(alias=text)
    if text.startswith(SHA256):
        digest = text[len(SHA256):].lower()
        if not _HEX.fullmatch(digest):
            raise InvalidArgument(f"version {shown(text)}: expected sha256: followed by 1-64 hexadecimal digits")
        return VersionRef(digest=digest)
    if not text or text == LATEST:
        return VersionRef()
    if text.isascii() and text.isdigit():
        return VersionRef(number=int(text))
    if _HEX.fullmatch(text.lower()):
        return VersionRef(digest=text.lower())
    return VersionRef(alias=text)


def split_model_ref(ref: str, version: str = "") -> tuple[str, str]:
    """(name, version text) of ``NAME``, ``NAME:VERSION``, ``NAME@ALIAS`` or
    ``NAME@sha256:HEX``; ``version``, when given, is the version and ``ref`` only a name."""
    if version:
        if "@" in ref or ":" in ref:
            raise InvalidArgument(f"model {shown(ref)} names a version and version {shown(version)} another; give one")
        return ref, version
    at, colon = ref.find("@"), ref.find(":")
    if at >= 0 and (colon < 0 or at < colon):
        return ref[:at], ref[at:]
    name, _, version = ref.partition(":")
    return name, version


def check_alias(alias: str) -> str:
    """``alias`` if it may name a version: a name (milepost.core.names) that no version
    reference reads otherwise (not all digits, not ``latest``, not starting ``sha256``, not
    all hexadecimal digits, which ``NAME:beef`` reads as a digest prefix)."""
    check_name("alias", alias)
    if alias.isdigit() or alias == LATEST or alias.startswith("sha256"):
        raise InvalidArgument(
            f"alias {shown(alias)} would read as a version number, the newest version or a digest; choose another"
        )
    if _HEX.fullmatch(alias.lower()):
        raise InvalidArgument(
            f"alias {shown(alias)} is all hexadecimal digits, so NAME:{alias} would read as a digest prefix, "
            f"not this alias; choose one with a letter after f or a '-' (such as {alias}-1)"
        )
    return alias


def served_version(number: int, digest: str) -> str:
    """The version the data plane reports: the registry's number as text, or the content
    digest of a version the coordinator gave no number (an agent on its own)."""
    return str(number) if number > 0 else digest


def serves(requested: str, served: str, digest: str) -> bool:
    """Whether a data-plane request for version ``requested`` is for the version reported as
    ``served`` (see served_version) whose content hash is ``digest``. Aliases resolve at the
    coordinator only, so they match nothing here."""
    ref = parse_version(requested)
    if ref.number is not None:
        return served == str(ref.number) or (served == digest and digest.startswith(requested.strip()))
    if ref.digest:
        return digest.startswith(ref.digest)
    return ref.newest
