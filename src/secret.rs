//! A wrapper for values that must never appear in logs, errors or panics.

use std::fmt;

/// Holds a secret value. `Debug` and `Display` print `[redacted]`; the value is reached only
/// through [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value itself. Keep the borrow short and never format it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret text read from a file (a password), read again when the file changes (see
/// `crate::reload`): a call takes the current value when it starts.
pub struct SecretFile {
    name: String,
    path: Option<std::path::PathBuf>,
    live: arc_swap::ArcSwap<Secret<String>>,
    seen: crate::reload::Seen,
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretFile")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretFile {
    /// A value that never changes.
    pub fn fixed(value: String) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            name: String::new(),
            path: None,
            live: arc_swap::ArcSwap::from_pointee(Secret::new(value)),
            seen: Default::default(),
        })
    }

    /// `name` (for logs) read from `path` now: its text without the final line break, not
    /// empty.
    pub fn load(name: &str, path: &std::path::Path) -> Result<std::sync::Arc<Self>, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = Self::parse(&bytes)?;
        let seen = crate::reload::Seen::default();
        seen.changed(&bytes);
        Ok(std::sync::Arc::new(Self {
            name: name.to_owned(),
            path: Some(path.to_owned()),
            live: arc_swap::ArcSwap::from_pointee(Secret::new(value)),
            seen,
        }))
    }

    fn parse(bytes: &[u8]) -> Result<String, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        let value = text.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return Err("the file is empty".into());
        }
        Ok(value.to_owned())
    }

    /// The value a call starting now uses.
    pub fn current(&self) -> std::sync::Arc<Secret<String>> {
        self.live.load_full()
    }
}

impl crate::reload::Reload for SecretFile {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn watched(&self) -> Vec<std::path::PathBuf> {
        self.path.iter().cloned().collect()
    }

    fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !self.seen.changed(&bytes) {
            return Ok(false);
        }
        let value = Self::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        self.live.store(std::sync::Arc::new(Secret::new(value)));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new(String::from("-----BEGIN PRIVATE KEY-----abc"));
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert!(s.expose().contains("abc"));
    }
}
