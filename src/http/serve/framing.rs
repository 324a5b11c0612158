//! Follows the HTTP/1.1 message framing of the bytes a connection reads, to find each request
//! head that carries both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper treats such a request as chunked and drops its `Content-Length` before the service
//! sees it (RFC 9112 section 6.3 allows that), so only the bytes can tell. RFC 9112 section
//! 6.1 lets a server refuse it instead, and an audit ledger should: the two headers disagree
//! about where the request ends, the classic request-smuggling shape. The tracker finds request
//! heads the way hyper does (`httparse` on the head; a body of `Content-Length` bytes, chunks,
//! or none) and counts them, so the connection can tell the service which request to refuse.
//!
//! It never guesses: on anything it does not follow exactly (a malformed head, an upgrade, a
//! head larger than hyper accepts) it stops looking at that connection, and hyper's own
//! checks apply. After a flagged head hyper closes the connection, so there is nothing further
//! to follow.

/// Larger than any head hyper accepts (its read buffer is at most about 400 KiB).
const MAX_HEAD: usize = 512 * 1024;
/// A chunk-size or trailer line longer than this is not followed.
const MAX_LINE: usize = 4096;
/// hyper's default limit on the number of headers.
const MAX_HEADERS: usize = 100;

#[derive(Debug)]
pub(super) struct Framing {
    state: State,
    /// Request heads completed so far.
    heads: u64,
}

#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Inside a body of known length.
    Body(u64),
    /// Reading a chunk-size line (size, optional extensions, line end).
    ChunkSize(Vec<u8>),
    /// Inside a chunk's data; the count includes the CRLF that ends it.
    ChunkData(u64),
    /// Reading the trailer section after the last chunk, a line at a time.
    Trailer(Vec<u8>),
    /// Not following this connection any more.
    Off,
}

impl Framing {
    pub(super) fn new() -> Framing {
        Framing {
            state: State::Head(Vec::new()),
            heads: 0,
        }
    }

    /// Request heads completed so far.
    pub(super) fn heads(&self) -> u64 {
        self.heads
    }

    /// A request head has begun arriving and is not complete.
    pub(super) fn in_head(&self) -> bool {
        matches!(&self.state, State::Head(head) if !head.is_empty())
    }

    /// Follows `bytes`, the next bytes read from the connection. Returns the 0-based index
    /// (in request order) of a request head that carries both `Content-Length` and
    /// `Transfer-Encoding`, when `bytes` completes one.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return None,
                State::Head(head) => {
                    if head.is_empty() {
                        // Empty lines before a request line are ignored (RFC 9112 section 2.2).
                        let start = bytes
                            .iter()
                            .position(|b| !matches!(b, b'\r' | b'\n'))
                            .unwrap_or(bytes.len());
                        bytes = &bytes[start..];
                        if bytes.is_empty() {
                            return None;
                        }
                    }
                    let searched_from = head.len().saturating_sub(2);
                    let take = bytes.len().min(MAX_HEAD + 1 - head.len());
                    head.extend_from_slice(&bytes[..take]);
                    let Some(end) = head_end(&head[searched_from..]).map(|e| e + searched_from)
                    else {
                        if head.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        return None;
                    };
                    // What follows the head in this read is body (or the next request).
                    let rest_in_read = head.len() - end;
                    bytes = &bytes[take - rest_in_read..];
                    let framing = body_framing(&head[..end]);
                    let index = self.heads;
                    self.heads += 1;
                    self.state = match framing {
                        Body::Conflicting => {
                            self.state = State::Off;
                            return Some(index);
                        }
                        Body::None => State::Head(Vec::new()),
                        Body::Length(0) => State::Head(Vec::new()),
                        Body::Length(n) => State::Body(n),
                        Body::Chunked => State::ChunkSize(Vec::new()),
                        Body::Unknown => State::Off,
                    };
                }
                State::Body(remaining) => {
                    let n = usize::try_from(*remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                    *remaining -= n as u64;
                    bytes = &bytes[n..];
                    if *remaining == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) | State::Trailer(line) => {
                    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(bytes);
                        if line.len() > MAX_LINE {
                            self.state = State::Off;
                        }
                        return None;
                    };
                    line.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    self.state = match &self.state {
                        State::ChunkSize(line) => match chunk_size(line) {
                            Some(0) => State::Trailer(Vec::new()),
                            Some(size) => State::ChunkData(size.saturating_add(2)),
                            None => State::Off,
                        },
                        // An empty line ends the trailer section, and the message.
                        State::Trailer(line) if matches!(&line[..], b"" | b"\r") => {
                            State::Head(Vec::new())
                        }
                        _ => State::Trailer(Vec::new()),
                    };
                }
                State::ChunkData(remaining) => {
                    let n = usize::try_from(*remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                    *remaining -= n as u64;
                    bytes = &bytes[n..];
                    if *remaining == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
            }
        }
        None
    }
}

