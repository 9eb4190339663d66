//! Expressions evaluated straight on the message, without the interpreter: the common shapes
//! of routing rules (attribute and field picks, `has()`, `.?f.orValue()`, comparisons, `&&`,
//! `||`, `!`, `?:`, `in attributes`, `startsWith`, `endsWith`, `contains`, `size`,
//! `timestamp()`), over values that borrow the message.
//!
//! Why: the interpreter builds a value (an allocation) for every variable it reads and every
//! JSON value in the payload; these shapes need none of that (docs/routing.md, "Cost").
//!
//! An expression is taken here only when every node of it is one of these shapes. At run time
//! the direct evaluation either yields CEL's value or [`Defer`]s to the interpreter: on any
//! error (so the message is CEL's own) and on any case not covered here, such as a JSON object
//! used as a value. `tests.rs` checks that both agree wherever this module yields a value.

use std::borrow::Cow;
use std::cmp::Ordering;

use cel::common::ast::{Expr, LiteralValue, operators};

use super::json_paths::{Fields, JsonPaths, PathId, Slot};
use crate::envelope::PubsubMessage;

/// A CEL value of the shapes evaluated here.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    Timestamp(chrono::DateTime<chrono::FixedOffset>),
}

impl Value<'_> {
    /// A copy borrowing this one (literals are evaluated without copying their text).
    fn borrowed(&self) -> Value<'_> {
        match self {
            Value::Str(s) => Value::Str(Cow::Borrowed(s)),
            Value::Bytes(b) => Value::Bytes(Cow::Borrowed(b)),
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::UInt(u) => Value::UInt(*u),
            Value::Double(d) => Value::Double(*d),
            Value::Timestamp(t) => Value::Timestamp(*t),
        }
    }
}

/// The interpreter decides: an error, or a case not covered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Defer;

type Outcome<'a> = Result<Value<'a>, Defer>;

/// The message variables other than `attributes` and `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variable {
    Data,
    MessageId,
    OrderingKey,
    PublishTime,
    Subscription,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TextTest {
    StartsWith,
    EndsWith,
    Contains,
}

/// A JSON field named by an expression: its names, then its node once registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    segments: Vec<String>,
    path: Option<PathId>,
}

/// An expression compiled for direct evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Direct {
    Literal(Value<'static>),
    Variable(Variable),
    /// `attributes.name`, `attributes['name']`.
    Attribute(String),
    /// `has(attributes.name)`.
    HasAttribute(String),
    /// `attributes.?name.orValue(fallback)`.
    AttributeOr(String, Box<Self>),
    /// `x in attributes`.
    InAttributes(Box<Self>),
    /// `json.a.b`, `json['a']`.
    Json(Field),
    /// `has(json.a.b)`.
    HasJson(Field),
    /// `json.a.?b.orValue(fallback)`.
    JsonOr(Field, Box<Self>),
    Not(Box<Self>),
    And(Box<[Self; 2]>),
    Or(Box<[Self; 2]>),
    Conditional(Box<[Self; 3]>),
    Equals(Box<[Self; 2]>),
    NotEquals(Box<[Self; 2]>),
    Compare(Comparison, Box<[Self; 2]>),
    Text(TextTest, Box<[Self; 2]>),
    Size(Box<Self>),
    Timestamp(Box<Self>),
}

/// One delivery as the direct evaluation reads it: the payload's named fields are read on the
/// first use, once.
pub(super) struct Message<'m> {
    message: &'m PubsubMessage,
    paths: &'m JsonPaths,
    fields: std::cell::OnceCell<Option<Fields<'m>>>,
}

impl<'m> Message<'m> {
    pub(super) fn new(message: &'m PubsubMessage, paths: &'m JsonPaths) -> Self {
        Self {
            message,
            paths,
            fields: std::cell::OnceCell::new(),
        }
    }

    /// What the payload holds at `field` and where it is looked up; `None` when the payload is
    /// not JSON.
    fn json(&self, field: &Field) -> Option<(&Slot<'m>, &Slot<'m>)> {
        let path = field.path?;
        let fields = self
            .fields
            .get_or_init(|| self.paths.read(&self.message.data))
            .as_ref()?;
        Some((fields.get(path), fields.parent(self.paths, path)))
    }
}

