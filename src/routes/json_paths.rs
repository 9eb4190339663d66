//! The JSON fields the rules name (`json.customer.id`), read from the payload in one pass that
//! stops as soon as every named field is found: the rest of the payload is not parsed.
//!
//! This is the on-demand reading of simdjson's On-Demand API: what is read is checked as JSON,
//! what follows the last named field is not. A named field repeated in one object takes its
//! first value. Nothing is allocated for the parts skipped; a string without escapes is
//! borrowed from the payload. The named part nests at most [`super::MAX_EXPRESSION_DEPTH`]
//! levels (the paths come from expressions); a skipped value is skipped without recursion,
//! however deep.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::direct::Value;

/// A node of the tree of named fields; node 0 is the payload itself.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Field name → node.
    children: Vec<(String, usize)>,
    /// The node's parent (node 0 is its own).
    parent: usize,
    /// How many nodes this one and those below it are.
    size: usize,
}

/// Every JSON field some rule names, as a tree of names.
#[derive(Debug, Clone)]
pub(super) struct JsonPaths {
    nodes: Vec<Node>,
}

impl Default for JsonPaths {
    fn default() -> Self {
        Self {
            nodes: vec![Node {
                children: Vec::new(),
                parent: 0,
                size: 1,
            }],
        }
    }
}

/// A named field: its node in [`JsonPaths`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PathId(usize);

impl JsonPaths {
    /// The node of `json.<segments...>`, added when new.
    pub(super) fn add(&mut self, segments: &[String]) -> PathId {
        let mut node = 0;
        for segment in segments {
            let known = self.nodes[node]
                .children
                .iter()
                .find(|(name, _)| name == segment)
                .map(|(_, child)| *child);
            node = match known {
                Some(child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node {
                        children: Vec::new(),
                        parent: node,
                        size: 1,
                    });
                    self.nodes[node].children.push((segment.clone(), child));
                    let mut above = node;
                    loop {
                        self.nodes[above].size += 1;
                        if above == 0 {
                            break;
                        }
                        above = self.nodes[above].parent;
                    }
                    child
                }
            };
        }
        PathId(node)
    }

    /// Reads the named fields of `data`; `None` when what was read is not JSON.
    pub(super) fn read<'m>(&self, data: &'m [u8]) -> Option<Fields<'m>> {
        let mut reading = Reading {
            paths: self,
            slots: vec![Slot::Absent; self.nodes.len()],
            unresolved: self.nodes.len(),
            stopped: false,
        };
        let mut deserializer = serde_json::Deserializer::from_slice(data);
        let read = FieldSeed {
            reading: &mut reading,
            node: 0,
        }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
        // The early stop is an error to serde_json, not bad JSON.
        (read.is_ok() || reading.stopped).then_some(Fields {
            slots: reading.slots,
        })
    }
}

/// What the payload holds at one named field.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Slot<'m> {
    /// Not in the payload (or not yet read).
    Absent,
    /// An object: its named fields are in their own slots.
    Object,
    /// An array or an object used as a value: left to the interpreter.
    Container,
    /// A string, number, `true`, `false` or `null`.
    Scalar(Value<'m>),
}

/// The named fields of one payload.
#[derive(Debug)]
pub(super) struct Fields<'m> {
    slots: Vec<Slot<'m>>,
}

impl<'m> Fields<'m> {
    /// What the payload holds at `path`.
    pub(super) fn get(&self, path: PathId) -> &Slot<'m> {
        &self.slots[path.0]
    }

    /// What the payload holds where `path` is looked up: the object `has()` tests.
    pub(super) fn parent(&self, paths: &JsonPaths, path: PathId) -> &Slot<'m> {
        &self.slots[paths.nodes[path.0].parent]
    }
}

/// One pass's state: the slots filled so far and how many nodes are still unknown.
struct Reading<'p, 'm> {
    paths: &'p JsonPaths,
    slots: Vec<Slot<'m>>,
    /// Nodes neither read nor known absent: the pass stops when none is left.
    unresolved: usize,
    /// Whether the pass stopped early, every named field resolved.
    stopped: bool,
}

