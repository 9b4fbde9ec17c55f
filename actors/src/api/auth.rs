//! The cluster secret, proved without sending it: every internal API
//! connection opens with a mutual challenge-response. Each side sends a
//! fresh random nonce; each proves it knows the secret with an HMAC-SHA256
//! over its role and both nonces, checked in constant time. A recorded
//! exchange is worthless: the other side's nonce is new every time. Pure:
//! no I/O.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const NONCE_LEN: usize = 32;

/// The shared secret (empty: none set, and then only loopback is served).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(none)" } else { "Secret(..)" })
    }
}

/// Who is proving: the two proofs of one handshake differ, so neither can
/// be reflected back as the other.
#[derive(Clone, Copy)]
pub enum Role {
    /// The side that connected.
    Caller,
    /// The side that accepted.
    Answerer,
}

impl Secret {
    pub fn new(secret: &str) -> Self {
        Secret(secret.as_bytes().to_vec())
    }

    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    fn mac(&self, role: Role, own: &[u8], other: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(match role {
            Role::Caller => b"kai caller",
            Role::Answerer => b"kai answerer",
        });
        mac.update(own);
        mac.update(other);
        mac
    }

    /// The proof `role` sends: over its own nonce, then the other side's.
    pub fn prove(&self, role: Role, own: &[u8], other: &[u8]) -> Vec<u8> {
        self.mac(role, own, other).finalize().into_bytes().to_vec()
    }

    /// Whether `proof` came from a holder of this secret, as `role`.
    pub fn verify(&self, role: Role, own: &[u8], other: &[u8], proof: &[u8]) -> bool {
        self.mac(role, own, other).verify_slice(proof).is_ok()
    }
}

/// A fresh random nonce.
pub fn nonce() -> Vec<u8> {
    use rand::RngCore;
    let mut n = vec![0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_and_the_same_nonces_verify() {
        let (s, other) = (Secret::new("open sesame"), Secret::new("open barley"));
        let (a, b) = (nonce(), nonce());
        let proof = s.prove(Role::Caller, &a, &b);
        assert!(s.verify(Role::Caller, &a, &b, &proof));
        assert!(!other.verify(Role::Caller, &a, &b, &proof), "another secret");
        assert!(!Secret::default().verify(Role::Caller, &a, &b, &proof), "no secret");
        assert!(!s.verify(Role::Caller, &a, &nonce(), &proof), "a fresh nonce: a replay fails");
        assert!(!s.verify(Role::Answerer, &a, &b, &proof), "a proof cannot be reflected as the other role");
        assert!(!s.verify(Role::Caller, &a, &b, &proof[..16]), "a truncated proof");
        assert_ne!(a, b);
    }
}
