//! How often one request may be sent again after its server died (issue
//! 11: "clients see supervision as one re-lookup and retry"; the bound is
//! gaps, session 19).
//!
//! A call that failed because its server died is resent to the successor
//! the name service registered when nothing can be done twice: the kernel
//! proved no receiver took it ([`Fate::NotTaken`], `NotDelivered`), or it
//! was taken but the request is idempotent ([`Fate::MaybeTaken`],
//! `PeerDied`). It is never resent when the call moved handles (the failed
//! call closed them). A successor can itself die before it takes the
//! request (a supervision test kills servers back to back), so one resend
//! is not always enough; every resend is still safe, since each failed
//! one is decided again by the same rule. [`Resends`] lets a request
//! follow the registration while it keeps changing, each resend to a
//! strictly newer instance than the last attempt's, at most
//! [`MAX_RESENDS`] times: a server that keeps dying ends the loop.

/// What the kernel said about the failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// No receiver ever took it (`NotDelivered`): it cannot have acted.
    NotTaken,
    /// A receiver took it and died (`PeerDied`): it may have acted.
    MaybeTaken,
}

/// The most times one request is sent again.
pub const MAX_RESENDS: u32 = 4;

/// One request's resends so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resends {
    /// The registration instance the last attempt went to.
    instance: u64,
    /// Resends made.
    count: u32,
}

impl Resends {
    /// A request first sent to registration `instance`.
    pub const fn new(instance: u64) -> Self {
        Resends { instance, count: 0 }
    }

    /// Resends made so far.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// After a failed attempt (`fate`), with the successor registration
    /// `successor` found: whether to send the request again (to it). Yes
    /// only if the request may be resent at all (`idempotent` for a taken
    /// one, no handles moved), the successor is newer than the last
    /// attempt's instance, and fewer than [`MAX_RESENDS`] were made.
    /// Counts the resend when it says yes.
    pub fn again(
        &mut self,
        fate: Fate,
        idempotent: bool,
        moved_handles: bool,
        successor: u64,
    ) -> bool {
        let allowed = !moved_handles && (fate == Fate::NotTaken || idempotent);
        if !allowed || successor <= self.instance || self.count >= MAX_RESENDS {
            return false;
        }
        self.instance = successor;
        self.count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_never_taken_follows_every_newer_instance_up_to_the_bound() {
        let mut r = Resends::new(1);
        for i in 0..MAX_RESENDS {
            assert!(r.again(Fate::NotTaken, false, false, 2 + u64::from(i)));
        }
        assert_eq!(r.count(), MAX_RESENDS);
        assert!(!r.again(Fate::NotTaken, false, false, 100));
    }

    #[test]
    fn a_resend_goes_only_to_a_newer_instance() {
        let mut r = Resends::new(5);
        assert!(!r.again(Fate::NotTaken, false, false, 5));
        assert!(!r.again(Fate::NotTaken, false, false, 4));
        assert!(r.again(Fate::NotTaken, false, false, 6));
        assert!(!r.again(Fate::NotTaken, false, false, 6));
        assert_eq!(r.count(), 1);
    }

    #[test]
    fn a_taken_request_is_resent_only_if_idempotent_and_never_with_moved_handles() {
        let mut r = Resends::new(1);
        assert!(!r.again(Fate::MaybeTaken, false, false, 2));
        assert!(r.again(Fate::MaybeTaken, true, false, 2));
        assert!(!r.again(Fate::NotTaken, false, true, 3));
        assert!(!r.again(Fate::MaybeTaken, true, true, 3));
        assert_eq!(r.count(), 1);
    }
}
