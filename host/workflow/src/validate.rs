//! Validation of a workflow file: every problem at once, each with a stable code, step id and
//! location. Generation parameters are checked by tessera-sampler itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;

use petgraph::graph::{DiGraph, NodeIndex};
use tessera_sampler::{
    DomainCatalog, DomainInfo, DomainKind, DomainRole, Guidance, SamplerError, Scheme,
    TemperatureSchedule, TokenScheduleKind, TopK, validate_multi_guided_plan, validate_plan,
    validate_sampling_options,
};

use crate::diagnostic::{
    Code, Diagnostic, DiagnosticBuilder, Severity, SourceFile, render_terminal, sort_diagnostics,
};
use crate::format::{MAX_TOKENS, StepSpec, TopKSpec};
use crate::parse::{ParsedStep, ParsedWorkflow, Span, parse};
use crate::workflow::{
    Reference, Step, StepGuidance, StepParameters, WeightedCondition, Workflow, WorkflowInput,
    check_id,
};

/// What validation knows about the host. Without a catalog only structure and parameters are
/// checked; without served domains plugins are not checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationContext<'a> {
    /// The loaded model's domains.
    pub catalog: Option<&'a DomainCatalog>,
    /// Domains some loaded plugin tokenizes / detokenizes.
    pub served_domains: Option<&'a BTreeSet<String>>,
}

/// The outcome of validating one file.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    pub source: SourceFile,
    /// Sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// The validated workflow, when there is no error (warnings allowed).
    pub workflow: Option<Workflow>,
}

impl ValidationReport {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|diagnostic| diagnostic.severity == Severity::Error)
    }

    /// Terminal rendering with source snippets (see [`render_terminal`]).
    pub fn render_terminal(&self, color: bool) -> String {
        render_terminal(&self.source, &self.diagnostics, color)
    }

    /// The JSON the HTTP API returns: `{ file, valid, diagnostics: [...] }`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.source.name,
            "valid": !self.has_errors(),
            "diagnostics": self.diagnostics,
        })
    }
}

/// Reads and validates a workflow file.
pub fn validate_file(
    path: &Path,
    context: &ValidationContext,
) -> Result<ValidationReport, std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    Ok(validate_source(&path.display().to_string(), &text, context))
}

/// Validates workflow text; `file_name` is only used in locations.
pub fn validate_source(
    file_name: &str,
    text: &str,
    context: &ValidationContext,
) -> ValidationReport {
    let source = SourceFile::new(file_name, text);
    let (diagnostics, workflow) = {
        let mut builder = DiagnosticBuilder::new(&source);
        let workflow = parse(&mut builder).and_then(|parsed| check(&mut builder, parsed, context));
        let mut diagnostics = builder.diagnostics;
        sort_diagnostics(&mut diagnostics);
        let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
        (diagnostics, if has_errors { None } else { workflow })
    };
    ValidationReport {
        source,
        diagnostics,
        workflow,
    }
}

/// A reference resolved to what it names.
struct Resolved {
    reference: Reference,
    /// `None` when the domain is unknown (the input or step itself is broken).
    domain: Option<String>,
}

