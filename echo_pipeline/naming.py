"""Project names and slugs: the one home of the slug rules.

A project has a display name ("Ruzgar NFT Collection") and a slug ("ruzgar-nft-collection") used as
the Dagster partition key, as its file name in `configs/projects/` and as its folder in the artifact
store. A slug is lowercase ASCII letters and digits in groups separated by single '-', at most
`MAX_SLUG` characters, so it never contains characters that break paths or Dagster's selection
syntax (`, | / ...` or brackets). `slugify` makes one from a name, `is_valid_slug` / `check_slug`
test one; every layer (project specs, the artifact store, the Dagster partitions) uses these.
"""

from __future__ import annotations

import re
import unicodedata

from echo_pipeline.errors import InvalidInputError

MAX_PROJECT_NAME = 120
MAX_SLUG = 80
DEFAULT_PROJECT = "default"
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SLUG_STRIP = re.compile(r"[^a-z0-9]+")

# Turkish letters that NFKD does not decompose to ASCII.
_TRANSLIT = str.maketrans({"ı": "i", "İ": "i", "ş": "s", "Ş": "s", "ğ": "g", "Ğ": "g", "ç": "c", "Ç": "c",
                           "ö": "o", "Ö": "o", "ü": "u", "Ü": "u", "ø": "o", "ß": "ss", "æ": "ae", "œ": "oe"})


def validate_project_name(name: str) -> str:
    """Return the trimmed display name, or raise a one-line error saying what is wrong with it."""
    if name is None or not str(name).strip():
        raise InvalidInputError("project name is empty")
    name = str(name).strip()
    if _CONTROL.search(name):
        raise InvalidInputError(f"project name {name!r} contains control characters")
    for bad in ("/", "\\"):
        if bad in name:
            raise InvalidInputError(f"project name {name!r} contains {bad!r}; use letters, digits, spaces or '-'")
    if ".." in name:
        raise InvalidInputError(f"project name {name!r} contains '..'")
    if len(name) > MAX_PROJECT_NAME:
        raise InvalidInputError(f"project name is {len(name)} characters long; the limit is {MAX_PROJECT_NAME}")
    if not slugify(name):
        raise InvalidInputError(f"project name {name!r} has no letters or digits to make a slug from")
    return name


def slugify(text: str) -> str:
    """'Ruzgar NFT Collection' -> 'ruzgar-nft-collection' (ASCII, lowercase, '-' separated)."""
    text = unicodedata.normalize("NFKD", str(text).translate(_TRANSLIT))
    text = text.encode("ascii", "ignore").decode("ascii").lower()
    return _SLUG_STRIP.sub("-", text).strip("-")[:MAX_SLUG].strip("-")


def is_valid_slug(slug: object) -> bool:
    """True for 'ruzgar-nft-collection'; False for 'Ruzgar', 'a--b', '-a', 'a_b', '..' and non-strings."""
    return isinstance(slug, str) and len(slug) <= MAX_SLUG and bool(SLUG_PATTERN.match(slug))


def check_slug(slug: object, what: str = "project") -> str:
    """Return `slug` when valid, else raise a one-line InvalidInputError suggesting a valid one."""
    if not is_valid_slug(slug):
        example = slugify(str(slug)) or "my-project"
        raise InvalidInputError(
            f"{what} {slug!r} is not a slug: use lowercase letters and digits separated by single '-' "
            f"(at most {MAX_SLUG} characters), e.g. {example!r}"
        )
    return str(slug)


def project_slug(name: str) -> str:
    """The slug of a display name, after checking the name ('Ruzgar NFT' -> 'ruzgar-nft')."""
    return slugify(validate_project_name(name))
