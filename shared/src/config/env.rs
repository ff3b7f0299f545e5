//! Reading settings from the environment: the one helper [`crate::config::Config`] and the
//! sweep's settings share, so every variable is refused the same way with its name in the
//! message.

/// Why the configuration was refused.
#[derive(thiserror::Error)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// As its message: `main` returning this error prints it with `Debug`, and that line should
/// say in words which variable to fix.
impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl ConfigError {
    /// Logs the refusal (cold start stops right after).
    pub fn log(&self) {
        tracing::error!(error = %self, "configuration refused at cold start");
    }
}

/// Typed reads over a lookup function (the process environment, or a map in tests: `set_var`
/// is unsafe in edition 2024).
pub struct Env<F>(pub F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// A value, if set and not blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// An `http(s)` URL.
    pub fn url(&self, name: &'static str, value: &str) -> Result<url::Url, ConfigError> {
        let u = url::Url::parse(value).map_err(|e| ConfigError::Invalid { name, reason: e.to_string() })?;
        if !matches!(u.scheme(), "https" | "http") {
            return Err(ConfigError::Invalid { name, reason: "must be an http(s) URL".into() });
        }
        Ok(u)
    }

    /// A whole number in `min..=max`, `default` when unset.
    pub fn number(&self, name: &'static str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let v = match self.optional(name) {
            None => default,
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e: std::num::ParseIntError| ConfigError::Invalid { name, reason: e.to_string() })?,
        };
        if v < min {
            return Err(ConfigError::Invalid { name, reason: format!("must be at least {min}") });
        }
        if v > max {
            return Err(ConfigError::Invalid { name, reason: format!("must be at most {max}") });
        }
        Ok(v)
    }

    /// `true`/`false` (or `1`/`0`), `default` when unset.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(_) => Err(ConfigError::Invalid { name, reason: "must be true or false".into() }),
        }
    }

    /// A number that must fit `T` (its bounds are `T`'s, narrowed by `min` and `max`).
    pub fn int<T: TryFrom<u64>>(&self, name: &'static str, default: u64, min: u64, max: u64) -> Result<T, ConfigError> {
        let v = self.number(name, default, min, max)?;
        T::try_from(v).map_err(|_| ConfigError::Invalid { name, reason: "is out of range".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_parsed_bounded_and_named_in_refusals() {
        let env = Env(|k: &str| match k {
            "N" => Some("42".to_owned()),
            "BLANK" => Some("  ".to_owned()),
            "BAD" => Some("soon".to_owned()),
            "U" => Some("ftp://x".to_owned()),
            _ => None,
        });
        assert_eq!(env.number("N", 1, 0, 100).unwrap(), 42);
        assert_eq!(env.number("UNSET", 7, 0, 100).unwrap(), 7);
        assert_eq!(env.number("BLANK", 7, 0, 100).unwrap(), 7);
        assert!(env.number("N", 1, 50, 100).unwrap_err().to_string().contains("at least 50"));
        assert!(env.number("N", 1, 0, 10).unwrap_err().to_string().contains("at most 10"));
        assert!(env.number("BAD", 1, 0, 10).unwrap_err().to_string().contains("BAD"));
        assert!(matches!(env.required("BLANK"), Err(ConfigError::Missing("BLANK"))));
        assert!(env.url("U", "ftp://x").is_err());
        assert_eq!(env.int::<u8>("N", 1, 0, 1000).unwrap(), 42u8);
    }

    #[test]
    fn flags_take_true_or_false_and_name_the_variable_otherwise() {
        let env = Env(|k: &str| match k {
            "ON" => Some(" TRUE ".to_owned()),
            "OFF" => Some("0".to_owned()),
            "BAD" => Some("yes".to_owned()),
            _ => None,
        });
        assert!(env.flag("ON", false).unwrap());
        assert!(!env.flag("OFF", true).unwrap());
        assert!(env.flag("UNSET", true).unwrap());
        assert!(env.flag("BAD", true).unwrap_err().to_string().contains("BAD"));
    }
}
