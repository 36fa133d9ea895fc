"""Match suggestions between two profiles: what a reviewer would notice in the scores and candidates."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.identity.matching import (
    AUTO_MERGE_THRESHOLD, SUGGEST_THRESHOLD, ProfileFacts, blocking_keys, score,
)

DOB = ("1985-03-12",)
SMITH_HOME = ("12 Main Street, Springfield 2000",)


def person(*names, **facts) -> ProfileFacts:
    return ProfileFacts(names=names, **{k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in facts.items()})


# ---- names -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("written", ["Zhang Wei", "zhang wei", "ZHANG  WEI", "zhangwei", "Wei Zhang"])
def test_hanzi_name_matches_its_pinyin_in_any_order_and_spacing(written):
    result = score(person("张伟", birth_dates=DOB), person(written, birth_dates=DOB))
    assert result.score >= AUTO_MERGE_THRESHOLD
    assert result.fields["name"] == 1.0
    assert any("pinyin" in r and "张伟" in r for r in result.reasons)


# Hand-made Chinese set: (a, b, same person?) with the same birth date on both sides.
CHINESE = [
    ("欧阳娜娜", "Ouyang Nana", True),       # compound family name
    ("曾小明", "Zeng Xiaoming", True),       # 曾 read as a surname (zeng), not "ceng"
    ("单雄信", "Shan Xiongxin", True),       # 单 read as a surname (shan), not "dan"
    ("王芳", "Fang Wang", True),
    ("李小龙", "Xiao Long Li", True),        # Western order, given name split in two
    ("张伟", "张 伟", True),
    ("张伟", "张敏", False),                 # same family name, other given name
    ("王芳", "王丽", False),
    ("张伟", "Zhang Min", False),
    ("李娜", "Li Xiaona", False),
]


@pytest.mark.parametrize(("a", "b", "same"), CHINESE)
def test_chinese_names_hand_made_set(a, b, same):
    result = score(person(a, birth_dates=DOB), person(b, birth_dates=DOB)).score
    assert result >= AUTO_MERGE_THRESHOLD if same else result < 0.6, result


def test_swapped_given_and_family_name_still_match():
    assert score(person("Smith John", birth_dates=DOB), person("John Smith", birth_dates=DOB)).score >= 0.9


def test_accents_case_initials_and_a_missing_middle_name_are_forgiven():
    assert score(person("José García", birth_dates=DOB), person("jose garcia", birth_dates=DOB)).score >= 0.9
    assert score(person("John Michael Smith", birth_dates=DOB),
                 person("John Smith", birth_dates=DOB)).score >= SUGGEST_THRESHOLD
    initial = score(person("J. Smith", birth_dates=DOB), person("John Smith", birth_dates=DOB)).score
    full = score(person("John Smith", birth_dates=DOB), person("John Smith", birth_dates=DOB)).score
    assert SUGGEST_THRESHOLD <= initial < full


def test_surname_typo_with_same_birth_date_and_address_is_a_strong_match():
    a = person("John Smith", birth_dates=DOB, addresses=SMITH_HOME)
    b = person("John Smyht", birth_dates=DOB, addresses=("12 Main St Springfield 2000",))
    assert score(a, b).score >= 0.85


# ---- contradictions: precision --------------------------------------------------------------------
def test_same_common_name_with_different_birth_dates_is_unlikely():
    for name in ("John Smith", "张伟"):
        assert score(person(name, birth_dates="1985-03-12"), person(name, birth_dates="1991-07-30")).score < 0.6
        assert score(person(name, birth_dates="1985-03-12", addresses=SMITH_HOME),
                     person(name, birth_dates="1962-11-02", addresses=SMITH_HOME)).score < 0.6


@pytest.mark.parametrize(("name", "home_a", "home_b"), [
    ("John Smith", "12 Main Street, Springfield 2000", "40 Oak Road, Springfield 2000"),
    ("John Smith", "Springfield", "Springfield"),
    ("张伟", "上海市静安区南京西路123号", "上海市静安区延安中路456号"),
    ("张伟", "上海市", "上海市"),
])
def test_same_name_in_the_same_city_is_not_enough(name, home_a, home_b):
    assert score(person(name, addresses=home_a), person(name, addresses=home_b)).score < 0.75


def test_family_members_sharing_home_phone_and_birth_date_are_kept_apart():
    twins = score(person("Emma Clarke", birth_dates=DOB, addresses=SMITH_HOME),
                  person("Olivia Clarke", birth_dates=DOB, addresses=SMITH_HOME))
    spouses = score(person("John Smith", phones="+61412345678", addresses=SMITH_HOME),
                    person("Mary Smith", phones="+61412345678", addresses=SMITH_HOME))
    father_son = score(person("John Smith Sr", addresses=SMITH_HOME), person("John Smith Jr", addresses=SMITH_HOME))
    assert max(twins.score, spouses.score, father_son.score) < 0.6


def test_birth_date_evidence_is_graded():
    def with_dob(other):
        return score(person("John Smith", birth_dates="1985-03-12"), person("John Smith", birth_dates=other)).score
    equal, swapped, typo = with_dob("1985-03-12"), with_dob("1985-12-03"), with_dob("1985-03-13")
    year, differ = with_dob("1985-08-27"), with_dob("1979-08-27")
    assert equal > swapped >= SUGGEST_THRESHOLD and equal > typo >= SUGGEST_THRESHOLD
    assert typo > year > differ and year < 0.6


# ---- contacts -------------------------------------------------------------------------------------
def test_near_identical_phones_and_emails_count_as_evidence_with_a_reason():
    phone = score(person("John Smith", phones="+61412345678"), person("John Smith", phones="+61412345687"))
    assert phone.score >= SUGGEST_THRESHOLD and "phones differ in one digit" in phone.reasons
    gmail = score(person("John Smith", emails="john.smith+pets@gmail.com"),
                  person("John Smith", emails="johnsmith@gmail.com"))
    assert gmail.fields["email"] == 1.0 and gmail.score >= AUTO_MERGE_THRESHOLD
    other = score(person("John Smith", emails="john.smith@outlook.com"), person("John Smith", emails="js1970@outlook.com"))
    assert other.score < 0.6


# ---- structure ------------------------------------------------------------------------------------
def test_a_field_missing_on_either_side_is_neutral():
    a = person("John Smith", birth_dates=DOB)
    b = person("John Smith", birth_dates=DOB)
    base = score(a, b)
    for extra in ({"phones": ("+61412345678",)}, {"addresses": SMITH_HOME}, {"emails": ("j@x.com",)},
                  {"weak_ids": ("plate:abc",)}):
        richer = ProfileFacts(**{**a.__dict__, **extra})
        assert score(richer, b).score == base.score
        assert set(score(richer, b).fields) == set(base.fields)
    assert score(person("John Smith"), person("John Smith", birth_dates=DOB)).score == \
        score(person("John Smith"), person("John Smith")).score


SAMPLES = [
    person("张伟", birth_dates=DOB, addresses="上海市静安区南京西路123号", phones="+8613812345678"),
    person("Wei Zhang", birth_dates="1985-12-03", phones="+8613812345687", emails="zw@qq.com"),
    person("John Smith", "J. Smith", birth_dates=DOB, addresses=SMITH_HOME, weak_ids="plate:1"),
    person("Smyth John", addresses="12 Main St Springfield 2000", weak_ids=("plate:1", "plate:2")),
]


@pytest.mark.parametrize("a", SAMPLES)
@pytest.mark.parametrize("b", SAMPLES)
def test_score_is_symmetric(a, b):
    assert score(a, b).score == score(b, a).score
    assert score(a, b).fields == score(b, a).fields


texts = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Z")), max_size=25)
profiles = st.builds(ProfileFacts, names=st.tuples(texts), birth_dates=st.lists(texts, max_size=2).map(tuple),
                     addresses=st.lists(texts, max_size=2).map(tuple), phones=st.lists(texts, max_size=2).map(tuple),
                     emails=st.lists(texts, max_size=2).map(tuple), weak_ids=st.lists(texts, max_size=2).map(tuple))


@given(profiles, profiles)
def test_any_text_scores_within_0_and_1_symmetrically(a, b):
    ab, ba = score(a, b), score(b, a)
    assert 0.0 <= ab.score <= 1.0
    assert ab.score == ba.score and ab.fields == ba.fields
    assert all(0.0 <= v <= 1.0 for v in ab.fields.values())


# ---- blocking -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b"), [
    (person("John Smith", birth_dates=DOB), person("John Smiht", birth_dates=DOB)),
    (person("John Smith", addresses=SMITH_HOME), person("John Smtih", addresses="12 Main St Springfield 2000")),
    (person("张伟", birth_dates=DOB), person("Wei Zhang", birth_dates="1985-12-03")),
    (person("张小明"), person("Xiao Ming Zhang")),
    (person("Jon Smith", phones="+61412345678"), person("Jonathan Smith", phones="+61 412 345 678")),
    (person("Jane Doe", emails="jane.doe@gmail.com"), person("Jane Dough", emails="janedoe+shop@gmail.com")),
])
def test_a_true_duplicate_with_typos_still_shares_a_key(a, b):
    assert blocking_keys(a) & blocking_keys(b)


def test_unrelated_people_with_the_same_surname_share_no_key():
    pairs = [
        (person("John Smith", birth_dates="1985-03-12", addresses=SMITH_HOME),
         person("Mary Smith", birth_dates="1990-07-01", addresses="40 Oak Road, Shelbyville 3000")),
        (person("张伟", birth_dates="1985-03-12", addresses="上海市静安区南京西路123号 200040"),
         person("张敏", birth_dates="1979-01-30", addresses="北京市朝阳区建国路88号 100022")),
    ]
    for a, b in pairs:
        assert not blocking_keys(a) & blocking_keys(b)
        assert all(":" in k and k.split(":", 1)[0] for k in blocking_keys(a))
