//! What a Connect session asks for: its flow, Finch products, sandbox mode, auth method,
//! expiry — and the one validator of each, shared by new sessions and re-authentications.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::Error;

/// Finch's bound on a session's `minutes_to_expire` (90 days).
pub const MAX_MINUTES_TO_EXPIRE: u32 = 129_600;
/// How long a Finch session lives when `minutes_to_expire` is not given (30 days, seed 002).
pub const DEFAULT_MINUTES_TO_EXPIRE: u32 = 43_200;

macro_rules! open_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value Finch added after this code was written, kept verbatim.
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(s) => s,
                }
            }

            /// The value for a known wire name, `None` for any other.
            pub fn known(s: &str) -> Option<Self> {
                match s {
                    $($wire => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::known(s).unwrap_or_else(|| Self::Other(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::from(String::deserialize(d)?.as_str()))
            }
        }
    };
}

open_enum!(
    /// A Finch product (`ConnectProducts`). Open: Finch reports a connection's products as free
    /// strings, so one it adds tomorrow is kept; a *request* names only known ones
    /// ([`known_products`]).
    Product {
        Benefits => "benefits",
        Company => "company",
        Deduction => "deduction",
        Directory => "directory",
        Documents => "documents",
        Employment => "employment",
        Individual => "individual",
        Payment => "payment",
        PayStatement => "pay_statement",
        Plans => "plans",
        PlansDependents => "plans_dependents",
        PlansEnrollments => "plans_enrollments",
        Recordkeeping => "recordkeeping",
        Ssn => "ssn",
    }
);

/// `deserialize_with` for requests: every product must be one Finch defines, so a typo fails
/// the body's parse before anything reaches Finch.
pub fn known_products<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Product>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|p| Product::known(p).ok_or_else(|| serde::de::Error::custom(format!("unknown product `{p}`"))))
        .collect()
}

/// `deserialize_with` for an optional list of [`known_products`].
pub fn known_products_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Product>>, D::Error> {
    #[derive(Deserialize)]
    struct Known(#[serde(deserialize_with = "known_products")] Vec<Product>);
    Ok(Option::<Known>::deserialize(d)?.map(|k| k.0))
}

/// The products of a session: at least one, none twice, and not both `deduction` and its alias
/// `benefits`.
pub fn validate_products(products: &[Product]) -> Result<(), Error> {
    if products.is_empty() {
        return Err(Error::invalid("invalid_products", "`products` must name at least one Finch product."));
    }
    let mut seen = HashSet::new();
    if !products.iter().all(|p| seen.insert(p)) {
        return Err(Error::invalid("invalid_products", "`products` lists a product twice."));
    }
    if seen.contains(&Product::Deduction) && seen.contains(&Product::Benefits) {
        return Err(Error::invalid("invalid_products", "`deduction` is an alias of `benefits`; send only one."));
    }
    Ok(())
}

/// A session's `minutes_to_expire`, when given: 1 to [`MAX_MINUTES_TO_EXPIRE`].
pub fn validate_minutes_to_expire(minutes: Option<u32>) -> Result<(), Error> {
    match minutes {
        Some(m) if !(1..=MAX_MINUTES_TO_EXPIRE).contains(&m) => Err(Error::invalid(
            "invalid_minutes_to_expire",
            format!("`minutes_to_expire` must be between 1 and {MAX_MINUTES_TO_EXPIRE}."),
        )),
        _ => Ok(()),
    }
}

/// How a Connect flow comes back to Perch: the employer's browser redirected to
/// `GET /connect/callback`, or the app's frontend posting the code from the Connect SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowMode {
    Redirect,
    Embedded,
}

impl FlowMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redirect => "redirect",
            Self::Embedded => "embedded",
        }
    }

    /// Reads a stored value; `None` for anything else (a corrupt item is an error, not a guess).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "redirect" => Some(Self::Redirect),
            "embedded" => Some(Self::Embedded),
            _ => None,
        }
    }
}

/// `sandbox` of a Connect session: Finch's generated data, or a provider's demo account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    Finch,
    Provider,
}

/// `integration.auth_method` of a Connect session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Assisted,
    Credential,
    Oauth,
    ApiToken,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Req {
        #[serde(deserialize_with = "known_products")]
        products: Vec<Product>,
    }

    #[test]
    fn requests_name_only_known_products_and_finch_may_report_new_ones() {
        let r: Req = serde_json::from_str(r#"{"products":["pay_statement","ssn"]}"#).unwrap();
        assert_eq!(r.products, vec![Product::PayStatement, Product::Ssn]);
        assert!(serde_json::from_str::<Req>(r#"{"products":["payroll"]}"#).is_err());
        let reported: Vec<Product> = serde_json::from_str(r#"["company","payroll"]"#).unwrap();
        assert_eq!(reported[1], Product::Other("payroll".into()));
        assert_eq!(serde_json::to_string(&reported).unwrap(), r#"["company","payroll"]"#);
    }

    #[test]
    fn product_lists_are_validated_once_for_every_flow() {
        assert!(validate_products(&[Product::Company]).is_ok());
        for bad in [vec![], vec![Product::Company, Product::Company], vec![Product::Benefits, Product::Deduction]] {
            let e = validate_products(&bad).unwrap_err();
            assert!(matches!(e, Error::Invalid { code: "invalid_products", .. }), "{bad:?}");
        }
    }

    #[test]
    fn minutes_to_expire_is_bounded_by_finch() {
        assert!(validate_minutes_to_expire(None).is_ok());
        assert!(validate_minutes_to_expire(Some(1)).is_ok());
        assert!(validate_minutes_to_expire(Some(MAX_MINUTES_TO_EXPIRE)).is_ok());
        assert!(validate_minutes_to_expire(Some(0)).is_err());
        assert!(validate_minutes_to_expire(Some(MAX_MINUTES_TO_EXPIRE + 1)).is_err());
    }
}
