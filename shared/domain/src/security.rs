//! Commands whose sender is proven: the `security:` block of the service
//! file, operators' Ed25519 keys, signed commands and what each role may do.
//!
//! ```yaml
//! security:
//!   require_signed_commands: true
//!   operators:
//!     - { name: ana, key: 3f0c…(64 hex), role: admin }
//!     - { name: bo, key: 9a41…, role: deployer }
//! ```
//!
//! A signed command carries a [`CommandSignature`]: the signer's public key,
//! the time it was signed and an Ed25519 signature over
//! [`signed_text`]`(verb, command_id, at_ms, content_sha256)`, where
//! `content_sha256` is the SHA-256 of the command's [`canonical`] content
//! (every field the sender wrote but `signature`, keys sorted, no
//! whitespace). [`authorise`] decides, with no I/O and no clock, whether a
//! command may be carried out, and returns the [`SignedBy`] the log keeps in
//! the metadata of the events it causes (so that an audit can check the
//! signature again later, [`SignedBy::verify`]).
//!
//! The rules, in the order they are checked:
//!
//! 1. Signing is required once a `security:` block with
//!    `require_signed_commands: true` was applied, and for the apply that
//!    turns it on (the bootstrap). That one is checked against the keys it
//!    brings and must be signed by one of its admins; and when the planner
//!    was given admin keys of its own ([`Trust::admin_keys`],
//!    `--admin-key`), by one of those: then nobody who merely reaches the
//!    bus first can turn signing on with keys of their own and lock the
//!    owner out. Those keys count as admins whatever the block says, so
//!    whoever runs the planner can always change the block again.
//! 2. An unsigned command is refused ([`RejectKind::Unsigned`]) when signing
//!    is required; otherwise it is carried out as before, its `actor` as sent.
//! 3. A signature is always checked, required or not: its key must be an
//!    operator's ([`RejectKind::UnknownKey`]), the signature must hold
//!    ([`RejectKind::BadSignature`]), and it must have been made within
//!    [`MAX_SIGNATURE_AGE_MS`] of the planner's clock, either way
//!    ([`RejectKind::StaleSignature`]).
//! 4. The operator's role must allow the verb ([`Role::may`]), and a command
//!    that changes the `security:` block must come from an admin
//!    ([`RejectKind::Unauthorised`]).
//!
//! The actor recorded is then the operator's name, whatever the command's
//! `actor` field said.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::audit::{check_signature, key_hex, parse_key, sign_text, SigningKey, KEY_HEX_LEN};
use crate::command::{Command, RejectKind, Rejection};
use crate::limits::{shown, MAX_ACTOR_BYTES};
use crate::spec::FieldError;

/// How far a signature's time may be from the planner's clock, either way:
/// 5 minutes. A command that waited longer in JetStream (the planner down)
/// is refused as stale: sign and send it again.
pub const MAX_SIGNATURE_AGE_MS: i64 = 5 * 60 * 1000;
/// Most operators a `security:` block may list.
pub const MAX_OPERATORS: usize = 100;
/// The first line of every [`signed_text`].
pub const SIGNED_TEXT_VERSION: &str = "mentat-command-v1";

/// What an operator may do. Each role may do everything the one before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Deployments: `deploy`, `rollback`, `pause`, `resume`, `abort`,
    /// `promote`; steering a fleet rollout: `rollout_pause`,
    /// `rollout_resume`, `rollout_cancel`; and releases: `release_deploy`,
    /// `release_promote`, `release_rollback`.
    Deployer,
    /// A deployer's commands, and `apply` (services and the cluster block,
    /// not `security:`), `weight`, `spawn`, `release_hosts`, and the fleet
    /// rollouts' `rollout_start` and `rollout_rollback_all`, and
    /// `release_create`.
    Operator,
    /// Everything: also `stop`, `route` and changing the `security:` block.
    Admin,
}

impl Role {
    /// The least role that may send `verb` (an unknown verb needs an admin).
    pub fn least_for(verb: &str) -> Role {
        match verb {
            "deploy" | "rollback" | "pause" | "resume" | "abort" | "promote" | "rollout_pause"
            | "rollout_resume" | "rollout_cancel" | "release_deploy" | "release_promote"
            | "release_rollback" => Role::Deployer,
            "apply"
            | "release_create"
            | "weight"
            | "spawn"
            | "release_hosts"
            | "rollout_start"
            | "rollout_rollback_all" => Role::Operator,
            _ => Role::Admin,
        }
    }

