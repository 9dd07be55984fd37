"""The published contracts, generated from the declarations, never written by hand:

- `openapi(registry)`: OpenAPI 3.1 for every operation with an HTTP binding: parameters, body, the success
  response's schema and every error status it can answer;
- `asyncapi(registry)`: AsyncAPI 3.0 for `/v1/ws`: every command with its reply, every event with its
  payload (from the event catalogue), authentication, resume and the close codes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from dispatch import events
from dispatch.api.operations import Nothing, Operation, Registry, required_fields
from dispatch.api.routing import RouteTable
from dispatch.views import View

_REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "stable machine code, e.g. order_not_found"},
                "message": {"type": "string", "description": "for humans"},
                "details": {"description": "validation: [{path, message, code}]; otherwise any JSON"},
                "retry_after": {"type": "integer", "description": "seconds (503, 429): a retry may succeed"},
            },
        }
    },
}
_STATUS_TEXT = {
    400: "Malformed request (not JSON, empty body, bad header)",
    401: "Missing, malformed, expired or forged token",
    403: "The token's role or subject may not do this",
    404: "No such thing (an unknown or malformed id)",
    405: "Method not allowed",
    409: "The state forbids it (see the error code)",
    413: "Body too large",
    422: "Invalid input: details list each bad field with its path",
    429: "Too many requests",
    503: "PostgreSQL or Redis unreachable, or the node starting: retry after Retry-After",
}


class Schemas:
    """Component schemas, collected as models are referred to."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        if model.__name__ not in self.schemas:
            schema = model.model_json_schema(ref_template=_REF, mode="serialization")
            self.schemas.update(schema.pop("$defs", {}))
            self.schemas[model.__name__] = schema
        return {"$ref": _REF.format(model=model.__name__)}

    def inline(self, model: type[BaseModel], mode: str = "validation") -> dict[str, Any]:
        schema = model.model_json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
        self.schemas.update(schema.pop("$defs", {}))
        return schema


def _error_statuses(op: Operation) -> list[int]:
    assert op.http is not None
    statuses = set(op.http.errors) | {503}
    if op.roles:
        statuses |= {401, 403}
    if op.ids:
        statuses.add(404)
    if op.input is not Nothing:
        statuses |= {400, 413, 422}
    if op.query is not None:
        statuses.add(422)
    return sorted(statuses)


def openapi(registry: Registry, plain: Iterable[RouteTable], version: str) -> dict[str, Any]:
    schemas = Schemas()
    paths: dict[str, dict[str, Any]] = {}
    error = {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}}
    for table in plain:
        for e in table.endpoints:
            ok: dict[str, Any] = {"description": e.summary}
            if e.output is not None:
                ok["content"] = {e.content_type: {"schema": schemas.ref(e.output)}}
            elif e.content_type != "application/json":
                ok["content"] = {e.content_type: {"schema": {"type": "string"}}}
            responses: dict[str, Any] = {str(e.status): ok}
            for status in e.statuses:
                responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"), "content": error}
            operation_id = e.handler.__name__
            paths.setdefault(e.path, {})[e.method.lower()] = {
                "operationId": operation_id,
                "summary": e.summary,
                "tags": [e.tag],
                "responses": responses,
            }
    for op in registry.operations.values():
        if op.http is None:
            continue
        doc: dict[str, Any] = {"operationId": op.name, "summary": op.summary, "tags": [op.tag]}
        description = op.description
        if op.roles:
            doc["security"] = [{"bearer": []}]
            description = (description + "\n\n" if description else "") + "Roles: " + ", ".join(op.roles)
        if op.ws:
            description += f"\n\nWebsocket twin: the `{op.name}` command on /v1/ws."
        if description:
            doc["description"] = description.strip()
        params: list[dict[str, Any]] = [
            {
                "name": spec.name,
                "in": "path",
                "required": True,
                "description": f"a {spec.entity} id ({spec.kind}_ and 16 base32 letters)",
                "schema": {"type": "string"},
            }
            for spec in op.ids
        ]
        if op.query is not None:
            query = schemas.inline(op.query)
            required = set(query.get("required", []))
            for name, prop in query.get("properties", {}).items():
                described = {k: v for k, v in prop.items() if k != "title"}
                params.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in required,
                        "description": described.pop("description", name),
                        "schema": described,
                    }
                )
        if params:
            doc["parameters"] = params
        if op.input is not Nothing:
            doc["requestBody"] = {
                "required": required_fields(op.input),
                "content": {"application/json": {"schema": schemas.ref(op.input)}},
            }
        success: dict[str, Any] = {"description": _first_line(op.output) if op.output else "OK"}
        if op.output is not None:
            success["content"] = {"application/json": {"schema": schemas.ref(op.output)}}
        links = _links(registry, op)
        if links:
            success["links"] = links
        doc["responses"] = {str(status): success for status in (op.http.status, *op.http.also)}
        for status in _error_statuses(op):
            response: dict[str, Any] = {"description": _STATUS_TEXT.get(status, "Error"), "content": error}
            if status == 503:
                response["headers"] = {
                    "Retry-After": {"description": "seconds", "schema": {"type": "integer"}, "required": True}
                }
            doc["responses"][str(status)] = response
        paths.setdefault(op.http.path, {})[op.http.method.lower()] = doc
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Neighbourhood dispatch API",
            "version": version,
            "description": "Every error has one shape (Error). The realtime protocol: /asyncapi.json.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _links(registry: Registry, op: Operation) -> dict[str, Any]:
    """From an operation that creates a thing to the operations on that thing alone (stateful testing)."""
    if op.creates is None:
        return {}
    name = op.creates.name
    return {
        other.name.replace(".", "_"): {
            "operationId": other.name,
            "parameters": {name: "$response.body#/id"},
        }
        for other in registry.operations.values()
        if other.http is not None and [i.name for i in other.ids] == [name]
    }