impl<'m> Reading<'_, 'm> {
    /// Fills `node`'s slot with a value that has no named fields below it.
    fn settle(&mut self, node: usize, slot: Slot<'m>) {
        self.slots[node] = slot;
        self.unresolved -= self.paths.nodes[node].size;
    }

    /// Ends the pass when every named field is resolved: serde_json stops on an error.
    fn stop_when_resolved<E: de::Error>(&mut self) -> Result<(), E> {
        if self.unresolved == 0 {
            self.stopped = true;
            return Err(E::custom("every named field is read"));
        }
        Ok(())
    }
}

/// Reads the value at one node.
struct FieldSeed<'r, 'p, 'm> {
    reading: &'r mut Reading<'p, 'm>,
    node: usize,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.reading.settle(self.node, Slot::Scalar(Value::Bool(v)));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.reading.settle(self.node, Slot::Scalar(Value::Int(v)));
        Ok(())
    }

    /// Integers are ints where they fit, uints beyond, as the interpreter's `json` has them.
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let value = match i64::try_from(v) {
            Ok(v) => Value::Int(v),
            Err(_) => Value::UInt(v),
        };
        self.reading.settle(self.node, Slot::Scalar(value));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.reading
            .settle(self.node, Slot::Scalar(Value::Double(v)));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.reading
            .settle(self.node, Slot::Scalar(Value::Str(Cow::Borrowed(v))));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.reading.settle(
            self.node,
            Slot::Scalar(Value::Str(Cow::Owned(v.to_owned()))),
        );
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.reading.settle(self.node, Slot::Scalar(Value::Null));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.reading.settle(self.node, Slot::Container);
        self.reading.stop_when_resolved()?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let reading = self.reading;
        let node = &reading.paths.nodes[self.node];
        if node.children.is_empty() {
            // Used as a value: the interpreter's business.
            reading.settle(self.node, Slot::Container);
            reading.stop_when_resolved()?;
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        reading.slots[self.node] = Slot::Object;
        reading.unresolved -= 1;
        let children = &node.children;
        while let Some(child) = map.next_key_seed(KeySeed { children })? {
            match child {
                Some(child) if reading.slots[child] == Slot::Absent => {
                    map.next_value_seed(FieldSeed {
                        reading: &mut *reading,
                        node: child,
                    })?;
                    reading.stop_when_resolved()?;
                }
                // Not named, or named again: the first value counts.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        for &(_, child) in children {
            if reading.slots[child] == Slot::Absent {
                reading.unresolved -= reading.paths.nodes[child].size;
            }
        }
        Ok(())
    }
}

