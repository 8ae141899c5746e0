//! `communalia ledger`: keys, members (admission, revocation, key rotation), claims,
//! attestations, contests, transfers, the community pool, parameter changes, balances, history,
//! full verification, and a demurrage calculator. A thin layer over
//! `communalia-ledger` with an SQLite file; dates default to today (UTC) from the clock.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod admin;
mod common;
#[cfg(test)]
mod tests;

use admin::*;
use common::*;
pub use common::{open, params_from_communs, read_key, site_of};

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
