"""Every operation declared once: who may call it, what it takes, what it gives, how HTTP and the websocket
reach it. Two thin adapters serve the same declaration:

- HTTP (`Registry.install`): the token, the path ids, the query and the JSON body are checked and parsed,
  then `run` is called and its result rendered with the declared success status.
- Websocket (`Registry.command`): a command `{"type": name, "id": ..., <ids>, <input fields>}`; the ids are
  fields of the message, the rest must be the input model. The reply carries the same result.

Both check ids the same way (a malformed id names nothing: 404 `<entity>_not_found`, as an unknown one) and
raise the same errors, so the same bad input gets the same answer on both. The OpenAPI and AsyncAPI
documents (`dispatch.api.contracts`) are built from these declarations.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, ValidationError

from dispatch.api.auth import verify
from dispatch.api.json import json_response, read_json, validate
from dispatch.api.keys import RUNTIME, SETTINGS
from dispatch.auth import Principal, Role, bearer_token, require_role
from dispatch.errors import NotFound, ValidationFailed, field_error
from dispatch.ids import is_valid_id
from dispatch.services.context import Services
from dispatch.views import View

ANY = ("admin", "shop", "courier", "resident")  # any valid token
ENTITY = {"shop": "shop", "res": "resident", "cou": "courier", "ord": "order", "job": "job", "rte": "route"}
ENTITY["stp"] = "stop"

In = TypeVar("In", bound=BaseModel)


class Input(BaseModel):
    """Base of request bodies and command fields: unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _integral(value: object) -> object:
    # JSON has one number type: 70.0 is the integer 70 (as JSON Schema says), "70" is not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]


def _iso(value: object) -> object:
    # pydantic would read "0.5" as a Unix time; a time here is ISO 8601 text only.
    if isinstance(value, str) and not _ISO.match(value):
        raise ValueError("expected an ISO 8601 time with a UTC offset, e.g. 2026-11-23T18:00:00+01:00")
    return value


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso)]


class Query(BaseModel):
    """Base of query parameters: given as strings, read as their declared types; unknown ones ignored."""

    model_config = ConfigDict(extra="ignore")


class Nothing(Input):
    """An operation that takes no input beyond its ids."""


@dataclass(frozen=True)
class Id:
    """An id the operation takes: a path parameter over HTTP, a field of the command over the websocket.

    `own_for`: over the websocket, a caller of that role may leave it out to mean itself."""

    name: str
    kind: str
    own_for: Role | None = None

    @property
    def entity(self) -> str:
        return ENTITY.get(self.kind, self.kind)

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise ValidationFailed(
                f"{self.name} must be a string",
                details=[field_error([self.name], "expected a string", "type")],
            )
        if "\x00" in value:  # as anywhere in a body: refused, not looked up
            raise ValidationFailed(
                f"{self.name} contains a NUL character",
                details=[
                    field_error([self.name], "text may not contain NUL characters (\\u0000)", "nul_character")
                ],
            )
        if not is_valid_id(value, self.kind):
            raise NotFound(f"no {self.entity} {value[:60]!r}", code=f"{self.entity}_not_found")
        return value


@dataclass(frozen=True)
class Http:
    method: str
    path: str
    status: int = 200
    errors: tuple[int, ...] = ()  # the statuses `run` itself may answer (404, 409, ...)
    also: tuple[int, ...] = ()  # other success statuses `run` may choose with an `Answer` (same body)


@dataclass(frozen=True)
class Answer:
    """A result with a success status other than the declared one (it must be among `Http.also`)."""

    body: Any
    status: int


@dataclass(frozen=True)
class Call(Generic[In]):
    """What an operation's `run` gets: the node's services, the caller, the checked ids and input."""

    svc: Services
    who: Principal | None
    ids: Mapping[str, str]
    input: In
    query: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)  # HTTP only
    raw: Any = None  # the body as sent (HTTP only: idempotency hashes it)

    def principal(self) -> Principal:
        assert self.who is not None, "an operation with roles always has a caller"
        return self.who


