//! # ami-codegen: writes `ami-types`' generated code from the AMI catalog
//!
//! Reads `../shared/catalog/asterisk-22.10.1.json` (every action and event of Asterisk
//! 22.10.1) and writes `ami-types/src/generated/{enums,events,actions}.rs`. The output is
//! committed; `cargo run -p ami-codegen` rewrites it, and this crate's test fails when the
//! committed files differ from what [`generate`] produces now.
//!
//! ```no_run
//! let catalog = std::fs::read_to_string(ami_codegen::catalog_path())?;
//! for file in ami_codegen::generate(&catalog)? {
//!     println!("{}: {} bytes", file.name, file.text.len());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The catalog gives names, enum values, repeatable and required flags, but no types. Types
//! are inferred here, in one place ([`infer`]): enums of `0`/`1`, `Yes`/`No` and similar
//! become booleans, all-numeric enums and a fixed list of counter and time fields become
//! integers, other enums become Rust enums with an `Other(String)` case, and the rest is text.
//! Every field is optional: the catalog's own notes say documented fields are often absent.
//!
//! Where Asterisk 22.10.1's C source says otherwise than the catalog (its docs), small
//! hand-written tables patch the model, each entry naming the C code it follows: fields
//! typed per event (`Cause` is a number in `Hangup`, text in `PeerStatus`), fields and
//! parameters the docs omit (`TechCause`, `ChanVariable(<channel>)`, QueueAdd's
//! `Wrapuptime`), enum values the docs omit (`Reachable`, `Mute`), C-escaped fields, event
//! masks, `UserEvent`'s headers of the caller's choosing, parameters Asterisk requires,
//! headers Asterisk reads under another name (JabberSend's `ScreenName`, documented `JID`),
//! and yes/no parameters that only select parts, none selecting all (QueueReload's
//! `Members`, `Rules`, `Parameters`: methods without argument, as `no` leaves nothing out).
//! The generator (or a test) fails when an entry stops matching the catalog, so a fix never
//! stops applying unnoticed.

mod emit;
mod model;
mod names;

pub use model::infer;

use std::path::PathBuf;

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// File name inside `ami-types/src/generated/`.
    pub name: &'static str,
    /// Its full text.
    pub text: String,
}

/// Why the catalog could not be turned into code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The catalog is not JSON.
    #[error("catalog JSON: {0}")]
    Json(serde_json::Error),
    /// The catalog is JSON but cannot be turned into one consistent set of types (an entry
    /// without a name, a name twice...): the text says which.
    #[error("{0}")]
    Catalog(String),
}

/// The catalog the committed code is generated from.
pub fn catalog_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/catalog/asterisk-22.10.1.json")
}

/// Where the generated files live.
pub fn output_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ami-types/src/generated")
}

/// Generates every file from the catalog's JSON text.
pub fn generate(catalog_json: &str) -> Result<Vec<File>, Error> {
    let json: serde_json::Value = serde_json::from_str(catalog_json).map_err(Error::Json)?;
    let model = model::Model::build(&json)?;
    Ok(emit::files(&model))
}
