//! Signed entries: the kinds, their canonical encoding, domain-separated signing and ids.
//!
//! The signed message is `len("communalia-ledger/v1") || site || unsigned entry`, all
//! length-prefixed, so an entry signed for one site is invalid on another. An entry's id is the
//! SHA-256 of that message. Steward co-signatures (quorum) sign the same message.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::amount::Millis;
use crate::codec::{DecodeError, Reader, Writer};
use crate::day::Day;
use crate::params::Params;

/// Domain-separation tag of every signed message.
pub const DOMAIN: &[u8] = b"communalia-ledger/v1";
/// Version byte of the encoded entry.
pub const FORMAT_VERSION: u8 = 1;
/// Most co-signatures one entry may carry.
pub const MAX_COSIGNERS: usize = 64;

/// A 32-byte SHA-256 hash: entry ids, evidence, log chain links.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    pub fn of(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Hash> {
        let v = unhex(text.trim())?;
        <[u8; 32]>::try_from(v).ok().map(Hash)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses hexadecimal (either case); `None` on odd length or a non-hex digit.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(2) {
        return None;
    }
    let val = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    t.chunks(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

/// A member's number on this site, assigned in order of admission (the founder is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u32);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a member may sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Claims, attestations, contests, transfers, key rotation.
    Member,
    /// A member who also takes part in quorums (admission, revocation, pool, parameters).
    Steward,
    /// The site controller: meter credits and demurrage epochs only; holds no Communs.
    Controller,
}

impl Role {
    fn code(self) -> u8 {
        match self {
            Role::Member => 1,
            Role::Steward => 2,
            Role::Controller => 3,
        }
    }
    fn from_code(c: u8) -> Option<Role> {
        match c {
            1 => Some(Role::Member),
            2 => Some(Role::Steward),
            3 => Some(Role::Controller),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Steward => "steward",
            Role::Controller => "controller",
        }
    }
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "member" => Some(Role::Member),
            "steward" => Some(Role::Steward),
            "controller" => Some(Role::Controller),
            _ => None,
        }
    }
}

/// What a metered energy contribution was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MeterKind {
    /// A member's flexible load ran in declared surplus hours instead of scarce ones.
    Shifted,
    /// A member's battery or PV gave energy to the commons on dispatch.
    Given,
}

impl MeterKind {
    fn code(self) -> u8 {
        match self {
            MeterKind::Shifted => 1,
            MeterKind::Given => 2,
        }
    }
    fn from_code(c: u8) -> Option<MeterKind> {
        match c {
            1 => Some(MeterKind::Shifted),
            2 => Some(MeterKind::Given),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            MeterKind::Shifted => "shifted",
            MeterKind::Given => "given",
        }
    }
}

/// What an entry does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The first entry of a site's log: names the site, sets the parameters, admits the founding
    /// steward (member #0, the author) with `founder_key`.
    Genesis {
        site: String,
        params: Params,
        founder_key: [u8; 32],
        founder_name: String,
    },
    /// Admit a new member with a key and a role (steward quorum).
    Admit {
        key: [u8; 32],
        role: Role,
        name: String,
    },
    /// Revoke a member (steward quorum): they can no longer sign or receive.
    Revoke { member: MemberId, reason: String },
    /// The author replaces their own key (signed with the old key).
    RotateKey { new_key: [u8; 32] },
    /// A human contribution: `minutes` of work benefiting `beneficiary`, paid at the
    /// maintenance rate once attested. Evidence is stored by hash only.
    Claim {
        beneficiary: MemberId,
        minutes: u32,
        description: String,
        evidence: Hash,
    },
    /// The author attests an open claim (or a contested meter credit).
    Attest { claim: Hash },
    /// The author contests an open claim (it then needs more attestations) or a meter credit
    /// still within its contest window (it becomes a claim needing attestations).
    Contest { target: Hash, reason: String },
    /// The controller credits a measured energy contribution (watt-hours).
    MeterCredit {
        member: MemberId,
        kind: MeterKind,
        wh: u64,
        /// What earned it, in words (the load and the hours, e.g. "washer_amani 09:00-10:00");
        /// empty in entries made before the controller said so. Kept short: never a curve.
        source: String,
    },
    /// The author gives Communs to another member.
    Transfer {
        to: MemberId,
        amount: Millis,
        memo: String,
    },
    /// The controller (or a steward) records that demurrage was computed up to the entry's date.
    DemurrageEpoch,
    /// The pool pays a member (steward quorum, citing an assembly decision).
    PoolGrant {
        to: MemberId,
        amount: Millis,
        decision: String,
    },
    /// Communs leave the pool for good (steward quorum, citing an assembly decision).
    PoolExpiry { amount: Millis, decision: String },
    /// New parameters from a future day (steward quorum, citing an assembly decision).
    ParamChange {
        params: Params,
        effective: Day,
        decision: String,
    },
}

