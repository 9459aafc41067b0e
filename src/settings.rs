//! Where a setting comes from, and how its errors name it: the file's text (line and column of
//! a TOML error), an account's own keys as a provider reads them, and the environment
//! shortcuts that stand in for an account's keys. Providers read their account keys through
//! [`AccountKeys`]; nothing here names a provider.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, Deserializer};

/// A configuration problem, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// The setting (file key or environment variable).
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A [`ConfigError`] for `setting`.
pub fn err(setting: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        problem: problem.into(),
    }
}

/// The configuration file, for error positions.
#[derive(Debug, Clone, Copy)]
pub struct FileText<'a> {
    /// Its path, as given.
    pub path: &'a Path,
    /// Its text.
    pub text: &'a str,
}

impl FileText<'_> {
    /// A TOML error as one line, with where: line and column (1-based) of the error's start.
    pub fn error(&self, e: toml::de::Error) -> ConfigError {
        self.problem(e.span(), e.message())
    }

    /// A problem at `span` of the file, as one line with its line and column.
    pub fn error_at(&self, span: Range<usize>, problem: &str) -> ConfigError {
        self.problem(Some(span), problem)
    }

    fn problem(&self, span: Option<Range<usize>>, problem: &str) -> ConfigError {
        let at = span.map(|span| {
            let before = &self.text[..span.start.min(self.text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(":{line}:{column}")
        });
        err(
            format!(
                "config file {}{}",
                self.path.display(),
                at.unwrap_or_default()
            ),
            problem.to_owned(),
        )
    }
}

/// Reads a table of the file (or an empty one) into `T`; errors say where in the file.
pub fn read_table<T: DeserializeOwned>(
    table: Spanned<DeTable<'_>>,
    file: Option<FileText<'_>>,
) -> Result<T, ConfigError> {
    T::deserialize(Deserializer::from(table)).map_err(|e| match file {
        Some(f) => f.error(e),
        None => err("configuration", e.message().to_owned()),
    })
}

/// An environment variable that stands in for one key of one account (`PAYGATE_ANTOM_BASE_URL`
/// for `accounts.antom.base_url`).
#[derive(Debug, Clone, Copy)]
pub struct Shortcut {
    /// The variable.
    pub var: &'static str,
    /// The account key it sets.
    pub key: &'static str,
    /// Whether the variable alone creates the account when the file has none of that name.
    pub creates_account: bool,
}

/// One account's keys as its provider reads them: the keys of its `[accounts.NAME]` table
/// that are the provider's own (unknown ones refused), and the environment shortcuts that
/// override them when the account is the one the shortcuts describe.
pub struct AccountKeys<'a> {
    /// The account's name.
    pub name: &'a str,
    table: Option<Spanned<DeTable<'a>>>,
    file: Option<FileText<'a>>,
    shortcuts: &'a [Shortcut],
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> AccountKeys<'a> {
    /// `shortcuts` are empty unless this account is the one they describe.
    pub fn new(
        name: &'a str,
        table: Spanned<DeTable<'a>>,
        file: Option<FileText<'a>>,
        shortcuts: &'a [Shortcut],
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        AccountKeys {
            name,
            table: Some(table),
            file,
            shortcuts,
            env,
        }
    }

    /// The provider's own keys of the file, read into its shape (`deny_unknown_fields`, every
    /// key optional). Once per account.
    pub fn file<T: DeserializeOwned>(&mut self) -> Result<T, ConfigError> {
        let table = self
            .table
            .take()
            .unwrap_or_else(|| Spanned::new(0..0, DeTable::new()));
        read_table(table, self.file)
    }

    fn shortcut(&self, key: &str) -> Option<(&'static str, String)> {
        self.shortcuts
            .iter()
            .find(|s| s.key == key)
            .and_then(|s| (self.env)(s.var).map(|v| (s.var, v)))
    }

    /// The name to report for `key`: its environment variable when that set it, else
    /// `accounts.NAME.key`.
    pub fn setting(&self, key: &str) -> String {
        match self.shortcut(key) {
            Some((var, _)) => var.to_owned(),
            None => format!("accounts.{}.{key}", self.name),
        }
    }

    /// `key`'s value: the environment's when a shortcut sets it, else the file's.
    pub fn text(&self, key: &str, file: Option<String>) -> Option<String> {
        self.shortcut(key).map(|(_, v)| v).or(file)
    }

    /// A path: the environment's when a shortcut sets it, else the file's.
    pub fn path(&self, key: &str, file: Option<PathBuf>) -> Option<PathBuf> {
        self.shortcut(key).map(|(_, v)| v.into()).or(file)
    }

    /// A flag: `true`/`1` or `false`/`0` from the environment, else the file's.
    pub fn flag(&self, key: &str, file: Option<bool>) -> Result<Option<bool>, ConfigError> {
        match self.shortcut(key) {
            Some((var, v)) => match v.as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(err(var, "must be true or false")),
            },
            None => Ok(file),
        }
    }

    /// A number of milliseconds: the environment's when a shortcut sets it, else the file's.
    pub fn millis(&self, key: &str, file: Option<u64>) -> Result<Option<u64>, ConfigError> {
        match self.shortcut(key) {
            Some((var, v)) => millis(var, &v).map(Some),
            None => Ok(file),
        }
    }

    /// A positive number (a rate): the environment's when a shortcut sets it, else the file's.
    pub fn positive_number(
        &self,
        key: &str,
        file: Option<f64>,
    ) -> Result<Option<f64>, ConfigError> {
        match self.shortcut(key) {
            Some((var, v)) => v
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r > 0.0)
                .map(Some)
                .ok_or_else(|| err(var, "must be a positive number")),
            None => Ok(file),
        }
    }

    /// A positive integer: the environment's when a shortcut sets it, else the file's.
    pub fn positive_integer(
        &self,
        key: &str,
        file: Option<u32>,
    ) -> Result<Option<u32>, ConfigError> {
        match self.shortcut(key) {
            Some((var, v)) => v
                .parse()
                .ok()
                .filter(|b: &u32| *b > 0)
                .map(Some)
                .ok_or_else(|| err(var, "must be a positive integer")),
            None => Ok(file),
        }
    }
}