fn check(
    builder: &mut DiagnosticBuilder,
    parsed: ParsedWorkflow,
    context: &ValidationContext,
) -> Option<Workflow> {
    // ---- inputs --------------------------------------------------------------------------
    let mut inputs = BTreeMap::new();
    // Names of every declared input, also those whose table is broken (already reported), so that
    // references to them are not reported a second time as dangling.
    let input_names: BTreeSet<String> = parsed.inputs.iter().map(|i| i.name.clone()).collect();
    for input in &parsed.inputs {
        if let Err(reason) = check_id(&input.name) {
            builder.push(
                Code::MalformedId,
                None,
                input.name_span.clone(),
                format!("input name `{}` is malformed: {reason}", input.name),
                "malformed name",
            );
        }
        let Some(spec) = &input.spec else { continue };
        let domain_span = input.spans.value("domain");
        if let Some(catalog) = context.catalog
            && catalog.get(&spec.domain).is_none()
        {
            builder.push(
                Code::UnknownDomain,
                None,
                domain_span.clone(),
                format!(
                    "input `{}`: the model has no domain `{}`",
                    input.name, spec.domain
                ),
                "unknown domain",
            );
        }
        if let Some(served) = context.served_domains
            && !served.contains(&spec.domain)
        {
            builder.push(
                Code::NoPlugin,
                None,
                domain_span,
                format!(
                    "input `{}`: no loaded plugin tokenizes domain `{}`",
                    input.name, spec.domain
                ),
                "no plugin serves this domain",
            );
        }
        inputs.insert(
            input.name.clone(),
            WorkflowInput {
                domain: spec.domain.clone(),
                description: spec.description.clone(),
                default: spec.default.clone(),
                example: spec.example.clone(),
            },
        );
    }

    // ---- step ids ------------------------------------------------------------------------
    // First occurrence of each id; later duplicates are reported and left out of the graph.
    let mut step_index: BTreeMap<String, usize> = BTreeMap::new();
    for (index, step) in parsed.steps.iter().enumerate() {
        let Some(id) = &step.id else { continue };
        let id_span = step.spans.value("id");
        if let Err(reason) = check_id(id) {
            builder.push(
                Code::MalformedId,
                Some(id),
                id_span.clone(),
                format!("step id `{id}` is malformed: {reason}"),
                "malformed id",
            );
        }
        match step_index.get(id) {
            Some(&first) => {
                let first_line = parsed.steps[first]
                    .spans
                    .value("id")
                    .map(|span| builder.source.line_column(span.start).0);
                let diagnostic = builder.push(
                    Code::DuplicateStepId,
                    Some(id),
                    id_span,
                    format!("step id `{id}` is used more than once"),
                    "duplicate id",
                );
                if let Some(line) = first_line {
                    diagnostic
                        .notes
                        .push(format!("first defined on line {line}"));
                }
            }
            None => {
                step_index.insert(id.clone(), index);
            }
        }
    }
    let step_domain = |id: &str| -> Option<String> {
        step_index
            .get(id)
            .and_then(|&index| parsed.steps[index].spec.as_ref())
            .map(|spec| spec.generate.clone())
    };

    // ---- references, domains and parameters of each step ---------------------------------
    let mut dependencies: Vec<Vec<(usize, Span)>> = vec![Vec::new(); parsed.steps.len()];
    let mut used_inputs = BTreeSet::new();
    let mut steps = Vec::new();
    for (index, step) in parsed.steps.iter().enumerate() {
        let id = step.id.as_deref();
        let mut resolved = Vec::new();
        let mut seen = BTreeSet::new();
        for (text, span) in &step.from {
            let Some(reference) = resolve(
                builder,
                id,
                text,
                span.clone(),
                &input_names,
                &step_index,
                "from",
            ) else {
                continue;
            };
            if !seen.insert(reference.clone()) {
                builder.push(
                    Code::DuplicateReference,
                    id,
                    span.clone(),
                    format!("`{reference}` is listed twice in `from`"),
                    "duplicate reference",
                );
                continue;
            }
            let domain = match &reference {
                Reference::Input(name) => {
                    used_inputs.insert(name.clone());
                    inputs.get(name).map(|input| input.domain.clone())
                }
                Reference::Step(dependency) => {
                    if let Some(&dependency_index) = step_index.get(dependency) {
                        dependencies[index].push((dependency_index, span.clone()));
                    }
                    step_domain(dependency)
                }
            };
            resolved.push(Resolved { reference, domain });
        }
        let Some(spec) = &step.spec else { continue };
        let domains_ok = check_step_domains(builder, step, spec, &resolved, context);
        let parameters = step_parameters(builder, step, spec, &seen, &inputs, &step_index);
        if let (Some(parameters), true) = (&parameters, domains_ok) {
            let condition_domains: Vec<String> =
                resolved.iter().filter_map(|r| r.domain.clone()).collect();
            // Only ask the sampler once every condition's domain is known, so a broken upstream
            // value is not reported a second time as a sampler refusal.
            if condition_domains.len() == resolved.len() {
                let candidate = Step {
                    id: spec.id.clone(),
                    generate: spec.generate.clone(),
                    from: resolved.iter().map(|r| r.reference.clone()).collect(),
                    condition_domains,
                    parameters: parameters.clone(),
                    cache: spec.cache.unwrap_or(true),
                };
                if let Err(error) = sampler_check(&candidate, context.catalog) {
                    let key = key_of_sampler_error(&error, step);
                    builder.push(
                        Code::SamplerRefused,
                        id,
                        step.spans.value(key),
                        error.to_string(),
                        "refused by the sampler",
                    );
                }
                steps.push(candidate);
            }
        }
    }

    // ---- cycles --------------------------------------------------------------------------
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..parsed.steps.len()).map(|i| graph.add_node(i)).collect();
    for (dependent, deps) in dependencies.iter().enumerate() {
        for (dependency, _) in deps {
            graph.add_edge(nodes[*dependency], nodes[dependent], ());
        }
    }
    for component in petgraph::algo::tarjan_scc(&graph) {
        let members: BTreeSet<usize> = component.iter().map(|node| graph[*node]).collect();
        let start = *members.iter().next().expect("components are never empty");
        let self_loop = dependencies[start].iter().any(|(dep, _)| *dep == start);
        if members.len() < 2 && !self_loop {
            continue;
        }
        let chain = cycle_chain(start, &members, &dependencies);
        let names: Vec<&str> = chain
            .iter()
            .map(|&i| parsed.steps[i].id.as_deref().unwrap_or("?"))
            .collect();
        // Point at the reference in the first step that leads into the cycle.
        let next = chain.get(1).copied().unwrap_or(start);
        let span = dependencies[start]
            .iter()
            .find(|(dep, _)| *dep == next)
            .and_then(|(_, span)| span.clone());
        builder
            .push(
                Code::Cycle,
                parsed.steps[start].id.as_deref(),
                span,
                format!(
                    "steps depend on each other in a cycle: {}",
                    names.join(" -> ")
                ),
                "this reference closes a cycle",
            )
            .notes
            .push("`a -> b` means step `a` takes `steps.b` as input".to_owned());
    }

    // ---- outputs -------------------------------------------------------------------------
    let mut outputs = BTreeMap::new();
    if parsed.outputs.is_empty() {
        builder.push(
            Code::NoOutputs,
            None,
            parsed.outputs_span.clone().or(Some(0..0)),
            "the workflow declares no outputs, so nothing would run",
            "add `[outputs]` with `name = \"steps.ID\"`",
        );
    }
    for output in &parsed.outputs {
        if let Err(reason) = check_id(&output.name) {
            builder.push(
                Code::MalformedId,
                None,
                output.name_span.clone(),
                format!("output name `{}` is malformed: {reason}", output.name),
                "malformed name",
            );
        }
        let Some(text) = &output.reference else {
            continue;
        };
        let Some(reference) = resolve(
            builder,
            None,
            text,
            output.value_span.clone(),
            &input_names,
            &step_index,
            &format!("output `{}`", output.name),
        ) else {
            continue;
        };
        match &reference {
            Reference::Input(name) => {
                used_inputs.insert(name.clone());
            }
            Reference::Step(id) => {
                if let (Some(served), Some(domain)) = (context.served_domains, step_domain(id))
                    && !served.contains(&domain)
                {
                    builder.push(
                        Code::OutputNotServed,
                        Some(id),
                        output.value_span.clone(),
                        format!(
                            "output `{}`: no loaded plugin detokenizes `{domain}`; it is delivered as its raw token grid",
                            output.name
                        ),
                        "delivered as raw tokens",
                    );
                }
            }
        }
        outputs.insert(output.name.clone(), reference);
    }

    // ---- reachability --------------------------------------------------------------------
    if !outputs.is_empty() {
        let mut needed = BTreeSet::new();
        let mut stack: Vec<usize> = outputs
            .values()
            .filter_map(|reference| match reference {
                Reference::Step(id) => step_index.get(id).copied(),
                Reference::Input(_) => None,
            })
            .collect();
        while let Some(index) = stack.pop() {
            if needed.insert(index) {
                stack.extend(dependencies[index].iter().map(|(dep, _)| *dep));
            }
        }
        for (index, step) in parsed.steps.iter().enumerate() {
            let Some(id) = &step.id else { continue };
            if step_index.get(id) == Some(&index) && !needed.contains(&index) {
                builder.push(
                    Code::UnreachableStep,
                    Some(id),
                    step.spans.value("id"),
                    format!("step `{id}` feeds no output and will never run"),
                    "unreachable",
                );
            }
        }
    }
    for input in &parsed.inputs {
        if !used_inputs.contains(&input.name) {
            builder.push(
                Code::UnusedInput,
                None,
                input.name_span.clone(),
                format!("input `{}` is used by no step or output", input.name),
                "unused",
            );
        }
    }

    let info = parsed.info?;
    if steps.len() != parsed.steps.len() {
        // Some step did not validate; an error was reported for it.
        return None;
    }
    Some(Workflow {
        name: info.name,
        description: info.description,
        inputs,
        steps,
        outputs,
    })
}

