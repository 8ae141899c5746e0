//! Communalia's configuration: the site file and the assembly's priority file.
//!
//! Three stages, as in a compiler: **parse** each file into a spanned TOML tree; **read** each table
//! into plain serde structs (`raw`), one entry at a time so every mistake is found; **validate and
//! lower** across both files into typed values (`model`), where ids are resolved and ranges checked.
//! Every mistake becomes a [`Diagnostic`], `file:line:col: key.path: message`, and all of them are
//! returned at once.
//!
//! The crate does no IO: the caller hands in the site file's bytes and a function that reads the
//! assembly file the site names. It never panics, whatever the bytes.
//!
//! Public API:
//! - [`load`]: both files in, a [`Config`] or every [`Diagnostic`] out.
//! - [`load_assembly`]: an assembly file checked against an already-valid [`Site`] (for reloads).
//! - [`model`]: the lowered types; [`schema::KEYS`]: the documented keys.

mod diag;
mod doc;
mod lower;
pub mod model;
mod raw;
pub mod schema;
mod source;

pub use diag::{Diagnostic, Diagnostics};
pub use model::*;
pub use source::SourceFile;

use doc::{Doc, KeyPath};

/// Reads the assembly file named by the site file: given the name as written in the site file,
/// returns the name to show in messages and the file's bytes, or why it could not be read.
pub trait ReadFile: FnMut(&str) -> Result<(String, Vec<u8>), String> {}
impl<F: FnMut(&str) -> Result<(String, Vec<u8>), String>> ReadFile for F {}

/// Validates a site file and the assembly file it names, and lowers both.
pub fn load(
    site_name: &str,
    site_bytes: Vec<u8>,
    mut read: impl ReadFile,
) -> Result<Config, Diagnostics> {
    let site_file = match SourceFile::from_bytes(site_name, site_bytes) {
        Ok(f) => f,
        Err(d) => return Err(Diagnostics(vec![d])),
    };
    let mut site_doc = Doc::parse(&site_file);
    let parts = lower::lower_site(&mut site_doc);

    // Find the assembly file even when the rest of the site file has mistakes.
    let assembly_name = site_doc
        .get(&KeyPath::root().key("site").key("assembly"))
        .and_then(|v| v.get_ref().as_str().map(str::to_owned))
        .filter(|s| !s.trim().is_empty());
    let mut diags = Vec::new();
    let mut assembly = None;
    if let Some(name) = assembly_name {
        match read(&name) {
            Err(why) => {
                site_doc.error(
                    &KeyPath::root().key("site").key("assembly"),
                    format!("cannot read assembly file \"{name}\": {why}"),
                );
            }
            Ok((shown, bytes)) => match SourceFile::from_bytes(shown, bytes) {
                Err(d) => diags.push(d),
                Ok(file) => {
                    let mut doc = Doc::parse(&file);
                    assembly = lower::lower_assembly(&mut doc, &mut site_doc, &parts);
                    diags.append(&mut doc.diags);
                }
            },
        }
    }
    diags.append(&mut site_doc.diags);
    let mut diags = Diagnostics(diags);
    diags.sort();
    match (diags.is_empty(), parts.site, assembly) {
        (true, Some(site), Some(assembly)) => Ok(Config { site, assembly }),
        (true, _, _) => Err(Diagnostics(vec![Diagnostic {
            file: site_name.to_owned(),
            line: 1,
            col: 1,
            path: String::new(),
            message: "the configuration could not be read (no further detail; please report this)"
                .into(),
        }])),
        (false, _, _) => Err(diags),
    }
}

/// Validates an assembly file against a valid site: what a running controller does on a reload.
/// Loads of the site missing from the tiers are reported against the assembly file.
pub fn load_assembly(site: &Site, name: &str, bytes: Vec<u8>) -> Result<Assembly, Diagnostics> {
    let file = SourceFile::from_bytes(name, bytes).map_err(|d| Diagnostics(vec![d]))?;
    let mut doc = Doc::parse(&file);
    let parts = lower::SiteParts {
        site: None,
        loads: site
            .loads
            .iter()
            .enumerate()
            .map(|(i, l)| lower::KnownLoad {
                id: l.id.clone(),
                controlled: l.control.is_controlled(),
                path: KeyPath::root().key("loads").index(i),
            })
            .collect(),
        battery: site.battery.clone(),
        battery_table: site.battery.is_some(),
    };
    // Mistakes that belong to the site file cannot happen here except "load with no tier", which
    // we report on the assembly file's `tiers`, since that is the file being changed.
    let empty = SourceFile::new(name, "");
    let mut shadow = Doc::parse(&empty);
    let assembly = lower::lower_assembly(&mut doc, &mut shadow, &parts);
    let tiers_path = KeyPath::root().key("tiers");
    for d in shadow.diags {
        doc.error(&tiers_path, d.message);
    }
    let mut diags = Diagnostics(doc.diags);
    diags.sort();
    match assembly {
        Some(a) if diags.is_empty() => Ok(a),
        _ => Err(diags),
    }
}
