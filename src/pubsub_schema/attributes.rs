//! Which schema revision a message names: the attributes Pub/Sub adds to every message of a
//! topic with a schema, read and checked without I/O.
//!
//! Pub/Sub validates each message against its topic's schema at publish time and tells the
//! subscriber which revision matched (<https://cloud.google.com/pubsub/docs/schemas-valid>):
//! `googclient_schemaname` (`projects/P/schemas/S`, or `_deleted-schema_` once the schema is
//! deleted), `googclient_schemarevisionid` (`_deleted-schema-revision_` once that revision is
//! deleted) and `googclient_schemaencoding` (`JSON` or `BINARY`).

use std::collections::BTreeMap;

use super::PubsubSchemaError;
use crate::echo::bounded_echo;
use crate::typed::DataEncoding;

/// The schema's full name.
pub(crate) const SCHEMA_NAME: &str = "googclient_schemaname";
/// The revision the message matched.
pub(crate) const SCHEMA_REVISION: &str = "googclient_schemarevisionid";
/// `JSON` or `BINARY`.
pub(crate) const SCHEMA_ENCODING: &str = "googclient_schemaencoding";
/// What `googclient_schemaname` says once the schema is deleted.
pub(crate) const DELETED_SCHEMA: &str = "_deleted-schema_";
/// What `googclient_schemarevisionid` says once the revision is deleted.
pub(crate) const DELETED_REVISION: &str = "_deleted-schema-revision_";

/// The revision a message names and how its data is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaRef {
    /// `projects/P/schemas/S@REVISION`: the cache key and the Schema API's resource name.
    pub(crate) revision: String,
    /// How the message's data is written.
    pub(crate) encoding: DataEncoding,
}

/// The revision `attributes` name: `None` for a message without `googclient_schemaname` (its
/// topic has no schema), an error when the revision cannot exist (deleted, incomplete or
/// malformed attributes) or the encoding is unknown.
pub(crate) fn schema_ref(
    attributes: &BTreeMap<String, String>,
) -> Result<Option<SchemaRef>, PubsubSchemaError> {
    let Some(name) = attributes.get(SCHEMA_NAME) else {
        return Ok(None);
    };
    let revision = attributes.get(SCHEMA_REVISION).map(String::as_str);
    let named = || {
        format!(
            "{}@{}",
            bounded_echo(name),
            bounded_echo(revision.unwrap_or(""))
        )
    };
    let not_found = |reason: &str| PubsubSchemaError::NotFound {
        revision: named(),
        reason: reason.to_owned(),
    };
    if name == DELETED_SCHEMA {
        return Err(not_found("the schema was deleted"));
    }
    let revision = match revision {
        Some(DELETED_REVISION) => return Err(not_found("the revision was deleted")),
        Some(revision) if valid_revision_id(revision) => revision,
        Some(_) => return Err(not_found("not a revision id")),
        None => return Err(not_found("the message names no revision")),
    };
    if !valid_schema_name(name) {
        return Err(not_found(
            "not a schema name (projects/PROJECT/schemas/SCHEMA)",
        ));
    }
    let encoding = match attributes.get(SCHEMA_ENCODING).map(String::as_str) {
        Some("JSON") => DataEncoding::Json,
        Some("BINARY") => DataEncoding::Binary,
        other => {
            return Err(PubsubSchemaError::UnknownEncoding {
                revision: named(),
                encoding: bounded_echo(other.unwrap_or("")),
            });
        }
    };
    Ok(Some(SchemaRef {
        revision: format!("{name}@{revision}"),
        encoding,
    }))
}

/// `projects/PROJECT/schemas/SCHEMA` with characters Google allows in each: the name goes into
/// the Schema API's URL path with the bridge's token, so nothing may change that path (`/`,
/// `..`, `?`, `#`, `%` escapes). Project ids are letters, digits and `-` (`.` and `:` in
/// domain-scoped ones); schema ids start with a letter and hold letters, digits, `-`, `.`,
/// `_`, `~` and `+` (Google also allows `%`, which a path would read as an escape: such a
/// schema is reported not found rather than fetched under another name).
fn valid_schema_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("projects/") else {
        return false;
    };
    let Some((project, schema)) = rest.split_once("/schemas/") else {
        return false;
    };
    let project_ok = !project.is_empty()
        && project.len() <= 100
        && project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        && project != "."
        && project != "..";
    let schema_ok = schema.len() <= 255
        && schema
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic)
        && schema
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+".contains(&b));
    project_ok && schema_ok
}

