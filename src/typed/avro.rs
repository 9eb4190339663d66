//! Avro: Avro's JSON encoding → binary datum, and the check that a binary datum decodes fully.
//!
//! apache-avro parses the schema and computes its fingerprint; the two walks over the data are
//! written here (docs/decisions/avro-json-walk.md): apache-avro's `Value` from JSON does not
//! read the JSON encoding's union wrapping, and its decoder has no bound on nesting or on the
//! number of zero-byte items a block count may claim.
//!
//! The encodings follow the Avro 1.11 specification (the version Pub/Sub supports,
//! <https://cloud.google.com/pubsub/docs/schemas>):
//! <https://avro.apache.org/docs/1.11.1/specification/#binary-encoding> and
//! <https://avro.apache.org/docs/1.11.1/specification/#json-encoding>.

use std::collections::HashMap;

use apache_avro::Schema;
use serde_json::Value;

use super::bounds::MAX_DATA_DEPTH;
use super::canonical::{parsing_canonical_form, rabin_fingerprint};
use super::{DataMismatch, DefinitionError};

/// The largest binary datum a JSON message may expand to. Defaults of missing fields are the
/// only expansion (a field default is copied into every record that omits it); Pub/Sub messages
/// are at most 10 MB, so a datum beyond this is refused rather than built.
const MAX_DATUM_BYTES: usize = 16 * 1024 * 1024;

/// How many array or map items a binary datum may claim beyond one per byte it has: items of a
/// type that takes no bytes (null, an empty record) cost nothing to claim, so their count is
/// bounded separately; the bridge refuses a datum with more.
const ZERO_WIDTH_ITEMS: usize = 65_536;

type NodeId = usize;

/// A schema as the walks need it: named types resolved to indexes (recursive types are cycles
/// through the arena), logical types reduced to the type that carries them.
#[derive(Debug)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    Enum(Vec<String>),
    Array(NodeId),
    Map(NodeId),
    /// Each branch with the name the JSON encoding wraps its values in.
    Union(Vec<(String, NodeId)>),
    Record(Vec<Field>),
}

#[derive(Debug)]
struct Field {
    name: String,
    node: NodeId,
    default: Option<Value>,
}

/// A compiled Avro schema.
#[derive(Debug)]
pub(super) struct AvroSchema {
    nodes: Vec<Node>,
    /// `C3 01` and the fingerprint: the single-object encoding's header.
    header: Vec<u8>,
}

impl AvroSchema {
    pub(super) fn compile(definition: &str) -> Result<Self, DefinitionError> {
        let schema =
            Schema::parse_str(definition).map_err(|e| DefinitionError::Avro(e.to_string()))?;
        let mut builder = Builder::default();
        builder.add(&schema)?;
        // apache-avro parsed it: it is JSON (and its depth is bounded).
        let json: Value =
            serde_json::from_str(definition).map_err(|e| DefinitionError::Avro(e.to_string()))?;
        // https://avro.apache.org/docs/1.11.1/specification/#single-object-encoding: C3 01, the
        // 8-byte little-endian CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form.
        let mut header = vec![0xC3, 0x01];
        header.extend_from_slice(
            &rabin_fingerprint(parsing_canonical_form(&json).as_bytes()).to_le_bytes(),
        );
        Ok(Self {
            nodes: builder.nodes,
            header,
        })
    }

    pub(super) fn single_object_header(&self) -> &[u8] {
        &self.header
    }

    /// Avro's JSON encoding → binary datum. Only the first JSON value is read: Pub/Sub's
    /// validator (Avro's Java `JsonDecoder`, as the emulator shows) accepts and ignores whatever
    /// follows it.
    pub(super) fn json_to_binary(&self, data: &[u8]) -> Result<Vec<u8>, DataMismatch> {
        // serde_json stops at 128 nested levels: the walk below recurses no deeper than the JSON.
        let value: Value = serde_json::Deserializer::from_slice(data)
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(serde::de::Error::custom("there is no JSON value")))
            .map_err(|e| DataMismatch::NotJson(e.to_string()))?;
        let mut out = Vec::with_capacity(data.len());
        let writer = JsonWriter { nodes: &self.nodes };
        writer
            .write(0, &value, Mode::Data, 0, &mut out)
            .map_err(Mismatch::into_data_mismatch)?;
        Ok(out)
    }

    /// Checks that `data` is exactly one binary datum of the schema.
    pub(super) fn check_binary(&self, data: &[u8]) -> Result<(), DataMismatch> {
        let mut reader = BinaryReader {
            nodes: &self.nodes,
            data,
            at: 0,
            items_left: data.len().saturating_add(ZERO_WIDTH_ITEMS),
        };
        reader.datum(0, 0).map_err(Mismatch::into_data_mismatch)?;
        match data.len() - reader.at {
            0 => Ok(()),
            trailing => Err(DataMismatch::TrailingBytes(trailing)),
        }
    }
}

