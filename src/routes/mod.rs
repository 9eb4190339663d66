//! Routing rules (`ROUTES`): CEL expressions, compiled once at startup, that pick each
//! delivery's topic or drop it, and shape its key, headers and timestamp.
//!
//! Rules are tried in order; the first whose `when` holds decides. Evaluation reads the message
//! through [`eval::Delivery`], which builds each CEL variable only when an expression reads it:
//! the payload is parsed as JSON at most once per delivery, and only when a rule reads `json`.
//!
//! The CEL interpreter is the `cel` crate (docs/routing.md says which version and what it does
//! not support). Its cost is bounded here, at startup: an expression's length and nesting are
//! limited, and comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) are refused,
//! so every node of an expression is evaluated at most once per delivery and no expression
//! iterates over a payload.

mod direct;
mod eval;
mod json_paths;
pub(crate) mod settings;

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::{Env, Program, Value};

use crate::envelope::PubsubMessage;
use crate::record::{KafkaRecord, is_reserved_header};
use crate::timestamp::RecordTimestamp;

/// The longest expression taken, in bytes: rules are conditions and field picks, not programs.
pub(crate) const MAX_EXPRESSION_BYTES: usize = 4096;
/// The deepest expression tree taken: bounds the interpreter's recursion (it evaluates on the
/// delivery's task stack) whatever the rule says.
pub(crate) const MAX_EXPRESSION_DEPTH: usize = 24;
/// The most rules taken: each delivery may try every one.
pub(crate) const MAX_RULES: usize = 256;
/// The type names an expression may compare `type(x)` with: identifiers, not variables (the
/// interpreter has no `timestamp` or `duration` type value).
const TYPE_NAMES: [&str; 10] = [
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];
/// The CEL variables a rule may read.
pub(crate) const VARIABLES: [&str; 7] = [
    "attributes",
    "data",
    "json",
    "message_id",
    "ordering_key",
    "publish_time",
    "subscription",
];

/// One rule as written (`ROUTES`): unknown fields are refused, so a typo never goes unnoticed.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    when: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    drop: bool,
    key: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Option<String>>,
    timestamp: Option<String>,
}

/// A compiled expression.
#[derive(Debug)]
struct Expression {
    program: Program,
    /// The same expression evaluated without the interpreter, when it has that form.
    direct: Option<direct::Direct>,
}

/// What a matching rule does with the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Topic(String),
    Drop,
}

#[derive(Debug)]
struct Rule {
    /// `None`: always holds.
    when: Option<Expression>,
    action: Action,
    key: Option<Expression>,
    /// Header name → its value's expression, or `None` to remove the header.
    headers: Vec<(String, Option<Expression>)>,
    timestamp: Option<Expression>,
}

