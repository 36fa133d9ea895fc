"""Match suggestions between two customer profiles: pure blocking and scoring rules (no I/O).

score() is a Fellegi–Sunter-style sum: every field present in BOTH profiles adds the log-odds weight of
the agreement level it reaches (a field missing on either side adds nothing), and the sum is squashed to
0..1. Weights favour precision: a clear contradiction (other birth date, other given name) costs more than
any single agreement earns. Measured on FEBRL with bench/matching_eval.py: suggest >= 0.7, merge >= 0.9.
"""
from __future__ import annotations

import math
import re
from bisect import bisect_left
from dataclasses import dataclass
from functools import lru_cache
from itertools import permutations

import jellyfish
from pypinyin import lazy_pinyin
from rapidfuzz import fuzz
from rapidfuzz.distance import OSA, JaroWinkler
from unidecode import unidecode

SUGGEST_THRESHOLD = 0.7
AUTO_MERGE_THRESHOLD = 0.9

CONTACT_TYPES = ("phone", "email")  # the identifier types compared (ProfileFacts.phones and .emails)


@dataclass(frozen=True)
class ProfileFacts:
    """What matching may look at for one profile. Values are already-normalised plaintext."""
    names: tuple[str, ...] = ()        # as entered: "张伟", "Zhang Wei", "Wei Zhang", "Jon Smith"
    birth_dates: tuple[str, ...] = ()  # ISO "YYYY-MM-DD"; partial ("1985", "1985-03") and typos happen
    addresses: tuple[str, ...] = ()    # free text, Chinese or Latin, may include postcode / suburb
    phones: tuple[str, ...] = ()       # E.164
    emails: tuple[str, ...] = ()       # lower-cased
    weak_ids: tuple[str, ...] = ()     # opaque tokens (e.g. licence plate hashes); equal token = same value


@dataclass(frozen=True)
class MatchScore:
    score: float                 # 0..1: >= 0.9 near certain, 0.75..0.9 plausible, < 0.6 unlikely
    reasons: tuple[str, ...]     # human-readable evidence, e.g. "names match (pinyin): 张伟 ~ Zhang Wei"
    fields: dict[str, float]     # per-field similarity (0..1) of the fields present in both profiles


_PRIOR = -3.0  # log-odds before evidence: most blocked candidate pairs are different people
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[a-z0-9]+")
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr"})
_GENERATIONS = frozenset({"jr", "junior", "sr", "senior", "ii", "iii"})  # father and son share the rest
# pypinyin reads these by their everyday sound; as a family name they are read differently.
_SURNAME_READING = {"单": "shan", "曾": "zeng", "区": "ou", "仇": "qiu", "解": "xie", "朴": "piao", "查": "zha",
                    "乐": "yue", "盖": "ge", "秘": "bi", "覃": "qin", "召": "shao", "缪": "miao", "翟": "zhai",
                    "员": "yun", "尉迟": "yuchi", "万俟": "moqi"}
_COMPOUND_SURNAMES = frozenset("欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 令狐 司徒 夏侯 长孙 宇文 轩辕 端木 "
                               "万俟 呼延 独孤 南宫 申屠 闻人 澹台 公羊 宗政 濮阳 钟离".split())
_ABBREV = {"st": "street", "str": "street", "rd": "road", "ave": "avenue", "av": "avenue", "dr": "drive",
           "ct": "court", "crt": "court", "pl": "place", "cres": "crescent", "cct": "circuit", "ln": "lane",
           "hwy": "highway", "pde": "parade", "tce": "terrace", "blvd": "boulevard", "cl": "close",
           "apt": "apartment", "mt": "mount", "nth": "north", "sth": "south"}
_GMAIL_LIKE = frozenset({"gmail.com", "googlemail.com"})  # providers that ignore dots in the local part

# (similarity, log-odds) knots, interpolated linearly: one table per graded field.
_NAME_W = ((0.0, -6.0), (0.7, -5.0), (0.8, -2.5), (0.88, 0.5), (0.93, 2.0), (0.97, 2.5), (1.0, 3.0))
_ADDR_W = ((0.0, -1.0), (0.6, -0.5), (0.8, 0.5), (0.9, 1.5), (1.0, 2.5))
# birth date level -> (similarity, log-odds, reason)
_DOB = {"equal": (1.0, 3.5, "birth date equal"), "swapped": (0.8, 1.5, "birth dates: day and month swapped"),
        "typo": (0.8, 1.5, "birth dates differ in one digit"), "partial": (0.5, 0.5, "birth dates compatible (partial)"),
        "year": (0.3, -2.5, "birth dates: same year only"), "differ": (0.0, -5.0, "birth dates differ")}


