//! Source files and byte offsets turned into 1-based line and column numbers.

/// One configuration file as read: its name as the user wrote it, and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    name: String,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// A file whose bytes are already known to be text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// A file from raw bytes; bytes that are not UTF-8 are an error located at the first bad byte.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Self, crate::Diagnostic> {
        let name = name.into();
        match String::from_utf8(bytes) {
            Ok(text) => Ok(SourceFile::new(name, text)),
            Err(err) => {
                let valid = err.utf8_error().valid_up_to();
                let bytes = err.into_bytes();
                // Locate with the valid prefix only: that is all a person can see in an editor.
                let prefix = String::from_utf8_lossy(&bytes[..valid]).into_owned();
                let file = SourceFile::new(name, prefix);
                let (line, col) = file.position(valid);
                Err(crate::Diagnostic {
                    file: file.name,
                    line,
                    col,
                    path: String::new(),
                    message: format!(
                        "the file is not valid UTF-8 text (bad byte at offset {valid})"
                    ),
                })
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of a byte offset; offsets past the end clamp to it.
    pub fn position(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (to_u32(line + 1), to_u32(col + 1))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let f = SourceFile::new("a.toml", "ab\ncé = 1\n");
        assert_eq!(f.position(0), (1, 1));
        assert_eq!(f.position(1), (1, 2));
        assert_eq!(f.position(3), (2, 1));
        // 'é' is two bytes; the '=' after it is the 4th character of line 2.
        assert_eq!(f.position(7), (2, 4));
        assert_eq!(f.position(10_000), (3, 1));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_located() {
        let err = SourceFile::from_bytes("x.toml", b"a = 1\nb = \"\xff\"".to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.toml:2:6: the file is not valid UTF-8 text (bad byte at offset 11)"
        );
    }
}