/// The compiled rules.
pub(crate) struct Routes {
    env: Arc<Env>,
    rules: Vec<Rule>,
    /// The JSON fields the direct expressions name, read from the payload in one pass.
    json_paths: json_paths::JsonPaths,
    /// The rules as given: two `Routes` are the same configuration when these are equal.
    source: String,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Routes {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Routes {}

/// Why the rules cannot be used: the rule's index (from 0; `None` for the whole list), the
/// rule as written (compact JSON; empty for the whole list) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleError {
    pub(crate) rule: Option<usize>,
    pub(crate) written: String,
    pub(crate) reason: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rule {
            Some(rule) => write!(f, "rule {rule}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// A rule that could not be evaluated for this message: permanent for the message (the same
/// rule fails the same way on every redelivery).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule} {part}: {message}")]
pub struct RouteFailed {
    /// The rule's index, from 0.
    pub(crate) rule: usize,
    /// Which expression: `when`, `key`, `header NAME` or `timestamp`.
    pub(crate) part: String,
    /// CEL's message, or what the result lacks (cut by `crate::echo::bounded_echo`).
    pub(crate) message: String,
}

/// No rule matched and there is no `KAFKA_TOPIC` to fall back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no routing rule matched and KAFKA_TOPIC is not set")]
pub struct NoRoute;

/// What the rules decided for one delivery.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision<'r> {
    /// Write the record, shaped by the rule.
    Route(Routed<'r>),
    /// Answer 204 and write nothing.
    Drop {
        /// The deciding rule.
        rule: usize,
    },
    /// No rule's `when` held.
    NoMatch,
}

/// A matching rule's topic and what it changes in the record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Routed<'r> {
    /// The deciding rule.
    pub(crate) rule: usize,
    /// Where the record goes.
    pub(crate) topic: &'r str,
    /// The key replacing `KAFKA_KEY`'s, when the rule has one.
    key: Option<Vec<u8>>,
    /// Headers to set (`Some`) or remove (`None`), in the rule's order.
    headers: Vec<(&'r str, Option<Vec<u8>>)>,
    /// The timestamp replacing the record's, when the rule has one.
    timestamp: Option<RecordTimestamp>,
}

impl Routed<'_> {
    /// Applies the rule's key, headers and timestamp to the record built for the message.
    pub(crate) fn shape(self, record: &mut KafkaRecord) {
        if let Some(key) = self.key {
            record.key = Some(key);
        }
        for (name, value) in self.headers {
            match value {
                Some(value) => {
                    record.headers.insert(name.to_owned(), value);
                }
                None => {
                    record.headers.remove(name);
                }
            }
        }
        if let Some(timestamp) = self.timestamp {
            record.timestamp = timestamp;
        }
    }
}

impl Routes {
    /// Compiles the JSON rules, or returns every error among them.
    pub(crate) fn compile(source: &str) -> Result<Self, Vec<RuleError>> {
        let whole = |reason: String| {
            vec![RuleError {
                rule: None,
                written: String::new(),
                reason,
            }]
        };
        let specs: Vec<serde_json::Value> = serde_json::from_str(source)
            .map_err(|e| whole(format!("not a JSON array of rules: {e}")))?;
        if specs.is_empty() {
            return Err(whole("no rule".to_owned()));
        }
        if specs.len() > MAX_RULES {
            return Err(whole(format!(
                "{} rules; at most {MAX_RULES} are taken",
                specs.len()
            )));
        }
        let env = Arc::new(Env::stdlib());
        let mut rules = Vec::with_capacity(specs.len());
        let mut errors = Vec::new();
        let mut unconditional: Option<usize> = None;
        for (index, spec) in specs.into_iter().enumerate() {
            let written = spec.to_string();
            let mut reasons = Vec::new();
            if let Some(earlier) = unconditional {
                reasons.push(format!(
                    "never reached: rule {earlier} before it matches every message"
                ));
            }
            match serde_json::from_value::<RuleSpec>(spec) {
                Ok(spec) => {
                    if let Some(rule) = compile_rule(&env, spec, &mut reasons) {
                        if rule.when.as_ref().is_none_or(always_true) {
                            unconditional.get_or_insert(index);
                        }
                        rules.push(rule);
                    }
                }
                Err(e) => reasons.push(format!("{e}")),
            }
            errors.extend(reasons.into_iter().map(|reason| RuleError {
                rule: Some(index),
                written: written.clone(),
                reason,
            }));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let json_paths = plan_json(&mut rules);
        Ok(Self {
            env,
            rules,
            json_paths,
            source: source.to_owned(),
        })
    }

    /// How many rules there are.
    pub(crate) fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Every topic a rule names (`check` verifies they exist; the producer opens them at
    /// startup).
    pub(crate) fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .rules
            .iter()
            .filter_map(|rule| match &rule.action {
                Action::Topic(topic) => Some(topic.clone()),
                Action::Drop => None,
            })
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The first matching rule's decision for `message`.
    pub(crate) fn decide(&self, message: &PubsubMessage) -> Result<Decision<'_>, RouteFailed> {
        let direct_message = direct::Message::new(message, &self.json_paths);
        // The interpreter's variables and context, built only when an expression needs them.
        let delivery = eval::Delivery::new(message);
        let context = OnceCell::new();
        let interpret = |expression: &Expression| {
            let context = context.get_or_init(|| {
                let mut context = cel::Context::with_env(Arc::clone(&self.env));
                context.set_variable_resolver(&delivery);
                context
            });
            expression
                .program
                .execute(context)
                .map_err(|e| delivery.explain(e))
        };
        for (index, rule) in self.rules.iter().enumerate() {
            let fail = |part: &str, message: String| RouteFailed {
                rule: index,
                part: part.to_owned(),
                message: crate::echo::bounded_echo(&message),
            };
            if let Some(when) = &rule.when {
                let holds = evaluate(when, &direct_message, &interpret, direct_bool, cel_bool)
                    .map_err(|m| fail("when", m))?;
                if !holds {
                    continue;
                }
            }
            let topic = match &rule.action {
                Action::Drop => return Ok(Decision::Drop { rule: index }),
                Action::Topic(topic) => topic.as_str(),
            };
            let key = match &rule.key {
                Some(key) => Some(
                    evaluate(key, &direct_message, &interpret, direct_key, key_bytes)
                        .map_err(|m| fail("key", m))?,
                ),
                None => None,
            };
            let mut headers = Vec::with_capacity(rule.headers.len());
            for (name, value) in &rule.headers {
                let value = match value {
                    Some(expression) => evaluate(
                        expression,
                        &direct_message,
                        &interpret,
                        direct_header,
                        header_bytes,
                    )
                    .map_err(|m| fail(&format!("header {name:?}"), m))?,
                    None => None,
                };
                headers.push((name.as_str(), value));
            }
            let timestamp = match &rule.timestamp {
                Some(expression) => Some(
                    evaluate(
                        expression,
                        &direct_message,
                        &interpret,
                        direct_timestamp,
                        record_timestamp,
                    )
                    .map_err(|m| fail("timestamp", m))?,
                ),
                None => None,
            };
            return Ok(Decision::Route(Routed {
                rule: index,
                topic,
                key,
                headers,
                timestamp,
            }));
        }
        Ok(Decision::NoMatch)
    }
}

/// One expression's result as `T`: directly when it has a direct form that yields a usable
/// value, else through the interpreter (which also gives every failure its CEL message).
fn evaluate<T>(
    expression: &Expression,
    message: &direct::Message<'_>,
    interpret: &dyn Fn(&Expression) -> Result<Value, String>,
    from_direct: fn(direct::Value<'_>) -> Option<T>,
    from_interpreter: fn(Value) -> Result<T, String>,
) -> Result<T, String> {
    if let Some(value) = expression
        .direct
        .as_ref()
        .and_then(|direct| direct.eval(message).ok())
        .and_then(from_direct)
    {
        return Ok(value);
    }
    from_interpreter(interpret(expression)?)
}

/// Decides how `json` is read, so the payload is parsed at most once per delivery: when some
/// expression that reads `json` has no direct form, the interpreter parses the whole payload
/// and every expression reading `json` goes through it; otherwise the fields the direct
/// expressions name are read in one pass.
fn plan_json(rules: &mut [Rule]) -> json_paths::JsonPaths {
    let mut expressions: Vec<&mut Expression> = rules
        .iter_mut()
        .flat_map(|rule| {
            let Rule {
                when,
                key,
                headers,
                timestamp,
                ..
            } = rule;
            when.iter_mut()
                .chain(key.iter_mut())
                .chain(headers.iter_mut().filter_map(|(_, value)| value.as_mut()))
                .chain(timestamp.iter_mut())
        })
        .collect();
    let interpreted_json = expressions.iter().any(|expression| {
        expression.direct.is_none()
            && expression
                .program
                .references()
                .variables()
                .contains(&"json")
    });
    let mut paths = json_paths::JsonPaths::default();
    for expression in &mut expressions {
        let Some(direct) = &mut expression.direct else {
            continue;
        };
        let fields = direct.json_fields();
        if interpreted_json && !fields.is_empty() {
            expression.direct = None;
        } else {
            fields
                .into_iter()
                .for_each(|field| field.register(&mut paths));
        }
    }
    paths
}

/// The rule compiled, or `None` with its reasons added to `reasons`.
fn compile_rule(env: &Env, spec: RuleSpec, reasons: &mut Vec<String>) -> Option<Rule> {
    let first_error = reasons.len();
    let action = match (spec.topic, spec.drop) {
        (Some(_), true) => {
            reasons.push("both \"topic\" and \"drop\": a rule does one".to_owned());
            None
        }
        (None, false) => {
            reasons.push("neither \"topic\" nor \"drop\": true".to_owned());
            None
        }
        (Some(topic), false) if topic.trim().is_empty() => {
            reasons.push("\"topic\" is empty".to_owned());
            None
        }
        (Some(topic), false) => Some(Action::Topic(topic.trim().to_owned())),
        (None, true) => Some(Action::Drop),
    };
    if action == Some(Action::Drop)
        && (spec.key.is_some() || !spec.headers.is_empty() || spec.timestamp.is_some())
    {
        reasons.push(
            "a dropping rule writes nothing: \"key\", \"headers\" and \"timestamp\" do not apply"
                .to_owned(),
        );
    }
    let mut expression = |part: &str, source: Option<String>| {
        let source = source?;
        compile_expression(env, &source)
            .map_err(|reason| reasons.push(format!("{part}: {reason}")))
            .ok()
    };
    let when = expression("when", spec.when);
    let key = expression("key", spec.key);
    let timestamp = expression("timestamp", spec.timestamp);
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (name, value) in spec.headers {
        let part = format!("header {name:?}");
        let value = value.map(|source| expression(&part, Some(source)));
        headers.push((name, value));
    }
    for (name, _) in &headers {
        if name.is_empty() {
            reasons.push("a header name is empty".to_owned());
        } else if is_reserved_header(name) {
            reasons.push(format!(
                "header {name:?}: the pubsub. namespace is reserved for the bridge's own headers"
            ));
        }
    }
    if reasons.len() > first_error {
        return None;
    }
    Some(Rule {
        when,
        action: action?,
        key,
        headers: headers
            .into_iter()
            .map(|(name, value)| (name, value.flatten()))
            .collect(),
        timestamp,
    })
}

/// One expression compiled within the limits, reading only the known variables.
fn compile_expression(env: &Env, source: &str) -> Result<Expression, String> {
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "{} bytes; at most {MAX_EXPRESSION_BYTES} are taken",
            source.len()
        ));
    }
    // The parser recurses on brackets: bounded before it runs.
    if bracket_depth(source) > MAX_EXPRESSION_DEPTH {
        return Err(format!("nested deeper than {MAX_EXPRESSION_DEPTH} levels"));
    }
    let program = env
        .compile(source)
        .map_err(|e| format!("{}", e).trim().replace('\n', " "))?;
    check_tree(program.expression(), 1)?;
    let direct = direct::Direct::compile(program.expression());
    let references = program.references();
    let mut unknown: Vec<&str> = references
        .variables()
        .into_iter()
        .filter(|name| !VARIABLES.contains(name) && !TYPE_NAMES.contains(name))
        .collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown variable {}; the variables are {}",
            unknown.join(", "),
            VARIABLES.join(", ")
        ));
    }
    Ok(Expression { program, direct })
}