def _interp(table: tuple[tuple[float, float], ...], x: float) -> float:
    i = min(max(bisect_left(table, (x, -math.inf)), 1), len(table) - 1)
    (x0, y0), (x1, y1) = table[i - 1], table[i]
    return y0 + (y1 - y0) * (min(max(x, x0), x1) - x0) / (x1 - x0)


# ---- names ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Name:
    text: str
    tokens: tuple[str, ...]   # ascii, lower case; a hanzi name becomes (family, given) in pinyin
    hanzi: str                # its CJK characters, "" for a Latin name
    generation: str = ""      # "jr", "sr", ... when given


def _pinyin(text: str) -> str:
    return unidecode("".join(lazy_pinyin(text, v_to_u=True)))


@lru_cache(maxsize=16384)
def _name(text: str) -> _Name | None:
    hanzi = "".join(_CJK.findall(text))
    parts = [p for p in re.split(r"[\s·・.,]+", text.strip()) if p]
    if hanzi and len(parts) == 1 and len(hanzi) == len(parts[0]):
        # Chinese order: family name first (compound ones take two characters), read as a surname.
        k = 2 if hanzi[:2] in _COMPOUND_SURNAMES else 1
        tokens = (_SURNAME_READING.get(hanzi[:k]) or _pinyin(hanzi[:k]), _pinyin(hanzi[k:]))
    else:  # Latin, or hanzi parts split by spaces / "·": each part becomes one pinyin word
        latin = " ".join(_pinyin(p) if _CJK.search(p) else p for p in parts)
        tokens = tuple(_WORD.findall(unidecode(latin).lower().replace("'", "")))
    generation = "".join(t[0] for t in tokens if t in _GENERATIONS)  # "j"unior / "s"enior / "i"i
    tokens = tuple(t for t in tokens if t and t not in _TITLES and t not in _GENERATIONS)
    return _Name(text.strip(), tokens, hanzi, generation) if tokens else None


def _token_sim(a: str, b: str) -> float:
    if a == b:
        return 1.0
    if len(a) == 1 or len(b) == 1:  # an initial agrees with any name that starts with it
        return 0.88 if a[0] == b[0] else 0.0
    # one wrong letter in a short name ("zac"/"zqc") is a likely typo but could be a sibling ("jane"/"june")
    typo = 0.88 if min(len(a), len(b)) >= 3 and OSA.distance(a, b) == 1 else 0.0
    return max(JaroWinkler.similarity(a, b), typo)


def _joined(tokens: tuple[str, ...]) -> set[str]:
    return {"".join(p) for p in permutations(tokens[:4])} if len(tokens) <= 4 else {"".join(tokens)}


def _name_sim(a: _Name, b: _Name) -> tuple[float, str]:
    """Similarity of two names and how they agree; the worse name part dominates, so a different given
    name with the same family name is a mismatch, not a half match."""
    if a.generation and b.generation and a.generation != b.generation:
        return 0.5, "names differ (Jr/Sr)"
    if a.hanzi and a.hanzi == b.hanzi:
        return 1.0, "names equal"
    if _joined(a.tokens) & _joined(b.tokens):  # same letters in some order and spacing
        if a.hanzi and b.hanzi:
            return 0.9, "names sound the same (other characters)"
        if a.hanzi or b.hanzi:
            return 1.0, "names match (pinyin)"
        return 1.0, "names equal" if a.tokens == b.tokens else "names match (order swapped)"
    # A stray space ("geog re" ~ "george", "zhang wie" ~ "zhangwei") only explains an extra token, so
    # glue only the side with more tokens: gluing both would make "jane smith" ~ "john smith" close.
    x, y = sorted((a.tokens, b.tokens), key=len)
    variants = [y[:i] + (y[i] + y[i + 1],) + y[i + 2:] for i in range(len(y) - 1)] if len(y) > len(x) else []
    best = max(_aligned(x, v) for v in [y, *variants])
    if best == 1.0:
        return 0.97, "names match (missing middle name)"
    return best, "names similar" if best >= 0.88 else "names partly similar" if best >= 0.75 else "names differ"


def _aligned(x: tuple[str, ...], y: tuple[str, ...]) -> float:
    short, long_ = sorted((x, y), key=len)
    sim = {(i, j): _token_sim(s, t) for i, s in enumerate(short) for j, t in enumerate(long_)}
    best = 0.0
    for pick in permutations(range(len(long_)), len(short)):
        sims = [sim[i, j] for i, j in enumerate(pick)]
        best = max(best, 0.7 * min(sims) + 0.3 * sum(sims) / len(sims))
    return best * 0.85 if len(short) == 1 < len(long_) else best  # one word alone cannot identify