/// Parses and resolves one reference, reporting malformed or dangling ones.
fn resolve(
    builder: &mut DiagnosticBuilder,
    step: Option<&str>,
    text: &str,
    span: Span,
    inputs: &BTreeSet<String>,
    step_index: &BTreeMap<String, usize>,
    place: &str,
) -> Option<Reference> {
    let reference = match Reference::parse(text) {
        Ok(reference) => reference,
        Err(error) => {
            builder.push(
                Code::MalformedReference,
                step,
                span,
                format!("in {place}: {error}"),
                "malformed reference",
            );
            return None;
        }
    };
    match &reference {
        Reference::Input(name) if !inputs.contains(name) => {
            let known: Vec<&str> = inputs.iter().map(String::as_str).collect();
            builder
                .push(
                    Code::UnknownInput,
                    step,
                    span,
                    format!("in {place}: `{reference}` names no input"),
                    "unknown input",
                )
                .notes
                .push(known_list("inputs", &known));
            None
        }
        Reference::Step(id) if !step_index.contains_key(id) => {
            let known: Vec<&str> = step_index.keys().map(String::as_str).collect();
            builder
                .push(
                    Code::UnknownStep,
                    step,
                    span,
                    format!("in {place}: `{reference}` names no step"),
                    "unknown step",
                )
                .notes
                .push(known_list("steps", &known));
            None
        }
        _ => Some(reference),
    }
}