/// The deepest nesting of brackets outside string literals: what bounds the parser's recursion.
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
}

/// Refuses a tree deeper than [`MAX_EXPRESSION_DEPTH`] (operator chains nest without brackets)
/// and comprehensions, whose cost grows with the payload.
fn check_tree(expr: &cel::IdedExpr, depth: usize) -> Result<(), String> {
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(format!("nested deeper than {MAX_EXPRESSION_DEPTH} levels"));
    }
    let below = depth + 1;
    match &expr.expr {
        Expr::Comprehension(_) => Err(
            "comprehensions (all, exists, exists_one, map, filter) are not taken: their cost grows with the payload; `in` tests membership"
                .to_owned(),
        ),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                check_tree(target, below)?;
            }
            call.args.iter().try_for_each(|arg| check_tree(arg, below))
        }
        Expr::List(list) => list
            .elements
            .iter()
            .try_for_each(|element| check_tree(element, below)),
        Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => {
                check_tree(&entry.key, below)?;
                check_tree(&entry.value, below)
            }
            EntryExpr::StructField(field) => check_tree(&field.value, below),
        }),
        Expr::Struct(_) => Err("message construction is not taken: rules have no message types".to_owned()),
        Expr::Select(select) => check_tree(&select.operand, below),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Ok(()),
    }
}