/// Turns apache-avro's schema tree into the arena; the tree's depth is bounded by the
/// definition's (checked before parsing), references are not followed.
#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    names: HashMap<String, NodeId>,
}

impl Builder {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn add(&mut self, schema: &Schema) -> Result<NodeId, DefinitionError> {
        let node = match schema {
            Schema::Null => Node::Null,
            Schema::Boolean => Node::Boolean,
            Schema::Int | Schema::Date | Schema::TimeMillis => Node::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Node::Long,
            Schema::Float => Node::Float,
            Schema::Double => Node::Double,
            Schema::Bytes | Schema::BigDecimal => Node::Bytes,
            Schema::String | Schema::Uuid => Node::String,
            Schema::Duration => Node::Fixed(12),
            Schema::Decimal(decimal) => return self.add(&decimal.inner),
            Schema::Fixed(fixed) => {
                let id = self.push(Node::Fixed(fixed.size));
                self.names.insert(fixed.name.fullname(None), id);
                return Ok(id);
            }
            Schema::Enum(symbols) => {
                let id = self.push(Node::Enum(symbols.symbols.clone()));
                self.names.insert(symbols.name.fullname(None), id);
                return Ok(id);
            }
            Schema::Array(array) => {
                let id = self.push(Node::Null);
                self.nodes[id] = Node::Array(self.add(&array.items)?);
                return Ok(id);
            }
            Schema::Map(map) => {
                let id = self.push(Node::Null);
                self.nodes[id] = Node::Map(self.add(&map.types)?);
                return Ok(id);
            }
            Schema::Union(union) => {
                let id = self.push(Node::Null);
                let mut branches = Vec::with_capacity(union.variants().len());
                for variant in union.variants() {
                    branches.push((union_branch_name(variant), self.add(variant)?));
                }
                self.nodes[id] = Node::Union(branches);
                return Ok(id);
            }
            Schema::Record(record) => {
                // Registered before its fields: a field may refer to the record itself.
                let id = self.push(Node::Null);
                self.names.insert(record.name.fullname(None), id);
                let mut fields = Vec::with_capacity(record.fields.len());
                for field in &record.fields {
                    fields.push(Field {
                        name: field.name.clone(),
                        node: self.add(&field.schema)?,
                        default: field.default.clone(),
                    });
                }
                self.nodes[id] = Node::Record(fields);
                return Ok(id);
            }
            Schema::Ref { name } => {
                return self
                    .names
                    .get(&name.fullname(None))
                    .copied()
                    .ok_or_else(|| {
                        DefinitionError::Avro(format!("unknown type {}", name.fullname(None)))
                    });
            }
        };
        Ok(self.push(node))
    }
}

/// The key a union branch's value is wrapped in by the JSON encoding: the type's name for
/// unnamed types, the full name for named ones; a logical type goes by the type that carries it.
fn union_branch_name(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int | Schema::Date | Schema::TimeMillis => "int".into(),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes | Schema::BigDecimal => "bytes".into(),
        Schema::String | Schema::Uuid => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        // apache-avro keeps no name for a duration's fixed type: it calls it `duration`.
        Schema::Duration => "duration".into(),
        Schema::Decimal(decimal) => union_branch_name(&decimal.inner),
        Schema::Fixed(fixed) => fixed.name.fullname(None),
        Schema::Enum(symbols) => symbols.name.fullname(None),
        Schema::Record(record) => record.name.fullname(None),
        Schema::Ref { name } => name.fullname(None),
        // A union directly in a union is not valid Avro; apache-avro refuses it when parsing.
        Schema::Union(_) => "union".into(),
    }
}