    /// Whether this role may send `verb`.
    pub fn may(self, verb: &str) -> bool {
        self >= Role::least_for(verb)
    }

    /// Lowercase name, as written in the service file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Deployer => "deployer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One operator: a name, an Ed25519 public key (`mt key new` prints one) and a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// The name recorded as the actor of every command the key signs (1 to
    /// 128 bytes, printable, no spaces at either end).
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub name: String,
    /// Public key, 64 lowercase hex characters.
    #[schemars(length(min = KEY_HEX_LEN, max = KEY_HEX_LEN))]
    pub key: String,
    /// What the operator may do.
    pub role: Role,
}

/// The `security:` block of the service file, recorded as `SecurityDefined`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecuritySpec {
    /// Refuse every command that is not signed by one of `operators`.
    #[serde(default)]
    pub require_signed_commands: bool,
    /// The operators whose keys may sign commands.
    #[serde(default)]
    #[schemars(length(max = MAX_OPERATORS))]
    pub operators: Vec<Operator>,
}

impl SecuritySpec {
    /// Every impossible value, each with the path of its field
    /// (`security.operators[1].key`); empty when the block is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        let mut err = |field: String, message: String| {
            out.push(FieldError {
                path: format!("security.{field}"),
                message,
            })
        };
        if self.operators.len() > MAX_OPERATORS {
            err(
                "operators".into(),
                format!(
                    "{} operators, at most {MAX_OPERATORS}",
                    self.operators.len()
                ),
            );
            return out;
        }
        for (i, op) in self.operators.iter().enumerate() {
            let at = format!("operators[{i}]");
            let printable = op.name.chars().all(|c| !c.is_control());
            if op.name.trim() != op.name
                || op.name.is_empty()
                || op.name.len() > MAX_ACTOR_BYTES
                || !printable
            {
                err(
                    format!("{at}.name"),
                    format!(
                        "`{}` must be 1-{MAX_ACTOR_BYTES} bytes of printable text, no spaces at either end",
                        shown(&op.name).escape_debug()
                    ),
                );
            }
            if op.key != op.key.to_ascii_lowercase() {
                err(
                    format!("{at}.key"),
                    "must be lowercase hex, as `mt key new` prints it".into(),
                );
            } else if let Err(e) = parse_key(&op.key) {
                err(format!("{at}.key"), e);
            }
            let earlier = &self.operators[..i];
            if earlier.iter().any(|o| o.name == op.name) {
                err(
                    format!("{at}.name"),
                    format!("`{}` is listed twice", shown(&op.name)),
                );
            }
            if earlier.iter().any(|o| o.key == op.key) {
                err(
                    format!("{at}.key"),
                    "this key is listed twice: one key, one operator".into(),
                );
            }
        }
        if self.require_signed_commands && !self.operators.iter().any(|o| o.role == Role::Admin) {
            err(
                "require_signed_commands".into(),
                "needs at least one operator with role admin: only an admin may change this block again".into(),
            );
        }
        out
    }

    /// The operator whose public key is `key`.
    pub fn operator(&self, key: &str) -> Option<&Operator> {
        self.operators.iter().find(|o| o.key == key)
    }
}

/// The signature a command carries in its `signature` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandSignature {
    /// The signer's public key, 64 hex characters (an operator's `key`).
    #[schemars(length(min = KEY_HEX_LEN, max = KEY_HEX_LEN))]
    pub key: String,
    /// When it was signed (ms since the Unix epoch).
    pub at_ms: i64,
    /// Ed25519 over [`signed_text`], 128 hex characters.
    #[schemars(length(max = 128))]
    pub signature: String,
}

/// A proven sender, kept in the metadata of every event its command caused
/// (`meta.signed`): enough to check the signature again, with the command
/// id that `meta.causation_id` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SignedBy {
    /// The operator's name, as the `security:` block listed it then.
    pub operator: String,
    /// The operator's role then.
    pub role: Role,
    /// The operator's public key (hex).
    pub key: String,
    /// The command's verb.
    pub verb: String,
    /// When it was signed (ms since the Unix epoch).
    pub at_ms: i64,
    /// SHA-256 of the command's canonical content (hex).
    pub content_sha256: String,
    /// The signature (hex).
    pub signature: String,
}

