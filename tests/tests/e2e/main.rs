//! End-to-end tests, one module per feature.

mod sandbox;
mod sdk_example;
mod text_plugins;
