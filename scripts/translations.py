"""Extract the interface's strings and bring every catalogue up to date.

    .venv/bin/python -m scripts.translations            # `make translations`
    .venv/bin/python -m scripts.translations --init fr  # start a new language

Reads babel.cfg (which files, which extractor), writes
webapp/translations/messages.pot and merges it into each
webapp/translations/<code>/LC_MESSAGES/messages.po: new strings arrive empty
(or fuzzy, when gettext guesses from a similar one), removed ones become
obsolete. Then translate the empty and fuzzy entries; the app compiles the
catalogues in memory when it starts (webapp/i18n.py). tests/test_i18n.py fails
while any extracted string is missing or untranslated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "webapp" / "translations"
TEMPLATE = TRANSLATIONS / "messages.pot"
# N_: marked where defined, translated where shown; Message: a worker's sentence (webapp/i18n.py).
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None, "Message": None, "lazy_gettext": None}
SKIPPED_FOLDERS = {"node_modules", "tests", "bench", "docs", "vendor", "__pycache__"}


def extract() -> Catalog:
    """Every marked string of the code and templates babel.cfg names, as one catalogue."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config, "babel.cfg")
    catalogue = Catalog(project="PrivaScan", msgid_bugs_address="", charset="utf-8")

    def keep(folder: str) -> bool:
        name = Path(folder).name
        return not name.startswith((".", "_")) and name not in SKIPPED_FOLDERS

    for filename, lineno, message, comments, context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=KEYWORDS, comment_tags=("Translators:",),
        strip_comment_tags=True, directory_filter=keep,
    ):
        catalogue.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalogue


def catalogue_path(code: str) -> Path:
    return TRANSLATIONS / code / "LC_MESSAGES" / "messages.po"


def read_catalogue(code: str) -> Catalog:
    with catalogue_path(code).open("rb") as source:
        return read_po(source, locale=code)


def languages() -> list[str]:
    return sorted(path.parent.parent.name for path in TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"))


def write(catalogue: Catalog, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as target:
        write_po(target, catalogue, width=100, omit_header=False, sort_output=False, ignore_obsolete=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", metavar="CODE", help="start a catalogue for a new language (e.g. fr)")
    args = parser.parse_args(argv)
    template = extract()
    write(template, TEMPLATE)
    codes = languages()
    if args.init:
        if args.init in codes:
            parser.error(f"{args.init} already has a catalogue: {catalogue_path(args.init)}")
        fresh = Catalog(locale=args.init, project="PrivaScan", charset="utf-8")
        fresh.update(template)
        write(fresh, catalogue_path(args.init))
        codes.append(args.init)
    for code in codes:
        catalogue = read_catalogue(code)
        catalogue.update(template, no_fuzzy_matching=False)
        write(catalogue, catalogue_path(code))
        missing = sum(1 for message in catalogue if message.id and (not message.string or message.fuzzy))
        print(f"{code}: {len(template)} strings, {missing} to translate ({catalogue_path(code).relative_to(ROOT)})")


if __name__ == "__main__":
    main()