# ---- birth dates, phones, emails -------------------------------------------------------------------
@lru_cache(maxsize=16384)
def _date(text: str) -> str | None:
    """"YYYY", "YYYYMM" or "YYYYMMDD" from ISO, compact or partial input; None if it is no date."""
    m = re.fullmatch(r"\s*(\d{4})(?:\D?(\d{1,2})(?:\D?(\d{1,2}))?)?\s*", text)
    return m and m[1] + "".join(f"{int(x):02d}" for x in m.groups()[1:] if x)


def _dob_level(a: str, b: str) -> str | None:
    da, db = _date(a), _date(b)
    if not da or not db:
        return None
    if da == db:
        return "equal"
    if len(da) != 8 or len(db) != 8:  # partial date: only the part both have can agree
        n = min(len(da), len(db))
        return "partial" if da[:n] == db[:n] else ("year" if da[:4] == db[:4] else "differ")
    if da[:4] == db[:4] and da[4:6] == db[6:8] and da[6:8] == db[4:6]:
        return "swapped"
    if OSA.distance(da, db) == 1:  # one wrong digit or two neighbours transposed
        return "typo"
    return "year" if da[:4] == db[:4] else "differ"


def _digits_level(a: str, b: str) -> str | None:
    da, db = re.sub(r"\D", "", a), re.sub(r"\D", "", b)
    if len(da) < 6 or len(db) < 6:
        return None
    return "equal" if da == db else "near" if len(da) == len(db) and OSA.distance(da, db) == 1 else "differ"


def _email_norm(e: str) -> tuple[str, str]:
    local, _, domain = e.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    return (local.replace(".", "") if domain in _GMAIL_LIKE else local), domain


def _email_level(a: str, b: str) -> str | None:
    (la, da), (lb, db) = _email_norm(a), _email_norm(b)
    if not la or not lb:
        return None
    if (la, da) == (lb, db):
        return "equal"
    return "near" if min(len(la), len(lb)) >= 5 and OSA.distance(f"{la}@{da}", f"{lb}@{db}") == 1 else "differ"


_CONTACT_W = {"equal": 4.5, "near": 2.0, "differ": -0.5}  # people change numbers, so differing is weak


# ---- addresses -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Address:
    words: tuple[str, ...]    # Latin words (abbreviations expanded) or single CJK characters
    numbers: tuple[str, ...]  # digit runs other than the postcode; the first is the house number
    postcode: str
    detail: float             # words, counting three CJK characters as one: how specific the address is


@lru_cache(maxsize=16384)
def _address(text: str) -> _Address | None:
    chars = _CJK.findall(text)  # Chinese addresses are compared character by character
    latin = _WORD.findall(unidecode(_CJK.sub(" ", text)).lower())
    words = tuple(chars + [_ABBREV.get(w, w) for w in latin if not w.isdigit()])
    numbers = re.findall(r"\d+", text)
    # Chinese postcodes have six digits anywhere; Latin ones are the last 4-6 digit run after some words
    post = [n for n in numbers if len(n) == 6] if chars else numbers[-1:]
    last = post[-1] if post else ""
    is_post = 4 <= len(last) <= 6 and (chars or re.search(r"[^\W\d]", text[:text.rindex(last)]))
    if is_post:
        numbers.remove(last)
    return None if not words and not numbers else _Address(words, tuple(numbers), last if is_post else "", len(words) - len(chars) * 2 / 3)


def _address_weight(a: _Address, b: _Address) -> tuple[float, float, list[str]]:
    wa, wb = " ".join(a.words), " ".join(b.words)
    # set ratio forgives a missing line, sort ratio stops "Shanghai" fully matching a whole address
    sim = (fuzz.token_set_ratio(wa, wb) + fuzz.token_sort_ratio(wa, wb)) / 200 if wa and wb else 0.0
    sim = max(sim, fuzz.ratio(wa.replace(" ", ""), wb.replace(" ", "")) / 100)  # stray spaces: "moun tview"
    reasons = []
    if a.numbers and b.numbers and a.numbers[0] != b.numbers[0]:
        typo = OSA.distance(a.numbers[0], b.numbers[0]) == 1
        sim = min(sim, 0.85 if typo else 0.6)  # same street, other house: another household
        reasons.append("house numbers differ")
    weight = _interp(_ADDR_W, sim)
    if min(a.detail, b.detail) < 3 and not (a.numbers and b.numbers):
        weight = min(weight, 0.5)  # a bare city or district says little about who lives there
    if a.postcode and b.postcode:
        typo = OSA.distance(a.postcode, b.postcode) == 1  # a mistyped postcode is no evidence either way
        weight += 0.7 if a.postcode == b.postcode else 0.0 if typo else -0.3
        reasons.append("postcode equal" if a.postcode == b.postcode else "postcodes differ")
    return sim, weight, reasons


