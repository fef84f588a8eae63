"""Every Roost tool as the official MCP Python SDK sees it, strictly.

Run by scripts/mcp-conformance against a running `roost serve`:

    python mcp_schema_check.py http://127.0.0.1:PORT/mcp

For every tool listed it checks that the input and output schemas are valid
JSON Schema (2020-12, MCP's dialect), that the arguments it calls the tool
with satisfy the input schema (so a schema that refuses what the tool
accepts, such as `null` to clear a field, fails here), and it calls the tool
through `ClientSession.call_tool`, which validates the structured result
against the output schema and raises when it does not conform. It also
checks that structured results validate again on their own, and that every
tool carries a title and the hints. Exits non-zero on any failure.
"""

import asyncio
import json
import sys

from jsonschema import Draft202012Validator
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

MISSING_CONFLICT = "0190a000-0000-7000-8000-000000000000"

# Valid arguments for each create tool; the rest are derived from the ids
# they return.
CREATES = {
    "roost_store_memory": {"content": "Prefers green tea", "tags": ["tea"], "importance": 7, "context": "said once"},
    "roost_create_project": {"name": "garden", "status": "active", "description": "the vegetable patch"},
    "roost_create_source": {"title": "On Growth", "url": "https://example.org/growth", "published": "1917"},
    "roost_create_note": {"body": "Water the beans", "title": "beans"},
    "roost_create_blog_post": {"title": "First light", "body": "Hello", "status": "draft"},
    "roost_create_contact": {"name": "Ada", "email": "ada@example.org"},
    "roost_create_setting": {"key": "ui.theme", "value": "dark"},
}

# For each table, an update that clears an optional field with null, as
# the update tools' descriptions promise.
CLEARS = {
    "memory": {"context": None},
    "project": {"description": None},
    "source": {"url": None},
    "note": {"title": None},
    "blog_post": {"body": None},
    "contact": {"email": None},
    "setting": {"value": "light"},
}


def plan(tools):
    """The calls to make, in order: (tool, arguments or a function of the ids so far)."""
    calls = []
    for create, args in CREATES.items():
        table = create.removeprefix("roost_store_").removeprefix("roost_create_")
        plural = {"memory": "memories"}.get(table, table + "s")
        calls.append((create, args))
        calls.append((f"roost_get_{table}", lambda ids, t=table: {"id": ids[t]}))
        calls.append((f"roost_list_{plural}", {"limit": 10}))
        calls.append((f"roost_update_{table}", lambda ids, t=table: {"id": ids[t], **CLEARS[t]}))
    calls += [
        ("roost_store_memories", {"memories": [{"content": "Tea at four"}, {"content": "Coffee never", "importance": 2}]}),
        ("roost_search_memories", {"query": "tea", "limit": 5}),
        ("roost_search_all", {"query": "tea"}),
        ("roost_memory_stats", {}),
        ("roost_list_instances", {}),
        ("roost_list_sync_conflicts", {"include_resolved": True}),
        ("roost_resolve_sync_conflict", {"id": MISSING_CONFLICT, "keep": "local"}),
        ("roost_get_memory", lambda ids: {"id": ids["memory"], "instance": "checker"}),
        ("roost_agent_status", {}),
        ("roost_agent_topic", {"topic": "checker", "limit": 5}),
        ("roost_pool", {"op": "status"}),
    ]
    for create in CREATES:
        table = create.removeprefix("roost_store_").removeprefix("roost_create_")
        calls.append((f"roost_delete_{table}", lambda ids, t=table: {"id": ids[t]}))
    missing = {t.name for t in tools} - {name for name, _ in calls}
    if missing:
        raise SystemExit(f"no arguments planned for {sorted(missing)}: add them to mcp_schema_check.py")
    return calls


async def check(url):
    failures = []
    async with streamable_http_client(url) as (read, write, *_):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            by_name = {t.name: t for t in tools}
            for tool in tools:
                for which, schema in (("input", tool.input_schema), ("output", tool.output_schema)):
                    if schema is None:
                        failures.append(f"{tool.name}: no {which} schema")
                        continue
                    if schema.get("type") != "object":
                        failures.append(f"{tool.name}: the {which} schema's root is not an object")
                    try:
                        Draft202012Validator.check_schema(schema)
                    except Exception as e:  # noqa: BLE001 - any schema error is a failure to report
                        failures.append(f"{tool.name}: invalid {which} schema: {e}")
                hints = tool.annotations
                if not tool.title or hints is None or hints.idempotent_hint is None or hints.open_world_hint is None:
                    failures.append(f"{tool.name}: a title, idempotentHint and openWorldHint are expected")
            for name in ("roost_search_all", "roost_list_instances", "roost_pool"):
                if not by_name[name].annotations.open_world_hint:
                    failures.append(f"{name} reaches other machines but is not marked openWorldHint")

            ids = {}
            called = 0
            for name, args in plan(tools):
                args = args(ids) if callable(args) else args
                tool = by_name[name]
                errors = sorted(Draft202012Validator(tool.input_schema).iter_errors(args), key=str)
                if errors:
                    failures.append(f"{name}: its input schema refuses valid arguments {args}: {errors[0].message}")
                try:
                    result = await session.call_tool(name, args)
                except Exception as e:  # noqa: BLE001 - the SDK raises on a result that breaks its schema
                    failures.append(f"{name}({json.dumps(args)}): {e}")
                    continue
                called += 1
                text = " ".join(getattr(c, "text", "") for c in result.content)
                if result.is_error:
                    if name == "roost_resolve_sync_conflict" and "no conflict with id" in text.lower():
                        continue
                    if name == "roost_pool" and "the pool is off" in text.lower():
                        continue
                    failures.append(f"{name}({json.dumps(args)}) failed: {text}")
                    continue
                structured = result.structured_content
                problems = list(Draft202012Validator(tool.output_schema).iter_errors(structured))
                if problems:
                    failures.append(f"{name}: result does not match its output schema: {problems[0].message}")
                if name == "roost_store_memories":
                    if structured["count"] != len(args["memories"]):
                        failures.append(f"{name}: stored {structured['count']} of {len(args['memories'])}")
                elif name.startswith(("roost_store_", "roost_create_")):
                    table = name.removeprefix("roost_store_").removeprefix("roost_create_")
                    ids[table] = structured["id"]
                if name.startswith("roost_update_"):
                    cleared = CLEARS[name.removeprefix("roost_update_")]
                    for field, value in cleared.items():
                        if structured.get(field) != value:
                            failures.append(f"{name}: {field} should be {value!r}, is {structured.get(field)!r}")
    print(f"mcp schema check: {len(by_name)} tools listed, {called} calls made")
    return failures


def main():
    failures = asyncio.run(check(sys.argv[1]))
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"mcp schema check: {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
