//! Compilation and evaluation of the routing rules: each outcome, each refusal.

use std::collections::BTreeMap;

use super::*;

fn message(data: &str, attributes: &[(&str, &str)]) -> PubsubMessage {
    PubsubMessage {
        data: data.as_bytes().to_vec(),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        message_id: "42".into(),
        publish_time: "2021-02-26T19:13:55.749Z".into(),
        publish_time_ms: 1_614_366_835_749,
        ordering_key: Some("order-7".into()),
        subscription: "projects/p/subscriptions/s".into(),
        delivery_attempt: None,
    }
}

fn routes(json: &str) -> Routes {
    Routes::compile(json).unwrap_or_else(|errors| panic!("{json}: {errors:?}"))
}

fn errors(json: &str) -> Vec<String> {
    Routes::compile(json)
        .map(|_| panic!("{json} compiled"))
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn record() -> KafkaRecord {
    KafkaRecord {
        key: Some(b"old-key".to_vec()),
        message_id: None,
        value: b"v".to_vec(),
        headers: [("keep", "k"), ("tenant", "acme"), ("gone", "g")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
            .collect(),
        timestamp: RecordTimestamp::from_millis(5).unwrap(),
    }
}

/// The record after the rules shaped it, and the topic.
fn shaped(routes: &Routes, message: &PubsubMessage) -> (String, KafkaRecord) {
    let Decision::Route(routed) = routes.decide(message).unwrap() else {
        panic!("not routed")
    };
    let topic = routed.topic.to_owned();
    let mut record = record();
    routed.shape(&mut record);
    (topic, record)
}

fn failure(routes: &Routes, message: &PubsubMessage) -> RouteFailed {
    routes.decide(message).unwrap_err()
}

#[test]
fn the_first_matching_rule_decides() {
    let rules = routes(
        r#"[{"when": "attributes.type == 'order'", "topic": "orders"},
            {"when": "attributes.type == 'test'", "drop": true},
            {"when": "attributes.type == 'x'", "topic": "other"}]"#,
    );
    let decide = |t: &str| rules.decide(&message("", &[("type", t)])).unwrap();
    assert!(matches!(
        decide("order"),
        Decision::Route(Routed {
            rule: 0,
            topic: "orders",
            ..
        })
    ));
    assert_eq!(decide("test"), Decision::Drop { rule: 1 });
    assert!(matches!(
        decide("x"),
        Decision::Route(Routed {
            rule: 2,
            topic: "other",
            ..
        })
    ));
    assert_eq!(decide("y"), Decision::NoMatch);
    assert_eq!(rules.topics(), ["orders", "other"]);
    assert_eq!(rules.rule_count(), 3);
}

#[test]
fn a_rule_without_when_always_matches_and_changes_nothing_it_does_not_name() {
    let rules = routes(r#"[{"topic": " all "}]"#);
    let (topic, shaped) = shaped(&rules, &message("", &[]));
    assert_eq!(topic, "all");
    assert_eq!(shaped, record());
}

#[test]
fn every_variable_reads_the_message() {
    let rules = routes(
        r#"[{"when": "message_id == '42' && ordering_key == 'order-7' && subscription == 'projects/p/subscriptions/s' && data == b'{\"n\": 1}' && json.n == 1 && attributes.a == 'b' && publish_time == timestamp('2021-02-26T19:13:55.749Z')", "topic": "t"}]"#,
    );
    let decision = rules
        .decide(&message(r#"{"n": 1}"#, &[("a", "b")]))
        .unwrap();
    assert!(matches!(decision, Decision::Route(_)), "{decision:?}");
    // No ordering key reads as the empty string.
    let mut unordered = message("", &[]);
    unordered.ordering_key = None;
    let rules = routes(r#"[{"when": "ordering_key == ''", "topic": "t"}]"#);
    assert!(matches!(
        rules.decide(&unordered).unwrap(),
        Decision::Route(_)
    ));
}

#[test]
fn json_values_convert_to_cel_types() {
    let data = r#"{"s": "x\ny", "i": -3, "u": 18446744073709551615, "f": 1.5, "b": true,
                   "n": null, "l": [1, "two"], "o": {"k": "v"}, "big": 9007199254740993}"#;
    let rules = routes(
        r#"[{"when": "json.s == 'x\\ny' && json.i == -3 && json.u == 18446744073709551615u && json.f == 1.5 && json.b && json.n == null && json.l[1] == 'two' && size(json.l) == 2 && json.o.k == 'v' && 'k' in json.o && 'two' in json.l && json.big == 9007199254740993", "topic": "t"}]"#,
    );
    let decision = rules.decide(&message(data, &[])).unwrap();
    assert!(matches!(decision, Decision::Route(_)), "{decision:?}");
}

#[test]
fn key_headers_and_timestamp_shape_the_record() {
    let rules = routes(
        r#"[{"topic": "t",
             "key": "json.customer.id",
             "headers": {"tenant_id": "attributes.tenant", "tenant": null, "raw": "data", "kind": "'order'"},
             "timestamp": "timestamp(json.at)"}]"#,
    );
    let data = r#"{"customer": {"id": "c-9"}, "at": "2024-01-02T03:04:05.678Z"}"#;
    let (_, record) = shaped(&rules, &message(data, &[("tenant", "acme")]));
    assert_eq!(record.key.as_deref(), Some(&b"c-9"[..]));
    let headers: BTreeMap<&str, &[u8]> = record
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert_eq!(
        headers,
        BTreeMap::from([
            ("gone", &b"g"[..]),
            ("keep", b"k"),
            ("kind", b"order"),
            ("raw", data.as_bytes()),
            ("tenant_id", b"acme"),
        ])
    );
    assert_eq!(record.timestamp.millis(), 1_704_164_645_678);
}

#[test]
fn keys_are_strings_bytes_or_decimal_ints() {
    for (expression, key) in [
        ("json.id", &b"12"[..]),
        ("-7", b"-7"),
        ("7u", b"7"),
        ("b'\\x00\\xff'", b"\x00\xff"),
        ("'s'", b"s"),
        ("message_id", b"42"),
    ] {
        let rules = routes(&format!(
            r#"[{{"topic": "t", "key": "{}"}}]"#,
            expression.replace('\\', "\\\\")
        ));
        let (_, record) = shaped(&rules, &message(r#"{"id": 12}"#, &[]));
        assert_eq!(record.key.as_deref(), Some(key), "{expression}");
    }
    let rules = routes(r#"[{"topic": "t", "key": "json.f"}]"#);
    let failed = failure(&rules, &message(r#"{"f": 1.5}"#, &[]));
    assert_eq!(failed.part, "key");
    assert_eq!(
        failed.message,
        "yielded float, not a string, bytes or an int"
    );
}

#[test]
fn a_header_expression_yielding_null_removes_it_and_other_types_fail() {
    let rules = routes(r#"[{"topic": "t", "headers": {"gone": "null"}}]"#);
    let (_, record) = shaped(&rules, &message("", &[]));
    assert!(!record.headers.contains_key("gone"));
    let rules = routes(r#"[{"topic": "t", "headers": {"n": "1"}}]"#);
    let failed = failure(&rules, &message("", &[]));
    assert_eq!(failed.part, "header \"n\"");
    assert_eq!(failed.message, "yielded int, not a string, bytes or null");
}

#[test]
fn timestamps_are_cel_timestamps_or_epoch_millis_within_kafkas_range() {
    let rules = routes(r#"[{"topic": "t", "timestamp": "json.ms"}]"#);
    let (_, record) = shaped(&rules, &message(r#"{"ms": 1700000000000}"#, &[]));
    assert_eq!(record.timestamp.millis(), 1_700_000_000_000);
    let failed = failure(&rules, &message(r#"{"ms": -1}"#, &[]));
    assert_eq!(failed.part, "timestamp");
    assert!(
        failed.message.starts_with("-1 ms is outside"),
        "{}",
        failed.message
    );
    let failed = failure(&rules, &message(r#"{"ms": "soon"}"#, &[]));
    assert_eq!(
        failed.message,
        "yielded string, not a timestamp or an int of milliseconds"
    );
    let rules = routes(r#"[{"topic": "t", "timestamp": "publish_time + duration('1s')"}]"#);
    let (_, record) = shaped(&rules, &message("", &[]));
    assert_eq!(record.timestamp.millis(), 1_614_366_836_749);
}

#[test]
fn an_evaluation_failure_names_the_rule_the_part_and_cels_message() {
    let rules = routes(
        r#"[{"when": "attributes.type == 'a'", "topic": "a"},
            {"when": "json.kind == 'b'", "topic": "b"}]"#,
    );
    // A missing attribute not guarded by has().
    let failed = failure(&rules, &message("{}", &[]));
    assert_eq!((failed.rule, failed.part.as_str()), (0, "when"));
    assert_eq!(failed.message, "No such key: type");
    assert_eq!(failed.to_string(), "rule 0 when: No such key: type");
    // Data that is not JSON where json is read.
    let failed = failure(&rules, &message("not json", &[("type", "x")]));
    assert_eq!((failed.rule, failed.part.as_str()), (1, "when"));
    assert!(
        failed.message.starts_with("data is not JSON: "),
        "{}",
        failed.message
    );
    // A when that is not a bool.
    let rules = routes(r#"[{"when": "attributes", "topic": "a"}]"#);
    let failed = failure(&rules, &message("", &[]));
    assert_eq!(failed.message, "yielded map, not bool");
    // A wrong type.
    let rules = routes(r#"[{"when": "json.n > 'x'", "topic": "a"}]"#);
    let failed = failure(&rules, &message(r#"{"n": 1}"#, &[]));
    assert_eq!(failed.rule, 0);
    assert!(!failed.message.is_empty());
}

#[test]
fn has_guards_a_missing_field() {
    let rules = routes(
        r#"[{"when": "has(json.customer) && json.customer == 'c'", "topic": "c"},
            {"when": "has(attributes.t) && attributes.t == 'x'", "topic": "x"}]"#,
    );
    assert_eq!(
        rules.decide(&message("{}", &[])).unwrap(),
        Decision::NoMatch
    );
}

#[test]
fn a_failure_message_is_cut_to_a_bounded_length() {
    let huge = "x".repeat(100_000);
    let rules = routes(r#"[{"when": "json.s + 1 == 2", "topic": "a"}]"#);
    let failed = failure(&rules, &message(&format!(r#"{{"s": "{huge}"}}"#), &[]));
    assert!(failed.message.len() < 1000, "{}", failed.message.len());
}

#[test]
fn deep_json_is_refused_not_followed() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let rules = routes(r#"[{"when": "json == []", "topic": "a"}]"#);
    let failed = failure(&rules, &message(&deep, &[]));
    assert!(
        failed.message.contains("recursion limit"),
        "{}",
        failed.message
    );
    // 128 levels are within the limit.
    let nested = format!("{}{}", "[".repeat(120), "]".repeat(120));
    let rules = routes(r#"[{"when": "size(json) == 1", "topic": "a"}]"#);
    assert!(matches!(
        rules.decide(&message(&nested, &[])).unwrap(),
        Decision::Route(_)
    ));
}

#[test]
fn json_is_parsed_only_when_read() {
    // The first rule decides without reading json: the payload is never parsed, so data that is
    // not JSON does not matter.
    let rules = routes(
        r#"[{"when": "attributes.t == 'a'", "topic": "a"}, {"when": "json.x == 1", "topic": "b"}]"#,
    );
    let decision = rules.decide(&message("not json", &[("t", "a")])).unwrap();
    assert!(matches!(decision, Decision::Route(Routed { rule: 0, .. })));
}

#[test]
fn the_json_variable_is_built_once_per_delivery() {
    let message = message(r#"{"a": 1}"#, &[("k", "v")]);
    let delivery = eval::Delivery::new(&message);
    use cel::context::VariableResolver;
    let first = delivery.resolve("json").unwrap();
    let second = delivery.resolve("json").unwrap();
    assert!(first.is_borrowed() && second.is_borrowed());
    assert!(std::ptr::addr_eq(
        &*first as *const dyn cel::common::value::Val,
        &*second as *const dyn cel::common::value::Val
    ));
    let first = delivery.resolve("attributes").unwrap();
    let second = delivery.resolve("attributes").unwrap();
    assert!(std::ptr::addr_eq(
        &*first as *const dyn cel::common::value::Val,
        &*second as *const dyn cel::common::value::Val
    ));
    assert!(delivery.resolve("unknown").is_none());
}

#[test]
fn malformed_rules_are_refused_each_with_its_index_and_reason() {
    let lines = errors(
        r#"[{"when": "attributes.type ==", "topic": "a"},
            {"topic": "b", "tpoic": "c"},
            {"when": "true", "topic": "c", "drop": true},
            {"when": "attributes.x == 'y'"},
            {"topic": ""},
            {"drop": true, "key": "message_id"},
            {"topic": "d", "headers": {"pubsub.message_id": "'x'", "": "'y'"}},
            {"when": "atributes.x == 'y'", "topic": "e"},
            "not an object"]"#,
    );
    let expected_starts = [
        "rule 0: when: ",
        "rule 1: unknown field `tpoic`",
        "rule 2: both \"topic\" and \"drop\"",
        "rule 3: neither \"topic\" nor \"drop\": true",
        "rule 4: \"topic\" is empty",
        "rule 5: a dropping rule writes nothing",
        "rule 6: a header name is empty",
        "rule 6: header \"pubsub.message_id\": the pubsub. namespace is reserved",
        "rule 7: when: unknown variable atributes; the variables are attributes, data, json, message_id, ordering_key, publish_time, subscription",
        "rule 8: invalid type: string",
    ];
    assert_eq!(lines.len(), expected_starts.len(), "{lines:#?}");
    for (line, start) in lines.iter().zip(expected_starts) {
        assert!(
            line.starts_with(start),
            "{line:?} should start with {start:?}"
        );
    }
}

#[test]
fn rules_after_an_unconditional_one_are_unreachable() {
    let lines = errors(
        r#"[{"when": "attributes.a == 'x'", "topic": "a"}, {"topic": "all"}, {"when": "true", "drop": true}, {"topic": "c"}]"#,
    );
    assert_eq!(
        lines,
        [
            "rule 2: never reached: rule 1 before it matches every message",
            "rule 3: never reached: rule 1 before it matches every message",
        ]
    );
    let lines = errors(r#"[{"when": " true ", "drop": true}, {"topic": "c"}]"#);
    assert_eq!(
        lines,
        ["rule 1: never reached: rule 0 before it matches every message"]
    );
    // A condition that only looks constant is not judged.
    routes(r#"[{"when": "1 == 1", "topic": "a"}, {"topic": "b"}]"#);
}

#[test]
fn the_list_itself_must_be_a_non_empty_json_array() {
    for (json, start) in [
        ("", "not a JSON array of rules: "),
        ("{}", "not a JSON array of rules: "),
        ("[]", "no rule"),
    ] {
        let lines = errors(json);
        assert!(lines[0].starts_with(start), "{json}: {lines:?}");
    }
    let many = format!(
        "[{}]",
        vec![r#"{"when": "false", "topic": "t"}"#; MAX_RULES + 1].join(",")
    );
    assert_eq!(
        errors(&many),
        [format!(
            "{} rules; at most {MAX_RULES} are taken",
            MAX_RULES + 1
        )]
    );
    let enough = format!(
        "[{}]",
        vec![r#"{"when": "false", "topic": "t"}"#; MAX_RULES].join(",")
    );
    routes(&enough);
}

#[test]
fn expression_size_and_nesting_are_bounded() {
    let long = format!("'{}' == attributes.a", "x".repeat(MAX_EXPRESSION_BYTES));
    let lines = errors(&format!(r#"[{{"when": "{long}", "topic": "t"}}]"#));
    assert!(
        lines[0].contains(&format!("at most {MAX_EXPRESSION_BYTES} are taken")),
        "{lines:?}"
    );
    let brackets = |n: usize| format!("{}true{}", "(".repeat(n), ")".repeat(n));
    let lines = errors(&format!(
        r#"[{{"when": "{}", "topic": "t"}}]"#,
        brackets(MAX_EXPRESSION_DEPTH + 1)
    ));
    assert!(
        lines[0].ends_with(&format!("nested deeper than {MAX_EXPRESSION_DEPTH} levels")),
        "{lines:?}"
    );
    // Brackets inside strings do not count.
    routes(&format!(
        r#"[{{"when": "attributes.a == '{}'", "topic": "t"}}]"#,
        "(".repeat(100)
    ));
    // An operator chain nests without brackets.
    let chain = vec!["1"; MAX_EXPRESSION_DEPTH + 2].join(" + ");
    let lines = errors(&format!(r#"[{{"key": "{chain}", "topic": "t"}}]"#));
    assert!(
        lines[0].ends_with(&format!("nested deeper than {MAX_EXPRESSION_DEPTH} levels")),
        "{lines:?}"
    );
    let short_chain = ["1"; 8].join(" + ");
    routes(&format!(r#"[{{"key": "{short_chain}", "topic": "t"}}]"#));
}

#[test]
fn comprehensions_are_refused() {
    for macro_call in [
        "json.l.all(x, x > 0)",
        "json.l.exists(x, x > 0)",
        "json.l.exists_one(x, x > 0)",
        "size(json.l.map(x, x)) > 0",
        "size(json.l.filter(x, x > 0)) > 0",
    ] {
        let lines = errors(&format!(r#"[{{"when": "{macro_call}", "topic": "t"}}]"#));
        assert!(
            lines[0].contains("comprehensions"),
            "{macro_call}: {lines:?}"
        );
    }
}

#[test]
fn bracket_depth_counts_outside_string_literals() {
    assert_eq!(bracket_depth("((a)[b]{c})"), 2);
    assert_eq!(bracket_depth(r#"'(((' + "\"(((" + ([1])"#), 2);
    assert_eq!(bracket_depth(")))("), 1);
    assert_eq!(bracket_depth(r"'\\' + (1)"), 1);
}

#[test]
fn equal_sources_are_equal_routes() {
    assert_eq!(routes(r#"[{"topic": "a"}]"#), routes(r#"[{"topic": "a"}]"#));
    assert_ne!(routes(r#"[{"topic": "a"}]"#), routes(r#"[{"topic": "b"}]"#));
    assert!(format!("{:?}", routes(r#"[{"topic": "a"}]"#)).contains("rules: 1"));
}

#[test]
fn what_docs_routing_md_promises_of_cel() {
    let m = message(
        r#"{"n": 1, "f": 2.0, "s": "AbC", "a": {}}"#,
        &[("env", "test")],
    );
    for holds in [
        "attributes.?env.orValue('') == 'test'",
        "attributes.?missing.orValue('') == ''",
        "json.n == 1.0 && json.f == 2",
        "json.s.matches('^A') && json.s.startsWith('A') && json.s.endsWith('C') && json.s.contains('b')",
        "int('12') == 12 && string(12) == '12' && bytes('x') == b'x' && string(data) != ''",
        "!has(json.a.b) && json.s in ['AbC', 'x'] && 'n' in json",
        "timestamp('2020-01-01T00:00:00Z') < publish_time && publish_time.getFullYear() == 2021",
        "type(json.s) == string && type(json.f) == double && type(data) == bytes && type(json.a) == map && type(json.n) == int && type(null) == null_type && type(int) == type",
        "type(json.n) != uint && type(json.a) != list && type(json.n) != bool",
    ] {
        let rules = routes(&format!(r#"[{{"when": "{holds}", "topic": "t"}}]"#));
        assert!(
            matches!(rules.decide(&m), Ok(Decision::Route(_))),
            "{holds}: {:?}",
            rules.decide(&m)
        );
    }
    for fails in [
        // has() tests the last field only: a missing map above it is an error.
        ("has(json.x.b)", "No such key: x"),
        // No implicit numeric conversion in arithmetic.
        (
            "json.n + 1.5 == 2.5",
            "Unsupported binary operator 'add': Int(1), Float(1.5)",
        ),
        // The strings extension is not part of the standard environment.
        (
            "json.s.lowerAscii() == 'abc'",
            "Undeclared reference to 'lowerAscii'",
        ),
    ] {
        let rules = routes(&format!(r#"[{{"when": "{}", "topic": "t"}}]"#, fails.0));
        assert_eq!(
            rules.decide(&m).unwrap_err().message,
            fails.1,
            "{}",
            fails.0
        );
    }
}

#[test]
fn every_example_in_docs_routing_md_compiles() {
    let doc = include_str!("../../docs/routing.md");
    let mut examples = 0;
    for block in doc.split("```json\n").skip(1) {
        let json = block.split("```").next().unwrap();
        routes(json);
        examples += 1;
    }
    assert!(examples >= 8, "{examples}");
}

/// The interpreter's value as a direct one, where it has that shape.
fn as_direct(value: Value) -> Option<direct::Value<'static>> {
    use std::borrow::Cow;
    Some(match value {
        Value::Null => direct::Value::Null,
        Value::Bool(b) => direct::Value::Bool(b),
        Value::Int(i) => direct::Value::Int(i),
        Value::UInt(u) => direct::Value::UInt(u),
        Value::Float(d) => direct::Value::Double(d),
        Value::String(s) => direct::Value::Str(Cow::Owned(s.to_string())),
        Value::Bytes(b) => direct::Value::Bytes(Cow::Owned(b.to_vec())),
        Value::Timestamp(t) => direct::Value::Timestamp(t),
        _ => return None,
    })
}

/// Expressions that have a direct form but never yield a value directly on [`agreement_messages`]:
/// they are there to show the deferral.
const ALWAYS_DEFERRED: [&str; 6] = [
    "json.tags",
    "true && 'x'",
    "timestamp(json.late)",
    "timestamp(json.t) == publish_time",
    "1 in attributes",
    "json.tags == json.tags",
];

/// Expressions whose direct form leaves to the interpreter some values it can compute: a JSON
/// array or object used as a value (also in `==`), timestamps compared, `in` with a needle that is not a
/// string. Every other expression is decided directly wherever the interpreter succeeds.
const PARTLY_DIRECT: [&str; 6] = [
    "json.tags",
    "json.?customer.orValue('none')",
    "json.customer == 'flat'",
    "timestamp(json.t) == publish_time",
    "1 in attributes",
    "json.tags == json.tags",
];

fn agreement_messages() -> Vec<PubsubMessage> {
    let full = r#"{"customer":{"id":"c-42","n":7},"amount":1000,"tags":["a"],"d":1.5,
        "u":18446744073709551615,"neg":-3,"s":"h\u00e9llo","t":"2024-01-02T03:04:05.678Z",
        "late":"0000-01-01T00:00:00Z","z":null,"b":true,"dup":1,"dup":2,"e":"a\"b"}"#;
    vec![
        message(full, &[("type", "order"), ("env", "test")]),
        message(full, &[]),
        message(
            r#"{"customer":"flat","amount":"1000","b":false,"d":-0.0}"#,
            &[("type", "click")],
        ),
        message(
            r#"{"customer":{"id":42},"amount":999.5,"u":5,"neg":0}"#,
            &[("env", "")],
        ),
        message("[1,2]", &[("type", "order")]),
        message(r#""just a string""#, &[]),
        message("not json", &[("type", "view")]),
        message("{}", &[("type", "")]),
        message(r#"{"customer":null,"b":null}"#, &[]),
        message(r#"{"customer":{},"tags":{}}"#, &[("env", "prod")]),
        message(r#"{"customer":5,"s":""}"#, &[]),
        message(r#"{"customer":[{"id":"x"}],"amount":-1}"#, &[]),
    ]
}

/// Wherever the direct evaluation yields a value, it is the interpreter's value, and it yields
/// one wherever the interpreter does (but for [`PARTLY_DIRECT`]): the two evaluators agree on
/// every expression of every shape the direct form takes, on payloads of every JSON type and on
/// data that is not JSON.
#[test]
fn direct_evaluation_agrees_with_the_interpreter() {
    let expressions = [
        "attributes.type == 'order'",
        "attributes['type'] != 'click'",
        "has(attributes.env)",
        "has(attributes.env) && attributes.env == 'test'",
        "attributes.?env.orValue('') == 'test'",
        "attributes.?env.orValue(1)",
        "'type' in attributes",
        "!('env' in attributes)",
        "json.customer.id",
        "json['customer']['id']",
        "has(json.customer.id)",
        "has(json.customer)",
        "json.?customer.orValue('none')",
        "json.customer.?id.orValue(0)",
        "json.amount >= 1000",
        "json.amount == 1000.0",
        "json.amount < 1000u",
        "json.amount > 'a'",
        "json.d > 1",
        "json.d <= 1u",
        "json.u > 1",
        "json.u == 18446744073709551615u",
        "json.u == 5.0",
        "json.u < 1.0e20",
        "json.neg < 0u",
        "json.neg >= -3.0",
        "json.s.size() == 5",
        "size(json.s)",
        "size(data)",
        "json.customer.id.startsWith('c-')",
        "message_id.endsWith('2')",
        "subscription.contains('/subscriptions/')",
        "ordering_key",
        "data",
        "b'not json' == data",
        "publish_time",
        "timestamp(json.t)",
        "timestamp(json.late)",
        "timestamp(publish_time)",
        "json.z == null",
        "null == json.z",
        "json.b == true",
        "json.b != false",
        "json.b",
        "!json.b",
        "json.b ? 'yes' : 'no'",
        "json.dup",
        "json.e",
        "json.customer == 'flat'",
        "json.missing || true",
        "json.missing && false",
        "json.b || false",
        "true && json.b",
        "attributes.nope == 'x' || attributes.type == 'order'",
        "attributes.type == 'order' ? json.customer.id : message_id",
        "json.d == 1.5 && json.customer.n == 7u",
        "'a' < 'b'",
        "json.s > 'h'",
        "1 == 'a'",
        "json.amount != 'x'",
        "true && 'x'",
        "json.b || json.amount",
        "json.tags",
        "timestamp(json.t) == publish_time",
        "1 in attributes",
        "json.tags == json.tags",
    ];
    let env = Arc::new(Env::stdlib());
    let messages = agreement_messages();
    let mut wrong = Vec::new();
    for source in expressions {
        let program = env.compile(source).unwrap();
        let mut direct = direct::Direct::compile(program.expression())
            .unwrap_or_else(|| panic!("{source} has no direct form"));
        let mut paths = json_paths::JsonPaths::default();
        direct
            .json_fields()
            .into_iter()
            .for_each(|field| field.register(&mut paths));
        let mut decided = 0;
        for message in &messages {
            let delivery = eval::Delivery::new(message);
            let mut context = cel::Context::with_env(Arc::clone(&env));
            context.set_variable_resolver(&delivery);
            let interpreted = program.execute(&context);
            let direct_message = direct::Message::new(message, &paths);
            let data = String::from_utf8_lossy(&message.data);
            let evaluated = direct.eval(&direct_message);
            if evaluated.is_err() && interpreted.is_ok() && !PARTLY_DIRECT.contains(&source) {
                wrong.push(format!(
                    "{source} on {data}: deferred, the interpreter gives {:?}",
                    interpreted.as_ref().ok()
                ));
            }
            if let Ok(value) = evaluated {
                let interpreted = interpreted.unwrap_or_else(|e| {
                    panic!("{source} on {data}: direct {value:?}, the interpreter fails: {e}")
                });
                assert_eq!(Some(value), as_direct(interpreted), "{source} on {data}");
                decided += 1;
            }
        }
        if ALWAYS_DEFERRED.contains(&source) != (decided == 0) {
            wrong.push(format!("{source}: decided directly {decided} times"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn what_the_direct_form_does_not_take_goes_to_the_interpreter() {
    let env = Env::stdlib();
    for source in [
        "json",
        "attributes",
        "json.items[0]",
        "json[attributes.k]",
        "json.a + 1",
        "int(json.a)",
        "json.s.matches('x')",
        "attributes.a.b",
        "json.?a.?b.orValue(1)",
        "[1, 2]",
        "type(json.a) == int",
        "-json.a",
        "attributes == 'type'",
        "json == 'a'",
        "json.a == json",
    ] {
        let program = env.compile(source).unwrap();
        assert_eq!(
            direct::Direct::compile(program.expression()),
            None,
            "{source}"
        );
    }
}

/// How each rule's expressions are evaluated: `true` for direct.
fn direct_forms(routes: &Routes) -> Vec<Vec<bool>> {
    routes
        .rules
        .iter()
        .map(|rule| {
            rule.when
                .iter()
                .chain(rule.key.iter())
                .chain(rule.headers.iter().filter_map(|(_, e)| e.as_ref()))
                .chain(rule.timestamp.iter())
                .map(|e| e.direct.is_some())
                .collect()
        })
        .collect()
}

#[test]
fn the_payload_is_read_one_way_per_rule_set() {
    // Every expression direct: the named fields are read in one pass.
    let direct = routes(
        r#"[{"when": "attributes.type == 'order'", "topic": "orders",
             "key": "json.customer.id", "headers": {"source": "attributes.origin"}},
            {"when": "json.amount > 10", "topic": "big"}]"#,
    );
    assert_eq!(direct_forms(&direct), [vec![true, true, true], vec![true]]);
    // One expression reads `json` in a way only the interpreter takes: every expression that
    // reads `json` goes to the interpreter, the others stay direct.
    let mixed = routes(
        r#"[{"when": "attributes.type == 'order'", "topic": "orders",
             "key": "json.customer.id", "headers": {"source": "attributes.origin"}},
            {"when": "json.items[0] > 1", "topic": "big"}]"#,
    );
    assert_eq!(direct_forms(&mixed), [vec![true, false, true], vec![false]]);
}

#[test]
fn direct_rules_route_key_and_shape_as_the_interpreter_would() {
    let rules = routes(
        r#"[{"when": "attributes.type == 'click'", "topic": "clicks"},
            {"when": "attributes.type == 'order'", "topic": "orders",
             "key": "json.customer.id", "headers": {"source": "attributes.origin", "gone": null},
             "timestamp": "timestamp(json.at)"}]"#,
    );
    assert!(direct_forms(&rules).iter().flatten().all(|direct| *direct));
    let order = message(
        r#"{"customer":{"id":"c-42"},"at":"2024-01-02T03:04:05.678Z"}"#,
        &[("type", "order"), ("origin", "web")],
    );
    let (topic, record) = shaped(&rules, &order);
    assert_eq!(topic, "orders");
    assert_eq!(record.key.as_deref(), Some(&b"c-42"[..]));
    assert_eq!(
        record.headers.get("source").map(Vec::as_slice),
        Some(&b"web"[..])
    );
    assert!(!record.headers.contains_key("gone"));
    assert_eq!(record.timestamp.millis(), 1_704_164_645_678);
    // A failure is reported with CEL's message, through the interpreter.
    let failed = failure(&rules, &message(r#"{"customer":{}}"#, &[("type", "order")]));
    assert_eq!((failed.rule, failed.part.as_str()), (1, "key"));
    assert_eq!(failed.message, "No such key: id");
    let failed = failure(&rules, &message("{}", &[("type", "order")]));
    assert_eq!(failed.message, "No such key: customer");
    let failed = failure(&rules, &message("{}", &[]));
    assert_eq!(
        (failed.rule, failed.message.as_str()),
        (0, "No such key: type")
    );
    let failed = failure(&rules, &message("not json", &[("type", "order")]));
    assert!(
        failed.message.starts_with("data is not JSON"),
        "{}",
        failed.message
    );
    let failed = failure(
        &rules,
        &message(r#"{"customer":{"id":1.5}}"#, &[("type", "order")]),
    );
    assert_eq!(failed.part, "key");
    assert!(failed.message.contains("float"), "{}", failed.message);
}

#[test]
fn direct_fields_are_read_only_as_far_as_the_last_named_one() {
    // Broken after the field: the direct reading does not get there; the interpreter, reading
    // the whole payload, refuses it (docs/routing.md says so).
    let broken = message(r#"{"customer":{"id":"c-1"},"items":[1,2"#, &[]);
    let direct = routes(r#"[{"topic": "a", "key": "json.customer.id"}]"#);
    assert_eq!(shaped(&direct, &broken).1.key.as_deref(), Some(&b"c-1"[..]));
    let interpreted = routes(r#"[{"topic": "a", "key": "json.customer.id + ''"}]"#);
    assert!(
        failure(&interpreted, &broken)
            .message
            .starts_with("data is not JSON")
    );
    // Every part of a rule reads it directly: the interpreter, which cannot parse this
    // payload, is never asked.
    let rules = routes(
        r#"[{"when": "json.kind == 'order' && json.customer.id.startsWith('c-')", "topic": "a",
             "key": "json.customer.id", "headers": {"tier": "json.customer.tier", "gone": "json.none"},
             "timestamp": "json.ts"}]"#,
    );
    let broken = message(
        r#"{"kind":"order","customer":{"id":"c-2","tier":"gold"},"none":null,"ts":1704164645678,"x":["#,
        &[],
    );
    let (_, record) = shaped(&rules, &broken);
    assert_eq!(record.key.as_deref(), Some(&b"c-2"[..]));
    assert_eq!(
        record.headers.get("tier").map(Vec::as_slice),
        Some(&b"gold"[..])
    );
    assert!(!record.headers.contains_key("gone"));
    assert_eq!(record.timestamp.millis(), 1_704_164_645_678);
    // A repeated key keeps its first value either way.
    let repeated = message(
        r#"{"customer":{"id":"first"},"customer":{"id":"second"}}"#,
        &[],
    );
    assert_eq!(
        shaped(&direct, &repeated).1.key.as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(
        shaped(&interpreted, &repeated).1.key.as_deref(),
        Some(&b"first"[..])
    );
}

/// Each kind of value a key, header or timestamp takes is used as the direct evaluation gives
/// it: on a payload broken after its fields, which the interpreter cannot parse.
#[test]
fn every_kind_of_direct_value_is_used_without_the_interpreter() {
    let broken = message(
        r#"{"kind":"order","n":7,"big":18446744073709551615,"at":"2024-01-02T03:04:05.678Z","x":["#,
        &[],
    );
    let shaped_by = |rule: &str| shaped(&routes(&format!("[{rule}]")), &broken).1;
    let key = |expression: &str| {
        shaped_by(&format!(r#"{{"topic": "a", "key": "{expression}"}}"#))
            .key
            .unwrap()
    };
    assert_eq!(key("json.n"), b"7");
    assert_eq!(key("json.big"), b"18446744073709551615");
    assert_eq!(key("json.kind == 'order' ? data : b''"), broken.data);
    let header =
        shaped_by(r#"{"topic": "a", "headers": {"h": "json.kind == 'order' ? b'x' : b''"}}"#);
    assert_eq!(header.headers.get("h").map(Vec::as_slice), Some(&b"x"[..]));
    let at = shaped_by(r#"{"topic": "a", "timestamp": "timestamp(json.at)"}"#);
    assert_eq!(at.timestamp.millis(), 1_704_164_645_678);
}