# ---- public API ------------------------------------------------------------------------------------
def score(a: ProfileFacts, b: ProfileFacts) -> MatchScore:
    flip = tuple(vars(b).values()) < tuple(vars(a).values())
    if flip:  # one canonical order makes the result exactly symmetric (float sums depend on order)
        a, b = b, a
    total, reasons, fields = _PRIOR, [], {}

    names = [(x, y) for x in filter(None, map(_name, a.names)) for y in filter(None, map(_name, b.names))]
    if names:
        (s, why), x, y = max(((_name_sim(x, y), x, y) for x, y in names), key=lambda t: t[0][0])
        total += _interp(_NAME_W, s)
        fields["name"] = s
        reasons.append(f"{why}: {y.text} ~ {x.text}" if flip else f"{why}: {x.text} ~ {y.text}")

    levels = [lv for x in a.birth_dates for y in b.birth_dates if (lv := _dob_level(x, y))]
    if levels:
        sim, weight, why = max((_DOB[lv] for lv in levels), key=lambda t: t[1])
        total += weight
        fields["birth_date"] = sim
        reasons.append(why)

    for field, level_of, near in (("phone", _digits_level, "phones differ in one digit"),
                                  ("email", _email_level, "emails differ in one character")):
        levels = [lv for x in getattr(a, field + "s") for y in getattr(b, field + "s") if (lv := level_of(x, y))]
        if levels:
            lv = max(levels, key=_CONTACT_W.__getitem__)
            total += _CONTACT_W[lv]
            fields[field] = {"equal": 1.0, "near": 0.8, "differ": 0.0}[lv]
            reasons.append({"equal": f"{field}s equal", "near": near, "differ": f"{field}s differ"}[lv])

    addresses = [(x, y) for x in filter(None, map(_address, a.addresses))
                 for y in filter(None, map(_address, b.addresses))]
    if addresses:
        sim, weight, why = max((_address_weight(x, y) for x, y in addresses), key=lambda t: t[1])
        total += weight
        fields["address"] = sim
        reasons += ["addresses similar" if sim >= 0.85 else "addresses differ", *why]

    if a.weak_ids and b.weak_ids:  # a customer has many cars: another plate proves nothing, a shared one helps
        fields["weak_id"] = float(bool(set(a.weak_ids) & set(b.weak_ids)))
        total += 2.5 * fields["weak_id"]
        reasons += ["shared weak identifier"] * int(fields["weak_id"])

    return MatchScore(1 / (1 + math.exp(-total)), tuple(reasons), fields)


def _phon(token: str) -> str:
    # metaphone folds spelling variants of longer names; on short ones ("wei", "li", "wu" -> "W", "L")
    # it would merge most pinyin syllables, so those stay as spelled
    return jellyfish.metaphone(token) if len(token) >= 5 else token


def blocking_keys(p: ProfileFacts) -> set[str]:
    """Short keys such that true duplicates very likely share at least one. Each name key pairs a name
    part with something selective, so a typo in one part still leaves a key and a shared surname alone
    gives none."""
    keys: set[str] = set()
    dates = set(filter(None, map(_date, p.birth_dates)))
    addresses = [a for a in map(_address, p.addresses) if a and a.postcode]
    postcodes = {a.postcode for a in addresses}
    keys |= {f"ad:{a.postcode}:{a.numbers[0]}" for a in addresses if a.numbers}  # postcode + house number
    full_dates = {d for d in dates if len(d) == 8}
    for name in filter(None, map(_name, p.names)):
        t = name.tokens
        # first/last part, plus middle parts glued on either side ("Xiao Ming Zhang" ~ 张小明)
        splits = {(t[0], t[-1]), ("".join(t[:-1]), t[-1]), (t[0], "".join(t[1:]))} if len(t) > 1 else set()
        keys |= {f"nj:{_phon(x + y)}" for g, f in splits for x, y in ((g, f), (f, g))} or {f"nj:{_phon(t[0])}"}
        for part in {part for split in splits for part in split} or {t[0]}:
            if len(part) > 1:  # one part with year or postcode: survives a typo in the other part
                keys |= {f"ny:{_phon(part)}:{d[:4]}" for d in dates}
                keys |= {f"np:{_phon(part)}:{pc}" for pc in postcodes}
            keys |= {f"nd:{d}:{part[0]}" for d in full_dates}  # birth date + an initial: typos in both parts
    keys |= {f"ph8:{d[-8:]}" for d in (re.sub(r"\D", "", x) for x in p.phones) if len(d) >= 8}
    for e in p.emails:
        local, domain = _email_norm(e)
        if local:
            keys.add(f"em:{local}" if len(local) >= 5 else f"em:{local}@{domain}")
    keys |= {f"wk:{w}" for w in p.weak_ids if w}
    return keys
