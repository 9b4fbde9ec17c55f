//! Counting a quorum: pure, so its rules are tested without actors.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TallyState {
    Waiting,
    Met,
    /// Too many replicas failed for the quorum ever to be met.
    Failed,
}

#[derive(Debug, Clone)]
pub struct QuorumTally {
    needed: usize,
    asked: usize,
    ok: usize,
    failed: usize,
}

impl QuorumTally {
    pub fn new(needed: usize, asked: usize) -> Self {
        QuorumTally { needed, asked, ok: 0, failed: 0 }
    }

    pub fn ok(&mut self) -> TallyState {
        self.ok += 1;
        self.state()
    }

    pub fn fail(&mut self) -> TallyState {
        self.failed += 1;
        self.state()
    }

    pub fn state(&self) -> TallyState {
        if self.ok >= self.needed {
            TallyState::Met
        } else if self.asked - self.failed < self.needed {
            TallyState::Failed
        } else {
            TallyState::Waiting
        }
    }

    pub fn all_in(&self) -> bool {
        self.ok + self.failed >= self.asked
    }

    pub fn oks(&self) -> usize {
        self.ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn met_after_enough_oks() {
        let mut t = QuorumTally::new(2, 3);
        assert_eq!(t.ok(), TallyState::Waiting);
        assert_eq!(t.fail(), TallyState::Waiting);
        assert_eq!(t.ok(), TallyState::Met);
        assert!(t.all_in());
    }

    #[test]
    fn failed_as_soon_as_the_quorum_is_out_of_reach() {
        let mut t = QuorumTally::new(2, 3);
        assert_eq!(t.fail(), TallyState::Waiting);
        assert_eq!(t.fail(), TallyState::Failed);
        assert!(!t.all_in());
    }

    #[test]
    fn asking_fewer_than_needed_fails_at_once() {
        assert_eq!(QuorumTally::new(2, 1).state(), TallyState::Failed);
        assert_eq!(QuorumTally::new(1, 1).state(), TallyState::Waiting);
    }
}
