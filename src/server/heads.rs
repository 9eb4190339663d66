//! Where HTTP/1 request heads begin in a connection's byte stream, so that each head is timed
//! from its first byte even when it arrives in the same read as the request before it.
//!
//! hyper reads ahead: one read can hold the end of a request and the start of the next head,
//! which then sits in hyper's buffer where no later read reveals it. So every read is placed
//! in the stream as it happens: the end of a head is found by its empty line, a body is
//! counted off by the length hyper framed it with (given when its request begins), and what
//! follows is the next head. Pure: bytes and events in, one verdict out.

/// The position of a connection's reads in its stream of HTTP/1 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Heads {
    phase: Phase,
    /// Bytes of a head whose request has not begun were read.
    head_started: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In a head; the scan carries what the last read ended with.
    Head(EndOfHead),
    /// A head ended `extra` bytes before the end of what was read; its request begins next.
    HeadRead { extra: u64 },
    /// In a body with `remaining` bytes of it still to be read.
    Body { remaining: u64 },
    /// The messages cannot be told apart any more: a body without a length (chunked), or
    /// reads holding more than one message beyond a head. From then on every wait between
    /// requests may hold part of a head, and is timed as one.
    Unframed,
}

impl Heads {
    /// A connection before its first byte.
    pub(super) fn new() -> Self {
        Self {
            phase: Phase::Head(EndOfHead::Start),
            head_started: false,
        }
    }

    /// `bytes` were read off the connection (and handed to the HTTP parser).
    pub(super) fn read(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Head(scan) => {
                    self.head_started = true;
                    if let Some(end) = scan.find(bytes) {
                        let extra = (bytes.len() - end) as u64;
                        self.phase = Phase::HeadRead { extra };
                    }
                    return;
                }
                Phase::HeadRead { extra } => {
                    *extra += bytes.len() as u64;
                    return;
                }
                Phase::Body { remaining } => {
                    let body = usize::try_from(*remaining).unwrap_or(usize::MAX);
                    if bytes.len() <= body {
                        *remaining -= bytes.len() as u64;
                        return;
                    }
                    bytes = &bytes[body..];
                    self.phase = Phase::Head(EndOfHead::Start);
                }
                Phase::Unframed => {
                    self.head_started = true;
                    return;
                }
            }
        }
    }

    /// A request began: the parser read a whole head. `body_length` is the length it framed
    /// the body with (`Content-Length`, 0 for none), `None` when the body has no length.
    pub(super) fn begin(&mut self, body_length: Option<u64>) {
        self.phase = match (self.phase, body_length) {
            (Phase::HeadRead { extra }, Some(length)) if extra <= length => {
                self.head_started = false;
                Phase::Body {
                    remaining: length - extra,
                }
            }
            // Bytes beyond this body were read with its head: a later head began (and maybe
            // more than one); or a chunked body; or a head this did not see end. In each the
            // parser may hold part of a head no read will show.
            (Phase::HeadRead { extra }, None) => {
                self.head_started = extra > 0;
                Phase::Unframed
            }
            (Phase::Unframed, _) => Phase::Unframed,
            _ => {
                self.head_started = true;
                Phase::Unframed
            }
        };
    }

    /// Whether, when no request is in progress, part of a head may be waiting for its rest.
    pub(super) fn awaits_head(&self) -> bool {
        self.head_started || self.phase == Phase::Unframed
    }
}

/// Finds the empty line that ends a request head, across reads. Leading empty lines are
/// skipped as the parser skips them; lines end with LF or CRLF (httparse takes both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndOfHead {
    /// Before the request line.
    Start,
    /// Within a line.
    Line,
    /// Just after the LF that ended a line.
    Lf,
    /// After that LF, a CR.
    LfCr,
}

