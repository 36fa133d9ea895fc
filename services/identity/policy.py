"""Per-tenant identity policy: how strong each identifier type is, how many a profile may hold, which
values are junk, when a shared identifier stops linking people, and the matching thresholds."""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.events import IdentifierType

# Junk any channel sends when a field is mandatory but the customer did not give it.
GENERIC_JUNK = frozenset({"null", "none", "unknown", "0", "-", "n/a", "na", "test", "undefined", "nil", "000000"})


class TypePolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strength: Literal["strong", "weak"] = "strong"
    max_per_profile: Annotated[int, Field(ge=1, le=10_000)] = 5
    blocklist: tuple[str, ...] = ()


_DEFAULT_TYPES: dict[str, TypePolicy] = {
    IdentifierType.phone: TypePolicy(max_per_profile=3, blocklist=("13800000000", "13800138000", "00000000000",
                                                                   "11111111111", "12345678901")),
    IdentifierType.email: TypePolicy(max_per_profile=3, blocklist=("test@test.com", "test@example.com",
                                                                   "noemail@noemail.com", "none@none.com")),
    IdentifierType.wechat_openid: TypePolicy(max_per_profile=10),
    IdentifierType.wechat_unionid: TypePolicy(max_per_profile=1),
    IdentifierType.app_user_id: TypePolicy(max_per_profile=1),
    IdentifierType.member_card: TypePolicy(max_per_profile=2),
    IdentifierType.pos_customer_id: TypePolicy(max_per_profile=50),
    IdentifierType.license_plate: TypePolicy(strength="weak", max_per_profile=5),
    "source_record": TypePolicy(max_per_profile=1000),
}
_CUSTOM_DEFAULT = TypePolicy(max_per_profile=5)


class TenantPolicy(BaseModel):
    """Stored per tenant (PUT /v1/identity/policy); anything not given keeps its default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_region: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "CN"
    types: dict[str, TypePolicy] = Field(default_factory=dict, description="Overrides per identifier type.")
    junk_after_links: Annotated[int, Field(ge=2, le=1000)] = Field(
        6, description="A shared identifier that has linked this many people is treated as junk.")
    suggest_threshold: Annotated[float, Field(ge=0.5, le=1)] = Field(
        0.7, description="Pairs scoring at least this go to the review queue (see docs/identity.md).")
    auto_merge_threshold: Annotated[float, Field(ge=0.5, le=1)] | None = Field(
        None, description="Suggestions scoring at least this merge without review; off by default.")
    source_priority: tuple[str, ...] = Field(
        ("pos", "app", "wechat_miniprogram", "import", "web", "phone", "walk_in", "social", "ads"),
        description="Channels (or 'import') in order of trust for the golden record.")

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: dict[str, TypePolicy]) -> dict[str, TypePolicy]:
        for name in types:
            if name not in _DEFAULT_TYPES and not name.startswith("custom:"):
                raise ValueError(f"unknown identifier type {name!r}: built-in types or custom:<name>")
        return types

    def for_type(self, id_type: str) -> TypePolicy:
        return self.types.get(id_type) or _DEFAULT_TYPES.get(id_type) or _CUSTOM_DEFAULT

    def is_strong(self, id_type: str) -> bool:
        return self.for_type(id_type).strength == "strong"

    def junk_reason(self, id_type: str, raw: str, normalised: str) -> str | None:
        """Why a value is junk, or None. Blocklists are compared both as given and normalised."""
        if raw.strip().lower() in GENERIC_JUNK:
            return f"{id_type}: placeholder value"
        blocked = self._blocked(id_type)
        if raw.strip().lower() in blocked or normalised.lower() in blocked:
            return f"{id_type}: blocklisted value"
        return None

    def _blocked(self, id_type: str) -> frozenset[str]:
        return _normalised_blocklist(id_type, self.for_type(id_type).blocklist, self.default_region)

    def source_rank(self, source: str) -> int:
        try:
            return self.source_priority.index(source)
        except ValueError:
            return len(self.source_priority)


@lru_cache(maxsize=1024)
def _normalised_blocklist(id_type: str, blocklist: tuple[str, ...], region: str) -> frozenset[str]:
    values = set()
    for value in blocklist:
        values.add(value.strip().lower())
        if id_type == IdentifierType.phone:
            try:
                number = phonenumbers.parse(value, region)
                values.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lower())
            except phonenumbers.NumberParseException:
                pass
    return frozenset(values)


def merged_policy(stored: dict, default_region: str) -> TenantPolicy:
    return TenantPolicy.model_validate({"default_region": default_region, **stored})
