//! How a command ends, decided once at the entry: the kind of a failure, its exit status and
//! its name in `--json` errors. Errors deeper down say what went wrong and what to do next;
//! the few that change how a script should react carry a marker type from here.
//!
//! Exit statuses: 0 done; 1 an error; 2 the command line is wrong (the parser's errors too);
//! 3 a check refused the operation and nothing was changed; 130 interrupted (Ctrl-C, SIGTERM).

use serde::Serialize;

/// How a command that ran to its end ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Done,
    /// A check failed; the report says which, and nothing was changed.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Error,
    Usage,
    Refused,
    Interrupted,
}

impl Kind {
    /// What a failure is: an interruption whatever it led to; else the markers in its chain,
    /// a failed undo first (its end is not "nothing changed", whatever started it).
    pub fn of(err: &anyhow::Error, interrupted: bool) -> Self {
        if interrupted {
            Kind::Interrupted
        } else if err.downcast_ref::<NotUndone>().is_some() {
            Kind::Error
        } else if err.downcast_ref::<Refusal>().is_some() {
            Kind::Refused
        } else if err.downcast_ref::<UsageError>().is_some() {
            Kind::Usage
        } else {
            Kind::Error
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Error => 1,
            Kind::Usage => 2,
            Kind::Refused => 3,
            Kind::Interrupted => 130,
        }
    }
}

impl Status {
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Done => 0,
            Status::Refused => Kind::Refused.exit_code(),
        }
    }
}

/// The command line asks for something that cannot be done as asked (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A check refused the operation before anything changed (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Putting things back after a failure failed too: whatever the first failure was, the
/// data is not as it was (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotUndone(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn kinds_and_exit_codes() {
        let refused = || anyhow::Error::from(Refusal("the upgrade cannot start".into()));
        let cases = [
            (anyhow::anyhow!("docker is down"), false, Kind::Error, 1),
            (
                UsageError("pass --yes".into()).into(),
                false,
                Kind::Usage,
                2,
            ),
            (refused(), false, Kind::Refused, 3),
            (
                refused().context("nothing was changed"),
                false,
                Kind::Refused,
                3,
            ),
            (
                refused().context(NotUndone("and so did undoing it".into())),
                false,
                Kind::Error,
                1,
            ),
            (refused(), true, Kind::Interrupted, 130),
            (
                Err::<(), _>(std::io::Error::other("x"))
                    .context("cannot copy")
                    .unwrap_err(),
                false,
                Kind::Error,
                1,
            ),
        ];
        for (err, interrupted, kind, code) in cases {
            assert_eq!(Kind::of(&err, interrupted), kind, "{err:#}");
            assert_eq!(kind.exit_code(), code);
        }
        assert_eq!(Status::Done.exit_code(), 0);
        assert_eq!(Status::Refused.exit_code(), 3);
        assert_eq!(serde_json::to_value(Kind::Refused).unwrap(), "refused");
    }
}
