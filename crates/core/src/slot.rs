//! A call's claim on its trunk's pool. Named `<node>/<Call-ID>/<From tag>`: unique per call across
//! the cluster (the From tag tells apart two calls a carrier gave the same Call-ID), and the node
//! that admitted it comes first. A type of its own so a slot is never passed where a trunk id, a
//! node name or a Call-ID is meant; on the wire and on disk it is the plain string it always was.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SlotId(String);

impl SlotId {
    /// The slot of the call `call_id` (From tag `from_tag`) admitted by `node`.
    pub fn new(node: &str, call_id: &str, from_tag: &str) -> SlotId {
        SlotId(format!("{node}/{call_id}/{from_tag}"))
    }

    /// The second slot a call takes while its attempt `n`, given up on, may still be answered.
    pub fn second(&self, n: usize) -> SlotId {
        SlotId(format!("{}~{n}", self.0))
    }

    /// The calls-per-second token the call takes before its slot (`cps`).
    pub fn token(&self) -> SlotId {
        SlotId(format!("{}#cps", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Drop spare capacity (an answered call keeps its slot for minutes).
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_node_call_and_tag_and_the_plain_string_on_the_wire() {
        let s = SlotId::new("n1", "abc@h", "t9");
        assert_eq!(s.as_str(), "n1/abc@h/t9");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"n1/abc@h/t9\"");
    }
}
