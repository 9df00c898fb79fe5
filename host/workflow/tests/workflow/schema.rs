//! The checked-in JSON schema must be the one generated from the Rust types.

use crate::common::{compare_or_bless, repo_root};

#[test]
fn checked_in_schema_is_current() {
    let path = repo_root().join("workflows/workflow.schema.json");
    if let Some(mismatch) = compare_or_bless(&path, &tessera_workflow::json_schema()) {
        panic!("the workflow schema is stale: {mismatch}");
    }
}
