//! The workflow file format (`workflow_version = 1`) as serde types, and the JSON schema generated
//! from them for editors.
//!
//! These types describe what a file *says*; they keep scheme and schedule names as strings so that
//! tessera-sampler's own parsers decide what is valid (see [`crate::validate`]), while the schema
//! still lists the accepted names for editors.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The only format version this crate reads.
pub const WORKFLOW_VERSION: u32 = 1;

/// Upper bound on token counts and decoding steps in a file. No 4M domain has more than a few
/// thousand tokens; the bound keeps an untrusted file (the HTTP API accepts inline workflows) from
/// making the validator allocate schedules of billions of entries.
pub const MAX_TOKENS: u32 = 65_536;

/// A whole workflow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "tessera workflow",
    description = "A tessera workflow file (TOML)"
)]
pub struct WorkflowFile {
    /// Format version; must be 1.
    pub workflow_version: u32,
    pub workflow: WorkflowInfo,
    /// Named inputs, each bound to a domain, referenced as `inputs.NAME`.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Generation steps, referenced as `steps.ID`.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// Output name -> reference (`steps.ID` or `inputs.NAME`).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
}

/// Keys of the top level of a file.
pub const ROOT_KEYS: &[&str] = &["workflow_version", "workflow", "inputs", "steps", "outputs"];

/// The `[workflow]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Keys of the `[workflow]` table.
pub const WORKFLOW_KEYS: &[&str] = &["name", "description"];

/// One `[inputs.NAME]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Domain the value is tokenized into, e.g. `caption` or `rgb@224`.
    pub domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Value used when the run does not give one (text, or `@path` for a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// An example value, shown by `tessera workflows list` and the web page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

/// Keys of an input table.
pub const INPUT_KEYS: &[&str] = &["domain", "description", "default", "example"];

/// One `[[steps]]` table: generate one domain from named upstream values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Step id: a letter, then letters, digits, `_` or `-`.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Target domain, e.g. `tok_rgb@224`, `det`, `caption`.
    pub generate: String,
    /// Conditioning values: `inputs.NAME` or `steps.ID`.
    #[serde(default)]
    pub from: Vec<String>,
    /// Decoding scheme.
    #[schemars(extend("enum" = ["maskgit", "roar", "autoregressive"]))]
    pub scheme: String,
    /// Decoding steps (MaskGIT / ROAR); required for those schemes, ignored by autoregressive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub decoding_steps: Option<u32>,
    /// Token schedule for MaskGIT (ROAR always uses linear, as the reference does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["linear", "cosine"]))]
    pub token_schedule: Option<String>,
    /// Start temperature (0 = argmax), or `{ value, schedule }` with a temperature schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<TemperatureSpec>,
    /// Classifier-free guidance scale (1.0 = none). Exclusive with `guidance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f64>,
    /// Multi-condition guidance: one weighted set of conditions per entry. Exclusive with
    /// `cfg_scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<Vec<GuidanceSpec>>,
    /// Top-k filtering: an integer count (0 disables) or a fraction of the vocabulary in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<TopKSpec>,
    /// Nucleus filtering threshold in (0, 1]; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Tokens to generate: sequence slots, or an image grid size (which must match the model).
    /// Defaults to the domain's token count in the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub token_budget: Option<u32>,
    /// Seed of this step; without one, the run's seed is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `false` never reuses or stores this step's result in the step cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
}

/// Keys of a step table.
pub const STEP_KEYS: &[&str] = &[
    "id",
    "description",
    "generate",
    "from",
    "scheme",
    "decoding_steps",
    "token_schedule",
    "temperature",
    "cfg_scale",
    "guidance",
    "top_k",
    "top_p",
    "token_budget",
    "seed",
    "cache",
];

/// A temperature: a plain number (constant schedule) or a number with a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum TemperatureSpec {
    Value(f64),
    Scheduled(ScheduledTemperature),
}

/// `{ value = 3.0, schedule = "onex:0.5:0.5" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduledTemperature {
    pub value: f64,
    /// `constant`, `linear` or `onex:{min_temperature}:{power}`.
    #[schemars(regex(pattern = r"^(constant|linear|onex:[^:]+:[^:]+)$"))]
    pub schedule: String,
}

impl TemperatureSpec {
    pub fn value(&self) -> f64 {
        match self {
            TemperatureSpec::Value(value) => *value,
            TemperatureSpec::Scheduled(scheduled) => scheduled.value,
        }
    }

    /// The schedule's name, `constant` for a plain number.
    pub fn schedule(&self) -> &str {
        match self {
            TemperatureSpec::Value(_) => "constant",
            TemperatureSpec::Scheduled(scheduled) => &scheduled.schedule,
        }
    }
}

// Hand-written so that a wrong shape says what is expected, instead of serde's "did not match any
// variant of untagged enum".
impl<'de> Deserialize<'de> for TemperatureSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TemperatureVisitor;
        impl<'de> Visitor<'de> for TemperatureVisitor {
            type Value = TemperatureSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a table `{ value = NUMBER, schedule = \"...\" }`")
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
                Ok(TemperatureSpec::Value(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                Ok(TemperatureSpec::Value(value as f64))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                Ok(TemperatureSpec::Value(value as f64))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ScheduledTemperature::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(TemperatureSpec::Scheduled)
            }
        }
        deserializer.deserialize_any(TemperatureVisitor)
    }
}

/// Top-k: a count of tokens or a fraction of the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum TopKSpec {
    Count(u32),
    Fraction(f64),
}

impl<'de> Deserialize<'de> for TopKSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopKVisitor;
        impl<'de> Visitor<'de> for TopKVisitor {
            type Value = TopKSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer count or a fraction in (0, 1]")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                u32::try_from(value)
                    .map(TopKSpec::Count)
                    .map_err(|_| E::custom(format!("top_k count {value} is not in 0..=4294967295")))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                u32::try_from(value)
                    .map(TopKSpec::Count)
                    .map_err(|_| E::custom(format!("top_k count {value} is not in 0..=4294967295")))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
                Ok(TopKSpec::Fraction(value))
            }
        }
        deserializer.deserialize_any(TopKVisitor)
    }
}

/// One weighted condition set of multi-condition guidance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuidanceSpec {
    /// The conditions of this set; each must also be in the step's `from`.
    pub from: Vec<String>,
    /// Guidance weight of this set.
    pub weight: f64,
}

/// The JSON schema of the format, pretty-printed with a trailing newline (the content of the
/// checked-in `workflows/workflow.schema.json`).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(WorkflowFile);
    let mut text = serde_json::to_string_pretty(&schema)
        .expect("a schemars schema is plain JSON and always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn property_names(schema: &serde_json::Value, definition: Option<&str>) -> Vec<String> {
        let object = match definition {
            Some(name) => &schema["$defs"][name],
            None => schema,
        };
        let mut names: Vec<String> = object["properties"]
            .as_object()
            .expect("struct schemas have properties")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut keys: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
        keys.sort();
        keys
    }

    /// The key lists drive the unknown-key check; they must not drift from the serde types.
    #[test]
    fn key_lists_match_the_schema() {
        let schema: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
        assert_eq!(property_names(&schema, None), sorted(ROOT_KEYS));
        assert_eq!(
            property_names(&schema, Some("WorkflowInfo")),
            sorted(WORKFLOW_KEYS)
        );
        assert_eq!(
            property_names(&schema, Some("InputSpec")),
            sorted(INPUT_KEYS)
        );
        assert_eq!(property_names(&schema, Some("StepSpec")), sorted(STEP_KEYS));
    }
}
