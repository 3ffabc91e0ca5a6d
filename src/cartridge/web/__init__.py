"""The web API (FastAPI) and the browser UI it serves; all logic lives in `cartridge.serving`."""

from cartridge.web.app import WebSettings, create_app

__all__ = ["WebSettings", "create_app"]
