//! hatrunk-sip: SIP on the wire. Knows nothing of trunks.
//!
//! rsip 0.4 cannot frame streams, does not expand compact names or unfold headers, rejects unknown
//! methods and valid escapes; so messages are framed, normalised and parsed here (RFC 3261 section 7
//! and 25), and held against the RFC 4475 torture messages (see `docs/decisions.md`).
//!
//! # Layout
//! - [`message`]: the message model (start line, ordered headers, body) and serialisation.
//! - [`parse`]: bytes -> message, with normalisation and the checks that earn a 400.
//! - [`headers`]: typed views of the headers a proxy reads (Via, name-addr, CSeq, URI).
//! - [`framing`]: Content-Length framing on streams, size limits.
//! - [`transaction`]: RFC 3261 section 17 client and server transactions, pure, timers as values,
//!   and the typed server-transaction key ([`transaction::TxKey`]).
//! - [`build`]: what a stateful proxy writes itself: responses, ACK and CANCEL, error replies, the
//!   stateless refusal, the `received`/`rport` stamp.
//! - [`transport`]: UDP, TCP and TLS sockets on tokio, behind one handle (streams in `transport/stream.rs`).
//! - [`standing`]: whether a queue stands late (CoDel's test), for refusing new requests when behind.
//! - [`digest`]: digest authentication (RFC 7616 / 2617), done by hand.
//! - [`uas`]: the answers of a minimal PBX, for the demo and the benchmarks.

pub mod build;
pub mod digest;
pub mod error;
pub mod framing;
pub mod headers;
pub mod message;
pub mod parse;
pub mod standing;
pub mod transaction;
pub mod transport;
pub mod uas;

pub use error::SipError;
pub use message::{Method, SipMessage, StartLine};