impl Direct {
    /// The expression's direct form, when every node of it has one.
    pub(super) fn compile(expr: &cel::IdedExpr) -> Option<Self> {
        let boxed = |e: &cel::IdedExpr| Self::compile(e).map(Box::new);
        let pair = |a: &cel::IdedExpr, b: &cel::IdedExpr| {
            Some(Box::new([Self::compile(a)?, Self::compile(b)?]))
        };
        // `has(x.f)`, a select that tests for `f` rather than reads it.
        if let Expr::Select(select) = &expr.expr
            && select.test
        {
            if is_attributes(&select.operand) {
                return Some(Self::HasAttribute(select.field.clone()));
            }
            let mut segments = json_path(&select.operand)?;
            segments.push(select.field.clone());
            return Some(Self::HasJson(Field::new(segments)));
        }
        if let Some(name) = attribute(expr) {
            return Some(Self::Attribute(name.to_owned()));
        }
        if let Some(segments) = json_path(expr) {
            // `json` alone is a value of any shape: the interpreter's.
            return (!segments.is_empty()).then(|| Self::Json(Field::new(segments)));
        }
        match &expr.expr {
            Expr::Literal(literal) => Some(Self::Literal(literal_value(literal)?)),
            Expr::Ident(name) => Some(Self::Variable(match name.as_str() {
                "data" => Variable::Data,
                "message_id" => Variable::MessageId,
                "ordering_key" => Variable::OrderingKey,
                "publish_time" => Variable::PublishTime,
                "subscription" => Variable::Subscription,
                _ => return None,
            })),
            Expr::Call(call) => {
                let args = call.args.as_slice();
                match (call.target.as_deref(), call.func_name.as_str(), args) {
                    (None, operators::LOGICAL_AND, [a, b]) => Some(Self::And(pair(a, b)?)),
                    (None, operators::LOGICAL_OR, [a, b]) => Some(Self::Or(pair(a, b)?)),
                    (None, operators::LOGICAL_NOT, [a]) => Some(Self::Not(boxed(a)?)),
                    (None, operators::CONDITIONAL, [c, a, b]) => {
                        Some(Self::Conditional(Box::new([
                            Self::compile(c)?,
                            Self::compile(a)?,
                            Self::compile(b)?,
                        ])))
                    }
                    (None, operators::EQUALS, [a, b]) => Some(Self::Equals(pair(a, b)?)),
                    (None, operators::NOT_EQUALS, [a, b]) => Some(Self::NotEquals(pair(a, b)?)),
                    (None, operators::LESS, [a, b]) => {
                        Some(Self::Compare(Comparison::Less, pair(a, b)?))
                    }
                    (None, operators::LESS_EQUALS, [a, b]) => {
                        Some(Self::Compare(Comparison::LessOrEqual, pair(a, b)?))
                    }
                    (None, operators::GREATER, [a, b]) => {
                        Some(Self::Compare(Comparison::Greater, pair(a, b)?))
                    }
                    (None, operators::GREATER_EQUALS, [a, b]) => {
                        Some(Self::Compare(Comparison::GreaterOrEqual, pair(a, b)?))
                    }
                    (None, operators::IN, [needle, map]) if is_attributes(map) => {
                        Some(Self::InAttributes(boxed(needle)?))
                    }
                    (Some(target), "startsWith", [arg]) => {
                        Some(Self::Text(TextTest::StartsWith, pair(target, arg)?))
                    }
                    (Some(target), "endsWith", [arg]) => {
                        Some(Self::Text(TextTest::EndsWith, pair(target, arg)?))
                    }
                    (Some(target), "contains", [arg]) => {
                        Some(Self::Text(TextTest::Contains, pair(target, arg)?))
                    }
                    (Some(target), "size", []) | (None, "size", [target]) => {
                        Some(Self::Size(boxed(target)?))
                    }
                    (None, "timestamp", [arg]) => Some(Self::Timestamp(boxed(arg)?)),
                    (Some(optional), "orValue", [fallback]) => {
                        let Expr::Call(select) = &optional.expr else {
                            return None;
                        };
                        let (None, operators::OPT_SELECT, [operand, field]) = (
                            select.target.as_deref(),
                            select.func_name.as_str(),
                            select.args.as_slice(),
                        ) else {
                            return None;
                        };
                        let Expr::Literal(LiteralValue::String(field)) = &field.expr else {
                            return None;
                        };
                        let field = field.inner().to_owned();
                        let fallback = boxed(fallback)?;
                        if is_attributes(operand) {
                            return Some(Self::AttributeOr(field, fallback));
                        }
                        let mut segments = json_path(operand)?;
                        segments.push(field);
                        Some(Self::JsonOr(Field::new(segments), fallback))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The JSON fields the expression names (none when it does not read `json`), to register
    /// in the [`JsonPaths`] read for every delivery.
    pub(super) fn json_fields(&mut self) -> Vec<&mut Field> {
        let mut fields = Vec::new();
        self.collect_fields(&mut fields);
        fields
    }

    fn collect_fields<'a>(&'a mut self, fields: &mut Vec<&'a mut Field>) {
        match self {
            Self::Json(field) | Self::HasJson(field) => fields.push(field),
            Self::JsonOr(field, fallback) => {
                fields.push(field);
                fallback.collect_fields(fields);
            }
            Self::Literal(_) | Self::Variable(_) | Self::Attribute(_) | Self::HasAttribute(_) => {}
            Self::AttributeOr(_, a)
            | Self::InAttributes(a)
            | Self::Not(a)
            | Self::Size(a)
            | Self::Timestamp(a) => a.collect_fields(fields),
            Self::And(pair)
            | Self::Or(pair)
            | Self::Equals(pair)
            | Self::NotEquals(pair)
            | Self::Compare(_, pair)
            | Self::Text(_, pair) => pair.iter_mut().for_each(|e| e.collect_fields(fields)),
            Self::Conditional(three) => three.iter_mut().for_each(|e| e.collect_fields(fields)),
        }
    }

    /// CEL's value of the expression for `message`, or [`Defer`].
    pub(super) fn eval<'a>(&'a self, message: &'a Message<'_>) -> Outcome<'a> {
        let m = message.message;
        match self {
            Self::Literal(value) => Ok(value.borrowed()),
            Self::Variable(variable) => Ok(match variable {
                Variable::Data => Value::Bytes(Cow::Borrowed(&m.data)),
                Variable::MessageId => Value::Str(Cow::Borrowed(&m.message_id)),
                Variable::OrderingKey => {
                    Value::Str(Cow::Borrowed(m.ordering_key.as_deref().unwrap_or_default()))
                }
                Variable::Subscription => Value::Str(Cow::Borrowed(&m.subscription)),
                Variable::PublishTime => Value::Timestamp(
                    // Parsed from RFC 3339 by the envelope, so within chrono's range.
                    chrono::DateTime::from_timestamp_millis(m.publish_time_ms)
                        .ok_or(Defer)?
                        .fixed_offset(),
                ),
            }),
            Self::Attribute(name) => m
                .attributes
                .get(name)
                .map(|v| Value::Str(Cow::Borrowed(v)))
                .ok_or(Defer),
            Self::HasAttribute(name) => Ok(Value::Bool(m.attributes.contains_key(name))),
            Self::AttributeOr(name, fallback) => {
                let fallback = fallback.eval(message)?;
                Ok(m.attributes
                    .get(name)
                    .map_or(fallback, |v| Value::Str(Cow::Borrowed(v))))
            }
            Self::InAttributes(needle) => match needle.eval(message)? {
                Value::Str(name) => Ok(Value::Bool(m.attributes.contains_key(name.as_ref()))),
                _ => Err(Defer),
            },
            Self::Json(field) => match message.json(field).ok_or(Defer)? {
                (Slot::Scalar(value), _) => Ok(value.borrowed()),
                _ => Err(Defer),
            },
            Self::HasJson(field) => match message.json(field).ok_or(Defer)? {
                (slot, Slot::Object) => Ok(Value::Bool(*slot != Slot::Absent)),
                _ => Err(Defer),
            },
            Self::JsonOr(field, fallback) => {
                let fallback = fallback.eval(message)?;
                match message.json(field).ok_or(Defer)? {
                    (Slot::Absent, Slot::Object) => Ok(fallback),
                    (Slot::Scalar(value), Slot::Object) => Ok(value.borrowed()),
                    // An optional field of a value that is not an object is none.
                    (_, Slot::Scalar(_) | Slot::Container) => Ok(fallback),
                    _ => Err(Defer),
                }
            }
            Self::Not(operand) => match operand.eval(message)? {
                Value::Bool(b) => Ok(Value::Bool(!b)),
                _ => Err(Defer),
            },
            Self::Or(pair) => logic(pair, true, message),
            Self::And(pair) => logic(pair, false, message),
            Self::Conditional(three) => match three[0].eval(message)? {
                Value::Bool(true) => three[1].eval(message),
                Value::Bool(false) => three[2].eval(message),
                _ => Err(Defer),
            },
            Self::Equals(pair) => {
                equals(&pair[0].eval(message)?, &pair[1].eval(message)?).map(Value::Bool)
            }
            Self::NotEquals(pair) => {
                equals(&pair[0].eval(message)?, &pair[1].eval(message)?).map(|e| Value::Bool(!e))
            }
            Self::Compare(comparison, pair) => {
                let order = compare(&pair[0].eval(message)?, &pair[1].eval(message)?)?;
                Ok(Value::Bool(match comparison {
                    Comparison::Less => order == Ordering::Less,
                    Comparison::LessOrEqual => order != Ordering::Greater,
                    Comparison::Greater => order == Ordering::Greater,
                    Comparison::GreaterOrEqual => order != Ordering::Less,
                }))
            }
            Self::Text(test, pair) => match (pair[0].eval(message)?, pair[1].eval(message)?) {
                (Value::Str(text), Value::Str(needle)) => Ok(Value::Bool(match test {
                    TextTest::StartsWith => text.starts_with(needle.as_ref()),
                    TextTest::EndsWith => text.ends_with(needle.as_ref()),
                    TextTest::Contains => text.contains(needle.as_ref()),
                })),
                _ => Err(Defer),
            },
            Self::Size(operand) => match operand.eval(message)? {
                Value::Str(s) => i64::try_from(s.chars().count())
                    .map(Value::Int)
                    .map_err(|_| Defer),
                Value::Bytes(b) => i64::try_from(b.len()).map(Value::Int).map_err(|_| Defer),
                _ => Err(Defer),
            },
            Self::Timestamp(operand) => match operand.eval(message)? {
                Value::Str(s) => chrono::DateTime::parse_from_rfc3339(&s)
                    .ok()
                    .filter(in_timestamp_range)
                    .map(Value::Timestamp)
                    .ok_or(Defer),
                Value::Timestamp(t) => Ok(Value::Timestamp(t)),
                _ => Err(Defer),
            },
        }
    }
}

impl Field {
    fn new(segments: Vec<String>) -> Self {
        Self {
            segments,
            path: None,
        }
    }

    /// Gives the field its node in `paths`.
    pub(super) fn register(&mut self, paths: &mut JsonPaths) {
        self.path = Some(paths.add(&self.segments));
    }
}

/// CEL's `||` (`decisive` true) and `&&` (false), commutative: an error (or a non-bool) on one
/// side gives way to the other side's deciding value.
fn logic<'a>(pair: &'a [Direct; 2], decisive: bool, message: &'a Message<'_>) -> Outcome<'a> {
    let left = pair[0].eval(message);
    if left == Ok(Value::Bool(decisive)) {
        return Ok(Value::Bool(decisive));
    }
    match (left, pair[1].eval(message)?) {
        (Ok(Value::Bool(_)), Value::Bool(right)) => Ok(Value::Bool(right)),
        (_, Value::Bool(right)) if right == decisive => Ok(Value::Bool(decisive)),
        _ => Err(Defer),
    }
}

