//! What the ledger subcommands share: opening the file, reading keys, members and dates from
//! the command line, appending by quorum, and the history as a person reads it.

use super::*;

/// Why there are no balances on `date`: it is before the ledger began.
pub(super) fn before_genesis<S: Store>(l: &Ledger<S>, date: Day) -> String {
    match l.log().first() {
        Some(g) => format!(
            "{date} is before the ledger began on {}",
            g.entry.unsigned.date
        ),
        None => "the ledger is empty".into(),
    }
}

/// Reads co-signing stewards' key files; each must be a member's current key.
/// Signs `body` with the signer's key and the co-signers' (each a member's) and appends it,
/// dated as the signer asks.
pub(super) fn append_by_quorum<S: Store>(
    l: &mut Ledger<S>,
    signer: &Signer,
    cosign: &[PathBuf],
    body: Body,
) -> anyhow::Result<communalia_ledger::Receipt> {
    let author = read_key(&signer.key)?;
    let cosigners = read_cosigners(l, cosign)?;
    let refs: Vec<&SigningKey> = cosigners.iter().collect();
    let date = date_or_today(signer.date.as_deref())?;
    Ok(l.quorum_append(&author, &refs, date, body)?)
}

pub(super) fn read_cosigners<S: Store>(
    l: &Ledger<S>,
    paths: &[PathBuf],
) -> anyhow::Result<Vec<SigningKey>> {
    paths
        .iter()
        .map(|p| {
            let k = read_key(p)?;
            l.member_for(&k)
                .with_context(|| format!("co-signer key {}", p.display()))?;
            Ok(k)
        })
        .collect()
}

/// The ledger parameters for an assembly's Communs rates (the controller's mapping from the
/// configuration to the ledger's own types). Both meter kinds use the per-kWh-shifted rate.
pub fn params_from_communs(c: &communalia_config::model::Communs) -> anyhow::Result<Params> {
    let p = Params {
        demurrage: Rate::from_percent_per_year(c.demurrage_percent_per_year)?,
        account_ceiling: Millis(c.account_ceiling_millis),
        attestations_needed: c.attestations_needed,
        claim_expiry_days: c.claim_expiry_days,
        attester_daily_budget: c.attester_daily_budget,
        per_hour_maintenance: Millis(c.per_hour_maintenance_millis),
        per_kwh_shifted: Millis(c.per_kwh_shifted_millis),
        per_kwh_given: Millis(c.per_kwh_shifted_millis),
        meter_daily_cap: Millis(c.meter_credit_daily_cap_millis),
        contest_days: c.contest_days,
        ..Params::default()
    };
    let problems = p.problems();
    if !problems.is_empty() {
        bail!("assembly Communs rates: {}", problems.join("; "));
    }
    Ok(p)
}

pub(super) fn print_receipt(what: &str, r: &communalia_ledger::Receipt) {
    println!("{what} recorded (entry {}, {})", r.index, r.id);
    for ev in &r.events {
        if let Event::ClaimPosted {
            claim,
            beneficiary,
            to_member,
            to_pool,
        } = ev
        {
            println!(
                "claim {claim} posted: {to_member} C to {beneficiary}, {to_pool} C to the pool"
            );
        }
    }
}

/// The site named by the genesis entry of a stored log.
pub fn site_of<S: Store>(store: &S) -> anyhow::Result<String> {
    let records = store.records()?;
    let first = records
        .first()
        .context("the ledger is empty (run `ledger init`)")?;
    let e = Entry::decode(&first.bytes).context("log entry 1 cannot be decoded")?;
    match e.unsigned.body {
        Body::Genesis { site, .. } => Ok(site),
        _ => bail!("log entry 1 is not a genesis entry"),
    }
}

/// Opens a ledger file (replaying and checking it); for the controller's `[ledger] database`.
pub fn open(db: &Path) -> anyhow::Result<Ledger<SqliteStore>> {
    if !db.exists() {
        bail!(
            "{} does not exist (run `communalia ledger init` first)",
            db.display()
        );
    }
    let store = SqliteStore::open(db)?;
    let site = site_of(&store)?;
    Ledger::open(store, &site).with_context(|| format!("opening {}", db.display()))
}

pub(super) fn date_or_today(text: Option<&str>) -> anyhow::Result<Day> {
    match text {
        Some(t) => Ok(Day::parse(t)?),
        None => {
            use chrono::Datelike;
            let now = chrono::Utc::now().date_naive();
            Day::from_ymd(now.year(), now.month(), now.day()).context("today's date")
        }
    }
}

pub(super) fn member_ref<S: Store>(l: &Ledger<S>, text: &str) -> anyhow::Result<MemberId> {
    let t = text.trim().trim_start_matches('#');
    if let Ok(n) = t.parse::<u32>() {
        if l.state().member(MemberId(n)).is_some() {
            return Ok(MemberId(n));
        }
        bail!("no member #{n}");
    }
    let found: Vec<_> = l
        .state()
        .members()
        .iter()
        .filter(|m| m.name == text)
        .collect();
    match found.as_slice() {
        [m] => Ok(m.id),
        [] => bail!("no member named {text:?}"),
        _ => bail!("several members are named {text:?}; use their number"),
    }
}

