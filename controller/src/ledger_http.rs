//! HTTP endpoints of the Communs ledger under `/api/ledger/`: reads are open (local network),
//! writes are signed entries, checked completely before they are stored.
//!
//! - `GET  /api/ledger/balances[?as_of=YYYY-MM-DD]`: every account and the pool, the meter
//!   credits still in their contest window (`pending_credits`, with the day each posts) and the
//!   claims waiting for attestations (`open_claims`).
//! - `GET  /api/ledger/history[?member=N][&limit=N]`: the log, newest last.
//! - `GET  /api/ledger/members`: members, roles, public keys, sequence numbers.
//! - `GET  /api/ledger/verify[?full=true]`: status (full: re-verify from genesis).
//! - `POST /api/ledger/entries`: a signed entry, either its canonical bytes
//!   (`application/octet-stream`), JSON `{"entry_hex": "..."}`, or the entry as JSON
//!   (`{"author", "seq", "prev", "date", "kind", "body", "signature", "cosigners"}`, bodies as in
//!   `history`). `200` with the position and id, or `400` with `{"error": "..."}` saying what is
//!   wrong.
//!
//! Mount with `Router::merge(ledger_http::router(api))`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use communalia_ledger::entry::{hex, unhex};
use communalia_ledger::{Body, Day, Event, Ledger, LedgerError, MemberId, Store, verify};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What the ledger endpoints share: the ledger and a clock for "today".
pub struct LedgerApi<S: Store> {
    pub ledger: Arc<Mutex<Ledger<S>>>,
    /// Today's date (the controller reads the clock; tests pass a fixed day).
    pub today: Arc<dyn Fn() -> Day + Send + Sync>,
}

impl<S: Store> Clone for LedgerApi<S> {
    fn clone(&self) -> Self {
        LedgerApi {
            ledger: self.ledger.clone(),
            today: self.today.clone(),
        }
    }
}

/// The `/api/ledger/` routes.
pub fn router<S: Store + Send + 'static>(api: LedgerApi<S>) -> Router {
    Router::new()
        .route("/api/ledger/balances", get(balances::<S>))
        .route("/api/ledger/history", get(history::<S>))
        .route("/api/ledger/members", get(members::<S>))
        .route("/api/ledger/verify", get(verify_status::<S>))
        .route("/api/ledger/entries", axum::routing::post(post_entry::<S>))
        .with_state(api)
}

/// The API's one error shape (as `http::error`): `{"status": N, "error": "sentence"}`.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let body = json!({ "status": status.as_u16(), "error": msg.into() });
    (status, axum::Json(body)).into_response()
}

/// Runs `f` on the ledger on a blocking thread: SQLite writes fsync and a full `verify`
/// takes seconds, which must not hold an async worker the control cycle shares. A lock left
/// poisoned by a panic is taken over (every append is one transaction; the state is whole).
async fn with_ledger<S: Store + Send + 'static>(
    api: LedgerApi<S>,
    f: impl FnOnce(&mut Ledger<S>) -> Response + Send + 'static,
) -> Response {
    tokio::task::spawn_blocking(move || {
        let mut l = api
            .ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut l)
    })
    .await
    .unwrap_or_else(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ledger task failed: {e}"),
        )
    })
}

#[derive(Deserialize)]
struct BalancesQuery {
    as_of: Option<String>,
}

#[derive(Serialize)]
struct AccountJson {
    member: u32,
    name: String,
    role: &'static str,
    active: bool,
    balance: String,
    balance_millis: i64,
}

