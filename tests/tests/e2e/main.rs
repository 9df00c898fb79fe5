//! End-to-end tests, one module per feature.

mod depth_plugin;
mod normal_plugin;
mod rgb_plugin;
mod sandbox;
mod sdk_example;
mod semseg_plugin;
mod text_plugins;
