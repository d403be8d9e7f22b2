//! Cutting a byte stream (TCP, later TLS) into SIP messages by Content-Length (RFC 3261 section 18.3),
//! with a size limit so a peer cannot make us buffer without bound.

use bytes::{Buf, BytesMut};

use crate::error::SipError;

/// Largest message we accept on any transport (UDP datagrams are bounded by the socket buffer too).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Take the next complete message off the front of `buf`, if there is one. Leading CRLFs (RFC 5626
/// keep-alives) are consumed. `Err` means the stream is unusable and the connection should close.
pub fn next_frame(buf: &mut BytesMut) -> Result<Option<BytesMut>, SipError> {
    let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    buf.advance(skip);
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_MESSAGE {
            return Err(SipError::TooLarge { limit: MAX_MESSAGE });
        }
        return Ok(None);
    };
    let body_len = content_length(&buf[..head_end])?;
    // saturating: a Content-Length near usize::MAX must not wrap into a small frame (found by fuzzing,
    // fuzz/regressions/sip/crash-5194a174...)
    let total = body_len.saturating_add(head_end + 4);
    if total > MAX_MESSAGE {
        return Err(SipError::TooLarge { limit: MAX_MESSAGE });
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(buf.split_to(total)))
}

/// Content-Length (or its compact form `l`) from a head; required on streams.
fn content_length(head: &[u8]) -> Result<usize, SipError> {
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = std::str::from_utf8(trim(&line[colon + 1..])).map_err(|_| SipError::bad("Content-Length"))?;
            return v.parse::<usize>().map_err(|_| SipError::bad(format!("Content-Length {v:?}")));
        }
    }
    Err(SipError::bad("Content-Length is required on streams"))
}

fn trim(s: &[u8]) -> &[u8] {
    let a = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let b = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(a, |i| i + 1);
    &s[a..b]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_length_near_the_integer_limit_is_too_large_not_a_wrap() {
        let mut b = BytesMut::from(&b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 18446744073709551615\r\n\r\nxyz"[..]);
        assert!(matches!(next_frame(&mut b), Err(SipError::TooLarge { .. })));
    }

    #[test]
    fn frames_back_to_back_messages_split_anywhere() {
        let one = b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabc";
        let two = b"\r\n\r\nBYE sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let all: Vec<u8> = [&one[..], &two[..]].concat();
        for cut in 0..all.len() {
            let mut buf = BytesMut::from(&all[..cut]);
            let mut got = vec![];
            while let Ok(Some(f)) = next_frame(&mut buf) {
                got.push(f);
            }
            buf.extend_from_slice(&all[cut..]);
            while let Ok(Some(f)) = next_frame(&mut buf) {
                got.push(f);
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(&got[0][..], &one[..]);
        }
    }

    #[test]
    fn limits_and_missing_length() {
        let mut buf = BytesMut::from(&vec![b'a'; MAX_MESSAGE + 1][..]);
        assert!(next_frame(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n"[..]);
        assert!(next_frame(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"OPTIONS sip:a SIP/2.0\r\nl: 999999\r\n\r\n"[..]);
        assert!(matches!(next_frame(&mut buf), Err(SipError::TooLarge { .. })));
    }
}