/// Revision ids are short lowercase hexadecimal-like strings (`c7cfa2a8`); letters, digits,
/// `-` and `_` keep any future form while nothing can alter the URL.
fn valid_revision_id(revision: &str) -> bool {
    !revision.is_empty()
        && revision.len() <= 128
        && revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn code(result: Result<Option<SchemaRef>, PubsubSchemaError>) -> &'static str {
        result.unwrap_err().code()
    }

    const NAME: &str = "projects/my-project/schemas/orders";

    #[test]
    fn a_message_without_a_schema_name_is_untyped() {
        assert_eq!(schema_ref(&attributes(&[])).unwrap(), None);
        assert_eq!(
            schema_ref(&attributes(&[(SCHEMA_REVISION, "abc"), ("x", "y")])).unwrap(),
            None
        );
    }

    #[test]
    fn names_the_revision_and_its_encoding() {
        for (given, encoding) in [
            ("JSON", DataEncoding::Json),
            ("BINARY", DataEncoding::Binary),
        ] {
            let found = schema_ref(&attributes(&[
                (SCHEMA_NAME, NAME),
                (SCHEMA_REVISION, "c7cfa2a8"),
                (SCHEMA_ENCODING, given),
            ]))
            .unwrap()
            .unwrap();
            assert_eq!(
                found.revision,
                "projects/my-project/schemas/orders@c7cfa2a8"
            );
            assert_eq!(found.encoding, encoding);
        }
        let domain_scoped = schema_ref(&attributes(&[
            (SCHEMA_NAME, "projects/example.com:proj/schemas/a-b_c.d~e+f"),
            (SCHEMA_REVISION, "0a1b-2c_3"),
            (SCHEMA_ENCODING, "JSON"),
        ]));
        assert!(domain_scoped.unwrap().is_some());
    }

    #[test]
    fn deleted_schemas_and_revisions_are_not_found() {
        for pairs in [
            [
                (SCHEMA_NAME, DELETED_SCHEMA),
                (SCHEMA_REVISION, DELETED_REVISION),
                (SCHEMA_ENCODING, "JSON"),
            ],
            [
                (SCHEMA_NAME, DELETED_SCHEMA),
                (SCHEMA_REVISION, "c7cfa2a8"),
                (SCHEMA_ENCODING, "JSON"),
            ],
            [
                (SCHEMA_NAME, NAME),
                (SCHEMA_REVISION, DELETED_REVISION),
                (SCHEMA_ENCODING, "BINARY"),
            ],
        ] {
            let error = schema_ref(&attributes(&pairs)).unwrap_err();
            assert_eq!(error.code(), "schema_not_found");
            assert!(error.to_string().contains("deleted"), "{error}");
        }
    }

    #[test]
    fn names_that_could_alter_the_request_are_not_fetched() {
        for name in [
            "orders",
            "projects/p/schemas/",
            "projects//schemas/s",
            "projects/p/schemas/s/../../topics/t",
            "projects/../schemas/s",
            "projects/p/schemas/s?view=BASIC",
            "projects/p/schemas/s#x",
            "projects/p/schemas/a%2Fb",
            "projects/p/schemas/1starts-with-a-digit",
            "projects/p/topics/t",
            "projects/p/schemas/s@rev",
        ] {
            let pairs = [
                (SCHEMA_NAME, name),
                (SCHEMA_REVISION, "r1"),
                (SCHEMA_ENCODING, "JSON"),
            ];
            assert_eq!(
                code(schema_ref(&attributes(&pairs))),
                "schema_not_found",
                "{name}"
            );
        }
        for revision in ["", "a/b", "a?b", "a@b", "a%20", &"r".repeat(129)] {
            let pairs = [
                (SCHEMA_NAME, NAME),
                (SCHEMA_REVISION, revision),
                (SCHEMA_ENCODING, "JSON"),
            ];
            assert_eq!(
                code(schema_ref(&attributes(&pairs))),
                "schema_not_found",
                "{revision}"
            );
        }
        let long_schema = format!("projects/p/schemas/s{}", "x".repeat(255));
        let pairs = [
            (SCHEMA_NAME, long_schema.as_str()),
            (SCHEMA_REVISION, "r"),
            (SCHEMA_ENCODING, "JSON"),
        ];
        assert_eq!(code(schema_ref(&attributes(&pairs))), "schema_not_found");
        let long_project = format!("projects/{}/schemas/s", "p".repeat(101));
        let pairs = [
            (SCHEMA_NAME, long_project.as_str()),
            (SCHEMA_REVISION, "r"),
            (SCHEMA_ENCODING, "JSON"),
        ];
        assert_eq!(code(schema_ref(&attributes(&pairs))), "schema_not_found");
        let longest = format!("projects/{}/schemas/s{}", "p".repeat(100), "x".repeat(254));
        let pairs = [
            (SCHEMA_NAME, longest.as_str()),
            (SCHEMA_REVISION, &*"r".repeat(128)),
            (SCHEMA_ENCODING, "JSON"),
        ];
        assert!(schema_ref(&attributes(&pairs)).unwrap().is_some());
    }

    #[test]
    fn incomplete_attributes_and_unknown_encodings_are_refused() {
        let no_revision = [(SCHEMA_NAME, NAME), (SCHEMA_ENCODING, "JSON")];
        assert_eq!(
            code(schema_ref(&attributes(&no_revision))),
            "schema_not_found"
        );
        for encoding in [None, Some("json"), Some("XML"), Some("")] {
            let mut pairs = vec![(SCHEMA_NAME, NAME), (SCHEMA_REVISION, "r1")];
            pairs.extend(encoding.map(|e| (SCHEMA_ENCODING, e)));
            let error = schema_ref(&attributes(&pairs)).unwrap_err();
            assert_eq!(error.code(), "schema_mismatch", "{encoding:?}");
        }
    }

    #[test]
    fn errors_echo_attributes_bounded() {
        let huge = format!("projects/p/schemas/{}", "x".repeat(10_000));
        let pairs = [
            (SCHEMA_NAME, huge.as_str()),
            (SCHEMA_REVISION, "r"),
            (SCHEMA_ENCODING, "JSON"),
        ];
        let message = schema_ref(&attributes(&pairs)).unwrap_err().to_string();
        assert!(message.len() < 400, "{message}");
    }
}