Run = Callable[[Call[Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Operation:
    name: str  # also the websocket command's type, when `ws`
    summary: str
    tag: str
    run: Run
    output: type[View] | None
    roles: tuple[str, ...] = ANY  # () = no token needed
    input: type[BaseModel] = Nothing
    query: type[Query] | None = None
    ids: tuple[Id, ...] = ()
    http: Http | None = None
    ws: bool = False
    description: str = ""
    creates: Id | None = None  # the result's `id` names a new one of these (OpenAPI links follow it)

    def authorise(self, who: Principal) -> None:
        require_role(who, *(Role(r) for r in self.roles))


class Registry:
    """The application's operations, by name; each module contributes a tuple of declarations."""

    def __init__(self, *groups: Iterable[Operation]) -> None:
        self.operations: dict[str, Operation] = {}
        for group in groups:
            for op in group:
                if op.name in self.operations:
                    raise ValueError(f"operation {op.name} declared twice")
                self.operations[op.name] = op
        self.commands = {name: op for name, op in self.operations.items() if op.ws}

    def install(self, app: web.Application) -> None:
        # Grouped by path: aiohttp makes one resource of consecutive routes on one path, so 405 answers
        # list every method of that path.
        bound = sorted((op for op in self.operations.values() if op.http), key=lambda op: op.http.path)  # type: ignore[union-attr]
        for op in bound:
            assert op.http is not None
            app.router.add_route(op.http.method, op.http.path, _http_handler(op))

    async def command(self, app: web.Application, who: Principal, name: str, body: dict[str, Any]) -> Any:
        """The websocket adapter: run command `name` with the message's fields."""
        op = self.commands[name]
        op.authorise(who)
        fields = dict(body)
        ids: dict[str, str] = {}
        for spec in op.ids:
            value = fields.pop(spec.name, None)
            if value is None and spec.own_for is not None and who.role is spec.own_for:
                value = who.subject
            if value is None:
                raise ValidationFailed(
                    f"{spec.name} is required", details=[field_error([spec.name], "required", "missing")]
                )
            ids[spec.name] = spec.check(value)
        data = validate(op.input, fields)
        result = await op.run(Call(app[RUNTIME].services, who, ids, data))
        return _checked(app, op, result.body if isinstance(result, Answer) else result)


def _authenticate(request: web.Request, op: Operation) -> Principal | None:
    if not op.roles:
        return None
    who = verify(request.app, bearer_token(request.headers.get("Authorization")))
    op.authorise(who)
    return who


def _http_handler(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    assert op.http is not None
    status, http = op.http.status, op.http

    async def handle(request: web.Request) -> web.StreamResponse:
        who = _authenticate(request, op)
        ids = {spec.name: spec.check(request.match_info[spec.name]) for spec in op.ids}
        query = None if op.query is None else _query(op.query, request)
        raw = None
        if op.input is Nothing:
            data: BaseModel = Nothing()
        elif not request.can_read_body and not required_fields(op.input):
            raw, data = {}, op.input()  # every field optional: no body means the defaults
        else:
            raw = await read_json(request)
            if not isinstance(raw, dict):
                raise ValidationFailed(
                    "request body must be a JSON object",
                    details=[field_error([], f"expected an object, got {type(raw).__name__}", "type")],
                )
            data = validate(op.input, raw)
        call = Call(request.app[RUNTIME].services, who, ids, data, query, request.headers, raw)
        result = await op.run(call)
        answered = status
        if isinstance(result, Answer):
            assert result.status in (status, *http.also), f"{op.name}: undeclared status {result.status}"
            result, answered = result.body, result.status
        return json_response(_checked(request.app, op, result), status=answered)

    handle.__name__ = op.name.replace(".", "_")
    return handle


def _query(model: type[Query], request: web.Request) -> Query:
    values: dict[str, Any] = {}
    for name in model.model_fields:
        given = request.query.getall(name, [])
        if len(given) > 1:
            raise ValidationFailed(
                f"query parameter {name} is given {len(given)} times",
                details=[field_error([name], "give it once", "repeated")],
            )
        if given:
            values[name] = given[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        details = [
            field_error(list(e["loc"]), e["msg"], e["type"])
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise ValidationFailed(f"{len(details)} query parameter(s) are not valid", details=details) from None


def _checked(app: web.Application, op: Operation, result: Any) -> Any:
    """With strict views on (the tests), every result must match the declared output model."""
    if op.output is not None and app[SETTINGS].strict_views:
        op.output.model_validate(result)
    return result


def required_fields(model: type[BaseModel]) -> bool:
    return any(f.is_required() for f in model.model_fields.values())