/// A number of milliseconds that `setting` gives.
pub fn millis(setting: &str, value: &str) -> Result<u64, ConfigError> {
    value
        .parse()
        .map_err(|_| err(setting, "must be a number of milliseconds"))
}

/// Reads a file a setting names.
pub fn read_file(setting: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| err(setting, format!("cannot read {}: {e}", path.display())))
}

/// An http(s) URL, required.
pub fn base_url(url: Option<String>, setting: &str) -> Result<String, ConfigError> {
    let url = url.ok_or_else(|| err(setting, "missing"))?;
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || reqwest::Url::parse(&url).is_err()
    {
        return Err(err(setting, format!("{url:?} is not an http(s) URL")));
    }
    Ok(url)
}

/// The default of an account's provider call timeout (`timeout_ms`).
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

/// An account's provider call timeout (`timeout_ms`, default [`DEFAULT_PROVIDER_TIMEOUT`],
/// positive).
pub fn timeout(name: &str, ms: Option<u64>) -> Result<Duration, ConfigError> {
    match ms.unwrap_or(DEFAULT_PROVIDER_TIMEOUT.as_millis() as u64) {
        0 => Err(err(
            format!("accounts.{name}.timeout_ms"),
            "must be positive",
        )),
        ms => Ok(Duration::from_millis(ms)),
    }
}

/// One setting's value as every gateway setting is read: the environment variable when it is
/// set, else the file's key when the file gives it, else the owner's default (`or`); and the
/// name an error about the value gives: the variable when the value came from there, else the
/// file key (also for the default, which the file key would change).
#[derive(Debug, Clone, PartialEq)]
pub struct Pick<T> {
    /// Where the value came from: `PAYGATE_...` or the file key.
    pub setting: &'static str,
    /// The value, as given (environment values are text).
    pub value: T,
}

impl Pick<String> {
    /// `var` from `env`, else the file's `key` (`file`), if either gives one.
    pub fn of(
        env: &dyn Fn(&str) -> Option<String>,
        var: &'static str,
        key: &'static str,
        file: Option<String>,
    ) -> Option<Self> {
        env(var)
            .map(|value| Pick {
                setting: var,
                value,
            })
            .or_else(|| {
                file.map(|value| Pick {
                    setting: key,
                    value,
                })
            })
    }

