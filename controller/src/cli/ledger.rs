//! `communalia ledger`: keys, members (admission, revocation, key rotation), claims,
//! attestations, contests, transfers, the community pool, parameter changes, balances, history,
//! full verification, and a demurrage calculator. A thin layer over
//! `communalia-ledger` with an SQLite file; dates default to today (UTC) from the clock.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use communalia_ledger::demurrage::{Rate, decay_days};
use communalia_ledger::entry::{hex, unhex};
use communalia_ledger::{
    Body, Day, Entry, Event, Hash, Ledger, MemberId, Millis, Params, Role, SigningKey, SqliteStore,
    Store, verify,
};

#[derive(clap::Args)]
pub struct Args {
    /// The ledger file (SQLite).
    #[arg(
        long,
        global = true,
        default_value = "ledger.sqlite",
        value_name = "FILE"
    )]
    db: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Signer {
    /// Your secret key file (from `ledger keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The day the entry takes effect (YYYY-MM-DD); default today (UTC).
    #[arg(long, value_name = "DATE")]
    date: Option<String>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Start a new ledger: the genesis entry, signed by the founding steward.
    Init {
        /// The site's name; every signature names it.
        #[arg(long)]
        site: String,
        /// The founder's name.
        #[arg(long)]
        name: String,
        /// Yearly demurrage in percent.
        #[arg(long, default_value_t = 6.0, value_name = "PCT_PER_YEAR")]
        rate: f64,
        /// Account ceiling in Communs.
        #[arg(long, default_value = "500")]
        ceiling: String,
        /// Attestations a claim needs.
        #[arg(long, default_value_t = 3)]
        attestations: u32,
        /// Stewards needed to admit, revoke, pay from the pool or change parameters.
        #[arg(long, default_value_t = 2)]
        quorum: u32,
        #[command(flatten)]
        signer: Signer,
    },
    /// Make a new key pair: FILE gets the secret key, FILE.pub the public key.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Admit a member (steward quorum: add --cosign for the other stewards' keys).
    Admit {
        /// The newcomer's public key: 64 hex digits or a .pub file.
        #[arg(long, value_name = "HEX|FILE")]
        public: String,
        #[arg(long)]
        name: String,
        /// member, steward or controller.
        #[arg(long, default_value = "member")]
        role: String,
        /// Co-signing stewards' key files.
        #[arg(long, value_name = "FILE")]
        cosign: Vec<PathBuf>,
        #[command(flatten)]
        signer: Signer,
    },
    /// Claim a human contribution; it posts once enough members attest it.
    Claim {
        /// Minutes of work.
        #[arg(long)]
        minutes: u32,
        #[arg(long)]
        description: String,
        /// Who benefits (member number or name); default yourself.
        #[arg(long = "for", value_name = "MEMBER")]
        beneficiary: Option<String>,
        /// A file of evidence (photo...); only its hash is stored.
        #[arg(long, value_name = "FILE")]
        evidence: Option<PathBuf>,
        #[command(flatten)]
        signer: Signer,
    },
    /// Attest someone else's claim.
    Attest {
        /// The claim's id (as printed by `ledger claim` or `ledger history`).
        claim: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// Contest an open claim or a meter credit within its contest window.
    Contest {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// Give Communs to another member.
    Transfer {
        /// Communs, e.g. 12.5.
        amount: String,
        #[arg(long, value_name = "MEMBER")]
        to: String,
        #[arg(long, default_value = "")]
        memo: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// Revoke a member (steward quorum: add --cosign for the other stewards' keys); they can
    /// no longer sign, and Communs due to them go to the pool.
    Revoke {
        /// The member (number or name).
        member: String,
        #[arg(long)]
        reason: String,
        /// Co-signing stewards' key files.
        #[arg(long, value_name = "FILE")]
        cosign: Vec<PathBuf>,
        #[command(flatten)]
        signer: Signer,
    },
    /// Replace your key: sign with the current key (--key) and name the new public key.
    RotateKey {
        /// The new public key: 64 hex digits or a .pub file (from `ledger keygen`).
        #[arg(long = "new-public", value_name = "HEX|FILE")]
        new_public: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// The community pool: show it, pay a member from it, or retire Communs from it.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// The ledger's parameters: show them, or change them from a future day.
    Params {
        #[command(subcommand)]
        command: ParamsCommand,
    },
    /// Balances (demurrage caught up to the date; a past date replays the log up to it).
    Balance {
        #[arg(long, value_name = "DATE")]
        as_of: Option<String>,
        /// Only this member.
        #[arg(long, value_name = "MEMBER")]
        member: Option<String>,
    },
    /// The log, or one member's part of it.
    History {
        #[arg(long, value_name = "MEMBER")]
        member: Option<String>,
    },
    /// Re-check every signature, chain link and balance from genesis.
    Verify,
    /// What AMOUNT Communs become after N days of demurrage.
    Demurrage {
        amount: String,
        #[arg(long)]
        days: u32,
        #[arg(long, default_value_t = 6.0, value_name = "PCT_PER_YEAR")]
        rate: f64,
    },
}

#[derive(clap::Subcommand)]
enum PoolCommand {
    /// What the pool holds, and every payment and expiry so far.
    Show {
        #[arg(long, value_name = "DATE")]
        as_of: Option<String>,
    },
    /// Pay a member from the pool (steward quorum, citing an assembly decision).
    Pay {
        /// Communs, e.g. 12.5.
        amount: String,
        #[arg(long, value_name = "MEMBER")]
        to: String,
        /// The assembly decision this payment carries out.
        #[arg(long)]
        decision: String,
        /// Co-signing stewards' key files.
        #[arg(long, value_name = "FILE")]
        cosign: Vec<PathBuf>,
        #[command(flatten)]
        signer: Signer,
    },
    /// Retire Communs from the pool for good (steward quorum, citing an assembly decision).
    Expire {
        /// Communs, e.g. 12.5.
        amount: String,
        /// The assembly decision this expiry carries out.
        #[arg(long)]
        decision: String,
        /// Co-signing stewards' key files.
        #[arg(long, value_name = "FILE")]
        cosign: Vec<PathBuf>,
        #[command(flatten)]
        signer: Signer,
    },
}

// Parsed once per run: boxing the larger variant would save nothing worth the noise.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand)]
enum ParamsCommand {
    /// The parameters in effect on a day (default today; a past day replays the log up to it),
    /// and the changes then still to come.
    Show {
        #[arg(long, value_name = "DATE")]
        as_of: Option<String>,
    },
    /// Change parameters from a future day (steward quorum, citing an assembly decision).
    /// Parameters not named keep the value they will have on that day.
    Change {
        /// The day the new parameters take effect (after the entry's date).
        #[arg(long, value_name = "DATE")]
        effective: String,
        /// The assembly decision this change carries out.
        #[arg(long)]
        decision: String,
        #[command(flatten)]
        changes: ParamChanges,
        /// Co-signing stewards' key files.
        #[arg(long, value_name = "FILE")]
        cosign: Vec<PathBuf>,
        #[command(flatten)]
        signer: Signer,
    },
}

/// The parameters a change may set; each is optional.
#[derive(clap::Args, Default)]
struct ParamChanges {
    /// Yearly demurrage in percent.
    #[arg(long, value_name = "PCT_PER_YEAR")]
    rate: Option<f64>,
    /// Account ceiling in Communs.
    #[arg(long, value_name = "C")]
    ceiling: Option<String>,
    /// How far below zero a balance may go, in Communs.
    #[arg(long, value_name = "C")]
    credit_limit: Option<String>,
    /// Attestations a claim needs.
    #[arg(long, value_name = "N")]
    attestations: Option<u32>,
    /// Days after which an unposted claim expires.
    #[arg(long, value_name = "DAYS")]
    claim_expiry_days: Option<u32>,
    /// Attestations one member may give per day.
    #[arg(long, value_name = "N")]
    attester_budget: Option<u32>,
    /// Communs per hour of attested work.
    #[arg(long, value_name = "C")]
    per_hour: Option<String>,
    /// Communs per kWh of load shifted into surplus hours.
    #[arg(long, value_name = "C")]
    per_kwh_shifted: Option<String>,
    /// Communs per kWh a member's battery or PV gave the commons.
    #[arg(long, value_name = "C")]
    per_kwh_given: Option<String>,
    /// Most meter credits one member may get per day, in Communs.
    #[arg(long, value_name = "C")]
    meter_cap: Option<String>,
    /// Days a meter credit stays open to contest.
    #[arg(long, value_name = "DAYS")]
    contest_days: Option<u32>,
    /// Stewards needed for quorum entries.
    #[arg(long, value_name = "N")]
    quorum: Option<u32>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let db = args.db;
    match args.command {
        Command::Demurrage { amount, days, rate } => {
            let a = Millis::parse(&amount)?;
            let r = Rate::from_percent_per_year(rate)?;
            let (after, _) = decay_days(a.0, days, r);
            println!(
                "{a} C after {days} days at {rate} %/yr ({} ppb a day): {} C",
                r.ppb_per_day(),
                Millis(after)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { out } => keygen(&out),
        Command::Init {
            site,
            name,
            rate,
            ceiling,
            attestations,
            quorum,
            signer,
        } => {
            let params = Params {
                demurrage: Rate::from_percent_per_year(rate)?,
                account_ceiling: Millis::parse(&ceiling)?,
                attestations_needed: attestations,
                steward_quorum: quorum,
                ..Params::default()
            };
            let problems = params.problems();
            if !problems.is_empty() {
                bail!("bad parameters: {}", problems.join("; "));
            }
            let key = read_key(&signer.key)?;
            let date = date_or_today(signer.date.as_deref())?;
            let store = SqliteStore::open(&db)?;
            if !store.records()?.is_empty() {
                bail!("{} already holds a ledger", db.display());
            }
            let l = Ledger::init(store, &site, params, &key, &name, date)
                .with_context(|| format!("initialising {}", db.display()))?;
            println!(
                "ledger for site {site:?} started in {} on {date}; founder {name} is member #0 (steward)",
                db.display()
            );
            drop(l);
            Ok(ExitCode::SUCCESS)
        }
        Command::Admit {
            public,
            name,
            role,
            cosign,
            signer,
        } => {
            let mut l = open(&db)?;
            let role = Role::parse(&role).with_context(|| {
                format!("role {role:?}: expected member, steward or controller")
            })?;
            let key = parse_public(&public)?;
            let author = read_key(&signer.key)?;
            let cosigners = cosign
                .iter()
                .map(|p| read_key(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let refs: Vec<&SigningKey> = cosigners.iter().collect();
            let date = date_or_today(signer.date.as_deref())?;
            let id = MemberId(l.state().members().len() as u32);
            let r = l.quorum_append(
                &author,
                &refs,
                date,
                Body::Admit {
                    key,
                    role,
                    name: name.clone(),
                },
            )?;
            println!(
                "admitted {name} as {id} ({}); entry {} ({})",
                role.name(),
                r.index,
                r.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Claim {
            minutes,
            description,
            beneficiary,
            evidence,
            signer,
        } => {
            let mut l = open(&db)?;
            let key = read_key(&signer.key)?;
            let me = l.member_for(&key)?.id;
            let beneficiary = match beneficiary {
                Some(b) => member_ref(&l, &b)?,
                None => me,
            };
            let evidence = match evidence {
                Some(p) => Hash::of(
                    &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                ),
                None => Hash::ZERO,
            };
            let date = date_or_today(signer.date.as_deref())?;
            let r = l.sign_and_append(
                &key,
                date,
                Body::Claim {
                    beneficiary,
                    minutes,
                    description,
                    evidence,
                },
            )?;
            println!(
                "claim {} recorded (entry {}); it needs attestations to post",
                r.id, r.index
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Attest { claim, signer } => {
            let mut l = open(&db)?;
            let key = read_key(&signer.key)?;
            let claim = parse_id(&claim)?;
            let date = date_or_today(signer.date.as_deref())?;
            let r = l.sign_and_append(&key, date, Body::Attest { claim })?;
            print_receipt("attestation", &r);
            Ok(ExitCode::SUCCESS)
        }
        Command::Contest { id, reason, signer } => {
            let mut l = open(&db)?;
            let key = read_key(&signer.key)?;
            let target = parse_id(&id)?;
            let date = date_or_today(signer.date.as_deref())?;
            let r = l.sign_and_append(&key, date, Body::Contest { target, reason })?;
            print_receipt("contest", &r);
            Ok(ExitCode::SUCCESS)
        }
        Command::Transfer {
            amount,
            to,
            memo,
            signer,
        } => {
            let mut l = open(&db)?;
            let key = read_key(&signer.key)?;
            let to = member_ref(&l, &to)?;
            let amount = Millis::parse(&amount)?;
            let date = date_or_today(signer.date.as_deref())?;
            let r = l.sign_and_append(&key, date, Body::Transfer { to, amount, memo })?;
            println!(
                "transferred {amount} C to {to} (entry {}, {})",
                r.index, r.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Revoke {
            member,
            reason,
            cosign,
            signer,
        } => {
            let mut l = open(&db)?;
            let member = member_ref(&l, &member)?;
            let r = append_by_quorum(&mut l, &signer, &cosign, Body::Revoke { member, reason })?;
            println!(
                "revoked {}; entry {} ({})",
                name_of(&l, member),
                r.index,
                r.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::RotateKey { new_public, signer } => {
            let mut l = open(&db)?;
            let new_key = parse_public(&new_public)?;
            let key = read_key(&signer.key)?;
            let me = l.member_for(&key)?.id;
            let date = date_or_today(signer.date.as_deref())?;
            let r = l.sign_and_append(&key, date, Body::RotateKey { new_key })?;
            println!(
                "{} now signs with key {}; the old key no longer works (entry {}, {})",
                name_of(&l, me),
                hex(&new_key),
                r.index,
                r.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Pool { command } => pool(&db, command),
        Command::Params { command } => params(&db, command),
        Command::Balance { as_of, member } => {
            let l = open(&db)?;
            let as_of = as_of.as_deref().map(Day::parse).transpose()?;
            let only = member.as_deref().map(|m| member_ref(&l, m)).transpose()?;
            let b = match as_of {
                Some(d) => l
                    .balances(Some(d))?
                    .with_context(|| before_genesis(&l, d))?,
                None => l.balances(None)?.context("the ledger is empty")?,
            };
            println!("balances as of {}", b.as_of);
            for r in b.rows.iter().filter(|r| only.is_none_or(|m| m == r.member)) {
                if r.role == Role::Controller {
                    continue;
                }
                println!(
                    "  {:>5}  {:<24} {:<8} {:>12} C{}",
                    r.member.to_string(),
                    r.name,
                    r.role.name(),
                    r.balance.to_string(),
                    if r.active { "" } else { "  (revoked)" }
                );
            }
            if only.is_none() {
                println!("  community pool {:>34} C", b.pool.to_string());
                println!("  issued {} C, expired {} C", b.issued, b.expired);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { member } => {
            let l = open(&db)?;
            let only = member.as_deref().map(|m| member_ref(&l, m)).transpose()?;
            for e in l.history(only) {
                println!("{}", describe(&l, e));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => {
            let store = SqliteStore::open(&db)?;
            let site = site_of(&store)?;
            let report = verify(&store, &site)?;
            if report.ok() {
                println!(
                    "ok: {} entries of site {site:?} verified from genesis (signatures, sequence numbers, previous hashes, log chain, rules, conservation, cached balances)",
                    report.valid_entries
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "FAILED: {} of {} entries check out",
                    report.valid_entries, report.stored_entries
                );
                for p in &report.problems {
                    println!("  {p}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

fn pool(db: &Path, command: PoolCommand) -> anyhow::Result<ExitCode> {
    let mut l = open(db)?;
    match command {
        PoolCommand::Show { as_of } => {
            let as_of = as_of.as_deref().map(Day::parse).transpose()?;
            let b = match as_of {
                Some(d) => l
                    .balances(Some(d))?
                    .with_context(|| before_genesis(&l, d))?,
                None => l.balances(None)?.context("the ledger is empty")?,
            };
            println!("community pool as of {}: {} C", b.as_of, b.pool);
            println!("  issued {} C, expired {} C", b.issued, b.expired);
            for e in l.log().iter().filter(|e| e.entry.unsigned.date <= b.as_of) {
                let u = &e.entry.unsigned;
                match &u.body {
                    Body::PoolGrant {
                        to,
                        amount,
                        decision,
                    } => println!(
                        "  {}  paid {amount} C to {} ({decision}) [entry {}]",
                        u.date,
                        name_of(&l, *to),
                        e.index
                    ),
                    Body::PoolExpiry { amount, decision } => println!(
                        "  {}  retired {amount} C ({decision}) [entry {}]",
                        u.date, e.index
                    ),
                    _ => {}
                }
            }
        }
        PoolCommand::Pay {
            amount,
            to,
            decision,
            cosign,
            signer,
        } => {
            let to = member_ref(&l, &to)?;
            let amount = Millis::parse(&amount)?;
            let r = append_by_quorum(
                &mut l,
                &signer,
                &cosign,
                Body::PoolGrant {
                    to,
                    amount,
                    decision,
                },
            )?;
            let left = l.balances(None)?.map_or(Millis::ZERO, |b| b.pool);
            println!(
                "paid {amount} C from the pool to {}; the pool holds {left} C (entry {}, {})",
                name_of(&l, to),
                r.index,
                r.id
            );
        }
        PoolCommand::Expire {
            amount,
            decision,
            cosign,
            signer,
        } => {
            let amount = Millis::parse(&amount)?;
            let r = append_by_quorum(
                &mut l,
                &signer,
                &cosign,
                Body::PoolExpiry { amount, decision },
            )?;
            let left = l.balances(None)?.map_or(Millis::ZERO, |b| b.pool);
            println!(
                "retired {amount} C from the pool for good; it holds {left} C (entry {}, {})",
                r.index, r.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn params(db: &Path, command: ParamsCommand) -> anyhow::Result<ExitCode> {
    let mut l = open(db)?;
    match command {
        ParamsCommand::Show { as_of } => {
            let today = l.today().context("the ledger is empty")?;
            let date = match as_of.as_deref() {
                Some(d) => Day::parse(d)?,
                None => today,
            };
            let books = l
                .books_as_of(date)?
                .with_context(|| before_genesis(&l, date))?;
            println!("parameters in effect on {}", books.today.max(date));
            for (name, value) in param_rows(&books.params) {
                println!("  {name:<20} {value}");
            }
            // Each pending change against the one before it (or those in effect).
            let mut before = &books.params;
            for (day, p) in books.pending_params.iter() {
                println!("changing from {day}:");
                for ((name, old), (_, new)) in param_rows(before).into_iter().zip(param_rows(p)) {
                    if old != new {
                        println!("  {name:<20} {old} -> {new}");
                    }
                }
                before = p;
            }
        }
        ParamsCommand::Change {
            effective,
            decision,
            changes,
            cosign,
            signer,
        } => {
            let effective = Day::parse(&effective).context("--effective")?;
            let base = l
                .books_as_of(effective)?
                .context("the ledger is empty")?
                .params;
            let params = changed_params(&base, &changes)?;
            let r = append_by_quorum(
                &mut l,
                &signer,
                &cosign,
                Body::ParamChange {
                    params: params.clone(),
                    effective,
                    decision,
                },
            )?;
            println!(
                "parameters change from {effective} (entry {}, {}):",
                r.index, r.id
            );
            for ((name, old), (_, new)) in param_rows(&base).into_iter().zip(param_rows(&params)) {
                if old != new {
                    println!("  {name:<20} {old} -> {new}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Each parameter by the name of the option that sets it, with its value and unit.
fn param_rows(p: &Params) -> Vec<(&'static str, String)> {
    vec![
        (
            "rate",
            format!(
                "{} %/yr ({} ppb a day)",
                Millis(100_000 - decay_days(100_000, 365, p.demurrage).0),
                p.demurrage.ppb_per_day()
            ),
        ),
        ("ceiling", format!("{} C", p.account_ceiling)),
        ("credit-limit", format!("{} C", p.credit_limit)),
        ("attestations", p.attestations_needed.to_string()),
        ("claim-expiry-days", p.claim_expiry_days.to_string()),
        ("attester-budget", p.attester_daily_budget.to_string()),
        ("per-hour", format!("{} C", p.per_hour_maintenance)),
        ("per-kwh-shifted", format!("{} C", p.per_kwh_shifted)),
        ("per-kwh-given", format!("{} C", p.per_kwh_given)),
        ("meter-cap", format!("{} C", p.meter_daily_cap)),
        ("contest-days", p.contest_days.to_string()),
        ("quorum", p.steward_quorum.to_string()),
    ]
}

/// `base` with the named changes; refused when nothing is named, a value does not parse, or
/// the result breaks a rule (every broken rule is listed).
fn changed_params(base: &Params, c: &ParamChanges) -> anyhow::Result<Params> {
    let amount = |flag: &str, v: &Option<String>, old: Millis| -> anyhow::Result<Millis> {
        match v {
            Some(t) => Millis::parse(t).with_context(|| format!("--{flag}")),
            None => Ok(old),
        }
    };
    let p = Params {
        demurrage: match c.rate {
            Some(pct) => Rate::from_percent_per_year(pct).context("--rate")?,
            None => base.demurrage,
        },
        account_ceiling: amount("ceiling", &c.ceiling, base.account_ceiling)?,
        credit_limit: amount("credit-limit", &c.credit_limit, base.credit_limit)?,
        attestations_needed: c.attestations.unwrap_or(base.attestations_needed),
        claim_expiry_days: c.claim_expiry_days.unwrap_or(base.claim_expiry_days),
        attester_daily_budget: c.attester_budget.unwrap_or(base.attester_daily_budget),
        per_hour_maintenance: amount("per-hour", &c.per_hour, base.per_hour_maintenance)?,
        per_kwh_shifted: amount("per-kwh-shifted", &c.per_kwh_shifted, base.per_kwh_shifted)?,
        per_kwh_given: amount("per-kwh-given", &c.per_kwh_given, base.per_kwh_given)?,
        meter_daily_cap: amount("meter-cap", &c.meter_cap, base.meter_daily_cap)?,
        contest_days: c.contest_days.unwrap_or(base.contest_days),
        steward_quorum: c.quorum.unwrap_or(base.steward_quorum),
    };
    if &p == base {
        bail!(
            "no parameter would change: name at least one new value (--rate, --ceiling, ...; see --help)"
        );
    }
    let problems = p.problems();
    if !problems.is_empty() {
        bail!("bad parameters: {}", problems.join("; "));
    }
    Ok(p)
}

/// Why there are no balances on `date`: it is before the ledger began.
fn before_genesis<S: Store>(l: &Ledger<S>, date: Day) -> String {
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
fn append_by_quorum<S: Store>(
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

fn read_cosigners<S: Store>(l: &Ledger<S>, paths: &[PathBuf]) -> anyhow::Result<Vec<SigningKey>> {
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

fn print_receipt(what: &str, r: &communalia_ledger::Receipt) {
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

fn date_or_today(text: Option<&str>) -> anyhow::Result<Day> {
    match text {
        Some(t) => Ok(Day::parse(t)?),
        None => {
            use chrono::Datelike;
            let now = chrono::Utc::now().date_naive();
            Day::from_ymd(now.year(), now.month(), now.day()).context("today's date")
        }
    }
}

fn member_ref<S: Store>(l: &Ledger<S>, text: &str) -> anyhow::Result<MemberId> {
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

fn parse_id(text: &str) -> anyhow::Result<Hash> {
    Hash::from_hex(text).with_context(|| format!("{text:?} is not an entry id (64 hex digits)"))
}

fn parse_public(text: &str) -> anyhow::Result<[u8; 32]> {
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

fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
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

fn name_of<S: Store>(l: &Ledger<S>, m: MemberId) -> String {
    l.state()
        .member(m)
        .map_or(m.to_string(), |x| format!("{m} {}", x.name))
}

fn describe<S: Store>(l: &Ledger<S>, e: &communalia_ledger::LogEntry) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembly_rates_map_onto_ledger_parameters() {
        let c = communalia_config::model::Communs {
            per_kwh_shifted_millis: 800,
            per_hour_maintenance_millis: 12_000,
            demurrage_percent_per_year: 6.0,
            account_ceiling_millis: 500_000,
            attestations_needed: 3,
            claim_expiry_days: 14,
            meter_credit_daily_cap_millis: 4_000,
            contest_days: 3,
            attester_daily_budget: 5,
        };
        let p = params_from_communs(&c).unwrap();
        assert_eq!(p.demurrage.ppb_per_day(), 169_507);
        assert_eq!(p.per_kwh_given, Millis(800));
        assert_eq!(p.meter_daily_cap, Millis(4_000));
        let bad = communalia_config::model::Communs {
            attestations_needed: 0,
            ..c
        };
        let e = params_from_communs(&bad).unwrap_err().to_string();
        assert!(e.contains("attestations_needed"), "{e}");
    }

    #[test]
    fn a_parameter_change_keeps_what_it_does_not_name() {
        let base = Params::default();
        let c = ParamChanges {
            ceiling: Some("400".into()),
            quorum: Some(3),
            ..ParamChanges::default()
        };
        let p = changed_params(&base, &c).unwrap();
        assert_eq!(p.account_ceiling, Millis(400_000));
        assert_eq!(p.steward_quorum, 3);
        assert_eq!(p.demurrage, base.demurrage);
        assert_eq!(p.per_kwh_given, base.per_kwh_given);
    }

    #[test]
    fn a_parameter_change_that_changes_nothing_or_breaks_a_rule_is_refused() {
        let base = Params::default();
        let e = changed_params(&base, &ParamChanges::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no parameter would change"), "{e}");
        let same = ParamChanges {
            attestations: Some(base.attestations_needed),
            ..ParamChanges::default()
        };
        assert!(changed_params(&base, &same).is_err());
        let bad = ParamChanges {
            attestations: Some(0),
            contest_days: Some(400),
            ..ParamChanges::default()
        };
        let e = changed_params(&base, &bad).unwrap_err().to_string();
        assert!(
            e.contains("attestations_needed") && e.contains("contest_days"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            changed_params(
                &base,
                &ParamChanges {
                    ceiling: Some("1.2345".into()),
                    ..ParamChanges::default()
                }
            )
            .unwrap_err()
        );
        assert!(e.starts_with("--ceiling: "), "{e}");
        let e = format!(
            "{:#}",
            changed_params(
                &base,
                &ParamChanges {
                    rate: Some(120.0),
                    ..ParamChanges::default()
                }
            )
            .unwrap_err()
        );
        assert!(e.starts_with("--rate: "), "{e}");
    }

    #[test]
    fn parameters_show_the_yearly_rate_exactly() {
        let rows = param_rows(&Params::default());
        assert_eq!(rows[0].1, "6.000 %/yr (169507 ppb a day)");
    }
}
