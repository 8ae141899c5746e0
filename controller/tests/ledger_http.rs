//! The `/api/ledger/` routes through tower's `oneshot`: reads, a signed entry accepted in both
//! encodings, and refusals with a 400 body saying what is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::Body as HttpBody;
use axum::http::{Request, StatusCode, header};
use communalia::ledger_http::{LedgerApi, router};
use communalia_ledger::entry::hex;
use communalia_ledger::fixtures::Village;
use communalia_ledger::{Body, Day, Hash, Ledger, MemStore, Millis, Params};
use tower::ServiceExt;

const SITE: &str = "http-village";

fn day0() -> Day {
    Day::parse("2026-07-01").unwrap()
}

fn setup() -> (axum::Router, Arc<Mutex<Ledger<MemStore>>>, Village) {
    let (mut l, v) =
        Village::found(MemStore::default(), SITE, 5, Params::default(), day0()).unwrap();
    v.traffic(&mut l, 60, day0()).unwrap();
    let ledger = Arc::new(Mutex::new(l));
    let api = LedgerApi {
        ledger: ledger.clone(),
        today: Arc::new(|| Day::parse("2026-07-20").unwrap()),
    };
    (router(api), ledger, v)
}

async fn call(app: &axum::Router, req: Request<HttpBody>) -> (StatusCode, serde_json::Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn get(uri: &str) -> Request<HttpBody> {
    Request::get(uri).body(HttpBody::empty()).unwrap()
}

#[tokio::test]
async fn reads_show_balances_members_history_and_status() {
    let (app, ledger, _) = setup();
    let (s, b) = call(&app, get("/api/ledger/balances?as_of=2026-07-20")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["as_of"], "2026-07-20");
    let expected = ledger
        .lock()
        .unwrap()
        .balances(Some(Day::parse("2026-07-20").unwrap()))
        .unwrap()
        .unwrap();
    assert_eq!(b["pool_millis"], expected.pool.0);
    assert_eq!(
        b["accounts"].as_array().unwrap().len(),
        3 + 5,
        "controller left out"
    );
    let (s, b) = call(&app, get("/api/ledger/balances?as_of=2026-13-01")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("as_of"), "{b}");
    let (_, b) = call(&app, get("/api/ledger/members")).await;
    assert_eq!(b["members"][3]["role"], "controller");
    let (_, b) = call(&app, get("/api/ledger/history?limit=5")).await;
    let entries = b["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[4]["index"], 60);
    let (_, b) = call(&app, get("/api/ledger/verify?full=true")).await;
    assert_eq!(b["full"]["ok"], true, "{b}");
    assert_eq!(b["entries"], 60);
}

#[tokio::test]
async fn signed_entries_are_accepted_and_bad_ones_refused_with_a_reason() {
    let (app, ledger, v) = setup();
    let claim = |seq_from: &Ledger<MemStore>| {
        seq_from
            .draft(
                Village::member(0),
                Day::parse("2026-07-20").unwrap(),
                Body::Claim {
                    beneficiary: Village::member(0),
                    minutes: 30,
                    description: "taught the solar class".into(),
                    evidence: Hash::ZERO,
                },
            )
            .unwrap()
            .sign(SITE, &v.members[0])
    };
    let e = claim(&ledger.lock().unwrap());
    let post = |bytes: Vec<u8>| {
        Request::post("/api/ledger/entries")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(HttpBody::from(bytes))
            .unwrap()
    };
    let (s, b) = call(&app, post(e.encode())).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["index"], 61);
    // The same entry again is a replay.
    let (s, b) = call(&app, post(e.encode())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("replay"), "{b}");
    // Signed for another site.
    let mut other = ledger
        .lock()
        .unwrap()
        .draft(
            Village::member(1),
            day0().plus(19).unwrap(),
            Body::DemurrageEpoch,
        )
        .unwrap();
    other.body = Body::Transfer {
        to: Village::member(2),
        amount: Millis(1),
        memo: String::new(),
    };
    let (s, b) = call(
        &app,
        post(other.clone().sign("elsewhere", &v.members[1]).encode()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("signature of author #5"),
        "{b}"
    );
    // Garbage bytes say where decoding failed.
    let (s, b) = call(&app, post(vec![1, 0, 0])).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("byte 1"), "{b}");
    // JSON form.
    let signed = other.sign(SITE, &v.members[1]);
    let req = Request::post("/api/ledger/entries")
        .header(header::CONTENT_TYPE, "application/json")
        .body(HttpBody::from(format!(
            "{{\"entry_hex\": \"{}\"}}",
            hex(&signed.encode())
        )))
        .unwrap();
    let (s, b) = call(&app, req).await;
    assert!(
        s == StatusCode::OK || b["error"].as_str().unwrap().contains("credit limit"),
        "{s} {b}"
    );
    let req = Request::post("/api/ledger/entries")
        .header(header::CONTENT_TYPE, "application/json")
        .body(HttpBody::from("{\"entry\": 1}"))
        .unwrap();
    let (s, b) = call(&app, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "date: missing", "{b}");
}

#[tokio::test]
async fn an_entry_can_be_posted_as_structured_json() {
    let (app, ledger, v) = setup();
    let date = Day::parse("2026-07-20").unwrap();
    let e = ledger
        .lock()
        .unwrap()
        .draft(
            Village::member(2),
            date,
            Body::Claim {
                beneficiary: Village::member(3),
                minutes: 45,
                description: "lent the ladder".into(),
                evidence: Hash::of(b"receipt"),
            },
        )
        .unwrap()
        .sign(SITE, &v.members[2]);
    let json = |amount_minutes: u64| {
        serde_json::json!({
            "author": e.unsigned.author.0,
            "seq": e.unsigned.seq,
            "prev": e.unsigned.prev.to_hex(),
            "date": "2026-07-20",
            "kind": "claim",
            "body": {
                "beneficiary": 7,
                "minutes": amount_minutes,
                "description": "lent the ladder",
                "evidence": Hash::of(b"receipt").to_hex(),
            },
            "signature": hex(&e.signature),
        })
    };
    let post = |v: serde_json::Value| {
        Request::post("/api/ledger/entries")
            .header(header::CONTENT_TYPE, "application/json")
            .body(HttpBody::from(v.to_string()))
            .unwrap()
    };
    // Tampered minutes: the signature no longer matches.
    let (s, b) = call(&app, post(json(46))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("signature of author #6"),
        "{b}"
    );
    let mut bad = json(45);
    bad["body"]["minutes"] = serde_json::json!("many");
    let (s, b) = call(&app, post(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "body.minutes: expected a non-negative integer");
    let (s, b) = call(&app, post(json(45))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["id"], e.id(SITE).to_hex());
}