/// A value that does not fit, and where: the path is collected on the way out (innermost
/// segment first), so the walk costs nothing for it while the data fits.
#[derive(Debug)]
struct Mismatch {
    reversed_path: Vec<String>,
    reason: String,
}

type Walk<T> = Result<T, Mismatch>;

impl Mismatch {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reversed_path: Vec::new(),
            reason: reason.into(),
        }
    }

    fn at(mut self, segment: String) -> Self {
        self.reversed_path.push(segment);
        self
    }

    fn into_data_mismatch(self) -> DataMismatch {
        let mut path = String::from("$");
        for segment in self.reversed_path.iter().rev() {
            path.push_str(segment);
        }
        DataMismatch::Field {
            path,
            reason: self.reason,
        }
    }
}

fn field_segment(name: &str) -> String {
    format!(".{name}")
}

fn index_segment(index: usize) -> String {
    format!("[{index}]")
}

fn key_segment(key: &str) -> String {
    format!("[{}]", Value::from(key))
}

/// Data read from a message, or a field default read from the schema: defaults write a union
/// as its first branch without the wrapping
/// (<https://avro.apache.org/docs/1.11.1/specification/#schema-record>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Data,
    Default,
}

struct JsonWriter<'s> {
    nodes: &'s [Node],
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl JsonWriter<'_> {
    fn write(
        &self,
        node: NodeId,
        value: &Value,
        mode: Mode,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Walk<()> {
        // JSON data is bounded by serde_json; defaults can refer to their own record type.
        if depth > MAX_DATA_DEPTH {
            return Err(Mismatch::new(format!(
                "nested deeper than {MAX_DATA_DEPTH} levels"
            )));
        }
        let expected =
            |what: &str| Mismatch::new(format!("expected {what}, got {}", describe(value)));
        match (&self.nodes[node], value) {
            (Node::Null, Value::Null) => {}
            (Node::Null, _) => return Err(expected("null")),
            (Node::Boolean, Value::Bool(b)) => out.push(u8::from(*b)),
            (Node::Boolean, _) => return Err(expected("a boolean")),
            (Node::Int, _) => {
                let int = integer(value)
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(|| expected("a 32-bit integer"))?;
                write_long(out, i64::from(int));
            }
            (Node::Long, _) => {
                let long = integer(value).ok_or_else(|| expected("a 64-bit integer"))?;
                write_long(out, long);
            }
            (Node::Float, _) => {
                let float = floating(value).ok_or_else(|| expected("a number"))?;
                out.extend_from_slice(&(float as f32).to_le_bytes());
            }
            (Node::Double, _) => {
                let double = floating(value).ok_or_else(|| expected("a number"))?;
                out.extend_from_slice(&double.to_le_bytes());
            }
            (Node::Bytes, Value::String(text)) => {
                let bytes = code_points_to_bytes(text);
                write_long(out, bytes.len() as i64);
                out.extend_from_slice(&bytes);
            }
            (Node::Bytes, _) => return Err(expected("a string of bytes")),
            (Node::String, Value::String(text)) => {
                write_long(out, text.len() as i64);
                out.extend_from_slice(text.as_bytes());
            }
            (Node::String, _) => return Err(expected("a string")),
            (Node::Fixed(size), Value::String(text)) => {
                let bytes = code_points_to_bytes(text);
                if bytes.len() != *size {
                    return Err(Mismatch::new(format!(
                        "expected {size} bytes, got {}",
                        bytes.len()
                    )));
                }
                out.extend_from_slice(&bytes);
            }
            (Node::Fixed(size), _) => return Err(expected(&format!("a string of {size} bytes"))),
            (Node::Enum(symbols), Value::String(symbol)) => {
                let index = symbols.iter().position(|s| s == symbol).ok_or_else(|| {
                    Mismatch::new(format!("{symbol:?} is not one of the enum's symbols"))
                })?;
                write_long(out, index as i64);
            }
            (Node::Enum(_), _) => return Err(expected("an enum symbol")),
            (Node::Array(items), Value::Array(values)) => {
                if !values.is_empty() {
                    write_long(out, values.len() as i64);
                    for (i, item) in values.iter().enumerate() {
                        self.write(*items, item, mode, depth + 1, out)
                            .map_err(|e| e.at(index_segment(i)))?;
                    }
                }
                out.push(0);
            }
            (Node::Array(_), _) => return Err(expected("an array")),
            (Node::Map(values_node), Value::Object(entries)) => {
                if !entries.is_empty() {
                    write_long(out, entries.len() as i64);
                    for (key, item) in entries {
                        write_long(out, key.len() as i64);
                        out.extend_from_slice(key.as_bytes());
                        self.write(*values_node, item, mode, depth + 1, out)
                            .map_err(|e| e.at(key_segment(key)))?;
                    }
                }
                out.push(0);
            }
            (Node::Map(_), _) => return Err(expected("an object")),
            (Node::Union(branches), _) => self.write_union(branches, value, mode, depth, out)?,
            (Node::Record(fields), Value::Object(entries)) => {
                for field in fields {
                    let (value, mode) = match (entries.get(&field.name), &field.default) {
                        (Some(value), _) => (value, mode),
                        (None, Some(default)) => (default, Mode::Default),
                        (None, None) => {
                            return Err(Mismatch::new("missing, and the field has no default")
                                .at(field_segment(&field.name)));
                        }
                    };
                    self.write(field.node, value, mode, depth + 1, out)
                        .map_err(|e| e.at(field_segment(&field.name)))?;
                }
            }
            (Node::Record(_), _) => return Err(expected("an object")),
        }
        if out.len() > MAX_DATUM_BYTES {
            return Err(Mismatch::new(format!(
                "the datum grows beyond {MAX_DATUM_BYTES} bytes (field defaults)"
            )));
        }
        Ok(())
    }

    /// JSON encoding: `null` for the null branch, else `{"<branch name>": value}`.
    fn write_union(
        &self,
        branches: &[(String, NodeId)],
        value: &Value,
        mode: Mode,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Walk<()> {
        let (index, node, inner) = match (mode, value) {
            (Mode::Default, _) => {
                let (_, node) = branches
                    .first()
                    .ok_or_else(|| Mismatch::new("a union without branches has no value"))?;
                (0, *node, value)
            }
            (Mode::Data, Value::Null) => {
                let index = branches
                    .iter()
                    .position(|(name, _)| name == "null")
                    .ok_or_else(|| Mismatch::new("null, but the union has no null branch"))?;
                (index, branches[index].1, value)
            }
            (Mode::Data, Value::Object(wrapped)) if wrapped.len() == 1 => {
                let (name, inner) = wrapped.iter().next().expect("one entry");
                let index = branches
                    .iter()
                    .position(|(branch, _)| branch == name)
                    .ok_or_else(|| {
                        let names: Vec<_> = branches.iter().map(|(n, _)| n.as_str()).collect();
                        Mismatch::new(format!(
                            "{name:?} is not a branch of the union ({})",
                            names.join(", ")
                        ))
                    })?;
                (index, branches[index].1, inner)
            }
            (Mode::Data, _) => {
                return Err(Mismatch::new(format!(
                    "expected null or a union value wrapped as {{\"type\": value}}, got {}",
                    describe(value)
                )));
            }
        };
        write_long(out, index as i64);
        self.write(node, inner, mode, depth + 1, out)
    }
}

/// A JSON number as an integer: a fraction is cut off toward zero, as Avro's Java
/// `JsonDecoder` (Jackson's `getIntValue`/`getLongValue`) does; out of range is `None`.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64().or_else(|| {
            let float = number.as_f64()?.trunc();
            // -2^63 is exact as a float; 2^63 is the first float above i64::MAX.
            (-9.223_372_036_854_776e18..9.223_372_036_854_776e18)
                .contains(&float)
                .then_some(float as i64)
        }),
        _ => None,
    }
}

