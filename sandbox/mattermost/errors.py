"""Mattermost's AppError: every failure the fake reports uses the real JSON error body."""

from __future__ import annotations

import json

from aiohttp import web

from sandbox.mattermost.ids import new_id


class AppError(Exception):
    """Raised by state operations; the server turns it into Mattermost's error body."""

    def __init__(self, where: str, error_id: str, message: str, status: int, detailed: str = "") -> None:
        super().__init__(f"{where}: {error_id}")
        self.where = where
        self.error_id = error_id
        self.message = message
        self.status = status
        self.detailed = detailed

    def body(self) -> dict[str, object]:
        return {
            "id": self.error_id,
            "message": self.message,
            "detailed_error": self.detailed,
            "request_id": new_id(),
            "status_code": self.status,
        }

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=json.dumps(self.body()).encode(),
            content_type="application/json",
        )


def session_expired() -> AppError:
    return AppError(
        "ServeHTTP",
        "api.context.session_expired.app_error",
        "Invalid or expired session, please login again.",
        401,
    )


def forbidden(where: str) -> AppError:
    return AppError(where, "api.context.permissions.app_error", "You do not have the appropriate permissions.", 403)


def bad_param(where: str, name: str) -> AppError:
    return AppError(where, "api.context.invalid_body_param.app_error", f"Invalid or missing {name} in request body.", 400)


def bad_url_param(where: str, name: str) -> AppError:
    return AppError(where, "api.context.invalid_url_param.app_error", f"Invalid or missing {name} parameter in request URL.", 400)


def not_found(where: str, error_id: str, what: str) -> AppError:
    return AppError(where, error_id, f"Unable to find the existing {what}.", 404)