/// CEL's timestamp range, years 1 to 9999 (the interpreter refuses any other).
fn in_timestamp_range(t: &chrono::DateTime<chrono::FixedOffset>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&t.naive_utc().year())
}

/// CEL's `==`: numbers compare across int, uint and double; other kinds equal only their own.
fn equals(a: &Value<'_>, b: &Value<'_>) -> Result<bool, Defer> {
    Ok(match (a, b) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Bytes(a), Value::Bytes(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        (Value::Timestamp(_), _) | (_, Value::Timestamp(_)) => return Err(Defer),
        _ => match compare_numbers(a, b) {
            Some(order) => order == Some(Ordering::Equal),
            None => false,
        },
    })
}

/// CEL's ordering of two numbers or two strings; anything else is the interpreter's.
fn compare(a: &Value<'_>, b: &Value<'_>) -> Result<Ordering, Defer> {
    match (a, b) {
        (Value::Str(a), Value::Str(b)) => Ok(a.cmp(b)),
        _ => compare_numbers(a, b).flatten().ok_or(Defer),
    }
}

/// `None` when either is not a number; `Some(None)` when they do not compare (NaN). As the
/// interpreter's `compare` for `int`, `uint` and `double`.
fn compare_numbers(a: &Value<'_>, b: &Value<'_>) -> Option<Option<Ordering>> {
    Some(match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::UInt(y)) => {
            Some(u64::try_from(*x).map_or(Ordering::Less, |x| x.cmp(y)))
        }
        (Value::Int(x), Value::Double(y)) => (*x as f64).partial_cmp(y),
        (Value::UInt(x), Value::UInt(y)) => Some(x.cmp(y)),
        (Value::UInt(x), Value::Int(y)) => {
            Some(i64::try_from(*x).map_or(Ordering::Greater, |x| x.cmp(y)))
        }
        (Value::UInt(x), Value::Double(y)) => (*x as f64).partial_cmp(y),
        (Value::Double(x), Value::Double(y)) => x.partial_cmp(y),
        (Value::Double(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Double(x), Value::UInt(y)) => x.partial_cmp(&(*y as f64)),
        _ => return None,
    })
}

