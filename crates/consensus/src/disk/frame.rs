//! The store file's bytes: a header, then frames `[len u32][crc32 u32][seq u64, ops]`, little-endian.
//!
//! A frame is one atomic batch of writes. Its CRC covers the sequence number and the ops, and the
//! sequence numbers of a file run without a gap, so reading stops at the first frame that a crash
//! tore, left as zeros or left out (a later frame that reached the disk before an earlier one is
//! not taken): what is read is always the writes of a prefix of the batches.

use serde::{Deserialize, Serialize};

/// "hatrunk Raft store", then the format version.
pub const MAGIC: &[u8; 8] = b"HTRKRAFT";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 12;
const FRAME_HEAD: usize = 8;

/// One write of a batch: `value` None removes the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub space: u8,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

pub fn header() -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&VERSION.to_le_bytes());
    h
}

/// Why a file's header is not one this release reads.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err("it does not start with a hatrunk Raft store header".into());
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[8..12]);
    match u32::from_le_bytes(v) {
        VERSION => Ok(()),
        n => Err(format!("it is in store format {n}, and this release reads format {VERSION}: run the release that wrote it")),
    }
}

pub fn encode(seq: u64, ops: &[Op]) -> Result<Vec<u8>, String> {
    let body = bincode::serialize(&(seq, ops)).map_err(|e| e.to_string())?;
    let len = u32::try_from(body.len()).map_err(|_| format!("a batch of {} bytes is too large for one frame", body.len()))?;
    let mut out = Vec::with_capacity(FRAME_HEAD + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// A frame read back: its sequence number, its ops, and the offset just after it.
pub struct Decoded {
    pub seq: u64,
    pub ops: Vec<Op>,
    pub end: usize,
}

/// The frame at `at`, or None where the valid frames end (short, torn, zeroed or damaged).
pub fn decode(bytes: &[u8], at: usize) -> Option<Decoded> {
    let head = bytes.get(at..at.checked_add(FRAME_HEAD)?)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 {
        return None; // never written: a hole reads as zeros, and the CRC of nothing is zero
    }
    let end = at.checked_add(FRAME_HEAD)?.checked_add(len)?;
    let body = bytes.get(at + FRAME_HEAD..end)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    use bincode::Options;
    let opts = bincode::DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes().with_limit(len as u64);
    let (seq, ops): (u64, Vec<Op>) = opts.deserialize(body).ok()?;
    Some(Decoded { seq, ops, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(k: u8) -> Op {
        Op { space: 0, key: vec![k], value: Some(vec![k; 3]) }
    }

    #[test]
    fn a_frame_reads_back_and_any_damage_ends_the_read() {
        let f = encode(7, &[op(1), op(2)]).expect("encode");
        let d = decode(&f, 0).expect("decode");
        assert_eq!((d.seq, d.ops.len(), d.end), (7, 2, f.len()));
        for cut in 0..f.len() {
            assert!(decode(&f[..cut], 0).is_none(), "a frame torn at {cut} must not read");
        }
        for i in 0..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad, 0).is_none(), "a flipped bit at {i} was not caught");
        }
        assert!(decode(&[0u8; 64], 0).is_none(), "zeros are not a frame");
    }

    #[test]
    fn headers_of_other_files_and_formats_are_refused() {
        assert!(check_header(&header()).is_ok());
        assert!(check_header(b"short").is_err());
        let mut newer = header();
        newer[8] = 2;
        assert!(check_header(&newer).expect_err("newer").contains("format 2"));
    }
}