pub(super) fn parse_id(text: &str) -> anyhow::Result<Hash> {
    Hash::from_hex(text).with_context(|| format!("{text:?} is not an entry id (64 hex digits)"))
}

pub(super) fn parse_public(text: &str) -> anyhow::Result<[u8; 32]> {
    let t = text.trim();
    let hexed = if t.len() == 64 && unhex(t).is_some() {
        t.to_string()
    } else {
        std::fs::read_to_string(t)
            .with_context(|| format!("{t:?} is neither 64 hex digits nor a readable key file"))?
            .trim()
            .to_string()
    };
    let bytes = unhex(&hexed).with_context(|| format!("{t}: not hexadecimal"))?;
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| anyhow::anyhow!("{t}: a public key is 32 bytes (64 hex digits)"))
}

/// Reads a secret key file written by `ledger keygen` (for `[ledger] controller_key_file`).
pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    let bytes = unhex(text.trim()).with_context(|| {
        format!(
            "{}: not a key file (expected 64 hex digits)",
            path.display()
        )
    })?;
    let secret = <[u8; 32]>::try_from(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{}: a secret key is 32 bytes (64 hex digits)",
            path.display()
        )
    })?;
    Ok(SigningKey::from_bytes(&secret))
}

pub(super) fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let mut secret = [0_u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("reading randomness from /dev/urandom")?;
    let key = SigningKey::from_bytes(&secret);
    let public = hex(&key.verifying_key().to_bytes());
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(out)
        .with_context(|| format!("creating {} (it must not exist yet)", out.display()))?;
    use std::io::Write;
    writeln!(f, "{}", hex(&secret)).with_context(|| format!("writing {}", out.display()))?;
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    std::fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| format!("writing {}", pub_path.display()))?;
    println!("{public}");
    eprintln!(
        "secret key in {} (keep it private), public key in {}",
        out.display(),
        pub_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn name_of<S: Store>(l: &Ledger<S>, m: MemberId) -> String {
    l.state()
        .member(m)
        .map_or(m.to_string(), |x| format!("{m} {}", x.name))
}

pub(super) fn describe<S: Store>(l: &Ledger<S>, e: &communalia_ledger::LogEntry) -> String {
    let u = &e.entry.unsigned;
    let what = match &u.body {
        Body::Genesis { site, .. } => format!("genesis of site {site:?}"),
        Body::Admit { role, name, .. } => format!("admit {name} as {}", role.name()),
        Body::Revoke { member, reason } => format!("revoke {}: {reason}", name_of(l, *member)),
        Body::RotateKey { .. } => "rotate key".into(),
        Body::Claim {
            beneficiary,
            minutes,
            description,
            ..
        } => format!(
            "claim {minutes} min for {}: {description}",
            name_of(l, *beneficiary)
        ),
        Body::Attest { claim } => format!("attest {claim}"),
        Body::Contest { target, reason } => format!("contest {target}: {reason}"),
        Body::MeterCredit {
            member,
            kind,
            wh,
            source,
        } => {
            let mut t = format!(
                "meter credit {wh} Wh {} for {}",
                kind.name(),
                name_of(l, *member)
            );
            if !source.is_empty() {
                t.push_str(&format!(" ({source})"));
            }
            t
        }
        Body::Transfer { to, amount, memo } => {
            format!("transfer {amount} C to {} {memo}", name_of(l, *to))
        }
        Body::DemurrageEpoch => "demurrage epoch".into(),
        Body::PoolGrant {
            to,
            amount,
            decision,
        } => format!("pool grant {amount} C to {} ({decision})", name_of(l, *to)),
        Body::PoolExpiry { amount, decision } => format!("pool expiry {amount} C ({decision})"),
        Body::ParamChange {
            effective,
            decision,
            ..
        } => format!("parameters from {effective} ({decision})"),
    };
    let mut line = format!(
        "{:>6}  {}  {:<20} {what}  [{}]",
        e.index,
        u.date,
        name_of(l, u.author),
        e.id
    );
    for ev in &e.events {
        match ev {
            Event::ClaimPosted {
                claim,
                to_member,
                to_pool,
                ..
            } => line.push_str(&format!(
                "\n          -> claim {claim} posted: {to_member} C, {to_pool} C to the pool"
            )),
            Event::CreditPosted {
                member,
                to_member,
                to_pool,
                ..
            } => line.push_str(&format!(
                "\n          -> meter credit posted: {to_member} C to {}, {to_pool} C to the pool",
                name_of(l, *member)
            )),
            Event::ClaimExpired { claim } => {
                line.push_str(&format!("\n          -> claim {claim} expired unposted"))
            }
            Event::Demurrage { day, total } => line.push_str(&format!(
                "\n          -> demurrage of {day}: {total} C to the pool"
            )),
            _ => {}
        }
    }
    line
}
