"""Schemathesis hooks for eleanor-ledger's NDJSON bodies (used by tests/openapi_contract.rs).

OpenAPI 3.1 has no notation for a stream of JSON lines; the document follows OpenAPI 3.2's rule
for sequential media types: the `schema` of `application/x-ndjson` describes the lines read
as an array. These hooks make schemathesis do the same: a generated array is sent one item per
line, and an NDJSON response is read into an array, every line validated against the schema.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson_body(ctx, value):
    if isinstance(value, bytes):
        return value
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode("ascii")


@schemathesis.deserializer("application/x-ndjson")
def ndjson_response(ctx, response):
    lines = response.content.decode("utf-8").split("\n")
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as exc:
        raise ValueError(f"a line of the NDJSON response is not JSON: {exc}") from exc


@schemathesis.hook
def filter_body(ctx, body):
    """Leaves out batches that hold one idempotency key twice.

    The contract refuses them (400 invalid_batch: each key once per request), but JSON Schema
    cannot say so (`uniqueItems` compares whole items), so a generated "valid" batch may break
    it; tests/api/idempotency.rs covers that refusal.
    """
    if ctx.operation is None or not ctx.operation.path.endswith("/records:batch"):
        return True
    if not isinstance(body, list):
        return True
    keys = [item["idempotency_key"] for item in body if isinstance(item, dict) and "idempotency_key" in item]
    return len(keys) == len(set(keys))
