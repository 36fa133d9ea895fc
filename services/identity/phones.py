"""phonenumbers.parse without its general parser for the usual input: a national number written as
bare digits. Parsing is most of a phone lookup's client time; the result is the same PhoneNumber
(tests/unit/test_identity_domain.py compares the two over many inputs)."""
from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata
from phonenumbers.re_util import re_compile

# phonenumbers' bounds on a national significant number's length
_MIN_NSN, _MAX_NSN = 2, 17


@lru_cache(maxsize=64)
def _region(region: str) -> tuple | None:
    """The region's calling code and the two prefixes parse() would look for at the start."""
    if region not in phonenumbers.SUPPORTED_REGIONS:
        return None
    meta = PhoneMetadata.metadata_for_region(region, None)
    if meta is None:
        return None
    idd = re_compile(meta.international_prefix) if meta.international_prefix else None
    national = re_compile(meta.national_prefix_for_parsing) if meta.national_prefix_for_parsing else None
    return meta.country_code, str(meta.country_code), idd, national


def parse(value: str, region: str) -> phonenumbers.PhoneNumber:
    """phonenumbers.parse(value, region). For ASCII digits, not starting with 0, the region's calling
    code, its international (IDD) prefix or its national prefix/carrier code, parse() finds no
    extension, no country code and nothing to strip: the number is the region's code and the digits."""
    known = _region(region)
    if (known is not None and _MIN_NSN <= len(value) <= _MAX_NSN and value.isascii() and value.isdigit()
            and value[0] != "0"):
        code, code_digits, idd, national = known
        if not (value.startswith(code_digits) or (idd and idd.match(value)) or (national and national.match(value))):
            return phonenumbers.PhoneNumber(country_code=code, national_number=int(value))
    return phonenumbers.parse(value, region)
