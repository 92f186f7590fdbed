"""The API described (OpenAPI 3.0), from the event schemas and the action words themselves:
what the document says is what ``api.py`` accepts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from faust.web import Request, Response

from sla.clock import ClockStatus
from sla.events import KINDS, PAYLOAD_SCHEMAS, EventType
from sla.ticket import COMMAND_EVENT, Status

from .api import IDEMPOTENCY_HEADER, SLA_STATES
from .commands import ACTIONS
from .edge import EdgeView


class OpenApi(EdgeView):
    async def get(self, request: Request) -> Response:
        await self.edge.authenticate(request)
        return self.json(openapi_document())


def _schema_for(event_type: EventType, time_field: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required = []
    for name, spec in PAYLOAD_SCHEMAS[event_type].items():
        if isinstance(spec.kind, tuple):
            props[name] = {"type": "string", "enum": list(spec.kind)}
        elif spec.kind is bool:
            props[name] = {"type": "boolean"}
        elif spec.kind is datetime:
            props[name] = {"type": "string", "format": "date-time"}
        else:
            props[name] = {"type": "string", "maxLength": spec.max_length}
        if spec.required:
            required.append(name)
            if spec.kind is str:
                props[name]["minLength"] = 1
    props[time_field] = {"type": "string", "format": "date-time",
                         "description": "business time of the action, if not now (ISO 8601 with offset)"}
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def openapi_document() -> dict[str, Any]:
    error_schema = {"schema": {"$ref": "#/components/schemas/Error"}}
    error = {"description": "error", "content": {"application/json": error_schema}}
    ticket = {"description": "the ticket", "content": {"application/json": {"schema": {"type": "object"}}}}
    retry_key = {"name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
                 "description": "Any 1 to 128 printable ASCII characters chosen by the client for this request: "
                                "sent again with the same key (after a cut connection, a 504 or a crash), the "
                                "request is answered again (\"replayed\": true) and applied once.",
                 "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"}}
    paths: dict[str, Any] = {
        "/api/tickets": {
            "post": {
                "summary": "File a ticket",
                "parameters": [retry_key],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _schema_for(EventType.TICKET_FILED, "received_at")}}},
                "responses": {"201": ticket, "409": error, "413": error, "422": error, "503": error, "504": error},
            },
            "get": {
                "summary": "List tickets (paged)",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": [s.value for s in Status]}},
                    {"name": "member", "in": "query", "schema": {"type": "string"}},
                    {"name": "sla_status", "in": "query", "schema": {"type": "string", "enum": list(SLA_STATES)}},
                    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                ],
                "responses": {"200": {"description": "a page of tickets"}, "422": error},
            },
        },
        "/api/tickets/{ticket_id}": {
            "get": {
                "summary": "A ticket with its SLA clocks",
                "parameters": [{"name": "ticket_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": ticket, "404": error, "503": error},
            }
        },
        "/api/tickets/{ticket_id}/dispute-file": {
            "get": {
                "summary": "The ticket's dispute file, replayed from the SQL archive (staff only)",
                "parameters": [
                    {"name": "ticket_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "format", "in": "query",
                     "schema": {"type": "string", "enum": ["json", "md", "html", "pdf"], "default": "json"}},
                ],
                "responses": {"200": {"description": "the dispute file (schema slaledger.dispute-file/1 in JSON)"},
                              "403": error, "404": error, "422": error},
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Readiness (tables recovered)",
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
    }
    for action, command_type in ACTIONS.items():
        paths[f"/api/tickets/{{ticket_id}}/{action}"] = {
            "post": {
                "summary": f"{action.replace('-', ' ').capitalize()} a ticket",
                "parameters": [{"name": "ticket_id", "in": "path", "required": True, "schema": {"type": "string"}},
                               retry_key],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": _schema_for(COMMAND_EVENT[command_type], "occurred_at")}}},
                "responses": {"200": ticket, "404": error, "409": error, "413": error, "422": error,
                              "503": error, "504": error},
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {"title": "slaledger", "version": "0.1.0",
                 "description": f"Tickets and SLA clocks. Kinds: {', '.join(KINDS)}. "
                                f"SLA states: {', '.join(s.value for s in ClockStatus)}."},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "field": {"type": "string"}, "code": {"type": "string"}}}},
        },
    }
