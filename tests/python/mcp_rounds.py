"""Drives `signoff proxy` with the official MCP Python SDK on protocol 2026-07-28: its
calls of tools whose server asks the client something (sampling, elicitation, roots) come
back input_required, and the SDK answers through its callbacks and retries. Usage:
mcp_rounds.py CMD ARGS... (the proxy's command line). Prints one JSON line per call."""

import asyncio
import json
import os
import sys

import mcp_types as types
from mcp import Client, StdioServerParameters


async def sampling(_context, params):
    asked = params.messages[0].content.text
    return types.CreateMessageResult(
        role="assistant",
        model="python-model",
        content=types.TextContent(type="text", text=f"python answers {asked!r}"),
    )


async def elicitation(_context, _params):
    return types.ElicitResult(action="accept", content={"env": "python-qa"})


async def roots(_context):
    return types.ListRootsResult(roots=[types.Root(uri="file:///python/project", name="python")])


async def main():
    # The whole environment, so that the fixture behind the proxy finds FIXTURE_LOG.
    server = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:], env=dict(os.environ))
    client = Client(
        server,
        mode="2026-07-28",
        sampling_callback=sampling,
        elicitation_callback=elicitation,
        list_roots_callback=roots,
        client_info=types.Implementation(name="python-modern", version="1"),
    )
    async with client:
        for name in ["ask_model", "ask_user", "roots"]:
            try:
                result = await client.call_tool(name, {"from": "python"})
                texts = [block.text for block in result.content if block.type == "text"]
                print(json.dumps({"tool": name, "is_error": bool(result.is_error), "texts": texts}), flush=True)
            except Exception as error:  # the test shows what went wrong
                print(json.dumps({"tool": name, "error": repr(error)}), flush=True)


asyncio.run(main())
