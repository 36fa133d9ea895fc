"""`hub serve <service>`: run one service under uvicorn. Services are named by module path, never
imported here, so the launcher stays independent of every domain."""
from __future__ import annotations

import os

import uvicorn

from shared.logs import configure_logging
from shared.settings import SERVICE_PORTS

SERVICES = {name: f"services.{name}.app:create_app" for name in SERVICE_PORTS}


def service_port(name: str) -> int:
    return int(os.environ.get(f"{name.upper()}_PORT", SERVICE_PORTS[name]))


def service_host(name: str) -> str:
    return os.environ.get(f"{name.upper()}_HOST", "127.0.0.1")


def serve(name: str) -> None:
    configure_logging(name, os.environ.get("HUB_LOG_LEVEL", "INFO"))
    uvicorn.run(SERVICES[name], factory=True, host=service_host(name), port=service_port(name),
                log_config=None, access_log=False, timeout_graceful_shutdown=20)