fn known_list(what: &str, names: &[&str]) -> String {
    if names.is_empty() {
        format!("the workflow has no {what}")
    } else {
        format!("known {what}: {}", names.join(", "))
    }
}

/// Target domain against the model; conflicts between the step's domains. Returns whether the
/// domains are sound enough to ask the sampler about the parameters.
fn check_step_domains(
    builder: &mut DiagnosticBuilder,
    step: &ParsedStep,
    spec: &StepSpec,
    resolved: &[Resolved],
    context: &ValidationContext,
) -> bool {
    let id = step.id.as_deref();
    let mut ok = true;
    let generate_span = step.spans.value("generate");
    if let Some(catalog) = context.catalog {
        match catalog.get(&spec.generate) {
            None => {
                ok = false;
                builder.push(
                    Code::UnknownDomain,
                    id,
                    generate_span.clone(),
                    format!("the model has no domain `{}`", spec.generate),
                    "unknown domain",
                );
            }
            Some(info) if !info.generatable || info.kind == DomainKind::SequenceEmbedding => {
                ok = false;
                builder.push(
                    Code::DomainNotGeneratable,
                    id,
                    generate_span.clone(),
                    format!("the model cannot generate `{}` (input only)", spec.generate),
                    "not generatable",
                );
            }
            Some(_) => {}
        }
    }
    // The generation state holds one value per domain.
    let mut domains: BTreeMap<&str, &Reference> = BTreeMap::new();
    for item in resolved {
        let Some(domain) = &item.domain else { continue };
        if domain == &spec.generate {
            ok = false;
            builder.push(
                Code::DomainConflict,
                id,
                generate_span.clone(),
                format!(
                    "`{}` is both generated and given as input `{}`",
                    domain, item.reference
                ),
                "generated domain is also an input",
            );
        }
        if let Some(first) = domains.insert(domain, &item.reference) {
            ok = false;
            builder.push(
                Code::DomainConflict,
                id,
                step.spans.value("from"),
                format!(
                    "`{first}` and `{}` are both of domain `{domain}`; a step takes one value per domain",
                    item.reference
                ),
                "two inputs of one domain",
            );
        }
    }
    ok
}

