"""Per-tenant settings a service keeps as one JSON document in a `(tenant_id primary key, config jsonb,
updated_at)` table of its schema — a loyalty program, a survey template — validated by its pydantic
model on the way in and on the way out."""
from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def load(cur, table: str, tenant_id: str, model: type[M], default: M) -> M:
    cur.execute(f"select config from {table} where tenant_id = %s", (tenant_id,))
    row = cur.fetchone()
    return model.model_validate(row[0]) if row else default


def save(cur, table: str, tenant_id: str, value: BaseModel) -> None:
    cur.execute(f"insert into {table} (tenant_id, config) values (%s, %s) on conflict (tenant_id) do update "
                "set config = excluded.config, updated_at = now()",
                (tenant_id, orjson.dumps(value.model_dump(mode="json")).decode()))
