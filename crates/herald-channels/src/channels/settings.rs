//! A kind's settings as the API and `herald channel create` give them, read by the kind's
//! own types and rules. Each kind registers a check (its `Config` and `Secrets` types and
//! their validation, through [`KindRules`]) and a reading of the CLI's flags next to its
//! channel; both callers go through them, so a kind's rules are stated once.

use super::error::ChannelError;
use crate::channel_kind::ChannelKind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A kind's settings as they are stored: the configuration, and the secrets to seal
/// (None: none).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub config: Value,
    pub secrets: Option<Value>,
}

/// One thing wrong with settings given as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingProblem {
    /// A key missing, unknown or of the wrong type: `field` is the key's path
    /// (`config.port`), `rule` one of `required`, `known_field`, `type`, `one_of`.
    Field {
        field: String,
        rule: &'static str,
        detail: String,
    },
    /// A rule of the kind broken, in the kind's words (naming `herald channel create`'s
    /// flags, which the API renames as its fields).
    Rule(String),
}

/// Why settings given as JSON were not taken.
#[derive(Debug)]
pub enum SettingsError {
    /// What is wrong with them, every problem found.
    Invalid(Vec<SettingProblem>),
    /// They were valid but could not be written back as JSON (a bug).
    Internal(serde_json::Error),
}

/// A kind's settings types and rules.
pub trait KindRules {
    const KIND: ChannelKind;
    type Config: Serialize + DeserializeOwned + Validate;
    type Secrets: Serialize + DeserializeOwned + Validate;
    /// Rules between the two (SMTP: a username needs a password).
    fn validate_pair(_config: &Self::Config, _secrets: &Self::Secrets) -> Result<(), ChannelError> {
        Ok(())
    }
}

/// The rules of one settings type (a kind's `Config` or `Secrets`) that its serde shape
/// cannot state: ranges, formats, one of two keys.
pub trait Validate {
    fn validate(&self) -> Result<(), ChannelError>;
}

/// The secrets of a kind that has none: an empty object, and nothing else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSecrets {}

impl Validate for NoSecrets {
    fn validate(&self) -> Result<(), ChannelError> {
        Ok(())
    }
}

/// Reads `config` and `secrets` as the kind's types and checks them by its rules: the
/// settings as stored, or every problem found (a key missing, unknown or of the wrong
/// type in either section, then the kind's rules for each, then the rules between them
/// once both hold).
pub fn check<R: KindRules>(
    config: &Map<String, Value>,
    secrets: &Map<String, Value>,
) -> Result<Checked, SettingsError> {
    let invalid = |problems: Vec<SettingProblem>| SettingsError::Invalid(problems);
    if R::KIND.secret_fields().next().is_none()
        && let Some(k) = secrets.keys().next()
    {
        return Err(invalid(vec![SettingProblem::Field {
            field: format!("secrets.{k}"),
            rule: "known_field",
            detail: format!("{} channels have no secrets", R::KIND),
        }]));
    }
    let mut problems = Vec::new();
    let c = parse_section::<R::Config>("config", config)
        .map_err(|e| problems.push(e))
        .ok();
    let s = parse_section::<R::Secrets>("secrets", secrets)
        .map_err(|e| problems.push(e))
        .ok();
    if let Some(c) = &c
        && let Err(e) = c.validate()
    {
        problems.push(SettingProblem::Rule(e.to_string()));
    }
    if let Some(s) = &s
        && let Err(e) = s.validate()
    {
        problems.push(SettingProblem::Rule(e.to_string()));
    }
    let (Some(c), Some(s)) = (c, s) else {
        return Err(invalid(problems));
    };
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    R::validate_pair(&c, &s).map_err(|e| invalid(vec![SettingProblem::Rule(e.to_string())]))?;
    checked(&c, &s).map_err(SettingsError::Internal)
}

/// The settings as stored: secrets that are an empty object are none.
pub fn checked<C: Serialize, S: Serialize>(
    config: &C,
    secrets: &S,
) -> Result<Checked, serde_json::Error> {
    let config = serde_json::to_value(config)?;
    let secrets = match serde_json::to_value(secrets)? {
        Value::Object(m) if m.is_empty() => None,
        v => Some(v),
    };
    Ok(Checked { config, secrets })
}