/// An object's key: the named child it is, if any. Borrowed, never copied.
struct KeySeed<'c> {
    children: &'c [(String, usize)],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self
            .children
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, child)| *child))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&[&str]]) -> (JsonPaths, Vec<PathId>) {
        let mut paths = JsonPaths::default();
        let ids = list
            .iter()
            .map(|segments| {
                let segments: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
                paths.add(&segments)
            })
            .collect();
        (paths, ids)
    }

    fn text(s: &str) -> Slot<'_> {
        Slot::Scalar(Value::Str(Cow::Borrowed(s)))
    }

    #[test]
    fn a_named_field_is_read_and_the_rest_skipped() {
        let (paths, ids) = paths(&[&["customer", "id"], &["n"], &["missing"]]);
        let data = br#"{"x":[1,{"y":2}],"customer":{"tier":"g","id":"c-42"},"n":-7,"z":"\u00e9"}"#;
        let fields = paths.read(data).unwrap();
        assert_eq!(fields.get(ids[0]), &text("c-42"));
        assert_eq!(fields.get(ids[1]), &Slot::Scalar(Value::Int(-7)));
        assert_eq!(fields.get(ids[2]), &Slot::Absent);
        assert_eq!(fields.parent(&paths, ids[0]), &Slot::Object);
        assert_eq!(fields.parent(&paths, ids[2]), &Slot::Object);
    }

    #[test]
    fn reading_stops_at_the_last_named_field() {
        let (paths, ids) = paths(&[&["customer", "id"]]);
        // Broken after the field: not read.
        let fields = paths
            .read(br#"{"customer":{"id":"c-1"},"items":[1,2"#)
            .unwrap();
        assert_eq!(fields.get(ids[0]), &text("c-1"));
        // Broken before it: not JSON.
        assert!(
            paths
                .read(br#"{"items":[1,2,"customer":{"id":"c-1"}}"#)
                .is_none()
        );
        assert!(paths.read(b"").is_none());
        assert!(paths.read(b"{\"customer\":{\"id\":\"c-1\"}} x").is_some());
    }

    #[test]
    fn a_field_absent_from_its_object_is_known_at_the_objects_end() {
        let (paths, ids) = paths(&[&["customer", "id"], &["customer", "missing"]]);
        // Both are resolved when `customer` ends: the broken rest is not read.
        let fields = paths.read(br#"{"customer":{"id":"c"},"x":["#).unwrap();
        assert_eq!(fields.get(ids[0]), &text("c"));
        assert_eq!(fields.get(ids[1]), &Slot::Absent);
    }

    #[test]
    fn an_absent_field_reads_the_whole_payload() {
        let (paths, ids) = paths(&[&["missing"]]);
        let fields = paths.read(br#"{"a":1,"b":[true]}"#).unwrap();
        assert_eq!(fields.get(ids[0]), &Slot::Absent);
        // Trailing garbage is found when everything was read.
        assert!(paths.read(br#"{"a":1} x"#).is_none());
        assert!(paths.read(br#"{"a":1"#).is_none());
    }

    #[test]
    fn a_repeated_field_takes_its_first_value() {
        let (paths, ids) = paths(&[&["a"], &["b"]]);
        let fields = paths.read(br#"{"a":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(fields.get(ids[0]), &Slot::Scalar(Value::Int(1)));
        assert_eq!(fields.get(ids[1]), &Slot::Scalar(Value::Int(3)));
    }

    #[test]
    fn values_take_the_interpreters_types() {
        let (paths, ids) = paths(&[
            &["i"],
            &["u"],
            &["d"],
            &["t"],
            &["z"],
            &["e"],
            &["o"],
            &["l"],
        ]);
        let data = br#"{"i":1,"u":18446744073709551615,"d":1.5,"t":true,"z":null,"e":"a\"b","o":{"k":1},"l":[1]}"#;
        let fields = paths.read(data).unwrap();
        let expected = [
            Slot::Scalar(Value::Int(1)),
            Slot::Scalar(Value::UInt(u64::MAX)),
            Slot::Scalar(Value::Double(1.5)),
            Slot::Scalar(Value::Bool(true)),
            Slot::Scalar(Value::Null),
            Slot::Scalar(Value::Str(Cow::Owned("a\"b".to_owned()))),
            Slot::Container,
            Slot::Container,
        ];
        for (id, expected) in ids.iter().zip(expected) {
            assert_eq!(fields.get(*id), &expected);
        }
    }

    #[test]
    fn below_a_value_that_is_not_an_object_nothing_is_present() {
        let (paths, ids) = paths(&[&["a", "b"], &["c", "d"]]);
        let fields = paths.read(br#"{"a":"text","c":[{"d":1}]}"#).unwrap();
        assert_eq!(fields.get(ids[0]), &Slot::Absent);
        assert_eq!(fields.parent(&paths, ids[0]), &text("text"));
        assert_eq!(fields.parent(&paths, ids[1]), &Slot::Container);
        let (paths, ids) = self::paths(&[&["a"]]);
        let fields = paths.read(b"[1,2]").unwrap();
        assert_eq!(fields.parent(&paths, ids[0]), &Slot::Container);
    }

    #[test]
    fn skipped_values_nest_without_limit_and_named_ones_within_serde_jsons() {
        let (paths, ids) = paths(&[&["a"]]);
        let deep = format!(
            r#"{{"a":1,"deep":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        // `a` comes first: the deep part is not read at all.
        assert_eq!(
            paths.read(deep.as_bytes()).unwrap().get(ids[0]),
            &Slot::Scalar(Value::Int(1))
        );
        let (paths, ids) = self::paths(&[&["missing"]]);
        let fields = paths.read(deep.as_bytes()).unwrap();
        assert_eq!(fields.get(ids[0]), &Slot::Absent);
    }

    #[test]
    fn the_tree_shares_prefixes() {
        let (paths, ids) = paths(&[&["a", "b"], &["a", "c"], &["a", "b"], &[]]);
        assert_eq!(ids[0], ids[2]);
        assert_ne!(ids[0], ids[1]);
        assert_eq!(ids[3], PathId(0));
        assert_eq!(paths.nodes.len(), 4);
        assert_eq!(paths.nodes[0].size, 4);
    }
}