def _first_line(model: type[View]) -> str:
    """The model's own docstring's first line, or its name."""
    own = model.__dict__.get("__doc__")
    return own.strip().splitlines()[0] if own else model.__name__


def _message_name(kind: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", kind)


def asyncapi(registry: Registry, version: str) -> dict[str, Any]:
    """AsyncAPI 3.0: the server receives commands (each answered by a reply) and sends events."""
    schemas = Schemas()
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    channel_messages: dict[str, Any] = {}

    def message(name: str, title: str, summary: str, payload: dict[str, Any]) -> dict[str, Any]:
        messages[name] = {"name": name, "title": title, "summary": summary, "payload": payload}
        channel_messages[name] = {"$ref": f"#/components/messages/{name}"}
        return {"$ref": f"#/channels/ws/messages/{name}"}

    def command_payload(kind: str, fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["type", *required],
            "additionalProperties": False,
            "properties": {
                "type": {"const": kind},
                "id": {"type": ["string", "integer"], "description": "echoed in the reply"},
                **fields,
            },
        }

    reply_error = {
        "type": "object",
        "required": ["type", "id", "ok", "error"],
        "properties": {
            "type": {"const": "reply"},
            "id": {"type": ["string", "integer", "null"]},
            "ok": {"const": False},
            "error": ERROR_SCHEMA["properties"]["error"],
        },
    }
    error_ref = message("reply_error", "Error reply", "a command refused: the HTTP error shape", reply_error)

    # Built-in messages: auth, resume, ping, hello.
    auth = command_payload(
        "auth",
        {
            "token": {
                "type": "string",
                "description": "a bearer token (or send Authorization on the upgrade)",
            },
            "after_seq": {"type": "integer", "minimum": 0, "description": "resume after this seq"},
        },
        ["token"],
    )
    hello = {
        "type": "object",
        "required": ["type", "role", "subject", "last_seq"],
        "properties": {
            "type": {"const": "hello"},
            "role": {"enum": ["resident", "shop", "courier", "admin"]},
            "subject": {"type": "string"},
            "last_seq": {"type": "integer", "description": "the latest seq written for this subject"},
            "after_seq": {"type": "integer", "description": "when resuming: events after this follow"},
        },
    }
    hello_ref = message("hello", "Hello", "sent once authenticated", hello)
    builtin = {
        "auth": (auth, "authenticate within 5 s (unless the upgrade had an Authorization header)"),
        "resume": (
            command_payload("resume", {"after_seq": {"type": "integer", "minimum": 0}}, ["after_seq"]),
            "replay the events after after_seq (events already sent on this connection come again)",
        ),
        "ping": (command_payload("ping", {}, []), "an application-level ping; replied with pong"),
    }
    for kind, (payload, summary) in builtin.items():
        ref = message(f"command_{kind}", kind, summary, payload)
        operations[f"receive_{_message_name(kind)}"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/ws"},
            "summary": summary,
            "messages": [ref],
            "reply": {
                "channel": {"$ref": "#/channels/ws"},
                "messages": [hello_ref if kind == "auth" else error_ref],
            },
        }

    for op in registry.commands.values():
        fields: dict[str, Any] = {}
        required: list[str] = []
        for spec in op.ids:
            fields[spec.name] = {"type": "string", "description": f"a {spec.entity} id"}
            if spec.own_for is None:
                required.append(spec.name)
            else:
                fields[spec.name]["description"] += f" (a {spec.own_for.value} may leave it out: itself)"
        if op.input is not Nothing:
            body = schemas.inline(op.input)
            fields.update(body.get("properties", {}))
            required += body.get("required", [])
        request = message(
            f"command_{_message_name(op.name)}",
            op.name,
            op.summary,
            command_payload(op.name, fields, required),
        )
        data = schemas.ref(op.output) if op.output is not None else {}
        reply = {
            "type": "object",
            "required": ["type", "id", "ok", "data"],
            "properties": {
                "type": {"const": "reply"},
                "id": {"type": ["string", "integer", "null"]},
                "ok": {"const": True},
                "data": data,
            },
        }
        reply_ref = message(
            f"reply_{_message_name(op.name)}", f"{op.name} reply", f"the result of {op.name}", reply
        )
        operations[f"receive_{_message_name(op.name)}"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/ws"},
            "summary": f"{op.summary} (roles: {', '.join(op.roles)})",
            "messages": [request],
            "reply": {"channel": {"$ref": "#/channels/ws"}, "messages": [reply_ref, error_ref]},
        }

    for kind, declared in {**events.CATALOGUE, **events.VOLATILE}.items():
        volatile = kind in events.VOLATILE
        envelope: dict[str, Any] = {
            "type": "object",
            "required": ["type", "data"] if volatile else ["seq", "type", "at", "data"],
            "properties": {
                "type": {"const": kind},
                "data": schemas.ref(declared.payload),
                **(
                    {}
                    if volatile
                    else {
                        "seq": {"type": "integer", "description": "the recipient's own gapless seq"},
                        "at": {"type": "string", "format": "date-time"},
                    }
                ),
            },
        }
        ref = message(
            f"event_{_message_name(kind)}", kind, f"to the {declared.to}: {declared.summary}", envelope
        )
        operations[f"send_{_message_name(kind)}"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/ws"},
            "summary": f"to the {declared.to}: {declared.summary}"
            + (" (volatile: no seq, not stored)" if volatile else ""),
            "messages": [ref],
        }
    operations["send_hello"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/ws"},
        "summary": "once authenticated",
        "messages": [hello_ref],
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Neighbourhood dispatch realtime protocol",
            "version": version,
            "description": (
                "One websocket per app at /v1/ws. Authenticate with an Authorization: Bearer header on the "
                "upgrade (a bad token is refused with 401) or a first `auth` message within 5 s. Resume as "
                "you connect with ?after_seq=N (or after_seq in `auth`): every event after N follows, in "
                "order, once. Every event carries the recipient's own gapless seq. Commands are answered by "
                "a reply echoing their id; a bad message gets an error reply and the connection stays open. "
                "More than 20 messages a second (bursts of 40) are refused with rate_limited. Close codes: "
                "1008 unauthorized, 1009 message too big, 1013 too slow or unavailable (reconnect and "
                "resume), 1001 the server is going away."
            ),
        },
        "servers": {
            "node": {
                "host": "127.0.0.1:8080",
                "protocol": "ws",
                "pathname": "/v1/ws",
                "security": [{"$ref": "#/components/securitySchemes/bearer"}],
            }
        },
        "channels": {"ws": {"address": "/v1/ws", "messages": channel_messages}},
        "operations": operations,
        "components": {
            "schemas": schemas.schemas,
            "messages": messages,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