/// `attributes.name` or `attributes['name']`: the name.
fn attribute(expr: &cel::IdedExpr) -> Option<&str> {
    match &expr.expr {
        Expr::Select(select) if !select.test && is_attributes(&select.operand) => {
            Some(&select.field)
        }
        Expr::Call(call) if call.target.is_none() && call.func_name == operators::INDEX => {
            match call.args.as_slice() {
                [map, key] if is_attributes(map) => match &key.expr {
                    Expr::Literal(LiteralValue::String(name)) => Some(name.inner()),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

fn is_attributes(expr: &cel::IdedExpr) -> bool {
    matches!(&expr.expr, Expr::Ident(name) if name == "attributes")
}

/// `json`, `json.a.b`, `json['a']`: the field names, from the top.
fn json_path(expr: &cel::IdedExpr) -> Option<Vec<String>> {
    match &expr.expr {
        Expr::Ident(name) if name == "json" => Some(Vec::new()),
        Expr::Select(select) if !select.test => {
            let mut segments = json_path(&select.operand)?;
            segments.push(select.field.clone());
            Some(segments)
        }
        Expr::Call(call) if call.target.is_none() && call.func_name == operators::INDEX => {
            match call.args.as_slice() {
                [operand, key] => match &key.expr {
                    Expr::Literal(LiteralValue::String(name)) => {
                        let mut segments = json_path(operand)?;
                        segments.push(name.inner().to_owned());
                        Some(segments)
                    }
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

fn literal_value(literal: &LiteralValue) -> Option<Value<'static>> {
    Some(match literal {
        LiteralValue::Boolean(b) => Value::Bool(bool::from(*b)),
        LiteralValue::Int(i) => Value::Int(*i.inner()),
        LiteralValue::UInt(u) => Value::UInt(*u.inner()),
        LiteralValue::Double(d) => Value::Double(*d.inner()),
        LiteralValue::Null => Value::Null,
        LiteralValue::String(s) => Value::Str(Cow::Owned(s.inner().to_owned())),
        LiteralValue::Bytes(b) => Value::Bytes(Cow::Owned(b.inner().to_vec())),
    })
}