impl Body {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Body::Genesis { .. } => "genesis",
            Body::Admit { .. } => "admit",
            Body::Revoke { .. } => "revoke",
            Body::RotateKey { .. } => "rotate-key",
            Body::Claim { .. } => "claim",
            Body::Attest { .. } => "attest",
            Body::Contest { .. } => "contest",
            Body::MeterCredit { .. } => "meter-credit",
            Body::Transfer { .. } => "transfer",
            Body::DemurrageEpoch => "demurrage-epoch",
            Body::PoolGrant { .. } => "pool-grant",
            Body::PoolExpiry { .. } => "pool-expiry",
            Body::ParamChange { .. } => "param-change",
        }
    }

    /// Whether the entry needs a steward quorum (co-signatures).
    pub fn needs_quorum(&self) -> bool {
        matches!(
            self,
            Body::Admit { .. }
                | Body::Revoke { .. }
                | Body::PoolGrant { .. }
                | Body::PoolExpiry { .. }
                | Body::ParamChange { .. }
        )
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Body::Genesis {
                site,
                params,
                founder_key,
                founder_name,
            } => {
                w.u8(0);
                w.str(site);
                params.encode(w);
                w.fixed(founder_key);
                w.str(founder_name);
            }
            Body::Admit { key, role, name } => {
                w.u8(1);
                w.fixed(key);
                w.u8(role.code());
                w.str(name);
            }
            Body::Revoke { member, reason } => {
                w.u8(2);
                w.u32(member.0);
                w.str(reason);
            }
            Body::RotateKey { new_key } => {
                w.u8(3);
                w.fixed(new_key);
            }
            Body::Claim {
                beneficiary,
                minutes,
                description,
                evidence,
            } => {
                w.u8(4);
                w.u32(beneficiary.0);
                w.u32(*minutes);
                w.str(description);
                w.fixed(&evidence.0);
            }
            Body::Attest { claim } => {
                w.u8(5);
                w.fixed(&claim.0);
            }
            Body::Contest { target, reason } => {
                w.u8(6);
                w.fixed(&target.0);
                w.str(reason);
            }
            // Kind 7 is a credit without a source (the encoding of the first logs, unchanged, so
            // their signatures still verify); kind 13 the same followed by its source.
            Body::MeterCredit {
                member,
                kind,
                wh,
                source,
            } => {
                w.u8(if source.is_empty() { 7 } else { 13 });
                w.u32(member.0);
                w.u8(kind.code());
                w.u64(*wh);
                if !source.is_empty() {
                    w.str(source);
                }
            }
            Body::Transfer { to, amount, memo } => {
                w.u8(8);
                w.u32(to.0);
                w.i64(amount.0);
                w.str(memo);
            }
            Body::DemurrageEpoch => w.u8(9),
            Body::PoolGrant {
                to,
                amount,
                decision,
            } => {
                w.u8(10);
                w.u32(to.0);
                w.i64(amount.0);
                w.str(decision);
            }
            Body::PoolExpiry { amount, decision } => {
                w.u8(11);
                w.i64(amount.0);
                w.str(decision);
            }
            Body::ParamChange {
                params,
                effective,
                decision,
            } => {
                w.u8(12);
                params.encode(w);
                w.i32(effective.0);
                w.str(decision);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Body, DecodeError> {
        let at = r.err("");
        let kind = r.u8("entry kind")?;
        Ok(match kind {
            0 => Body::Genesis {
                site: r.string("site name")?,
                params: Params::decode(r)?,
                founder_key: r.array("founder key")?,
                founder_name: r.string("founder name")?,
            },
            1 => Body::Admit {
                key: r.array("member key")?,
                role: {
                    let c = r.u8("role")?;
                    Role::from_code(c).ok_or_else(|| r.err(format!("unknown role code {c}")))?
                },
                name: r.string("member name")?,
            },
            2 => Body::Revoke {
                member: MemberId(r.u32("member")?),
                reason: r.string("reason")?,
            },
            3 => Body::RotateKey {
                new_key: r.array("new key")?,
            },
            4 => Body::Claim {
                beneficiary: MemberId(r.u32("beneficiary")?),
                minutes: r.u32("minutes")?,
                description: r.string("description")?,
                evidence: Hash(r.array("evidence hash")?),
            },
            5 => Body::Attest {
                claim: Hash(r.array("claim id")?),
            },
            6 => Body::Contest {
                target: Hash(r.array("contested entry id")?),
                reason: r.string("reason")?,
            },
            7 | 13 => Body::MeterCredit {
                member: MemberId(r.u32("member")?),
                kind: {
                    let c = r.u8("meter kind")?;
                    MeterKind::from_code(c)
                        .ok_or_else(|| r.err(format!("unknown meter kind code {c}")))?
                },
                wh: r.u64("watt-hours")?,
                source: if kind == 13 {
                    let s = r.string("source")?;
                    if s.is_empty() {
                        // An empty source is written as kind 7: one meaning, one encoding.
                        return Err(r.err("a meter credit of kind 13 has an empty source"));
                    }
                    s
                } else {
                    String::new()
                },
            },
            8 => Body::Transfer {
                to: MemberId(r.u32("recipient")?),
                amount: Millis(r.i64("amount")?),
                memo: r.string("memo")?,
            },
            9 => Body::DemurrageEpoch,
            10 => Body::PoolGrant {
                to: MemberId(r.u32("recipient")?),
                amount: Millis(r.i64("amount")?),
                decision: r.string("decision")?,
            },
            11 => Body::PoolExpiry {
                amount: Millis(r.i64("amount")?),
                decision: r.string("decision")?,
            },
            12 => Body::ParamChange {
                params: Params::decode(r)?,
                effective: Day(r.i32("effective day")?),
                decision: r.string("decision")?,
            },
            k => {
                return Err(DecodeError {
                    offset: at.offset,
                    what: format!("unknown entry kind {k}"),
                });
            }
        })
    }
}

/// The signed part of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsigned {
    pub author: MemberId,
    /// The author's sequence number: 1 for their first entry, then previous + 1.
    pub seq: u64,
    /// The id of the author's previous entry (zero for their first).
    pub prev: Hash,
    /// The day the entry takes effect; never earlier than the log's current day.
    pub date: Day,
    pub body: Body,
}

