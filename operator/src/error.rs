//! The crate-wide reconcile error (controller-rs `lib.rs` style): one thiserror enum whose
//! variants carry their cause, plus a low-cardinality [`Error::metric_label`] and the
//! permanent/transient split [`crate::controller::error_policy`] acts on.

use crate::build::BuildError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stored object does not deserialize as a `TracedPipeline` (e.g. written before a
    /// schema change, or with validation off). Permanent until the object changes.
    #[error("not a valid TracedPipeline: {0}")]
    InvalidObject(String),
    /// The desired objects cannot be built from the spec. Permanent until the spec changes.
    #[error("cannot build the desired objects")]
    Build(#[source] BuildError),
    /// Another TracedPipeline already owns this namespace (the child names are fixed per
    /// namespace). Permanent until one of them goes away.
    #[error(
        "TracedPipeline {0} already manages this namespace; only one per namespace is supported"
    )]
    Conflict(String),
    /// The object lacks a field every reconcile needs.
    #[error("the TracedPipeline has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// An API call failed (transient: retried with backoff).
    #[error("failed to {action} {kind} {name}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A status body could not be serialized.
    #[error("failed to serialize the {0}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The variant, lower-case: the `error` label of the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidObject(_) => "invalid_object",
            Self::Build(_) => "build",
            Self::Conflict(_) => "conflict",
            Self::MissingMetadata(_) => "missing_metadata",
            Self::Kube { .. } => "kube",
            Self::Serialize(..) => "serialize",
        }
    }

    /// Problems of the object itself: retrying cannot help, so the controller reports
    /// `Degraded` and waits for a change.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidObject(_)
            | Self::Build(_)
            | Self::Conflict(_)
            | Self::MissingMetadata(_) => true,
            Self::Kube { .. } | Self::Serialize(..) => false,
        }
    }

    /// `Degraded` condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidObject(_) => "InvalidObject",
            Self::Build(_) | Self::MissingMetadata(_) => "InvalidSpec",
            Self::Conflict(_) => "Conflict",
            Self::Kube { .. } => "ApiError",
            Self::Serialize(..) => "InternalError",
        }
    }

    /// The message with its cause chain, for conditions and events.
    pub fn full_message(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            msg.push_str(": ");
            msg.push_str(&cause.to_string());
            source = cause.source();
        }
        msg
    }

    pub(crate) fn kube(
        action: &'static str,
        kind: &'static str,
        name: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let name = name.into();
        move |source| Self::Kube {
            action,
            kind,
            name,
            source,
        }
    }
}