impl EndOfHead {
    /// The offset just past the head's final LF, if the head ends within `bytes`.
    fn find(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < bytes.len() {
            match self {
                Self::Start => match bytes[at] {
                    b'\r' | b'\n' => at += 1,
                    _ => *self = Self::Line,
                },
                Self::Line => {
                    let line_end = memchr::memchr(b'\n', &bytes[at..])?;
                    at += line_end + 1;
                    *self = Self::Lf;
                }
                Self::Lf => match bytes[at] {
                    b'\n' => return Some(at + 1),
                    b'\r' => {
                        at += 1;
                        *self = Self::LfCr;
                    }
                    _ => *self = Self::Line,
                },
                Self::LfCr => match bytes[at] {
                    b'\n' => return Some(at + 1),
                    _ => *self = Self::Line,
                },
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n";

    fn post(body: &str) -> Vec<u8> {
        format!(
            "POST / HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn the_end_of_a_head_is_found_whatever_the_reads() {
        let head = b"\r\nPOST / HTTP/1.1\r\nA: b\nC: d\r\n\r\nbody";
        let end = head.len() - 4;
        for split in 0..head.len() {
            let mut scan = EndOfHead::Start;
            let found = match scan.find(&head[..split]) {
                Some(at) => Some(at),
                None => scan.find(&head[split..]).map(|at| split + at),
            };
            assert_eq!(found, Some(end), "split at {split}");
        }
        assert_eq!(EndOfHead::Start.find(b"GET / HTTP/1.1\n\nx"), Some(16));
        assert_eq!(EndOfHead::Start.find(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(EndOfHead::Start.find(b"\r\n\r\n"), None);
    }

    #[test]
    fn a_request_read_whole_leaves_no_head_waiting() {
        let mut heads = Heads::new();
        assert!(!heads.awaits_head());
        let request = post("{}");
        heads.read(&request);
        assert!(heads.awaits_head(), "a head under way");
        heads.begin(Some(2));
        assert!(!heads.awaits_head());
        // And again on the same connection, the body in a later read.
        let request = post("{\"a\":1}");
        let (head, body) = request.split_at(request.len() - 7);
        heads.read(head);
        heads.begin(Some(7));
        heads.read(&body[..3]);
        heads.read(&body[3..]);
        assert!(!heads.awaits_head());
        assert_eq!(heads.phase, Phase::Body { remaining: 0 });
    }

    #[test]
    fn part_of_a_head_read_with_the_request_before_it_is_awaited() {
        // Read with the head: the body and the start of the next head.
        let mut heads = Heads::new();
        let mut bytes = post("{}");
        bytes.extend_from_slice(b"POST / HT");
        heads.read(&bytes);
        heads.begin(Some(2));
        assert!(heads.awaits_head());
        // Read with the body.
        let mut heads = Heads::new();
        let request = post("{}");
        heads.read(&request[..request.len() - 2]);
        heads.begin(Some(2));
        assert!(!heads.awaits_head());
        heads.read(b"{}GET /hea");
        assert!(heads.awaits_head());
        assert_eq!(heads.phase, Phase::Head(EndOfHead::Line));
        // The rest of it follows: that head ends and its request begins.
        heads.read(b"lthz HTTP/1.1\r\n\r\n");
        heads.begin(Some(0));
        assert!(!heads.awaits_head());
    }

    #[test]
    fn bytes_read_after_a_head_ends_and_before_its_request_begins_count_as_what_follows_it() {
        let head = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n";
        let mut heads = Heads::new();
        heads.read(head);
        heads.read(b"bo");
        heads.read(b"dy");
        heads.begin(Some(4));
        assert_eq!(heads.phase, Phase::Body { remaining: 0 });
        assert!(!heads.awaits_head());
        let mut heads = Heads::new();
        heads.read(head);
        heads.read(b"bodyGET");
        heads.begin(Some(4));
        assert!(heads.awaits_head());
    }

    #[test]
    fn a_head_read_after_a_body_in_its_own_read_is_a_head() {
        let mut heads = Heads::new();
        heads.read(GET);
        heads.begin(Some(0));
        assert!(!heads.awaits_head());
        heads.read(b"GET");
        assert!(heads.awaits_head());
    }

    #[test]
    fn bodies_without_a_length_and_runs_of_requests_are_timed_as_heads_from_then_on() {
        // Chunked: where the body ends is not followed.
        let mut heads = Heads::new();
        heads.read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        heads.begin(None);
        assert!(heads.awaits_head());
        // Two whole requests and part of a third in one read.
        let mut heads = Heads::new();
        let mut bytes = GET.to_vec();
        bytes.extend_from_slice(GET);
        bytes.extend_from_slice(b"GE");
        heads.read(&bytes);
        heads.begin(Some(0));
        heads.begin(Some(0));
        assert!(heads.awaits_head());
        heads.read(GET);
        heads.begin(Some(0));
        assert!(heads.awaits_head(), "no longer followed");
        // A request the scan did not see end.
        let mut heads = Heads::new();
        heads.begin(Some(0));
        assert!(heads.awaits_head());
    }

    #[test]
    fn a_chunked_body_read_alone_with_its_head_leaves_nothing_counted_as_a_head() {
        let mut heads = Heads::new();
        heads.read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        heads.begin(None);
        // Nothing read beyond the head yet; the phase is what makes later waits heads.
        assert!(!heads.head_started);
        assert_eq!(heads.phase, Phase::Unframed);
    }
}
