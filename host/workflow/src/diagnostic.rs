//! Located validation diagnostics with stable codes, rendered for the terminal (source snippet
//! and caret, via codespan-reporting) or as JSON for the HTTP API.

use std::ops::Range;

use codespan_reporting::diagnostic::{Diagnostic as CodespanDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor};
use serde::{Serialize, Serializer};

/// Whether a diagnostic blocks running the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Stable diagnostic codes. The number and the name never change meaning once released; new
/// problems get new codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    DuplicateStepId,
    MalformedId,
    UnknownInput,
    UnknownStep,
    MalformedReference,
    Cycle,
    UnknownDomain,
    DomainNotGeneratable,
    NoPlugin,
    SamplerRefused,
    NoOutputs,
    UnreachableStep,
    UnknownKey,
    InvalidValue,
    SyntaxError,
    UnsupportedVersion,
    ConflictingParameters,
    MissingParameter,
    DomainConflict,
    OutputNotServed,
    DuplicateReference,
    UnusedInput,
}

impl Code {
    /// Every code, in number order (for documentation and tests).
    pub const ALL: [Code; 22] = [
        Code::DuplicateStepId,
        Code::MalformedId,
        Code::UnknownInput,
        Code::UnknownStep,
        Code::MalformedReference,
        Code::Cycle,
        Code::UnknownDomain,
        Code::DomainNotGeneratable,
        Code::NoPlugin,
        Code::SamplerRefused,
        Code::NoOutputs,
        Code::UnreachableStep,
        Code::UnknownKey,
        Code::InvalidValue,
        Code::SyntaxError,
        Code::UnsupportedVersion,
        Code::ConflictingParameters,
        Code::MissingParameter,
        Code::DomainConflict,
        Code::OutputNotServed,
        Code::DuplicateReference,
        Code::UnusedInput,
    ];

    /// `W001` ...
    pub fn code(self) -> &'static str {
        match self {
            Code::DuplicateStepId => "W001",
            Code::MalformedId => "W002",
            Code::UnknownInput => "W003",
            Code::UnknownStep => "W004",
            Code::MalformedReference => "W005",
            Code::Cycle => "W006",
            Code::UnknownDomain => "W007",
            Code::DomainNotGeneratable => "W008",
            Code::NoPlugin => "W009",
            Code::SamplerRefused => "W010",
            Code::NoOutputs => "W011",
            Code::UnreachableStep => "W012",
            Code::UnknownKey => "W013",
            Code::InvalidValue => "W014",
            Code::SyntaxError => "W015",
            Code::UnsupportedVersion => "W016",
            Code::ConflictingParameters => "W017",
            Code::MissingParameter => "W018",
            Code::DomainConflict => "W019",
            Code::OutputNotServed => "W020",
            Code::DuplicateReference => "W021",
            Code::UnusedInput => "W022",
        }
    }

    /// `duplicate-step-id` ...
    pub fn name(self) -> &'static str {
        match self {
            Code::DuplicateStepId => "duplicate-step-id",
            Code::MalformedId => "malformed-id",
            Code::UnknownInput => "unknown-input",
            Code::UnknownStep => "unknown-step",
            Code::MalformedReference => "malformed-reference",
            Code::Cycle => "cycle",
            Code::UnknownDomain => "unknown-domain",
            Code::DomainNotGeneratable => "domain-not-generatable",
            Code::NoPlugin => "no-plugin",
            Code::SamplerRefused => "sampler-refused",
            Code::NoOutputs => "no-outputs",
            Code::UnreachableStep => "unreachable-step",
            Code::UnknownKey => "unknown-key",
            Code::InvalidValue => "invalid-value",
            Code::SyntaxError => "syntax-error",
            Code::UnsupportedVersion => "unsupported-version",
            Code::ConflictingParameters => "conflicting-parameters",
            Code::MissingParameter => "missing-parameter",
            Code::DomainConflict => "domain-conflict",
            Code::OutputNotServed => "output-not-served",
            Code::DuplicateReference => "duplicate-reference",
            Code::UnusedInput => "unused-input",
        }
    }

    /// Warnings do not block a run; everything else does.
    pub fn severity(self) -> Severity {
        match self {
            Code::UnreachableStep | Code::OutputNotServed | Code::UnusedInput => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// One problem found in a workflow file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub code: Code,
    /// The code's stable name, e.g. `duplicate-step-id`.
    pub name: &'static str,
    pub severity: Severity,
    pub message: String,
    /// The step the problem belongs to, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub file: String,
    /// 1-based line and column (in characters) of the start of `span`; 1:1 without a span.
    pub line: usize,
    pub column: usize,
    /// Byte range in the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<Range<usize>>,
    /// Short text shown under the caret.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub label: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A workflow's source text with its file name, for locating and rendering diagnostics.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(index, _)| index + 1))
            .collect();
        Self {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// 1-based line and character column of a byte offset (clamped to the text).
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line_index = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let line_start = self.line_starts[line_index];
        let column = self
            .text
            .get(line_start..offset)
            .map(|prefix| prefix.chars().count())
            // An offset inside a multi-byte character: count bytes rather than fail.
            .unwrap_or(offset - line_start);
        (line_index + 1, column + 1)
    }
}

/// Builds diagnostics located in one file.
pub(crate) struct DiagnosticBuilder<'a> {
    pub source: &'a SourceFile,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> DiagnosticBuilder<'a> {
    pub fn new(source: &'a SourceFile) -> Self {
        Self {
            source,
            diagnostics: Vec::new(),
        }
    }

    pub fn push(
        &mut self,
        code: Code,
        step: Option<&str>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        let span = span.map(|span| {
            // Keep spans inside the text and on character boundaries so rendering cannot fail.
            let text = &self.source.text;
            let mut start = span.start.min(text.len());
            let mut end = span.end.clamp(start, text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            while !text.is_char_boundary(end) {
                end += 1;
            }
            start..end
        });
        let (line, column) = span
            .as_ref()
            .map(|span| self.source.line_column(span.start))
            .unwrap_or((1, 1));
        self.diagnostics.push(Diagnostic {
            code,
            name: code.name(),
            severity: code.severity(),
            message: message.into(),
            step: step.map(str::to_owned),
            file: self.source.name.clone(),
            line,
            column,
            span,
            label: label.into(),
            notes: Vec::new(),
        });
        self.diagnostics.last_mut().expect("just pushed")
    }
}

/// Sorts diagnostics by position, then code, so output is stable whatever order checks ran in.
pub(crate) fn sort_diagnostics(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        let start = |d: &Diagnostic| d.span.as_ref().map(|span| span.start);
        (start(a), a.code, &a.message).cmp(&(start(b), b.code, &b.message))
    });
}

