//! bincode with a size limit for everything that crosses the network: bincode 1's plain
//! `deserialize` trusts length prefixes, so a hostile 8-byte prefix could ask for gigabytes.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest payload accepted from a peer (a snapshot of many trunks fits comfortably).
pub const LIMIT: u64 = 64 * 1024 * 1024;

fn opts() -> impl Options {
    // the same wire format as `bincode::serialize` (fixed-width integers), plus the limit
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes().with_limit(LIMIT)
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, bincode::Error> {
    opts().serialize(v)
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, bincode::Error> {
    opts().deserialize(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostile_length_prefix_is_refused_not_allocated() {
        let evil = u64::MAX.to_le_bytes();
        assert!(super::decode::<Vec<u8>>(&evil).is_err());
        let v = vec![1u8, 2, 3];
        assert_eq!(super::decode::<Vec<u8>>(&super::encode(&v).expect("enc")).expect("dec"), v);
    }
}
