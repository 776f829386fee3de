"""Drives `signoff proxy` with the official MCP Python SDK: lists the tools, then makes
calls that a person approves, denies and edits in Slack. Usage: mcp_client.py CMD ARGS...
(the proxy's command line). Prints one JSON line per step."""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client


def say(**fields):
    print(json.dumps(fields), flush=True)


async def main():
    # The whole environment, so that the fixture behind the proxy finds FIXTURE_LOG.
    server = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:], env=dict(os.environ))
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            say(step="tools", names=sorted(tool.name for tool in tools.tools))
            calls = [("echo", {"a": 1}), ("delete_things", {"ids": [1]}),
                     ("delete_things", {"ids": [2]}), ("delete_things", {"ids": [3]})]
            for name, arguments in calls:
                say(step="calling", tool=name, arguments=arguments)
                result = await session.call_tool(name, arguments)
                texts = [block.text for block in result.content if block.type == "text"]
                say(step="result", tool=name, is_error=bool(result.is_error), texts=texts)


asyncio.run(main())