/// A JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"` as Avro's Java JSON decoder writes
/// the values JSON has no number for.
fn floating(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => match text.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Bytes and fixed in the JSON encoding: a string whose code points 0–255 are the bytes. A code
/// point above 255 becomes `?`, as Avro's Java `JsonDecoder` makes it (it encodes the string as
/// ISO-8859-1, which replaces what it cannot encode); Pub/Sub accepts such strings.
fn code_points_to_bytes(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// Zig-zag, then variable-length base 128.
pub(super) fn write_long(out: &mut Vec<u8>, value: i64) {
    write_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// Variable-length base 128, least significant group first.
pub(super) fn write_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

struct BinaryReader<'s, 'd> {
    nodes: &'s [Node],
    data: &'d [u8],
    at: usize,
    /// Array and map items the datum may still claim.
    items_left: usize,
}

impl<'d> BinaryReader<'_, 'd> {
    fn datum(&mut self, node: NodeId, depth: usize) -> Walk<()> {
        if depth > MAX_DATA_DEPTH {
            return Err(Mismatch::new(format!(
                "nested deeper than {MAX_DATA_DEPTH} levels"
            )));
        }
        match &self.nodes[node] {
            Node::Null => {}
            Node::Boolean => {
                self.take(1)?;
            }
            Node::Int => {
                let long = self.long()?;
                i32::try_from(long)
                    .map_err(|_| Mismatch::new(format!("{long} does not fit an int")))?;
            }
            Node::Long => {
                self.long()?;
            }
            Node::Float => {
                self.take(4)?;
            }
            Node::Double => {
                self.take(8)?;
            }
            Node::Bytes => {
                let length = self.length()?;
                self.take(length)?;
            }
            Node::String => {
                let length = self.length()?;
                let bytes = self.take(length)?;
                std::str::from_utf8(bytes)
                    .map_err(|e| Mismatch::new(format!("the string is not UTF-8: {e}")))?;
            }
            Node::Fixed(size) => {
                self.take(*size)?;
            }
            Node::Enum(symbols) => {
                let index = self.long()?;
                if usize::try_from(index).map_or(true, |i| i >= symbols.len()) {
                    return Err(Mismatch::new(format!(
                        "enum index {index} is not below the {} symbols",
                        symbols.len()
                    )));
                }
            }
            Node::Union(branches) => {
                let index = self.long()?;
                let (_, branch) = usize::try_from(index)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or_else(|| {
                        Mismatch::new(format!(
                            "union branch {index} is not below the {} branches",
                            branches.len()
                        ))
                    })?;
                self.datum(*branch, depth + 1)?;
            }
            Node::Array(items) => {
                let items = *items;
                self.blocks(|reader, i| {
                    reader
                        .datum(items, depth + 1)
                        .map_err(|e| e.at(index_segment(i)))
                })?;
            }
            Node::Map(values) => {
                let values = *values;
                self.blocks(|reader, i| {
                    let length = reader.length()?;
                    let key = std::str::from_utf8(reader.take(length)?).map_err(|e| {
                        Mismatch::new(format!("the map key is not UTF-8: {e}")).at(index_segment(i))
                    })?;
                    reader
                        .datum(values, depth + 1)
                        .map_err(|e| e.at(key_segment(key)))
                })?;
            }
            Node::Record(fields) => {
                for field in fields {
                    self.datum(field.node, depth + 1)
                        .map_err(|e| e.at(field_segment(&field.name)))?;
                }
            }
        }
        Ok(())
    }

    /// Arrays and maps: blocks of a count and that many items, ended by a zero count; a negative
    /// count is followed by the block's size in bytes.
    fn blocks(&mut self, mut item: impl FnMut(&mut Self, usize) -> Walk<()>) -> Walk<()> {
        let mut index = 0;
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.length()?;
            }
            let count = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
            if count > self.items_left {
                return Err(Mismatch::new(format!(
                    "a block claims {count} items, more than the datum's size allows"
                )));
            }
            self.items_left -= count;
            for _ in 0..count {
                item(self, index)?;
                index += 1;
            }
        }
    }

    fn take(&mut self, n: usize) -> Walk<&'d [u8]> {
        let data = self.data;
        let rest = &data[self.at..];
        if n > rest.len() {
            return Err(Mismatch::new(format!(
                "the datum ends {} bytes early",
                n - rest.len()
            )));
        }
        self.at += n;
        Ok(&rest[..n])
    }

    /// A zig-zag varint of at most 10 bytes.
    fn long(&mut self) -> Walk<i64> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .data
                .get(self.at)
                .ok_or_else(|| Mismatch::new("the datum ends inside a number"))?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return Err(Mismatch::new("a number longer than 64 bits"));
            }
            raw |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(Mismatch::new("a number longer than 64 bits"))
    }

    /// A length: a long that is not negative.
    fn length(&mut self) -> Walk<usize> {
        let long = self.long()?;
        usize::try_from(long).map_err(|_| Mismatch::new(format!("negative length {long}")))
    }
}
