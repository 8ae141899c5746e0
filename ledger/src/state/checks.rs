//! Checks an entry passes before it changes anything: quorum and cosigners, keys, roles,
//! texts and sizes, exact arithmetic.

use super::*;

/// Quorum needed under `params`: the parameter, capped at the number of active stewards.
pub(super) fn quorum_for(params: &Params, members: &[Member]) -> u32 {
    let stewards = members
        .iter()
        .filter(|m| m.active && m.role == Role::Steward)
        .count() as u32;
    params.steward_quorum.min(stewards).max(1)
}

pub(super) fn check_cosigners(
    members: &[Member],
    needed: u32,
    deferred: &mut Option<Vec<Pending>>,
    e: &Entry,
    msg: &[u8],
) -> Result<(), Reject> {
    {
        let u = &e.unsigned;
        if !u.body.needs_quorum() {
            if e.cosigners.is_empty() {
                return Ok(());
            }
            return Err(Reject::UnexpectedCosigners {
                kind: u.body.kind_name(),
            });
        }
        let mut signers = vec![u.author];
        for (m, sig) in &e.cosigners {
            if signers.contains(m) {
                return Err(Reject::DuplicateCosigner(*m));
            }
            let member = members
                .get(m.0 as usize)
                .filter(|x| x.active && x.role == Role::Steward)
                .ok_or(Reject::CosignerNotSteward(*m))?;
            if !check_signature(deferred, &member.vk, msg, sig) {
                return Err(Reject::BadCosignature(*m));
            }
            signers.push(*m);
        }
        let got = signers.len() as u32;
        if got < needed {
            return Err(Reject::NoQuorum {
                kind: u.body.kind_name(),
                needed,
                got,
            });
        }
        Ok(())
    }
}

pub(super) fn usable_key(key: &[u8; 32]) -> Result<VerifyingKey, Reject> {
    let vk = VerifyingKey::from_bytes(key).map_err(|_| Reject::BadKey)?;
    if vk.is_weak() {
        return Err(Reject::BadKey);
    }
    Ok(vk)
}

pub(super) fn check_role(role: Role, body: &Body) -> Result<(), Reject> {
    let ok = match body {
        Body::Genesis { .. } => false,
        Body::Admit { .. }
        | Body::Revoke { .. }
        | Body::PoolGrant { .. }
        | Body::PoolExpiry { .. }
        | Body::ParamChange { .. } => role == Role::Steward,
        Body::RotateKey { .. } => true,
        Body::Claim { .. } | Body::Attest { .. } | Body::Contest { .. } | Body::Transfer { .. } => {
            role != Role::Controller
        }
        Body::MeterCredit { .. } => role == Role::Controller,
        Body::DemurrageEpoch => role != Role::Member,
    };
    if ok {
        Ok(())
    } else {
        Err(Reject::RoleForbidden {
            role: role.name(),
            kind: body.kind_name(),
        })
    }
}

pub(super) fn check_text(field: &'static str, text: &str) -> Result<(), Reject> {
    if text.len() > MAX_BYTES {
        return Err(Reject::BadField {
            field,
            why: format!("{} bytes is over the limit of {MAX_BYTES}", text.len()),
        });
    }
    Ok(())
}

pub(super) fn check_name(field: &'static str, text: &str) -> Result<(), Reject> {
    check_text(field, text)?;
    if text.trim().is_empty() {
        return Err(Reject::BadField {
            field,
            why: "must not be empty".into(),
        });
    }
    Ok(())
}

pub(super) fn check_sizes(body: &Body) -> Result<(), Reject> {
    match body {
        Body::Genesis {
            site, founder_name, ..
        } => {
            check_name("site", site)?;
            check_text("founder name", founder_name)
        }
        Body::Admit { name, .. } => check_name("name", name),
        Body::Revoke { reason, .. } => check_text("reason", reason),
        Body::Claim { description, .. } => check_name("description", description),
        Body::Contest { reason, .. } => check_text("reason", reason),
        Body::Transfer { memo, .. } => check_text("memo", memo),
        Body::PoolGrant { decision, .. }
        | Body::PoolExpiry { decision, .. }
        | Body::ParamChange { decision, .. } => check_name("decision", decision),
        Body::RotateKey { .. } | Body::Attest { .. } | Body::DemurrageEpoch => Ok(()),
        Body::MeterCredit { source, .. } => check_text("source", source),
    }
}

/// A receiving account: known, active, not the controller.
pub(super) fn holder(members: &[Member], m: MemberId) -> Result<&Member, Reject> {
    let member = members.get(m.0 as usize).ok_or(Reject::UnknownMember(m))?;
    if !member.active {
        return Err(Reject::RevokedMember(m));
    }
    if member.role == Role::Controller {
        return Err(Reject::ControllerAccount(m));
    }
    Ok(member)
}

pub(super) fn mul_div(a: i128, b: i128, div: i128, what: &'static str) -> Result<i64, Reject> {
    a.checked_mul(b)
        .map(|n| n / div)
        .and_then(|n| i64::try_from(n).ok())
        .ok_or(Reject::Overflow(what))
}
