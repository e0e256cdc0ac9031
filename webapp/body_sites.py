"""The fixed list of body sites a lesion can be given, each with its SNOMED CT body-structure code.

The list is data (webapp/data/body_sites.toml), read once at import. A fixed
list rather than free text: exports then carry a code a clinic record
understands, and nothing a user typed.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .i18n import current_language

SNOMED_CT = "http://snomed.info/sct"
DATA_FILE = Path(__file__).with_name("data") / "body_sites.toml"


@dataclass(frozen=True)
class BodySite:
    id: str
    label: str  # what the menu shows, in English
    snomed_ct: str
    display: str  # the SNOMED CT concept's name, exported beside the code
    translations: dict = field(default_factory=dict, compare=False, repr=False)  # code -> label

    @property
    def shown_label(self) -> str:
        """The label in the request's language (English where the list has no translation)."""
        return self.translations.get(current_language(), self.label)


def load_body_sites(path: Path = DATA_FILE) -> tuple[BodySite, ...]:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    sites = tuple(BodySite(**entry) for entry in raw["site"])
    ids = [site.id for site in sites]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate body site ids")
    if not all(site.snomed_ct.isdigit() for site in sites):
        raise ValueError(f"{path}: every SNOMED CT code is a number")
    return sites


BODY_SITES: tuple[BodySite, ...] = load_body_sites()
_BY_ID = {site.id: site for site in BODY_SITES}


def body_site(site_id: str | None) -> BodySite | None:
    """The site with this id; None for an unknown or empty id."""
    return _BY_ID.get(site_id or "")
