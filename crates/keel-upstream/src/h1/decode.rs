//! Message bodies as HTTP/1.1 frames them: a `Content-Length`, `Transfer-Encoding: chunked`, or
//! everything until the server closes the connection. A pure state machine over the bytes read
//! so far, so any split of the input decodes to the same data. keel's upstream connections read
//! answers with it, and keel's server reads request bodies with it.

use bytes::{Bytes, BytesMut};

use super::HttpError;

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

/// How a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (`HEAD`, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunks, ended by a zero-size chunk and the trailers.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// What the next step of decoding gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data.
    Data(Bytes),
    /// More bytes must be read first.
    NeedMore,
    /// The body is complete.
    End,
}

/// Where in a chunked body the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// Decodes one message body.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

impl Decoder {
    /// A decoder for a body framed so.
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// How many body bytes are still to come, when the framing says: a `Content-Length` body's
    /// rest, 0 once done.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(left) => Some(left),
            State::Done => Some(0),
            State::Chunked(_) | State::UntilClose => None,
        }
    }

    /// Takes the next piece of body out of `buffer` (the bytes read and not yet decoded).
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Decoded, HttpError> {
        loop {
            match &mut self.state {
                State::Done => return Ok(Decoded::End),
                State::UntilClose if buffer.is_empty() => return Ok(Decoded::NeedMore),
                State::UntilClose => return Ok(Decoded::Data(buffer.split().freeze())),
                State::Length(_) | State::Chunked(Chunk::Data(_)) if buffer.is_empty() => {
                    return Ok(Decoded::NeedMore);
                }
                State::Length(left) => {
                    let data = take(buffer, left);
                    if *left == 0 {
                        self.state = State::Done;
                    }
                    return Ok(Decoded::Data(data));
                }
                State::Chunked(Chunk::Data(left)) => {
                    let data = take(buffer, left);
                    if *left == 0 {
                        self.state = State::Chunked(Chunk::DataEnd);
                    }
                    return Ok(Decoded::Data(data));
                }
                State::Chunked(chunk) => match step(*chunk, buffer)? {
                    Some(State::Done) => self.state = State::Done,
                    Some(next) => self.state = next,
                    None => return Ok(Decoded::NeedMore),
                },
            }
        }
    }

    /// The server closed the connection: the end of an `UntilClose` body, an error otherwise.
    pub fn eof(&mut self) -> Result<(), HttpError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(HttpError::IncompleteBody),
        }
    }
}

/// Up to `left` bytes of the buffer, counted off `left`.
fn take(buffer: &mut BytesMut, left: &mut u64) -> Bytes {
    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buffer.len());
    *left -= n as u64;
    buffer.split_to(n).freeze()
}

/// One line-level step of a chunked body: the next state, or `None` until a whole line is there.
fn step(chunk: Chunk, buffer: &mut BytesMut) -> Result<Option<State>, HttpError> {
    let Some(line) = next_line(buffer)? else { return Ok(None) };
    Ok(Some(match chunk {
        Chunk::Size => match chunk_size(&line)? {
            0 => State::Chunked(Chunk::Trailers),
            size => State::Chunked(Chunk::Data(size)),
        },
        Chunk::DataEnd if line.is_empty() => State::Chunked(Chunk::Size),
        Chunk::DataEnd => return Err(HttpError::Protocol("a chunk is longer than its size says")),
        Chunk::Trailers if line.is_empty() => State::Done,
        Chunk::Trailers | Chunk::Data(_) => State::Chunked(chunk),
    }))
}

/// The next line of the buffer without its line end (CRLF, or a bare LF as lenient servers
/// send), taken out of the buffer; `None` until the line end has arrived.
fn next_line(buffer: &mut BytesMut) -> Result<Option<Bytes>, HttpError> {
    let Some(end) = memchr::memchr(b'\n', buffer) else {
        return if buffer.len() > MAX_LINE { Err(HttpError::Protocol("a chunk line is too long")) } else { Ok(None) };
    };
    let mut line = buffer.split_to(end + 1);
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line.freeze()))
}

/// The size of a chunk-size line (hex digits, then optional `;extensions`).
fn chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(HttpError::Protocol("a chunk size is not a hexadecimal number"));
    }
    let mut size = 0u64;
    for digit in digits {
        let value =
            (*digit as char).to_digit(16).ok_or(HttpError::Protocol("a chunk size is not a hexadecimal number"))?;
        size = size * 16 + u64::from(value);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

    use bytes::Buf;
    use proptest::prelude::*;

    use super::*;

    /// Decodes `input` fed in pieces split at `cuts`; the data, and whether it ended.
    fn decode_split(framing: Framing, input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool), HttpError> {
        let mut decoder = Decoder::new(framing);
        let mut buffer = BytesMut::new();
        let mut data = Vec::new();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        let mut fed = 0;
        for point in points {
            buffer.extend_from_slice(&input[fed..point]);
            fed = point;
            loop {
                match decoder.decode(&mut buffer)? {
                    Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok((data, true)),
                }
            }
        }
        Ok((data, decoder.is_done()))
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let body = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(decode_split(Framing::Chunked, body, &[]).unwrap(), (b"hello, world".to_vec(), true));
        // Bare LF line ends, as some servers write them.
        let body = b"3\nabc\n0\n\n";
        assert_eq!(decode_split(Framing::Chunked, body, &[]).unwrap(), (b"abc".to_vec(), true));
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for body in [&b"zz\r\nabc\r\n"[..], b"3\r\nabcd\r\n0\r\n\r\n", b"\r\n"] {
            assert!(matches!(decode_split(Framing::Chunked, body, &[]), Err(HttpError::Protocol(_))), "{body:?}");
        }
        let long = vec![b'1'; MAX_LINE + 1];
        assert!(decode_split(Framing::Chunked, &long, &[]).is_err());
    }

    #[test]
    fn a_length_body_ends_at_its_length_and_leaves_the_rest() {
        let mut decoder = Decoder::new(Framing::Length(3));
        let mut buffer = BytesMut::from(&b"abcHTTP/1.1"[..]);
        assert_eq!(decoder.decode(&mut buffer).unwrap(), Decoded::Data(Bytes::from_static(b"abc")));
        assert_eq!(decoder.decode(&mut buffer).unwrap(), Decoded::End);
        assert_eq!(&buffer[..], b"HTTP/1.1");
        buffer.advance(4);
        assert_eq!(&buffer[..], b"/1.1");
    }

    #[test]
    fn eof_ends_only_a_body_read_until_close() {
        assert!(Decoder::new(Framing::UntilClose).eof().is_ok());
        assert!(matches!(Decoder::new(Framing::Length(3)).eof(), Err(HttpError::IncompleteBody)));
        assert!(matches!(Decoder::new(Framing::Chunked).eof(), Err(HttpError::IncompleteBody)));
        assert!(Decoder::new(Framing::Empty).eof().is_ok());
    }

    proptest! {
        /// Any split of a chunked body decodes to the same data.
        #[test]
        fn any_split_of_a_chunked_body_decodes_the_same(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut body = Vec::new();
            for chunk in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let whole: Vec<u8> = chunks.concat();
            prop_assert_eq!(decode_split(Framing::Chunked, &body, &cuts).unwrap(), (whole, true));
        }

        /// Arbitrary bytes never panic the decoder, whatever the framing.
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..300), length in 0u64..400) {
            for framing in [Framing::Chunked, Framing::Length(length), Framing::UntilClose, Framing::Empty] {
                let _ = decode_split(framing, &input, &[7, 19]);
            }
        }
    }
}