/// Maps the file's parameters onto the sampler's types, reporting what the sampler's parsers
/// refuse and what the format itself forbids.
fn step_parameters(
    builder: &mut DiagnosticBuilder,
    step: &ParsedStep,
    spec: &StepSpec,
    from: &BTreeSet<Reference>,
    inputs: &BTreeMap<String, WorkflowInput>,
    step_index: &BTreeMap<String, usize>,
) -> Option<StepParameters> {
    let id = step.id.as_deref();
    let mut ok = true;
    let mut refuse = |builder: &mut DiagnosticBuilder, code: Code, key: &str, message: String| {
        ok = false;
        let label = match code {
            Code::SamplerRefused => "refused by the sampler",
            Code::MissingParameter => "missing parameter",
            Code::ConflictingParameters => "conflicting parameter",
            _ => "invalid value",
        };
        builder.push(code, id, step.spans.value(key), message, label);
    };
    let scheme = match Scheme::from_str(&spec.scheme) {
        Ok(scheme) => Some(scheme),
        Err(error) => {
            refuse(builder, Code::SamplerRefused, "scheme", error.to_string());
            None
        }
    };
    let token_schedule = match spec
        .token_schedule
        .as_deref()
        .map(TokenScheduleKind::from_str)
    {
        None => TokenScheduleKind::Linear,
        Some(Ok(kind)) => kind,
        Some(Err(error)) => {
            refuse(
                builder,
                Code::SamplerRefused,
                "token_schedule",
                error.to_string(),
            );
            TokenScheduleKind::Linear
        }
    };
    let temperature = spec.temperature.as_ref().map_or(1.0, |t| t.value());
    let schedule_name = spec
        .temperature
        .as_ref()
        .map_or("constant", |t| t.schedule());
    let temperature_schedule = match TemperatureSchedule::from_str(schedule_name) {
        Ok(schedule) => schedule,
        Err(error) => {
            refuse(
                builder,
                Code::SamplerRefused,
                "temperature",
                error.to_string(),
            );
            TemperatureSchedule::Constant
        }
    };
    for (key, value) in [
        ("decoding_steps", spec.decoding_steps),
        ("token_budget", spec.token_budget),
    ] {
        if let Some(value) = value
            && value > MAX_TOKENS
        {
            refuse(
                builder,
                Code::InvalidValue,
                key,
                format!("`{key}` = {value} exceeds the limit of {MAX_TOKENS}"),
            );
        }
    }
    let decoding_steps = match (scheme, spec.decoding_steps) {
        (_, Some(steps)) => steps as usize,
        (Some(Scheme::Autoregressive), None) => 1,
        (Some(scheme), None) => {
            refuse(
                builder,
                Code::MissingParameter,
                "scheme",
                format!("{scheme} needs `decoding_steps`"),
            );
            1
        }
        (None, None) => 1,
    };
    let guidance = match (&spec.cfg_scale, &spec.guidance) {
        (Some(_), Some(_)) => {
            refuse(
                builder,
                Code::ConflictingParameters,
                "guidance",
                "give either `cfg_scale` or a `guidance` list, not both".to_owned(),
            );
            StepGuidance::Scale(1.0)
        }
        (Some(scale), None) => StepGuidance::Scale(*scale),
        (None, None) => StepGuidance::Scale(1.0),
        (None, Some(entries)) => {
            let mut sets = Vec::new();
            for (entry, written) in entries.iter().zip(
                step.guidance_from
                    .iter()
                    .chain(std::iter::repeat(&Vec::new())),
            ) {
                let mut references = Vec::new();
                if entry.from.is_empty() {
                    ok = false;
                    builder.push(
                        Code::ConflictingParameters,
                        id,
                        step.spans.value("guidance"),
                        "every guidance entry needs at least one condition in its `from`",
                        "empty condition set",
                    );
                }
                for (text, span) in written {
                    match Reference::parse(text) {
                        Ok(reference) if from.contains(&reference) => references.push(reference),
                        Ok(reference) => {
                            ok = false;
                            let known = match &reference {
                                Reference::Input(name) => inputs.contains_key(name),
                                Reference::Step(id) => step_index.contains_key(id),
                            };
                            builder.push(
                                Code::ConflictingParameters,
                                id,
                                span.clone(),
                                format!(
                                    "guidance condition `{reference}` is not in the step's `from`{}",
                                    if known { "" } else { " (and names nothing)" }
                                ),
                                "not a condition of this step",
                            );
                        }
                        Err(error) => {
                            ok = false;
                            builder.push(
                                Code::MalformedReference,
                                id,
                                span.clone(),
                                format!("in guidance: {error}"),
                                "malformed reference",
                            );
                        }
                    }
                }
                sets.push(WeightedCondition {
                    from: references,
                    weight: entry.weight,
                });
            }
            StepGuidance::Weighted(sets)
        }
    };
    let top_k = match spec.top_k {
        None | Some(TopKSpec::Count(0)) => TopK::Disabled,
        Some(TopKSpec::Count(count)) => TopK::Count(count as usize),
        Some(TopKSpec::Fraction(fraction)) => TopK::Fraction(fraction),
    };
    // The reference's `top_p = 0` disables nucleus filtering.
    let top_p = spec.top_p.filter(|&top_p| top_p != 0.0);
    let scheme = scheme?;
    ok.then_some(StepParameters {
        scheme,
        decoding_steps,
        token_schedule,
        temperature,
        temperature_schedule,
        guidance,
        top_k,
        top_p,
        token_budget: spec.token_budget.map(|budget| budget as usize),
        seed: spec.seed,
    })
}

