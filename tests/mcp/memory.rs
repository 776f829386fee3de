//! A real published MCP server, `@modelcontextprotocol/server-memory` from npm
//! (`npm ci` in tests/node), behind the proxy: its writes wait for Slack.

use std::path::PathBuf;

use serde_json::json;

use crate::helpers::*;

/// The server's binary from tests/node, or `None` (skipped) unless the tests' packages
/// are required (`SIGNOFF_REQUIRE_TEST_DEPS`, as `.ci/run` sets).
pub fn memory_server() -> Option<PathBuf> {
    crate::common::deps::installed(
        "@modelcontextprotocol/server-memory (npm ci in tests/node)",
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/node/node_modules/.bin/mcp-server-memory"
        )),
    )
}

#[tokio::test]
async fn server_memory_creates_entities_only_after_a_slack_approval_and_a_denied_delete_leaves_the_graph_unchanged()
 {
    let Some(server) = memory_server() else {
        return;
    };
    let h = harness().await;
    let memory = h.dir.path().join("memory.jsonl");
    let mut command = h.proxy_command(&["--name", "memory"], &[server.to_str().unwrap()]);
    command.env("MEMORY_FILE_PATH", &memory);
    let proxy = h.proxy_with(command).await;
    let entities = json!({"entities": [{"name": "signoff", "entityType": "project", "observations": ["gates MCP calls"]}]});
    let peer = proxy.client.peer().clone();
    let create =
        tokio::spawn(async move { peer.call_tool(call("create_entities", entities)).await });
    let id = h.posted(1).await;
    assert!(
        !memory.exists()
            || !std::fs::read_to_string(&memory)
                .unwrap()
                .contains("signoff"),
        "nothing written before the decision"
    );
    h.approve(&id, "U0ALICE").await;
    let created = create.await.unwrap().unwrap();
    assert_ne!(created.is_error, Some(true), "{created:?}");
    assert!(
        std::fs::read_to_string(&memory)
            .unwrap()
            .contains("gates MCP calls")
    );

    let peer = proxy.client.peer().clone();
    let delete = tokio::spawn(async move {
        peer.call_tool(call("delete_entities", json!({"entityNames": ["signoff"]})))
            .await
    });
    let id = h.posted(2).await;
    h.submit(&id, "U0BOB", "deny_reason", "keep it").await;
    let deleted = delete.await.unwrap().unwrap();
    assert_eq!(
        texts(&deleted),
        ["Denied by U0BOB: keep it. The call was not run."]
    );
    let graph = proxy
        .client
        .call_tool(call("read_graph", json!({})))
        .await
        .unwrap();
    assert!(
        texts(&graph).concat().contains("gates MCP calls"),
        "{graph:?}"
    );
}
