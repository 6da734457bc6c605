"""The web stack of mup's servers (`mup serve`, `mup monitor`): FastAPI apps run by
uvicorn, OpenAI-shaped errors, and a runner that serves an app from a background thread
(tests, embedding) or until SIGINT/SIGTERM (the CLI)."""

from __future__ import annotations

import logging
import socket
import threading
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


log = logging.getLogger(__name__)


def openai_error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """An error in the shape OpenAI clients read (``{"error": {"message", "type", "code"}}``)."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as an OpenAI-shaped body naming the field and what is wrong."""

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError):
        return openai_error(exc.status, exc.message, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where or 'body'}: {err.get('msg')}")
        return openai_error(400, "invalid request: " + "; ".join(parts))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        log.exception("unhandled error")
        return openai_error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        return openai_error(exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else "invalid_request_error")


class AppServer:
    """Serve ``app`` on ``host:port`` (port 0: any free port) with uvicorn."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 8000):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
        self.thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "AppServer":
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError(f"server on {self.base} did not start")
        return self

    def wait(self) -> None:
        """Block until SIGINT/SIGTERM (installed with ``mup_core.cli.stop_on_signals``)."""
        while self.thread is not None and self.thread.is_alive():
            self.thread.join(0.5)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.sock.close()
