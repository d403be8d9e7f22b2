//! Round-robin selection: a counter per decision point, advanced once per choice.

/// A round-robin cursor. Deterministic: the n-th call picks `n mod len`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundRobin {
    next: u64,
}

impl RoundRobin {
    /// The index to use out of `len` choices (0 when there are none), advancing the cursor.
    pub fn pick(&mut self, len: usize) -> usize {
        if len == 0 {
            return 0;
        }
        let i = (self.next % len as u64) as usize;
        self.next = self.next.wrapping_add(1);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_evenly() {
        let mut rr = RoundRobin::default();
        let picks: Vec<usize> = (0..6).map(|_| rr.pick(2)).collect();
        assert_eq!(picks, vec![0, 1, 0, 1, 0, 1]);
        assert_eq!(rr.pick(0), 0);
    }
}