/// Renders diagnostics the way `tessera validate` prints them: a header with the code, the source
/// line with a caret under the span, and notes. `color` adds ANSI colours.
pub fn render_terminal(source: &SourceFile, diagnostics: &[Diagnostic], color: bool) -> String {
    let files = SimpleFile::new(source.name.as_str(), source.text.as_str());
    let config = term::Config::default();
    let mut buffer = if color {
        termcolor::Buffer::ansi()
    } else {
        termcolor::Buffer::no_color()
    };
    for diagnostic in diagnostics {
        let mut rendered = match diagnostic.severity {
            Severity::Error => CodespanDiagnostic::error(),
            Severity::Warning => CodespanDiagnostic::warning(),
        }
        .with_code(format!("{} {}", diagnostic.code.code(), diagnostic.name))
        .with_message(match &diagnostic.step {
            Some(step) => format!("step `{step}`: {}", diagnostic.message),
            None => diagnostic.message.clone(),
        })
        .with_notes(diagnostic.notes.clone());
        if let Some(span) = &diagnostic.span {
            rendered = rendered.with_labels(vec![
                Label::primary((), span.clone()).with_message(&diagnostic.label),
            ]);
        } else {
            rendered = rendered.with_notes(
                std::iter::once(format!("in {}", source.name))
                    .chain(diagnostic.notes.iter().cloned())
                    .collect(),
            );
        }
        if term::emit(&mut buffer, &config, &files, &rendered).is_err() {
            // Rendering only fails on spans outside the text, which `DiagnosticBuilder` prevents;
            // fall back to the one-line form rather than lose the diagnostic.
            let line = format!(
                "{}[{}]: {}:{}:{}: {}\n",
                match diagnostic.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                },
                diagnostic.code.code(),
                diagnostic.file,
                diagnostic.line,
                diagnostic.column,
                diagnostic.message
            );
            use std::io::Write;
            let _ = buffer.write_all(line.as_bytes());
        }
    }
    String::from_utf8_lossy(buffer.as_slice()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_documented_in_the_readme() {
        let readme = include_str!("../README.md");
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.code()), "{} used twice", code.code());
            let row = format!("| `{}` | `{}` |", code.code(), code.name());
            assert!(readme.contains(&row), "README lacks the row for {code}");
        }
    }

    #[test]
    fn columns_count_characters_and_spans_are_clamped() {
        let source = SourceFile::new("f.toml", "a = \"é\"\nb = 1\n");
        assert_eq!(source.line_column(0), (1, 1));
        // The byte after the two-byte `é` is the 7th character of line 1.
        assert_eq!(source.line_column(7), (1, 7));
        assert_eq!(source.line_column(9), (2, 1));
        assert_eq!(source.line_column(1000), (3, 1));
        let mut builder = DiagnosticBuilder::new(&source);
        // A span ending inside `é` and one past the end are moved onto valid boundaries.
        builder.push(Code::InvalidValue, None, Some(5..6), "m", "l");
        builder.push(Code::InvalidValue, None, Some(50..60), "m", "l");
        let diagnostics = builder.diagnostics;
        assert_eq!(diagnostics[0].span, Some(5..7));
        assert_eq!(diagnostics[1].span, Some(15..15));
        assert!(render_terminal(&source, &diagnostics, false).contains("f.toml:1:6"));
    }
}