/// Whether `when` holds for every message (the literal `true`): rules after it are unreachable.
fn always_true(when: &Expression) -> bool {
    matches!(
        &when.program.expression().expr,
        Expr::Literal(LiteralValue::Boolean(b)) if bool::from(*b)
    )
}

/// "yielded X, not a `wanted`".
fn not_a(wanted: &str, value: &Value) -> String {
    format!("yielded {}, not {wanted}", value.type_of())
}

/// A `when`'s value.
fn cel_bool(value: Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(b),
        other => Err(not_a("bool", &other)),
    }
}

/// [`cel_bool`] of a direct value; `None` leaves the error to the interpreter.
fn direct_bool(value: direct::Value<'_>) -> Option<bool> {
    match value {
        direct::Value::Bool(b) => Some(b),
        _ => None,
    }
}

/// [`key_bytes`] of a direct value.
fn direct_key(value: direct::Value<'_>) -> Option<Vec<u8>> {
    match value {
        direct::Value::Str(s) => Some(s.into_owned().into_bytes()),
        direct::Value::Bytes(b) => Some(b.into_owned()),
        direct::Value::Int(i) => Some(i.to_string().into_bytes()),
        direct::Value::UInt(u) => Some(u.to_string().into_bytes()),
        _ => None,
    }
}