impl Unsigned {
    fn encode(&self, w: &mut Writer) {
        w.u8(FORMAT_VERSION);
        w.u32(self.author.0);
        w.u64(self.seq);
        w.fixed(&self.prev.0);
        w.i32(self.date.0);
        self.body.encode(w);
    }

    /// The exact bytes signed for `site`: domain tag, site name, then the entry.
    pub fn message(&self, site: &str) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(DOMAIN);
        w.str(site);
        self.encode(&mut w);
        w.buf
    }

    /// Signs with the author's key.
    pub fn sign(self, site: &str, key: &SigningKey) -> Entry {
        let signature = key.sign(&self.message(site)).to_bytes();
        Entry {
            unsigned: self,
            signature,
            cosigners: Vec::new(),
        }
    }
}

/// A signed entry, possibly with steward co-signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub unsigned: Unsigned,
    pub signature: [u8; 64],
    /// Other stewards' signatures over the same message, for quorum entries.
    pub cosigners: Vec<(MemberId, [u8; 64])>,
}

impl Entry {
    /// Adds a steward's co-signature.
    pub fn cosign(&mut self, site: &str, member: MemberId, key: &SigningKey) {
        let sig = key.sign(&self.unsigned.message(site)).to_bytes();
        self.cosigners.push((member, sig));
    }

    /// The entry's id for `site`: SHA-256 of the signed message.
    pub fn id(&self, site: &str) -> Hash {
        Hash::of(&self.unsigned.message(site))
    }

    /// The canonical encoding (stored in the log, sent over HTTP).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.unsigned.encode(&mut w);
        w.fixed(&self.signature);
        // At most MAX_COSIGNERS on decode; the ledger refuses more on append.
        w.u32(u32::try_from(self.cosigners.len()).unwrap_or(u32::MAX));
        for (m, s) in &self.cosigners {
            w.u32(m.0);
            w.fixed(s);
        }
        w.buf
    }

    /// Decodes the canonical encoding; never panics, says where and what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8("format version")?;
        if v != FORMAT_VERSION {
            return Err(DecodeError {
                offset: 0,
                what: format!("unknown format version {v} (expected {FORMAT_VERSION})"),
            });
        }
        let unsigned = Unsigned {
            author: MemberId(r.u32("author")?),
            seq: r.u64("sequence number")?,
            prev: Hash(r.array("previous entry id")?),
            date: Day(r.i32("date")?),
            body: Body::decode(&mut r)?,
        };
        let signature = r.array("signature")?;
        let n = r.u32("co-signature count")? as usize;
        if n > MAX_COSIGNERS {
            return Err(r.err(format!(
                "{n} co-signatures is over the limit of {MAX_COSIGNERS}"
            )));
        }
        let mut cosigners = Vec::with_capacity(n);
        for _ in 0..n {
            cosigners.push((MemberId(r.u32("co-signer")?), r.array("co-signature")?));
        }
        r.finish()?;
        Ok(Entry {
            unsigned,
            signature,
            cosigners,
        })
    }
}
