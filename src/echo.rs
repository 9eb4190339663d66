//! How much of a client's input an error repeats: a leaf every stage may use, so that error
//! bodies and log lines never carry unbounded attacker input.

/// Longest piece of client input an error message repeats (response bodies and log lines).
pub(crate) const MAX_ECHO_CHARS: usize = 128;

/// `text` cut to [`MAX_ECHO_CHARS`] characters, saying how long it was when cut: error bodies
/// and log lines never carry unbounded attacker input.
pub(crate) fn bounded_echo(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_bounded_on_a_char_boundary() {
        assert_eq!(bounded_echo("PATCH"), "PATCH");
        let exact = "x".repeat(MAX_ECHO_CHARS);
        assert_eq!(bounded_echo(&exact), exact);
        let long = "é".repeat(60_000);
        let echoed = bounded_echo(&long);
        assert!(echoed.starts_with(&"é".repeat(MAX_ECHO_CHARS)));
        assert!(echoed.ends_with("…(120000 bytes)"), "{echoed}");
        assert_eq!(
            echoed.chars().count(),
            MAX_ECHO_CHARS + "…(120000 bytes)".len() - 2
        );
    }
}
