//! Reads a workflow file section by section with toml_edit, keeping the span of every key and
//! value, so that one bad step does not hide the problems of the others.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::diagnostic::{Code, DiagnosticBuilder};
use crate::format::{
    INPUT_KEYS, InputSpec, ROOT_KEYS, STEP_KEYS, StepSpec, WORKFLOW_KEYS, WORKFLOW_VERSION,
    WorkflowInfo,
};

pub(crate) type Span = Option<Range<usize>>;

/// Spans of one table: the table itself and each key / value.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableSpans {
    pub table: Span,
    pub keys: BTreeMap<String, (Span, Span)>,
}

impl TableSpans {
    fn of(table: &dyn TableLike, table_span: Span) -> Self {
        let mut keys = BTreeMap::new();
        for (name, _) in table.iter() {
            if let Some((key, item)) = table.get_key_value(name) {
                keys.insert(name.to_owned(), (key.span(), item.span()));
            }
        }
        Self {
            table: table_span,
            keys,
        }
    }

    /// The value of `key`, else the key, else the table.
    pub fn value(&self, key: &str) -> Span {
        match self.keys.get(key) {
            Some((key_span, value_span)) => value_span.clone().or(key_span.clone()),
            None => self.table.clone(),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }
}

pub(crate) struct ParsedInput {
    pub name: String,
    pub name_span: Span,
    pub spec: Option<InputSpec>,
    pub spans: TableSpans,
}

pub(crate) struct ParsedStep {
    /// The id as written, even when the rest of the step does not deserialize.
    pub id: Option<String>,
    /// References of `from` as written, with their spans.
    pub from: Vec<(String, Span)>,
    /// Each guidance entry's references with their spans.
    pub guidance_from: Vec<Vec<(String, Span)>>,
    pub spec: Option<StepSpec>,
    pub spans: TableSpans,
}

pub(crate) struct ParsedOutput {
    pub name: String,
    pub name_span: Span,
    pub reference: Option<String>,
    pub value_span: Span,
}

pub(crate) struct ParsedWorkflow {
    pub info: Option<WorkflowInfo>,
    pub inputs: Vec<ParsedInput>,
    pub steps: Vec<ParsedStep>,
    pub outputs: Vec<ParsedOutput>,
    pub outputs_span: Span,
}

/// Parses the text; `None` on a TOML syntax error (reported).
pub(crate) fn parse(builder: &mut DiagnosticBuilder) -> Option<ParsedWorkflow> {
    let document = match ImDocument::parse(builder.source.text.clone()) {
        Ok(document) => document,
        Err(error) => {
            let message = error.message().trim().to_owned();
            builder.push(Code::SyntaxError, None, error.span(), message, "here");
            return None;
        }
    };
    let root = document.as_table();
    check_unknown_keys(builder, root, ROOT_KEYS, "the top level", None);

    match root.get("workflow_version") {
        None => {
            builder.push(
                Code::UnsupportedVersion,
                None,
                Some(0..0),
                format!("missing `workflow_version` (this host reads version {WORKFLOW_VERSION})"),
                "add `workflow_version = 1` here",
            );
        }
        Some(item) => match item.as_integer() {
            Some(version) if version == i64::from(WORKFLOW_VERSION) => {}
            Some(version) => {
                builder.push(
                    Code::UnsupportedVersion,
                    None,
                    item.span(),
                    format!("workflow_version {version} is not supported (this host reads version {WORKFLOW_VERSION})"),
                    "unsupported version",
                );
            }
            None => {
                builder.push(
                    Code::InvalidValue,
                    None,
                    item.span(),
                    "`workflow_version` must be an integer",
                    "expected an integer",
                );
            }
        },
    }

    let info = match root.get_key_value("workflow") {
        None => {
            builder.push(
                Code::InvalidValue,
                None,
                Some(0..0),
                "missing `[workflow]` table with the workflow's name",
                "expected `[workflow]`",
            );
            None
        }
        Some((key, item)) => table_section::<WorkflowInfo>(
            builder,
            item,
            key.span(),
            WORKFLOW_KEYS,
            "[workflow]",
            None,
        )
        .map(|(info, _)| info),
    };

    let mut inputs = Vec::new();
    if let Some((key, item)) = root.get_key_value("inputs") {
        match item.as_table_like() {
            None => {
                builder.push(
                    Code::InvalidValue,
                    None,
                    item.span().or(key.span()),
                    "`inputs` must be a table of named inputs",
                    "expected a table",
                );
            }
            Some(table) => {
                for (name, input_item) in table.iter() {
                    let name_span = table.get_key_value(name).and_then(|(key, _)| key.span());
                    let parsed = table_section::<InputSpec>(
                        builder,
                        input_item,
                        name_span.clone(),
                        INPUT_KEYS,
                        &format!("input `{name}`"),
                        None,
                    );
                    let (spec, spans) = match parsed {
                        Some((spec, spans)) => (Some(spec), spans),
                        None => (None, TableSpans::default()),
                    };
                    inputs.push(ParsedInput {
                        name: name.to_owned(),
                        name_span,
                        spec,
                        spans,
                    });
                }
            }
        }
    }

    let mut steps = Vec::new();
    if let Some((key, item)) = root.get_key_value("steps") {
        let tables: Option<Vec<(&dyn TableLike, Span, &Item)>> = match item {
            Item::ArrayOfTables(array) => Some(
                array
                    .iter()
                    .map(|table| (table as &dyn TableLike, table.span(), item))
                    .collect(),
            ),
            Item::Value(Value::Array(array)) => array
                .iter()
                .map(|value| {
                    value
                        .as_inline_table()
                        .map(|table| (table as &dyn TableLike, value.span(), item))
                })
                .collect(),
            _ => None,
        };
        match tables {
            None => {
                builder.push(
                    Code::InvalidValue,
                    None,
                    item.span().or(key.span()),
                    "`steps` must be an array of tables (`[[steps]]`)",
                    "expected `[[steps]]` tables",
                );
            }
            Some(tables) => {
                for (table, span, _) in tables {
                    steps.push(parse_step(builder, table, span));
                }
            }
        }
    }

    let mut outputs = Vec::new();
    let mut outputs_span = None;
    if let Some((key, item)) = root.get_key_value("outputs") {
        outputs_span = key.span();
        match item.as_table_like() {
            None => {
                builder.push(
                    Code::InvalidValue,
                    None,
                    item.span().or(key.span()),
                    "`outputs` must be a table of output name = \"reference\"",
                    "expected a table",
                );
            }
            Some(table) => {
                for (name, value) in table.iter() {
                    let name_span = table.get_key_value(name).and_then(|(key, _)| key.span());
                    let reference = value.as_str().map(str::to_owned);
                    if reference.is_none() {
                        builder.push(
                            Code::InvalidValue,
                            None,
                            value.span().or(name_span.clone()),
                            format!(
                                "output `{name}` must be a reference string such as \"steps.ID\""
                            ),
                            "expected a string",
                        );
                    }
                    outputs.push(ParsedOutput {
                        name: name.to_owned(),
                        name_span,
                        reference,
                        value_span: value.span(),
                    });
                }
            }
        }
    }

    Some(ParsedWorkflow {
        info,
        inputs,
        steps,
        outputs,
        outputs_span,
    })
}

fn parse_step(builder: &mut DiagnosticBuilder, table: &dyn TableLike, span: Span) -> ParsedStep {
    let id = table.get("id").and_then(Item::as_str).map(str::to_owned);
    let strings_with_spans = |item: Option<&Item>| -> Vec<(String, Span)> {
        item.and_then(Item::as_array)
            .map(|array| {
                array
                    .iter()
                    .filter_map(|value| value.as_str().map(|text| (text.to_owned(), value.span())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let from = strings_with_spans(table.get("from"));
    let guidance_from = table
        .get("guidance")
        .and_then(Item::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|entry| match entry.as_inline_table() {
                    Some(entry) => entry
                        .get("from")
                        .and_then(Value::as_array)
                        .map(|array| {
                            array
                                .iter()
                                .filter_map(|value| {
                                    value.as_str().map(|text| (text.to_owned(), value.span()))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    None => Vec::new(),
                })
                .collect()
        })
        .unwrap_or_default();
    // Diagnostics already name the step when it has an id.
    let what = if id.is_some() { "this step" } else { "a step" };
    let unknown = check_unknown_keys(builder, table, STEP_KEYS, what, id.as_deref());
    let spans = TableSpans::of(table, span.clone());
    let spec = deserialize_table::<StepSpec>(builder, table, &unknown, span, id.as_deref());
    ParsedStep {
        id,
        from,
        guidance_from,
        spec,
        spans,
    }
}

/// Reports every key of `table` not in `known`; returns them.
fn check_unknown_keys(
    builder: &mut DiagnosticBuilder,
    table: &dyn TableLike,
    known: &[&str],
    what: &str,
    step: Option<&str>,
) -> Vec<String> {
    let mut unknown = Vec::new();
    for (name, item) in table.iter() {
        if known.contains(&name) {
            continue;
        }
        let span = table
            .get_key_value(name)
            .and_then(|(key, _)| key.span())
            .or(item.span());
        builder
            .push(
                Code::UnknownKey,
                step,
                span,
                format!("unknown key `{name}` in {what}"),
                "unknown key",
            )
            .notes
            .push(format!("expected one of: {}", known.join(", ")));
        unknown.push(name.to_owned());
    }
    unknown
}

/// A table-valued section: unknown keys reported, the rest deserialized.
fn table_section<T: DeserializeOwned>(
    builder: &mut DiagnosticBuilder,
    item: &Item,
    key_span: Span,
    known: &[&str],
    what: &str,
    step: Option<&str>,
) -> Option<(T, TableSpans)> {
    let Some(table) = item.as_table_like() else {
        builder.push(
            Code::InvalidValue,
            step,
            item.span().or(key_span),
            format!("{what} must be a table"),
            "expected a table",
        );
        return None;
    };
    let span = item.span().or(key_span);
    let unknown = check_unknown_keys(builder, table, known, what, step);
    let spans = TableSpans::of(table, span.clone());
    deserialize_table(builder, table, &unknown, span, step).map(|value| (value, spans))
}

/// Deserializes a table without its (already reported) unknown keys; a serde error is reported at
/// its own span, else at the table.
fn deserialize_table<T: DeserializeOwned>(
    builder: &mut DiagnosticBuilder,
    table: &dyn TableLike,
    unknown: &[String],
    table_span: Span,
    step: Option<&str>,
) -> Option<T> {
    let mut inline = toml_edit::InlineTable::new();
    for (name, item) in table.iter() {
        if unknown.iter().any(|key| key == name) {
            continue;
        }
        let value = match item.clone() {
            Item::Value(value) => value,
            Item::Table(table) => Value::InlineTable(table.into_inline_table()),
            Item::ArrayOfTables(array) => Value::Array(array.into_array()),
            Item::None => continue,
        };
        inline.insert(name, value);
    }
    let deserializer = Value::InlineTable(inline).into_deserializer();
    match T::deserialize(deserializer) {
        Ok(value) => Some(value),
        Err(error) => {
            // Without a span of its own (e.g. a missing field) point at the table's first line,
            // its header, rather than underlining the whole table.
            let span = error.span().or_else(|| {
                table_span.map(|span| {
                    let text = &builder.source.text;
                    let end = text
                        .get(span.clone())
                        .and_then(|table| table.find('\n'))
                        .map_or(span.end, |newline| span.start + newline);
                    span.start..end
                })
            });
            builder.push(
                Code::InvalidValue,
                step,
                span,
                error.message().trim().to_owned(),
                "invalid value",
            );
            None
        }
    }
}
