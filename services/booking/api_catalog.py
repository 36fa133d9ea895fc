"""Booking's catalogue routes: stores, staff (with time off), resources and services. Writes need an
ops or admin key; every read and write is scoped to the caller's tenant."""
from __future__ import annotations

from uuid import UUID

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from services.booking import catalog
from services.booking.catalog import ResourceIn, ServiceIn, StaffIn, StoreIn, TimeOffIn
from shared.auth import CallerAny, CallerOps
from shared.http import in_transaction

stores = APIRouter(prefix="/v1/stores", tags=["catalogue"])
staff = APIRouter(prefix="/v1/staff", tags=["catalogue"])
resources = APIRouter(prefix="/v1/resources", tags=["catalogue"])
services = APIRouter(prefix="/v1/services", tags=["catalogue"])
NOT_FOUND = {404: {"description": "Unknown"}}
SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
Slug = Annotated[str, Path(pattern=SLUG, max_length=64)]
SlugQuery = Annotated[str | None, Query(pattern=SLUG, max_length=64)]


@stores.put("/{store_id}", summary="Create or replace a store: zone, opening hours, holidays, booking policy")
async def put_store(store_id: Slug, body: StoreIn, request: Request, caller: CallerOps):
    return await in_transaction(request, catalog.put_store, caller.tenant_id, store_id, body)


@stores.get("/{store_id}", responses=NOT_FOUND)
async def get_store(store_id: Slug, request: Request, caller: CallerAny):
    return await in_transaction(request, catalog.get_store, caller.tenant_id, store_id)


@stores.get("", summary="Every store of the tenant")
async def list_stores(request: Request, caller: CallerAny):
    return await in_transaction(request, catalog.list_stores, caller.tenant_id)


@staff.put("/{staff_id}", summary="Create or replace a staff member: skills and weekly shifts per store")
async def put_staff(staff_id: Slug, body: StaffIn, request: Request, caller: CallerOps):
    return await in_transaction(request, catalog.put_staff, caller.tenant_id, staff_id, body)


@staff.get("/{staff_id}", responses=NOT_FOUND, summary="A staff member with upcoming time off")
async def get_staff(staff_id: Slug, request: Request, caller: CallerAny):
    return await in_transaction(request, catalog.get_staff, caller.tenant_id, staff_id)


@staff.get("", summary="Staff, optionally only those with shifts at a store")
async def list_staff(request: Request, caller: CallerAny, store_id: SlugQuery = None):
    return await in_transaction(request, catalog.list_staff, caller.tenant_id, store_id)


@staff.post("/{staff_id}/time-off", status_code=201, responses=NOT_FOUND,
            summary="Block time (leave, training); existing appointments are not moved")
async def add_time_off(staff_id: Slug, body: TimeOffIn, request: Request, caller: CallerOps):
    return await in_transaction(request, catalog.add_time_off, caller.tenant_id, staff_id, body)


@staff.delete("/{staff_id}/time-off/{time_off_id}", status_code=204, responses=NOT_FOUND)
async def delete_time_off(staff_id: Slug, time_off_id: UUID, request: Request, caller: CallerOps):
    await in_transaction(request, catalog.delete_time_off, caller.tenant_id, staff_id, time_off_id)


@resources.put("/{resource_id}", summary="Create or replace a resource (table, station, bay, van) with capacity")
async def put_resource(resource_id: Slug, body: ResourceIn, request: Request, caller: CallerOps):
    return await in_transaction(request, catalog.put_resource, caller.tenant_id, resource_id, body)


@resources.get("", summary="Resources, optionally of one store")
async def list_resources(request: Request, caller: CallerAny, store_id: SlugQuery = None):
    return await in_transaction(request, catalog.list_resources, caller.tenant_id, store_id)


@services.put("/{service_id}", summary="Create or replace a service: durations by pet or vehicle, buffers, price")
async def put_service(service_id: Slug, body: ServiceIn, request: Request, caller: CallerOps):
    return await in_transaction(request, catalog.put_service, caller.tenant_id, service_id, body)


@services.get("/{service_id}", responses=NOT_FOUND)
async def get_service(service_id: Slug, request: Request, caller: CallerAny):
    return await in_transaction(request, catalog.get_service, caller.tenant_id, service_id)


@services.get("", summary="The service catalogue")
async def list_services(request: Request, caller: CallerAny):
    return await in_transaction(request, catalog.list_services, caller.tenant_id)


ROUTERS = (stores, staff, resources, services)
