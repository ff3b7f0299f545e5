//! `perch-admin`: the operator's commands, over [`perch::flows::operators`],
//! [`perch::flows::rotation`] and [`perch::flows::people::forget`]. `main.rs` wires them to the process (environment, stdout,
//! stderr, exit code); this is what the tests run against the local stack.
//!
//! Every answer is one JSON document on stdout (never a token: see `OperatorView`); progress of
//! a long run goes to stderr, a line per connection, so it can be watched and its output kept.

use std::io::Write;

use perch::app::Adapters;
use perch::domain::CustomerId;
use perch::flows::people::forget;
use perch::flows::{operators, rotation};
use perch::{AppState, Error};
use serde_json::Value;

pub const USAGE: &str = "usage:
  perch-admin connections list --customer <customer>
  perch-admin connections show <connection_id>
  perch-admin connections disconnect <connection_id>
  perch-admin connections disconnect --customer <customer> --all [--per-second <n, default 2>]
  perch-admin reencrypt --to <key id, ARN or alias>
  perch-admin people forget --customer <customer> <person_id>";

/// Disconnects a second when not told: well under Finch's 1,000 requests per 5 minutes per IP,
/// leaving most of it to the status sweep.
pub const DEFAULT_PER_SECOND: f64 = 2.0;

/// A command line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    List { customer: CustomerId },
    Show { connection_id: String },
    DisconnectOne { connection_id: String },
    DisconnectAll { customer: CustomerId, per_second: f64 },
    Reencrypt { to: String },
    Forget { customer: CustomerId, person_id: String },
}

/// Parses the arguments after the program name; the error is the usage, with what was wrong.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let bad = |why: &str| format!("{why}\n{USAGE}");
    let customer = |raw: &str| CustomerId::parse(raw).map_err(|e| bad(&format!("--customer: {e}")));
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["connections", "list", "--customer", c] => Ok(Command::List { customer: customer(c)? }),
        ["connections", "show", id] if !id.starts_with("--") => Ok(Command::Show { connection_id: (*id).to_owned() }),
        ["connections", "disconnect", id] if !id.starts_with("--") => {
            Ok(Command::DisconnectOne { connection_id: (*id).to_owned() })
        }
        ["connections", "disconnect", "--customer", c, "--all", rest @ ..] => {
            let per_second = match rest {
                [] => DEFAULT_PER_SECOND,
                ["--per-second", n] => n
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n > 0.0)
                    .ok_or_else(|| bad("--per-second takes a positive number"))?,
                _ => return Err(bad("unexpected arguments after --all")),
            };
            Ok(Command::DisconnectAll { customer: customer(c)?, per_second })
        }
        ["connections", "disconnect", "--customer", _] => {
            Err(bad("disconnecting all of a customer's connections needs --all, to be sure"))
        }
        ["reencrypt", "--to", key] => Ok(Command::Reencrypt { to: (*key).to_owned() }),
        ["people", "forget", "--customer", c, person] if !person.starts_with("--") => {
            Ok(Command::Forget { customer: customer(c)?, person_id: (*person).to_owned() })
        }
        _ => Err(bad("unknown command")),
    }
}

/// What a command answered, and whether everything it was asked succeeded (the exit code).
pub struct Answer {
    pub output: Value,
    pub complete: bool,
}

/// Runs a command; `progress` gets a line per connection of a long run.
pub async fn run<A: Adapters>(app: &AppState<A>, command: Command, progress: &mut dyn Write) -> Result<Answer, Error> {
    Ok(match command {
        Command::List { customer } => {
            let all = operators::list(app, &customer).await?;
            Answer {
                output: to_json(&serde_json::json!({"customer_id": customer, "connections": all}))?,
                complete: true,
            }
        }
        Command::Show { connection_id } => {
            Answer { output: to_json(&operators::show(app, &connection_id).await?)?, complete: true }
        }
        Command::DisconnectOne { connection_id } => {
            let done = operators::disconnect_one(app, &connection_id).await?;
            Answer { output: serde_json::json!({"connection_id": connection_id, "disconnected": done}), complete: true }
        }
        Command::DisconnectAll { customer, per_second } => {
            let report = operators::disconnect_all(app, &customer, per_second, |id, outcome| {
                let line = match outcome {
                    Ok(d) => format!("{id}: {}", serde_json::to_string(d).unwrap_or_default().trim_matches('"')),
                    Err(e) => format!("{id}: failed: {}", e.chain()),
                };
                // Progress is a courtesy: a closed stderr must not stop the run.
                let _ = writeln!(progress, "{line}");
            })
            .await?;
            let complete = report.failed.is_empty();
            Answer { output: to_json(&report)?, complete }
        }
        Command::Reencrypt { to } => {
            let report = rotation::reencrypt_all(app, &to).await?;
            let complete = report.failed == 0 && report.skipped == 0;
            Answer { output: to_json(&report)?, complete }
        }
        Command::Forget { customer, person_id } => {
            let report = forget::forget_person(app, &customer, &person_id).await?;
            Answer { complete: report.complete, output: to_json(&report)? }
        }
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::internal_from("answer to JSON", e))
}