/// Runs tessera-sampler's validation on a step. With the model's catalog this is exactly what the
/// run will do; without it the target's kind follows from the scheme and, when no budget gives
/// the token count, the schedule arithmetic (which needs the count) is left for run time.
fn sampler_check(step: &Step, catalog: Option<&DomainCatalog>) -> Result<(), SamplerError> {
    if let Some(catalog) = catalog {
        return step.prepare(catalog).map(|_| ());
    }
    let parameters = &step.parameters;
    let kind = if parameters.scheme == Scheme::Autoregressive {
        DomainKind::Sequence
    } else {
        DomainKind::Image
    };
    let num_tokens = parameters
        .token_budget
        .unwrap_or(parameters.decoding_steps.max(1));
    let mut synthetic = DomainCatalog::new();
    for domain in &step.condition_domains {
        synthetic = synthetic.with(
            domain.clone(),
            DomainInfo {
                kind: DomainKind::Image,
                num_tokens: 1,
                generatable: false,
            },
        );
    }
    synthetic = synthetic.with(
        step.generate.clone(),
        DomainInfo {
            kind,
            num_tokens,
            generatable: true,
        },
    );
    if parameters.token_budget.is_some() {
        return step.prepare(&synthetic).map(|_| ());
    }
    let plan = step.generation_plan(num_tokens);
    match &parameters.guidance {
        StepGuidance::Scale(_) => {
            validate_plan(&plan, &synthetic)?;
            if let Guidance::Weights(weights) = parameters.sampler_guidance() {
                return Err(SamplerError::GuidanceWeightCount {
                    weights: weights.len(),
                    conditions: 1,
                });
            }
        }
        StepGuidance::Weighted(sets) => validate_multi_guided_plan(&plan, &synthetic, sets.len())?,
    }
    validate_sampling_options(&parameters.sampling_options())
}

