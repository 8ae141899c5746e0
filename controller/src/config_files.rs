//! Reads a site file and the assembly file it names from disk, for the config crate to validate.

use std::path::{Path, PathBuf};

use communalia_config::{Config, Diagnostics};

/// Why the configuration cannot be used.
#[derive(Debug)]
pub enum LoadError {
    /// The site file itself could not be read.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// One or more located mistakes in the files.
    Invalid(Diagnostics),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            LoadError::Invalid(d) => write!(f, "{d}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// The assembly file's path: relative names are taken from the site file's folder.
pub fn resolve(site_path: &Path, name: &str) -> PathBuf {
    let named = Path::new(name);
    if named.is_absolute() {
        named.to_path_buf()
    } else {
        site_path.parent().unwrap_or(Path::new("")).join(named)
    }
}

/// Loads and validates a site file and its assembly file.
pub fn load(site_path: &Path) -> Result<Config, LoadError> {
    let bytes = std::fs::read(site_path).map_err(|error| LoadError::Io {
        path: site_path.to_path_buf(),
        error,
    })?;
    let shown = site_path.display().to_string();
    communalia_config::load(&shown, bytes, |name: &str| {
        let path = resolve(site_path, name);
        std::fs::read(&path)
            .map(|b| (path.display().to_string(), b))
            .map_err(|e| format!("{} ({e})", path.display()))
    })
    .map_err(LoadError::Invalid)
    .map(|mut config| {
        resolve_site_paths(site_path, &mut config.site);
        config
    })
}

/// Files the site file names and that are read at run time, as paths from the site file's
/// folder (the others are joined to that folder where they are used): wherever the controller
/// is started from, `password_file = "mqtt.pass"` is the one beside the site file.
fn resolve_site_paths(site_path: &Path, site: &mut communalia_config::Site) {
    if let Some(mqtt) = site.mqtt.as_mut()
        && let Some(file) = mqtt.password_file.as_mut()
    {
        *file = resolve(site_path, file).display().to_string();
    }
}