/// Reads `section` (config or secrets) as the kind's type `T`, naming the key that is
/// missing, unknown or of the wrong type.
pub fn parse_section<T: DeserializeOwned>(
    section: &str,
    value: &Map<String, Value>,
) -> Result<T, SettingProblem> {
    let error = match serde_json::from_value::<T>(Value::Object(value.clone())) {
        Ok(t) => return Ok(t),
        Err(e) => e.to_string(),
    };
    let field = |field: String, rule: &'static str, detail: String| SettingProblem::Field {
        field,
        rule,
        detail,
    };
    let named = |prefix: &str| {
        error
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    if let Some(key) = named("missing field `") {
        return Err(field(
            format!("{section}.{key}"),
            "required",
            format!("`{section}.{key}` is required"),
        ));
    }
    if let Some(key) = named("unknown field `") {
        let known = error
            .split_once(", expected ")
            .map(|(_, k)| k)
            .unwrap_or("");
        return Err(field(
            format!("{section}.{key}"),
            "known_field",
            format!("`{section}.{key}` is not a setting of this kind (expected {known})"),
        ));
    }
    // A value of the wrong type: the key whose removal changes the error is the one.
    let culprit = value.keys().find(|k| {
        let mut rest = value.clone();
        rest.remove(*k);
        match serde_json::from_value::<T>(Value::Object(rest)) {
            Ok(_) => true,
            Err(e) => e.to_string() != error,
        }
    });
    let rule = if error.starts_with("unknown variant") {
        "one_of"
    } else {
        "type"
    };
    Err(match culprit {
        Some(k) => field(
            format!("{section}.{k}"),
            rule,
            format!("`{section}.{k}`: {error}"),
        ),
        None => field(section.to_string(), rule, error),
    })
}

/// The flags `herald channel create` was given, by setting key (`account_sid` for
/// `--account-sid`); a flag not given is absent or null.
pub struct Flags {
    kind: ChannelKind,
    values: Map<String, Value>,
}

impl Flags {
    pub fn new(kind: ChannelKind, values: Map<String, Value>) -> Flags {
        Flags { kind, values }
    }

    fn value(&self, key: &str) -> Option<&Value> {
        self.values.get(key).filter(|v| !v.is_null())
    }

    /// A text flag, if given.
    pub fn text(&self, key: &str) -> Option<String> {
        self.value(key).and_then(Value::as_str).map(str::to_string)
    }

    /// A text flag the kind needs, given and not empty; otherwise `--kind twilio needs
    /// --account-sid`, naming the flag as `flag` says (`--tls none|starttls|tls`).
    pub fn need(&self, key: &str, flag: &str) -> Result<String, ChannelError> {
        self.text(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| self.missing(flag))
    }

    /// A flag of any other type, if given and of that type.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.value(key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// A number flag, if given: a JSON number, or the text of one JSON cannot hold
    /// (`NaN`, `inf`), which the kind's rules then refuse.
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.value(key)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// A switch: whether it was given.
    pub fn set(&self, key: &str) -> bool {
        self.value(key).and_then(Value::as_bool).unwrap_or(false)
    }

    /// `--kind twilio needs {flag}`.
    pub fn missing(&self, flag: &str) -> ChannelError {
        ChannelError::settings(format!("--kind {} needs {flag}", self.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::{sandbox, smtp};

    #[test]
    fn sections_name_the_key_of_the_wrong_type() {
        let mut m = Map::new();
        m.insert("latency_ms".into(), Value::from("slow"));
        m.insert("fail_rate".into(), Value::from(0.1));
        let Err(SettingProblem::Field { field, rule, .. }) =
            parse_section::<sandbox::SandboxConfig>("config", &m)
        else {
            panic!("a key of the wrong type is a field problem");
        };
        assert_eq!((field.as_str(), rule), ("config.latency_ms", "type"));
        let mut m = Map::new();
        m.insert("host".into(), Value::from("h"));
        m.insert("tls".into(), Value::from("ssl"));
        let e = parse_section::<smtp::Config>("config", &m);
        let Err(SettingProblem::Field { field, rule, .. }) = &e else {
            panic!("{e:?}");
        };
        assert_eq!((field.as_str(), *rule), ("config.tls", "one_of"), "{e:?}");
    }

    #[test]
    fn flags_say_which_the_kind_needs() {
        let mut values = Map::new();
        values.insert("host".into(), Value::from(""));
        values.insert("port".into(), Value::from(25));
        values.insert("from".into(), Value::Null);
        values.insert("allow_plaintext_auth".into(), Value::from(true));
        let flags = Flags::new(crate::channel_kind::smtp::KIND, values);
        assert_eq!(
            flags.need("host", "--host").unwrap_err().to_string(),
            "--kind smtp needs --host"
        );
        assert_eq!(flags.text("from"), None);
        assert_eq!(flags.get::<u16>("port"), Some(25));
        assert_eq!(flags.number("port"), Some(25.0));
        assert!(flags.set("allow_plaintext_auth") && !flags.set("unreachable"));
        let nan: Map<String, Value> = [("fail_rate".to_string(), Value::from("NaN"))]
            .into_iter()
            .collect();
        let flags = Flags::new(crate::channel_kind::sandbox::KIND, nan);
        assert!(flags.number("fail_rate").is_some_and(f64::is_nan));
        let refused = (crate::channels::sandbox::IMPLEMENTATION.from_flags)(&flags).unwrap_err();
        assert!(
            refused.mentions("--fail-rate NaN is not a probability"),
            "{refused}"
        );
    }
}
