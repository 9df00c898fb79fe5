//! Integration tests of tessera-workflow, one module per feature (in `tests/workflow/`). Golden
//! files are regenerated with `TESSERA_BLESS=1`.

#[path = "workflow/batching.rs"]
mod batching;
#[path = "workflow/builtin.rs"]
mod builtin;
#[path = "workflow/common.rs"]
mod common;
#[path = "workflow/executor.rs"]
mod executor;
#[path = "workflow/golden.rs"]
mod golden;
#[path = "workflow/property.rs"]
mod property;
#[path = "workflow/schema.rs"]
mod schema;
