//! Counting a quorum: pure, so its rules are tested without actors.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TallyState {
    Waiting,
    Met,
    /// Too many replicas failed for the quorum ever to be met.
    Failed,
}

/// Replies from a request's replicas. Not every replica need be asked at
/// once (a read asks R first): those not asked yet still count as able to
/// answer, so a quorum is out of reach only once too many have failed.
#[derive(Debug, Clone)]
pub struct QuorumTally {
    needed: usize,
    replicas: usize,
    asked: usize,
    ok: usize,
    failed: usize,
}

impl QuorumTally {
    pub fn new(needed: usize, replicas: usize) -> Self {
        QuorumTally { needed, replicas, asked: 0, ok: 0, failed: 0 }
    }

    /// One more replica asked; answers its index, none if all were.
    pub fn ask(&mut self) -> Option<usize> {
        (self.asked < self.replicas).then(|| {
            self.asked += 1;
            self.asked - 1
        })
    }

    /// One more replica may be asked (a fallback for one that failed).
    pub fn add_replica(&mut self) {
        self.replicas += 1;
    }

    pub fn asked_all(&self) -> bool {
        self.asked == self.replicas
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
        } else if self.replicas - self.failed < self.needed {
            TallyState::Failed
        } else {
            TallyState::Waiting
        }
    }

    /// Every replica asked has replied.
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

    fn all_asked(needed: usize, replicas: usize) -> QuorumTally {
        let mut t = QuorumTally::new(needed, replicas);
        while t.ask().is_some() {}
        t
    }

    #[test]
    fn met_after_enough_oks() {
        let mut t = all_asked(2, 3);
        assert_eq!(t.ok(), TallyState::Waiting);
        assert_eq!(t.fail(), TallyState::Waiting);
        assert_eq!(t.ok(), TallyState::Met);
        assert!(t.all_in());
    }

    #[test]
    fn failed_as_soon_as_the_quorum_is_out_of_reach() {
        let mut t = all_asked(2, 3);
        assert_eq!(t.fail(), TallyState::Waiting);
        assert_eq!(t.fail(), TallyState::Failed);
        assert!(!t.all_in());
    }

    #[test]
    fn asking_fewer_than_needed_fails_at_once() {
        assert_eq!(QuorumTally::new(2, 1).state(), TallyState::Failed);
        assert_eq!(QuorumTally::new(1, 1).state(), TallyState::Waiting);
    }

    #[test]
    fn replicas_not_asked_yet_keep_the_quorum_in_reach() {
        let mut t = QuorumTally::new(2, 3);
        assert_eq!((t.ask(), t.ask()), (Some(0), Some(1)));
        assert_eq!(t.ok(), TallyState::Waiting);
        assert_eq!(t.fail(), TallyState::Waiting, "the third can still answer");
        assert!(t.all_in() && !t.asked_all());
        assert_eq!(t.ask(), Some(2));
        assert!(!t.all_in() && t.asked_all());
        assert_eq!(t.ask(), None);
        assert_eq!(t.ok(), TallyState::Met);
        assert!(t.all_in());
    }

    #[test]
    fn a_fallback_added_before_a_failure_keeps_the_quorum_in_reach() {
        let mut t = all_asked(2, 2);
        assert_eq!(t.ok(), TallyState::Waiting);
        t.add_replica();
        assert_eq!(t.fail(), TallyState::Waiting, "the fallback can still answer");
        assert_eq!(t.ask(), Some(2));
        assert_eq!(t.ok(), TallyState::Met);
        assert!(t.all_in());
    }
}