impl SignedBy {
    /// Whether the signature holds for `command_id` (the events'
    /// `meta.causation_id`); why not otherwise.
    pub fn verify(&self, command_id: &str) -> Result<(), String> {
        let key = parse_key(&self.key)?;
        let text = signed_text(&self.verb, command_id, self.at_ms, &self.content_sha256);
        check_signature(&key, &text, &self.signature)
    }
}

/// The exact text a command's signature signs.
pub fn signed_text(verb: &str, command_id: &str, at_ms: i64, content_sha256: &str) -> String {
    format!("{SIGNED_TEXT_VERSION}\n{verb}\n{command_id}\n{at_ms}\n{content_sha256}")
}

/// Sign a command given as a value (its fields as it will be sent, with a
/// `command_id`) at `at_ms`: the signature to put in its `signature` field.
/// `None` when it has no `command_id`.
pub fn sign(
    key: &SigningKey,
    verb: &str,
    content: &serde_json::Value,
    at_ms: i64,
) -> Option<CommandSignature> {
    let command_id = content.get("command_id")?.as_str()?;
    let text = signed_text(verb, command_id, at_ms, &content_sha256(content));
    Some(CommandSignature {
        key: key_hex(&key.verifying_key()),
        at_ms,
        signature: sign_text(key, &text),
    })
}

/// What the planner trusts a command's signature against: the `security:`
/// block in force, and the planner's own admin keys (`--admin-key`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust<'a> {
    /// The `security:` block last applied, if any.
    pub current: Option<&'a SecuritySpec>,
    /// Keys given to the planner itself (hex), trusted as admins whatever
    /// the block says: the apply that turns signing on must be signed by
    /// one of them when there are any, and they can always change the
    /// block again (the way back for whoever runs the planner).
    pub admin_keys: &'a [String],
}

/// The name an admin key of the planner's is recorded under when the
/// `security:` block does not list it.
pub fn admin_key_name(key: &str) -> String {
    format!("admin-key:{}", &key[..key.len().min(16)])
}

/// Whether `command` may be carried out under `trust` at `now_ms`;
/// `content_sha256` is the digest of its canonical content as it arrived
/// (unused when it is unsigned). `Ok(None)` for an unsigned command while
/// signing is not required; `Ok(Some(_))` names the proven sender. See the
/// module's rules.
pub fn authorise(
    trust: Trust<'_>,
    command: &Command,
    content_sha256: &str,
    now_ms: i64,
) -> Result<Option<SignedBy>, Rejection> {
    let scope = Scope::of(trust, command);
    let Some(signature) = command.signature() else {
        return scope.unsigned().map(|()| None);
    };
    let Some(command_id) = command.command_id() else {
        return Err(Rejection::invalid(
            "command_id: a signed command needs one (the signature covers it)",
        ));
    };
    let (operator, root) = scope.signer(&signature.key)?;
    let verb = command.verb();
    let text = signed_text(verb, command_id, signature.at_ms, content_sha256);
    check_proof(&operator.key, &text, signature, now_ms)?;
    scope.allows(&operator, root, verb)?;
    Ok(Some(SignedBy {
        operator: operator.name,
        role: operator.role,
        key: operator.key,
        verb: verb.to_owned(),
        at_ms: signature.at_ms,
        content_sha256: content_sha256.to_owned(),
        signature: signature.signature.clone(),
    }))
}

/// What a command is checked against: whether it must be signed, by whose
/// keys, and whether it changes the security block.
struct Scope<'a> {
    trust: Trust<'a>,
    /// The operators its key is looked up in.
    listed: Option<&'a SecuritySpec>,
    required: bool,
    /// An apply that turns signing on.
    bootstrap: bool,
    changes_security: bool,
}

impl<'a> Scope<'a> {
    fn of(trust: Trust<'a>, command: &'a Command) -> Self {
        let current = trust.current;
        let required_now = current.is_some_and(|s| s.require_signed_commands);
        let brought = match command {
            Command::Apply(apply) => apply.security.as_ref(),
            _ => None,
        };
        let bootstrap = !required_now && brought.is_some_and(|b| b.require_signed_commands);
        Scope {
            trust,
            listed: if bootstrap { brought } else { current },
            required: required_now || bootstrap,
            bootstrap,
            changes_security: brought.is_some_and(|b| current != Some(b)),
        }
    }