/// The key whose value a sampler error is about.
fn key_of_sampler_error(error: &SamplerError, step: &ParsedStep) -> &'static str {
    let guidance_key = if step.spans.has("guidance") {
        "guidance"
    } else {
        "cfg_scale"
    };
    match error {
        SamplerError::ZeroDecodingSteps { .. }
        | SamplerError::StepsExceedTokens { .. }
        | SamplerError::NegativeStepTokens { .. } => "decoding_steps",
        SamplerError::InvalidTemperatureSchedule { .. }
        | SamplerError::InvalidTemperature { .. }
        | SamplerError::InvalidSamplingTemperature { .. } => "temperature",
        SamplerError::UnknownScheme { .. }
        | SamplerError::SequenceDomainNeedsAutoregressive { .. }
        | SamplerError::ImageDomainNotAutoregressive { .. } => "scheme",
        SamplerError::UnknownTokenSchedule { .. } => "token_schedule",
        SamplerError::UnknownDomain {
            role: DomainRole::GuidanceCondition,
            ..
        } => "from",
        SamplerError::UnknownDomain { .. } | SamplerError::DomainNotGeneratable { .. } => {
            "generate"
        }
        SamplerError::TopPOutOfRange { .. } => "top_p",
        SamplerError::TopKFractionOutOfRange { .. } | SamplerError::TopKKeepsNothing { .. } => {
            "top_k"
        }
        SamplerError::TokenCountMismatch { .. } if step.spans.has("token_budget") => "token_budget",
        SamplerError::TokenCountMismatch { .. } => "generate",
        SamplerError::InvalidGuidanceScale { .. }
        | SamplerError::EmptyGuidanceWeights { .. }
        | SamplerError::GuidanceWeightCount { .. } => guidance_key,
        _ => "id",
    }
}

/// The chain of a cycle through `members`, starting and ending at `start`; `a -> b` means `a`
/// takes `b` as input.
fn cycle_chain(
    start: usize,
    members: &BTreeSet<usize>,
    dependencies: &[Vec<(usize, Span)>],
) -> Vec<usize> {
    // Breadth-first search over dependencies inside the component for the shortest way back.
    let mut previous: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for (dep, _) in &dependencies[node] {
            if !members.contains(dep) {
                continue;
            }
            if *dep == start {
                let mut chain = vec![start];
                let mut current = node;
                while current != start {
                    chain.push(current);
                    current = previous[&current];
                }
                chain.push(start);
                // Collected backwards from the node that closes the cycle.
                let last = chain.len() - 1;
                chain[1..last].reverse();
                return chain;
            }
            if let std::collections::btree_map::Entry::Vacant(entry) = previous.entry(*dep) {
                entry.insert(node);
                queue.push_back(*dep);
            }
        }
    }
    vec![start, start]
}