/// Where a head ends (just past its empty line), if `bytes` holds its end: an LF followed by
/// an LF, or by CR LF (httparse accepts bare LF line ends, as hyper does).
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).enumerate().find_map(|(i, w)| match w {
        [b'\n', b'\n'] => Some(i + 2),
        [b'\n', b'\r'] if bytes.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

enum Body {
    None,
    Length(u64),
    Chunked,
    /// Both `Content-Length` and `Transfer-Encoding`.
    Conflicting,
    /// Anything this tracker does not follow.
    Unknown,
}

/// How the request whose head is `head` frames its body, by the rules hyper applies.
fn body_framing(head: &[u8]) -> Body {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return Body::Unknown;
    }
    if request.method == Some("CONNECT") {
        return Body::Unknown;
    }
    let (mut length, mut chunked, mut has_length, mut has_te) = (None, false, false, false);
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            return Body::Unknown;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            has_length = true;
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                return Body::Unknown;
            };
            if length.is_some_and(|l| l != n) {
                return Body::Unknown;
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            // Only the last coding counts: hyper refuses a request whose last is not chunked.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    match (has_length, has_te) {
        (true, true) => Body::Conflicting,
        (false, true) if chunked => Body::Chunked,
        (false, true) => Body::Unknown,
        (true, false) => length.map_or(Body::Unknown, Body::Length),
        (false, false) => Body::None,
    }
}

/// The size on a chunk-size line (hex digits, then optional `;extensions`, then the line end).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    if !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
    const POST: &[u8] =
        b"POST /v1/ledgers/a/records HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\n\r\n{\"a\":\"\r\n\r\n\"}";
    const CHUNKED: &[u8] = b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n";
    const BOTH: &[u8] =
        b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    const BOTH_TE_FIRST: &[u8] =
        b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n";

    /// Feeds `stream` split into pieces of `size` bytes; returns every flagged index.
    fn flagged(stream: &[u8], size: usize) -> Vec<u64> {
        let mut framing = Framing::new();
        stream
            .chunks(size)
            .filter_map(|piece| framing.feed(piece))
            .collect()
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn a_request_with_both_length_headers_is_found_at_its_index_however_the_reads_split() {
        for both in [BOTH, BOTH_TE_FIRST] {
            let stream = cat(&[GET, POST, CHUNKED, b"\r\n", both]);
            for size in 1..=stream.len() {
                assert_eq!(flagged(&stream, size), vec![3], "pieces of {size}");
            }
        }
    }

    #[test]
    fn ordinary_requests_are_followed_without_a_flag() {
        let stream = cat(&[POST, CHUNKED, GET, POST, GET]);
        for size in 1..=stream.len() {
            let mut framing = Framing::new();
            for piece in stream.chunks(size) {
                assert_eq!(framing.feed(piece), None, "pieces of {size}");
            }
            assert_eq!(framing.heads, 5, "pieces of {size}");
            assert!(matches!(&framing.state, State::Head(h) if h.is_empty()));
        }
    }

    #[test]
    fn a_body_that_looks_like_a_head_is_skipped_as_body() {
        let body = BOTH;
        let head = format!("POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let stream = cat(&[head.as_bytes(), body, GET]);
        let mut framing = Framing::new();
        assert_eq!(framing.feed(&stream), None);
        assert_eq!(framing.heads, 2);
    }

    #[test]
    fn bare_line_feeds_end_a_head_as_httparse_accepts_them() {
        let stream = b"GET / HTTP/1.1\nHost: a\n\nPOST /x HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n";
        assert_eq!(Framing::new().feed(stream), Some(1));
    }

    #[test]
    fn what_it_cannot_follow_it_stops_following() {
        for stream in [
            &b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let mut framing = Framing::new();
            framing.feed(stream);
            assert!(matches!(framing.state, State::Off), "{stream:?}");
            assert_eq!(framing.feed(BOTH), None);
        }
    }

    #[test]
    fn a_head_larger_than_hyper_accepts_stops_the_tracker_and_keeps_no_more() {
        let mut framing = Framing::new();
        framing.feed(b"GET / HTTP/1.1\r\n");
        let filler = vec![b'a'; 64 * 1024];
        for _ in 0..10 {
            framing.feed(&filler);
        }
        assert!(matches!(framing.state, State::Off));
    }
}
