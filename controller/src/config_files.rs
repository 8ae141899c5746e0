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

/// Largest site or assembly file read: a real one is a few kilobytes.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a configuration file: a regular file of at most [`MAX_CONFIG_BYTES`] (a FIFO, a device
/// such as /dev/zero or a huge file is refused at once, never read).
pub fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    // Looked at before opening: opening a FIFO would wait for a writer.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} bytes, more than a configuration file may have ({MAX_CONFIG_BYTES})",
                meta.len()
            ),
        ));
    }
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    // Read at most one byte more than allowed, in case the file grew since.
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "grew past the size a configuration file may have while being read",
        ));
    }
    Ok(bytes)
}

/// Loads and validates a site file and its assembly file.
pub fn load(site_path: &Path) -> Result<Config, LoadError> {
    let bytes = read_limited(site_path).map_err(|error| LoadError::Io {
        path: site_path.to_path_buf(),
        error,
    })?;
    let shown = site_path.display().to_string();
    communalia_config::load(&shown, bytes, |name: &str| {
        let path = resolve(site_path, name);
        read_limited(&path)
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