async fn balances<S: Store + Send + 'static>(
    State(api): State<LedgerApi<S>>,
    Query(q): Query<BalancesQuery>,
) -> Response {
    let as_of = match q.as_of.as_deref().map(Day::parse).transpose() {
        Ok(d) => d.unwrap_or_else(|| (api.today)()),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("as_of: {e}")),
    };
    with_ledger(api, move |l| {
    // What is earned but not yet posted: meter credits in their contest window, claims
    // waiting for attestations (as the books stand on `as_of`).
    let books = l.books_as_of(as_of).ok().flatten();
    let name = |m: MemberId| l.state().member(m).map_or_else(String::new, |x| x.name.clone());
    let pending: Vec<_> = books.iter().flat_map(|b| &b.pending_credits).map(|c| json!({
        "member": c.member.0,
        "name": name(c.member),
        "amount": communalia_ledger::Millis(c.amount).to_string(),
        "amount_millis": c.amount,
        "matures": c.matures.to_string(),
        "credit": c.id.to_hex(),
    })).collect();
    let claims: Vec<_> = books.iter().flat_map(|b| &b.open_claims).map(|(id, c)| json!({
        "claim": id.to_hex(),
        "claimant": c.claimant.0,
        "beneficiary": c.beneficiary.0,
        "name": name(c.beneficiary),
        "description": l.log().iter().find(|e| e.id == *id).and_then(|e| match &e.entry.unsigned.body {
            Body::Claim { description, .. } => Some(description.clone()),
            _ => None,
        }),
        "amount": communalia_ledger::Millis(c.amount).to_string(),
        "attestations": c.attesters.len(),
        "needed": c.needed,
        "expires": c.expires.to_string(),
    })).collect();
    match l.balances(Some(as_of)) {
        Ok(Some(b)) => axum::Json(json!({
            "pending_credits": pending,
            "open_claims": claims,
            "as_of": b.as_of.to_string(),
            "pool": b.pool.to_string(),
            "pool_millis": b.pool.0,
            "issued_millis": b.issued.0,
            "expired_millis": b.expired.0,
            "accounts": b.rows.iter().filter(|r| r.role != communalia_ledger::Role::Controller).map(|r| AccountJson {
                member: r.member.0,
                name: r.name.clone(),
                role: r.role.name(),
                active: r.active,
                balance: r.balance.to_string(),
                balance_millis: r.balance.0,
            }).collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "the ledger is empty"),
        // A date the ledger refuses (too far ahead, before it began) is the caller's error.
        Err(e @ LedgerError::Rejected(_)) => error(StatusCode::BAD_REQUEST, format!("as_of: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    })
    .await
}

#[derive(Deserialize)]
struct HistoryQuery {
    member: Option<u32>,
    limit: Option<usize>,
}

fn body_json(b: &Body) -> serde_json::Value {
    match b {
        Body::Genesis { site, .. } => json!({ "site": site }),
        Body::Admit { key, role, name } => {
            json!({ "public_key": hex(key), "role": role.name(), "name": name })
        }
        Body::Revoke { member, reason } => json!({ "member": member.0, "reason": reason }),
        Body::RotateKey { new_key } => json!({ "new_key": hex(new_key) }),
        Body::Claim {
            beneficiary,
            minutes,
            description,
            evidence,
        } => {
            json!({ "beneficiary": beneficiary.0, "minutes": minutes, "description": description, "evidence": evidence.to_hex() })
        }
        Body::Attest { claim } => json!({ "claim": claim.to_hex() }),
        Body::Contest { target, reason } => json!({ "target": target.to_hex(), "reason": reason }),
        Body::MeterCredit {
            member,
            kind,
            wh,
            source,
        } => {
            json!({ "member": member.0, "kind": kind.name(), "wh": wh, "source": source })
        }
        Body::Transfer { to, amount, memo } => {
            json!({ "to": to.0, "amount": amount.to_string(), "memo": memo })
        }
        Body::DemurrageEpoch => json!({}),
        Body::PoolGrant {
            to,
            amount,
            decision,
        } => json!({ "to": to.0, "amount": amount.to_string(), "decision": decision }),
        Body::PoolExpiry { amount, decision } => {
            json!({ "amount": amount.to_string(), "decision": decision })
        }
        Body::ParamChange {
            effective,
            decision,
            ..
        } => json!({ "effective": effective.to_string(), "decision": decision }),
    }
}

fn event_json(e: &Event) -> serde_json::Value {
    match e {
        Event::Demurrage { day, total } => {
            json!({ "event": "demurrage", "day": day.to_string(), "total": total.to_string() })
        }
        Event::ParamsEffective { day } => {
            json!({ "event": "params_effective", "day": day.to_string() })
        }
        Event::ClaimPosted {
            claim,
            beneficiary,
            to_member,
            to_pool,
        } => {
            json!({ "event": "claim_posted", "claim": claim.to_hex(), "beneficiary": beneficiary.0, "to_member": to_member.to_string(), "to_pool": to_pool.to_string() })
        }
        Event::ClaimExpired { claim } => {
            json!({ "event": "claim_expired", "claim": claim.to_hex() })
        }
        Event::CreditPosted {
            credit,
            member,
            to_member,
            to_pool,
        } => {
            json!({ "event": "credit_posted", "credit": credit.to_hex(), "member": member.0, "to_member": to_member.to_string(), "to_pool": to_pool.to_string() })
        }
        Event::CreditContested { credit } => {
            json!({ "event": "credit_contested", "credit": credit.to_hex() })
        }
    }
}

async fn history<S: Store + Send + 'static>(
    State(api): State<LedgerApi<S>>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    with_ledger(api, move |l| {
        let all = l.history(q.member.map(MemberId));
        let limit = q.limit.unwrap_or(200).min(10_000);
        let skip = all.len().saturating_sub(limit);
        let rows: Vec<_> = all[skip..]
            .iter()
            .map(|e| {
                let u = &e.entry.unsigned;
                json!({
                    "index": e.index,
                    "id": e.id.to_hex(),
                    "date": u.date.to_string(),
                    "author": u.author.0,
                    "seq": u.seq,
                    "kind": u.body.kind_name(),
                    "body": body_json(&u.body),
                    "cosigners": e.entry.cosigners.iter().map(|(m, _)| m.0).collect::<Vec<_>>(),
                    "events": e.events.iter().map(event_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        axum::Json(json!({ "entries": rows })).into_response()
    })
    .await
}

async fn members<S: Store + Send + 'static>(State(api): State<LedgerApi<S>>) -> Response {
    with_ledger(api, move |l| {
        let rows: Vec<_> = l
            .state()
            .members()
            .iter()
            .map(|m| {
                json!({
                    "member": m.id.0,
                    "name": m.name,
                    "role": m.role.name(),
                    "active": m.active,
                    "public_key": hex(&m.key),
                    "seq": m.seq,
                    "last": m.last.to_hex(),
                })
            })
            .collect();
        axum::Json(json!({ "site": l.site(), "members": rows })).into_response()
    })
    .await
}

#[derive(Deserialize)]
struct VerifyQuery {
    full: Option<bool>,
}

async fn verify_status<S: Store + Send + 'static>(
    State(api): State<LedgerApi<S>>,
    Query(q): Query<VerifyQuery>,
) -> Response {
    with_ledger(api, move |l| {
    let conservation = l.state().books().map(|b| b.conservation());
    let conserved = conservation.is_none_or(|(held, net)| held == net);
    let mut out = json!({
        "site": l.site(),
        "entries": l.log().len(),
        "head": l.head().to_hex(),
        "verified_at_open": true,
        "conservation_ok": conserved,
    });
    if q.full.unwrap_or(false) {
        match verify(l.store(), l.site()) {
            Ok(r) => {
                out["full"] = json!({ "ok": r.ok(), "valid_entries": r.valid_entries, "problems": r.problems });
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    axum::Json(out).into_response()
    })
    .await
}

/// A field of a JSON entry, with its path for error messages.
fn field<'a>(
    v: &'a serde_json::Value,
    path: &str,
    key: &str,
) -> Result<&'a serde_json::Value, String> {
    v.get(key).ok_or_else(|| format!("{path}{key}: missing"))
}

fn str_field(v: &serde_json::Value, path: &str, key: &str) -> Result<String, String> {
    field(v, path, key)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{path}{key}: expected a string"))
}

fn u64_field(v: &serde_json::Value, path: &str, key: &str) -> Result<u64, String> {
    field(v, path, key)?
        .as_u64()
        .ok_or_else(|| format!("{path}{key}: expected a non-negative integer"))
}

fn u32_field(v: &serde_json::Value, path: &str, key: &str) -> Result<u32, String> {
    u32::try_from(u64_field(v, path, key)?).map_err(|_| format!("{path}{key}: too large"))
}

fn bytes_field<const N: usize>(
    v: &serde_json::Value,
    path: &str,
    key: &str,
) -> Result<[u8; N], String> {
    let text = str_field(v, path, key)?;
    unhex(text.trim())
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .ok_or_else(|| format!("{path}{key}: expected {} hex digits", 2 * N))
}

fn amount_field(
    v: &serde_json::Value,
    path: &str,
    key: &str,
) -> Result<communalia_ledger::Millis, String> {
    communalia_ledger::Millis::parse(&str_field(v, path, key)?)
        .map_err(|e| format!("{path}{key}: {e}"))
}

/// Parses the JSON form of a signed entry:
/// `{"author", "seq", "prev", "date", "kind", "body": {...}, "signature", "cosigners": [{"member", "signature"}]}`
/// with bodies as in `GET /api/ledger/history`. Genesis and parameter changes only travel in the
/// canonical encoding.
fn entry_from_json(v: &serde_json::Value) -> Result<communalia_ledger::Entry, String> {
    use communalia_ledger::{Hash, MeterKind, Role, Unsigned};
    let date = Day::parse(&str_field(v, "", "date")?).map_err(|e| format!("date: {e}"))?;
    let kind = str_field(v, "", "kind")?;
    let b = field(v, "", "body")?;
    let p = "body.";
    let body = match kind.as_str() {
        "admit" => Body::Admit {
            key: bytes_field(b, p, "public_key")?,
            role: Role::parse(&str_field(b, p, "role")?)
                .ok_or("body.role: expected member, steward or controller")?,
            name: str_field(b, p, "name")?,
        },
        "revoke" => Body::Revoke {
            member: MemberId(u32_field(b, p, "member")?),
            reason: str_field(b, p, "reason")?,
        },
        "rotate-key" => Body::RotateKey {
            new_key: bytes_field(b, p, "new_key")?,
        },
        "claim" => Body::Claim {
            beneficiary: MemberId(u32_field(b, p, "beneficiary")?),
            minutes: u32_field(b, p, "minutes")?,
            description: str_field(b, p, "description")?,
            evidence: Hash(bytes_field(b, p, "evidence")?),
        },
        "attest" => Body::Attest {
            claim: Hash(bytes_field(b, p, "claim")?),
        },
        "contest" => Body::Contest {
            target: Hash(bytes_field(b, p, "target")?),
            reason: str_field(b, p, "reason")?,
        },
        "meter-credit" => Body::MeterCredit {
            member: MemberId(u32_field(b, p, "member")?),
            kind: match str_field(b, p, "kind")?.as_str() {
                "shifted" => MeterKind::Shifted,
                "given" => MeterKind::Given,
                other => return Err(format!("body.kind: {other:?} is not shifted or given")),
            },
            wh: u64_field(b, p, "wh")?,
            source: str_field(b, p, "source").unwrap_or_default(),
        },
        "transfer" => Body::Transfer {
            to: MemberId(u32_field(b, p, "to")?),
            amount: amount_field(b, p, "amount")?,
            memo: str_field(b, p, "memo").unwrap_or_default(),
        },
        "demurrage-epoch" => Body::DemurrageEpoch,
        "pool-grant" => Body::PoolGrant {
            to: MemberId(u32_field(b, p, "to")?),
            amount: amount_field(b, p, "amount")?,
            decision: str_field(b, p, "decision")?,
        },
        "pool-expiry" => Body::PoolExpiry {
            amount: amount_field(b, p, "amount")?,
            decision: str_field(b, p, "decision")?,
        },
        other => {
            return Err(format!(
                "kind: {other:?} cannot be posted as JSON (genesis and param-change: use the canonical encoding)"
            ));
        }
    };
    let mut cosigners = Vec::new();
    if let Some(list) = v.get("cosigners") {
        let list = list.as_array().ok_or("cosigners: expected an array")?;
        for (i, c) in list.iter().enumerate() {
            let path = format!("cosigners[{}].", i + 1);
            cosigners.push((
                MemberId(u32_field(c, &path, "member")?),
                bytes_field(c, &path, "signature")?,
            ));
        }
    }
    Ok(communalia_ledger::Entry {
        unsigned: Unsigned {
            author: MemberId(u32_field(v, "", "author")?),
            seq: u64_field(v, "", "seq")?,
            prev: Hash(bytes_field(v, "", "prev")?),
            date,
            body,
        },
        signature: bytes_field(v, "", "signature")?,
        cosigners,
    })
}

async fn post_entry<S: Store + Send + 'static>(
    State(api): State<LedgerApi<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes = if is_json {
        let v: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
        };
        if let Some(h) = v.get("entry_hex") {
            match h.as_str().and_then(|t| unhex(t.trim())) {
                Some(b) => b,
                None => return error(StatusCode::BAD_REQUEST, "entry_hex: not hexadecimal"),
            }
        } else {
            match entry_from_json(&v) {
                Ok(e) => e.encode(),
                Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
            }
        }
    } else {
        body.to_vec()
    };
    with_ledger(api, move |l| match l.append_bytes(&bytes) {
        Ok(r) => axum::Json(json!({
            "index": r.index,
            "id": r.id.to_hex(),
            "events": r.events.iter().map(event_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e @ (LedgerError::Rejected(_) | LedgerError::Decode(_))) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })
    .await
}
