//! The request head keel writes and the response head it reads (RFC 9112).

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};

use super::HttpError;
use super::decode::Framing;

/// Most header fields a response head may have.
const MAX_HEADERS: usize = 100;

/// How the request body's length is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLength {
    /// `Content-Length: n` (or nothing for an empty body of a method that has none).
    Known(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Writes a request head: request line, `headers`, the body's length, the blank line.
pub(crate) fn write_request(out: &mut Vec<u8>, method: &Method, target: &str, headers: &HeaderMap, body: BodyLength) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(if target.is_empty() { b"/" } else { target.as_bytes() });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match body {
        // A GET, HEAD or similar without a body says nothing about one, as clients do.
        BodyLength::Known(0) if !expects_body(method) => {}
        BodyLength::Known(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        BodyLength::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Methods whose requests normally carry a body, so an empty one is said with `Content-Length: 0`.
fn expects_body(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::CONNECT | Method::TRACE)
}

/// A whole response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    /// Its bytes (taken off the buffer).
    pub(crate) length: usize,
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    /// How the body that follows ends.
    pub(crate) framing: Framing,
    /// The connection may carry another request after this answer.
    pub(crate) keep_alive: bool,
}

/// Parses a response head at the start of `bytes`, for a request made with `method`: `None`
/// until it is complete.
pub(crate) fn parse_response(bytes: &[u8], method: &Method) -> Result<Option<ResponseHead>, HttpError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let length = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::Protocol("more than 100 header fields")),
        Err(_) => return Err(HttpError::Protocol("the response head is not HTTP/1.1")),
    };
    let code = parsed.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| HttpError::Protocol("the status code is not one"))?;
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HttpError::Protocol("a header name is not valid"))?;
        let value =
            HeaderValue::from_bytes(field.value).map_err(|_| HttpError::Protocol("a header value is not valid"))?;
        headers.append(name, value);
    }
    let framing = framing(status, method, &headers)?;
    let keep_alive = framing != Framing::UntilClose && keeps_alive(version, &headers);
    Ok(Some(ResponseHead { length, status, version, headers, framing, keep_alive }))
}

/// How the body of a response ends (RFC 9112 §6.3).
fn framing(status: StatusCode, method: &Method, headers: &HeaderMap) -> Result<Framing, HttpError> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Chunked when it is the last coding; any other last coding runs until the close.
        let last = headers.get_all(header::TRANSFER_ENCODING).iter().next_back();
        let chunked = last
            .and_then(|value| value.to_str().ok())
            .and_then(|codings| codings.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked { Framing::Chunked } else { Framing::UntilClose });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().unwrap_or_default().split(',') {
            let parsed: u64 =
                part.trim().parse().map_err(|_| HttpError::Protocol("the Content-Length is not a number"))?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(HttpError::Protocol("two different Content-Length values"));
            }
            length = Some(parsed);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// Whether the server keeps the connection open after the answer.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers.get_all(header::CONNECTION).iter().any(|value| {
            value.to_str().unwrap_or_default().split(',').any(|listed| listed.trim().eq_ignore_ascii_case(token))
        })
    };
    match version {
        Version::HTTP_11 => !has("close"),
        _ => has("keep-alive"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

    use super::*;

    fn parse(text: &str) -> ResponseHead {
        parse_response(text.as_bytes(), &Method::POST).unwrap().unwrap()
    }

    #[test]
    fn request_heads_say_the_body_length_as_clients_do() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:11434"));
        let mut out = Vec::new();
        write_request(&mut out, &Method::POST, "/api/chat", &headers, BodyLength::Known(12));
        assert_eq!(out, b"POST /api/chat HTTP/1.1\r\nhost: 127.0.0.1:11434\r\ncontent-length: 12\r\n\r\n");
        out.clear();
        write_request(&mut out, &Method::GET, "/api/tags", &headers, BodyLength::Known(0));
        assert_eq!(out, b"GET /api/tags HTTP/1.1\r\nhost: 127.0.0.1:11434\r\n\r\n");
        out.clear();
        write_request(&mut out, &Method::POST, "", &HeaderMap::new(), BodyLength::Chunked);
        assert_eq!(out, b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
    }

    #[test]
    fn response_heads_give_status_headers_framing_and_keep_alive() {
        let head = parse("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(
            (head.status, head.framing, head.keep_alive, head.length),
            (StatusCode::OK, Framing::Length(5), true, 70)
        );
        assert_eq!(head.headers["content-type"], "application/json");
        let chunked = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(chunked.framing, Framing::Chunked);
        let close = parse("HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!close.keep_alive);
        let until_close = parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!((until_close.framing, until_close.keep_alive), (Framing::UntilClose, false));
        let kept = parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(kept.keep_alive);
        assert_eq!(parse("HTTP/1.1 204 No Content\r\n\r\n").framing, Framing::Empty);
        assert_eq!(parse("HTTP/1.1 100 Continue\r\n\r\n").framing, Framing::Empty);
        let head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", &Method::HEAD).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Empty);
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", &Method::GET).unwrap().is_none());
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        ] {
            assert!(matches!(parse_response(bad, &Method::GET), Err(HttpError::Protocol(_))), "{bad:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let head = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(parse_response(head.as_bytes(), &Method::GET), Err(HttpError::Protocol(_))));
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the head parser.
        #[test]
        fn arbitrary_heads_never_panic(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse_response(&input, &Method::GET);
        }
    }
}
