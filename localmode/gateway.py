"""The local API Gateway: Chalice's local server, with every error answered in our shape."""
from __future__ import annotations

import json
import logging
from typing import Any

from chalice.local import ChaliceRequestHandler, LocalGateway, LocalGatewayException

from chalicelib.platform.errors import AuthorizerDenied
from chalicelib.platform.web import foreign_error_body, internal_error_body

logger = logging.getLogger("runner.local.gateway")


def _json_bytes(body: dict) -> bytes:
    return json.dumps(body).encode("utf-8")


def _is_unknown_route(error: LocalGatewayException) -> bool:
    body = error.body or b""
    return error.CODE == 403 and (b"Missing Authentication Token" in body
                                  or b"Authorization header requires" in body)


def dispatch(gateway: LocalGateway, method: str, path: str, headers: dict,
             body: bytes | None) -> tuple[int, dict, bytes | None]:
    """Run one request through the gateway as API Gateway would: (status, headers, body)."""
    json_headers = {"Content-Type": "application/json"}
    try:
        response = gateway.handle_request(method=method, path=path, headers=headers, body=body)
    except AuthorizerDenied as denied:
        return 401, json_headers, _json_bytes({"code": "Unauthenticated", "message": denied.reason})
    except LocalGatewayException as error:
        try:
            foreign = json.loads(error.body)
        except (TypeError, ValueError):
            foreign = {}
        if error.CODE == 401:
            foreign = {"message": "missing Authorization header: send 'Authorization: Bearer <token>'"}
        if _is_unknown_route(error):
            # API Gateway's answer here echoes the Authorization header: never send it back.
            return 404, json_headers, _json_bytes({"code": "NotFound", "message": "no such route"})
        return error.CODE, json_headers, _json_bytes(foreign_error_body(error.CODE, foreign))
    except Exception:  # noqa: BLE001 - never a stack trace on the wire
        logger.exception("unhandled error for %s %s", method, path.split("?", 1)[0])
        return 500, json_headers, _json_bytes(internal_error_body())
    out_headers = dict(response["headers"])
    out_headers.update(response.get("multiValueHeaders") or {})
    payload = response.get("body")
    if response.get("isBase64Encoded") and payload is not None:
        import base64
        payload = base64.b64decode(payload)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return response["statusCode"], out_headers, payload


class RunnerRequestHandler(ChaliceRequestHandler):
    """Chalice's local request handler, answering through `dispatch`."""

    # Headers and body leave in two writes: with Nagle on, the body waits for the client's
    # delayed ACK (about 40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True

    def _generic_handle(self) -> None:
        headers, body = self._parse_payload()
        status, out_headers, payload = dispatch(self.local_gateway, self.command, self.path, headers, body)
        if status == 204:
            payload = None
            out_headers.pop("Content-Type", None)
        self._send_http_response(status, out_headers, payload)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.info("%s %s", self.address_string(), format % args)
