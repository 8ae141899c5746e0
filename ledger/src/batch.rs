//! Batch verification of the signatures of a stored log, for fast replays.
//!
//! Checks `[8](-(Σ zᵢsᵢ)B + Σ zᵢRᵢ + Σ zᵢkᵢAᵢ) = 0` with 128-bit weights `zᵢ` derived from a hash
//! committing to every signature and challenge of the batch (no randomness, so the crate stays
//! pure). Each `R` must decompress and not be of small order, each `s` must be canonical, as in
//! strict verification. The equation is the cofactored one, so a batch can accept a signature
//! that single strict verification rejects only if its own key holder crafted a mixed-order `R`;
//! every entry was strictly verified when appended, and any failed batch makes the replay start
//! again with strict single verification, which says exactly which entry is wrong.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

/// Signatures per batch.
pub(crate) const BATCH: usize = 256;

/// One signature waiting for the batch check.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub(crate) key: EdwardsPoint,
    pub(crate) key_bytes: [u8; 32],
    pub(crate) message: Vec<u8>,
    pub(crate) signature: [u8; 64],
}

/// Whether every signature of the batch is valid (see the module docs).
pub(crate) fn verify_batch(items: &[Pending]) -> bool {
    if items.is_empty() {
        return true;
    }
    let mut parsed = Vec::with_capacity(items.len());
    let mut seed = Sha512::new();
    for it in items {
        let mut r_bytes = [0_u8; 32];
        r_bytes.copy_from_slice(&it.signature[..32]);
        let mut s_bytes = [0_u8; 32];
        s_bytes.copy_from_slice(&it.signature[32..]);
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else {
            return false;
        };
        if r.is_small_order() || it.key.is_small_order() {
            return false;
        }
        let s: Option<Scalar> = Scalar::from_canonical_bytes(s_bytes).into();
        let Some(s) = s else {
            return false;
        };
        let h: [u8; 64] = Sha512::new()
            .chain_update(r_bytes)
            .chain_update(it.key_bytes)
            .chain_update(&it.message)
            .finalize()
            .into();
        let k = Scalar::from_bytes_mod_order_wide(&h);
        seed.update(it.signature);
        seed.update(h);
        parsed.push((r, s, k, it.key));
    }
    let seed: [u8; 64] = seed.finalize().into();
    let mut scalars = Vec::with_capacity(2 * parsed.len() + 1);
    let mut points = Vec::with_capacity(2 * parsed.len() + 1);
    let mut b = Scalar::ZERO;
    for (i, (r, s, k, a)) in parsed.into_iter().enumerate() {
        let w: [u8; 64] = Sha512::new()
            .chain_update(seed)
            .chain_update((i as u64).to_be_bytes())
            .finalize()
            .into();
        let mut z_bytes = [0_u8; 32];
        z_bytes[..16].copy_from_slice(&w[..16]);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        b -= z * s;
        scalars.push(z);
        points.push(r);
        scalars.push(z * k);
        points.push(a);
    }
    scalars.push(b);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn items(n: u8) -> Vec<Pending> {
        (0..n)
            .map(|i| {
                let key = SigningKey::from_bytes(&[i.wrapping_add(1); 32]);
                let message = vec![i; 40 + usize::from(i)];
                Pending {
                    key: key.verifying_key().to_edwards(),
                    key_bytes: key.verifying_key().to_bytes(),
                    signature: key.sign(&message).to_bytes(),
                    message,
                }
            })
            .collect()
    }

    #[test]
    fn valid_batches_pass_and_any_single_alteration_fails() {
        let good = items(20);
        assert!(verify_batch(&good));
        for i in [0, 7, 19] {
            let mut bad = items(20);
            bad[i].message[0] ^= 1;
            assert!(!verify_batch(&bad), "altered message {i}");
            let mut bad = items(20);
            bad[i].signature[40] ^= 1;
            assert!(!verify_batch(&bad), "altered signature {i}");
            let mut bad = items(20);
            bad.swap(i, (i + 1) % 20);
            bad[i].key = bad[(i + 1) % 20].key;
            bad[i].key_bytes = bad[(i + 1) % 20].key_bytes;
            assert!(!verify_batch(&bad), "wrong key {i}");
        }
    }
}