/// [`header_bytes`] of a direct value.
fn direct_header(value: direct::Value<'_>) -> Option<Option<Vec<u8>>> {
    match value {
        direct::Value::Str(s) => Some(Some(s.into_owned().into_bytes())),
        direct::Value::Bytes(b) => Some(Some(b.into_owned())),
        direct::Value::Null => Some(None),
        _ => None,
    }
}

/// [`record_timestamp`] of a direct value.
fn direct_timestamp(value: direct::Value<'_>) -> Option<RecordTimestamp> {
    match value {
        direct::Value::Timestamp(t) => RecordTimestamp::from_millis(t.timestamp_millis()),
        direct::Value::Int(millis) => RecordTimestamp::from_millis(millis),
        _ => None,
    }
}

/// A key: a string or bytes as they are, an int as its decimal string.
fn key_bytes(value: Value) -> Result<Vec<u8>, String> {
    match value {
        Value::String(s) => Ok(Arc::unwrap_or_clone(s).into_bytes()),
        Value::Bytes(b) => Ok(Arc::unwrap_or_clone(b)),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        Value::UInt(u) => Ok(u.to_string().into_bytes()),
        other => Err(not_a("a string, bytes or an int", &other)),
    }
}

/// A header value: a string or bytes; `null` removes the header.
fn header_bytes(value: Value) -> Result<Option<Vec<u8>>, String> {
    match value {
        Value::String(s) => Ok(Some(Arc::unwrap_or_clone(s).into_bytes())),
        Value::Bytes(b) => Ok(Some(Arc::unwrap_or_clone(b))),
        Value::Null => Ok(None),
        other => Err(not_a("a string, bytes or null", &other)),
    }
}

/// A record timestamp: a timestamp, or an int of milliseconds since the epoch, within Kafka's
/// range.
fn record_timestamp(value: Value) -> Result<RecordTimestamp, String> {
    let millis = match value {
        Value::Timestamp(t) => t.timestamp_millis(),
        Value::Int(millis) => millis,
        other => return Err(not_a("a timestamp or an int of milliseconds", &other)),
    };
    RecordTimestamp::from_millis(millis).ok_or_else(|| {
        format!(
            "{millis} ms is outside Kafka's timestamp range {}..={}",
            0,
            RecordTimestamp::MAX.millis()
        )
    })
}

#[cfg(test)]
mod tests;