    /// An unsigned command: refused when signing is required.
    fn unsigned(&self) -> Result<(), Rejection> {
        if !self.required {
            return Ok(());
        }
        let why = match (self.bootstrap, self.trust.admin_keys.is_empty()) {
            (true, true) => "this apply turns require_signed_commands on: sign it with the key of one of the admins it lists (mt --key-file FILE, or MENTAT_KEY)",
            (true, false) => "this apply turns require_signed_commands on: sign it with one of the planner's --admin-key keys (mt --key-file FILE, or MENTAT_KEY)",
            (false, _) => "commands must be signed (security.require_signed_commands): give mt --key-file FILE, or set MENTAT_KEY",
        };
        Err(Rejection::new(RejectKind::Unsigned, why))
    }

    /// The operator whose key signed, and whether it is one of the
    /// planner's admin keys (an admin then, listed or not).
    fn signer(&self, key: &str) -> Result<(Operator, bool), Rejection> {
        let root = self.trust.admin_keys.iter().any(|k| k == key);
        match self.listed.and_then(|s| s.operator(key)) {
            Some(op) if root => Ok((
                Operator {
                    role: Role::Admin,
                    ..op.clone()
                },
                true,
            )),
            Some(op) => Ok((op.clone(), false)),
            None if root => Ok((
                Operator {
                    name: admin_key_name(key),
                    key: key.to_owned(),
                    role: Role::Admin,
                },
                true,
            )),
            None => {
                let listed = match self.bootstrap {
                    true => "the security block this apply brings",
                    false => "security.operators",
                };
                Err(Rejection::new(
                    RejectKind::UnknownKey,
                    format!(
                        "key {} is not listed in {listed}: add it there (an admin applies it), or sign with a listed key",
                        shown(key)
                    ),
                ))
            }
        }
    }

    /// Whether `operator` may send `verb` here.
    fn allows(&self, operator: &Operator, root: bool, verb: &str) -> Result<(), Rejection> {
        let refuse = |why: String| Err(Rejection::new(RejectKind::Unauthorised, why));
        let (name, role) = (&operator.name, operator.role);
        if !role.may(verb) {
            let least = Role::least_for(verb);
            return refuse(format!(
                "{name} is a {role}: `{verb}` needs the role {least} or above"
            ));
        }
        if self.changes_security && role != Role::Admin {
            return refuse(format!(
                "{name} is a {role}: changing the security block needs an admin"
            ));
        }
        if self.bootstrap && !root && !self.trust.admin_keys.is_empty() {
            return refuse(format!(
                "{name} is not one of the planner's --admin-key keys: only they may turn require_signed_commands on"
            ));
        }
        Ok(())
    }
}

/// Whether `signature` is `key`'s over `text`, made within
/// [`MAX_SIGNATURE_AGE_MS`] of `now_ms`.
fn check_proof(
    key: &str,
    text: &str,
    signature: &CommandSignature,
    now_ms: i64,
) -> Result<(), Rejection> {
    if let Err(e) = check_signature_of(key, text, &signature.signature) {
        return Err(Rejection::new(
            RejectKind::BadSignature,
            format!(
                "the signature does not hold for this command and key ({e}): the command was changed after it was signed, or signed with another key"
            ),
        ));
    }
    let skew = now_ms.saturating_sub(signature.at_ms);
    if skew.saturating_abs() > MAX_SIGNATURE_AGE_MS {
        let when = match skew > 0 {
            true => format!("{} s ago", skew / 1000),
            false => format!("{} s ahead of the planner's clock", -skew / 1000),
        };
        return Err(Rejection::new(
            RejectKind::StaleSignature,
            format!(
                "signed {when}, more than {} s away from the planner's clock: sign it again (and check the clocks)",
                MAX_SIGNATURE_AGE_MS / 1000
            ),
        ));
    }
    Ok(())
}

fn check_signature_of(key: &str, text: &str, signature: &str) -> Result<(), String> {
    check_signature(&parse_key(key)?, text, signature)
}

mod canonical;
#[cfg(test)]
mod tests;

pub use canonical::{canonical, content_sha256};