    /// The same, with the owner's `default` under the file key when neither gives one.
    pub fn or(
        env: &dyn Fn(&str) -> Option<String>,
        var: &'static str,
        key: &'static str,
        file: Option<String>,
        default: &str,
    ) -> Self {
        Self::of(env, var, key, file).unwrap_or_else(|| Pick {
            setting: key,
            value: default.to_owned(),
        })
    }

    /// The value parsed by `parse`; its error names the setting.
    pub fn parse<T>(self, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        parse(&self.value).map_err(|problem| err(self.setting, problem))
    }
}

impl Pick<u64> {
    /// A whole number: `var` from `env` when set, else the file's `key` (`file`), if either
    /// gives one. A value that is not a number, or that `valid` refuses (wherever it came
    /// from), is an error naming its setting with `problem`.
    pub fn number(
        env: &dyn Fn(&str) -> Option<String>,
        (var, key): (&'static str, &'static str),
        file: Option<u64>,
        valid: impl Fn(u64) -> bool,
        problem: &str,
    ) -> Result<Option<Self>, ConfigError> {
        let picked = match env(var) {
            Some(v) => Pick {
                setting: var,
                value: v.parse().map_err(|_| err(var, problem))?,
            },
            None => match file {
                Some(value) => Pick {
                    setting: key,
                    value,
                },
                None => return Ok(None),
            },
        };
        if !valid(picked.value) {
            return Err(err(picked.setting, problem));
        }
        Ok(Some(picked))
    }

    /// The same, with the owner's `default` when neither gives one.
    pub fn number_or(
        env: &dyn Fn(&str) -> Option<String>,
        names: (&'static str, &'static str),
        file: Option<u64>,
        default: u64,
        valid: impl Fn(u64) -> bool,
        problem: &str,
    ) -> Result<u64, ConfigError> {
        Ok(Self::number(env, names, file, valid, problem)?.map_or(default, |p| p.value))
    }
}

#[cfg(test)]
mod pick_tests {
    use super::*;

    #[test]
    fn the_environment_wins_then_the_file_then_the_default_and_errors_name_the_source() {
        let env = |v: &str| (v == "PAYGATE_X").then(|| "from-env".to_owned());
        let none = |_: &str| None;
        let file = Some("from-file".to_owned());
        assert_eq!(
            Pick::of(&env, "PAYGATE_X", "x", file.clone())
                .unwrap()
                .setting,
            "PAYGATE_X"
        );
        assert_eq!(
            Pick::of(&none, "PAYGATE_X", "x", file.clone())
                .unwrap()
                .value,
            "from-file"
        );
        assert_eq!(Pick::of(&none, "PAYGATE_X", "x", None), None);
        let d = Pick::or(&none, "PAYGATE_X", "x", None, "default");
        assert_eq!((d.setting, d.value.as_str()), ("x", "default"));
        let e = Pick::or(&env, "PAYGATE_X", "x", file, "default")
            .parse(|v| v.parse::<u32>().map_err(|_| "must be a number".to_owned()))
            .unwrap_err();
        assert!(e.to_string().starts_with("PAYGATE_X"), "{e}");
    }

    #[test]
    fn numbers_are_checked_wherever_they_come_from() {
        let names = ("PAYGATE_N", "n");
        let env = |v: &str| (v == "PAYGATE_N").then(|| "0".to_owned());
        let text = |v: &str| (v == "PAYGATE_N").then(|| "soon".to_owned());
        let none = |_: &str| None;
        let positive = |n: u64| n > 0;
        let e = Pick::number(&env, names, Some(5), positive, "must be positive").unwrap_err();
        assert_eq!(e.to_string(), "PAYGATE_N: must be positive");
        let e = Pick::number(&text, names, None, |_| true, "must be a number").unwrap_err();
        assert_eq!(e.to_string(), "PAYGATE_N: must be a number");
        let e = Pick::number(&none, names, Some(0), positive, "must be positive").unwrap_err();
        assert_eq!(e.to_string(), "n: must be positive");
        let p = Pick::number(&none, names, Some(5), positive, "")
            .unwrap()
            .unwrap();
        assert_eq!((p.setting, p.value), ("n", 5));
        assert_eq!(
            Pick::number_or(&none, names, None, 7, positive, "").unwrap(),
            7
        );
    }
}
