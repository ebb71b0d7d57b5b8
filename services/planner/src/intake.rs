//! Commands arrive twice: on core NATS, where the sender waits for a reply,
//! and through the JetStream stream `MENTAT_COMMANDS`, which keeps them
//! while the planner is down. The planner handles each command once, from
//! the stream (acknowledged only after its events are recorded), and sends
//! the reply to the core request that carried the same bytes, whichever of
//! the two arrives first.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_nats::Message;
use mentat_bus::{codec, Encoding};
use mentat_domain::command::{
    Apply, Command, Control, Deploy, Rejection, ReleaseHosts, Reply, Rollback, Route, Spawn, Stop,
    Weight,
};
use mentat_domain::limits::MAX_COMMAND_BYTES;
use mentat_domain::rollout::{RolloutControl, RolloutStart};
use mentat_domain::security::{self, SignedBy, Trust};
use sha2::{Digest, Sha256};

/// How long an unmatched request or reply is kept.
const PAIRING_TTL: Duration = Duration::from_secs(60);

/// Decode a command from its subject's verb and its payload, or say what
/// is wrong (every refusal here is of kind
/// [`Invalid`](mentat_domain::command::RejectKind::Invalid)). A payload
/// over [`MAX_COMMAND_BYTES`] is refused before it is decoded.
pub fn decode(subject: &str, payload: &[u8], encoding: Encoding) -> Result<Command, Rejection> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(Rejection::invalid(format!(
            "message: {} bytes, at most {MAX_COMMAND_BYTES}",
            payload.len()
        )));
    }
    let verb = mentat_bus::subject::last_token(subject);
    let result = match verb {
        "deploy" => codec::decode::<Deploy>(payload, encoding, "Deploy").map(Command::Deploy),
        "rollback" => {
            codec::decode::<Rollback>(payload, encoding, "Rollback").map(Command::Rollback)
        }
        "apply" => codec::decode::<Apply>(payload, encoding, "Apply").map(Command::Apply),
        "pause" => codec::decode::<Control>(payload, encoding, "Pause").map(Command::Pause),
        "resume" => codec::decode::<Control>(payload, encoding, "Resume").map(Command::Resume),
        "abort" => codec::decode::<Control>(payload, encoding, "Abort").map(Command::Abort),
        "promote" => codec::decode::<Control>(payload, encoding, "Promote").map(Command::Promote),
        "weight" => codec::decode::<Weight>(payload, encoding, "Weight").map(Command::Weight),
        "route" => codec::decode::<Route>(payload, encoding, "Route").map(Command::Route),
        "spawn" => codec::decode::<Spawn>(payload, encoding, "Spawn").map(Command::Spawn),
        "stop" => codec::decode::<Stop>(payload, encoding, "Stop").map(Command::Stop),
        "release_hosts" => codec::decode::<ReleaseHosts>(payload, encoding, "ReleaseHosts")
            .map(Command::ReleaseHosts),
        "rollout_start" => codec::decode::<RolloutStart>(payload, encoding, "RolloutStart")
            .map(Command::RolloutStart),
        "rollout_pause" => codec::decode::<RolloutControl>(payload, encoding, "RolloutPause")
            .map(Command::RolloutPause),
        "rollout_resume" => codec::decode::<RolloutControl>(payload, encoding, "RolloutResume")
            .map(Command::RolloutResume),
        "rollout_cancel" => codec::decode::<RolloutControl>(payload, encoding, "RolloutCancel")
            .map(Command::RolloutCancel),
        "release_create" => {
            codec::decode(payload, encoding, "ReleaseCreate").map(Command::ReleaseCreate)
        }
        "release_deploy" => {
            codec::decode(payload, encoding, "ReleaseDeploy").map(Command::ReleaseDeploy)
        }
        "release_promote" => {
            codec::decode(payload, encoding, "ReleasePromote").map(Command::ReleasePromote)
        }
        "release_rollback" => {
            codec::decode(payload, encoding, "ReleaseRollback").map(Command::ReleaseRollback)
        }
        "rollout_rollback_all" => {
            codec::decode::<RolloutControl>(payload, encoding, "RolloutRollbackAll")
                .map(Command::RolloutRollbackAll)
        }
        other => {
            return Err(Rejection::invalid(format!(
                "unknown command `{other}` on {subject}; known commands: {}",
                Command::VERBS.join(", ")
            )))
        }
    };
    result.map_err(|e| Rejection::invalid(e.to_string()))
}

/// Whether `command`, decoded from `payload`, may be carried out under
/// `trust` at `now_ms` ([`security::authorise`]), before anything else
/// about it is looked at: the planner does not record a refusal, so that
/// an unsigned command cannot take the id of a signed one. A proven sender
/// becomes the command's actor, and is returned with it.
pub fn authorise(
    trust: Trust<'_>,
    mut command: Command,
    payload: &[u8],
    encoding: Encoding,
    now_ms: i64,
) -> Result<(Command, Option<SignedBy>), Rejection> {
    let digest = match command.signature() {
        Some(_) => content_sha256(payload, encoding)?,
        None => String::new(),
    };
    match security::authorise(trust, &command, &digest, now_ms) {
        Ok(signed) => {
            if let Some(signed) = &signed {
                command.set_actor(&signed.operator);
            }
            Ok((command, signed))
        }
        Err(rejection) => {
            tracing::warn!(verb = command.verb(), kind = %rejection.kind, %rejection, "refused a command");
            Err(rejection)
        }
    }
}

/// The SHA-256 of a command's canonical content as it arrived (see
/// [`mentat_domain::security::canonical`]): what its signature covers.
pub fn content_sha256(payload: &[u8], encoding: Encoding) -> Result<String, Rejection> {
    let value: serde_json::Value = codec::decode(payload, encoding, "command")
        .map_err(|e| Rejection::invalid(e.to_string()))?;
    Ok(mentat_domain::security::content_sha256(&value))
}

type Key = [u8; 32];

fn key(subject: &str, payload: &[u8]) -> Key {
    let mut h = Sha256::new();
    h.update(subject.as_bytes());
    h.update([0]);
    h.update(payload);
    h.finalize().into()
}

/// Matches replies to the core requests waiting for them.
#[derive(Default)]
pub struct Pairing {
    waiting: HashMap<Key, VecDeque<(Message, Instant)>>,
    answered: HashMap<Key, VecDeque<(Reply, Instant)>>,
}

impl Pairing {
    /// A core request arrived: the reply to send now, if its command was
    /// already handled, else it waits.
    pub fn request(&mut self, message: Message) -> Option<(Message, Reply)> {
        let k = key(message.subject.as_str(), &message.payload);
        if let Some(reply) = self.answered.get_mut(&k).and_then(VecDeque::pop_front) {
            return Some((message, reply.0));
        }
        self.waiting
            .entry(k)
            .or_default()
            .push_back((message, Instant::now()));
        None
    }

    /// A command was handled: the request to answer, if one is waiting.
    pub fn handled(
        &mut self,
        subject: &str,
        payload: &[u8],
        reply: Reply,
    ) -> Option<(Message, Reply)> {
        let k = key(subject, payload);
        if let Some((message, _)) = self.waiting.get_mut(&k).and_then(VecDeque::pop_front) {
            return Some((message, reply));
        }
        self.answered
            .entry(k)
            .or_default()
            .push_back((reply, Instant::now()));
        None
    }

    /// Forget what is older than the pairing window.
    pub fn prune(&mut self) {
        let fresh = |t: &Instant| t.elapsed() < PAIRING_TTL;
        self.waiting.retain(|_, q| {
            q.retain(|(_, t)| fresh(t));
            !q.is_empty()
        });
        self.answered.retain(|_, q| {
            q.retain(|(_, t)| fresh(t));
            !q.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_domain::command::RejectKind;

    #[test]
    fn unknown_verbs_and_bad_payloads_are_named() {
        let e = decode("mentat.cmd.launch", b"{}", Encoding::Json).expect_err("unknown");
        assert_eq!(e.kind, RejectKind::Invalid);
        assert!(e.reason.contains("unknown command `launch`"), "{e}");
        let e = decode("mentat.cmd.deploy", b"{\"service\":1}", Encoding::Json).expect_err("bad");
        assert_eq!(e.kind, RejectKind::Invalid);
        assert!(e.reason.contains("Deploy"), "{e}");
        let ok = decode(
            "mentat.cmd.deploy",
            br#"{"service":"web","image":"v2"}"#,
            Encoding::Json,
        );
        assert!(matches!(ok, Ok(Command::Deploy(_))));
        let ok = decode(
            "mentat.cmd.rollout_start",
            br#"{"image":"v2","select":"kind=edge","waves":[10,50,100]}"#,
            Encoding::Json,
        );
        assert!(matches!(ok, Ok(Command::RolloutStart(_))), "{ok:?}");
        let ok = decode(
            "mentat.cmd.rollout_resume",
            br#"{"retry_failed":true}"#,
            Encoding::Json,
        );
        assert!(
            matches!(&ok, Ok(Command::RolloutResume(c)) if c.retry_failed),
            "{ok:?}"
        );
    }

    /// A deploy of `size` bytes: valid JSON, padded with spaces.
    fn deploy_of(size: usize) -> Vec<u8> {
        let mut payload = br#"{"service":"web","image":"v2"}"#.to_vec();
        payload.resize(size, b' ');
        payload
    }

    #[test]
    fn a_payload_over_the_bound_is_refused_before_decoding() {
        // Given a deploy one byte over the bound
        let payload = deploy_of(MAX_COMMAND_BYTES + 1);
        // When it arrives
        let e = decode("mentat.cmd.deploy", &payload, Encoding::Json).expect_err("too large");
        // Then it is invalid, naming the message and the bound
        assert_eq!(e.kind, RejectKind::Invalid);
        assert_eq!(e.reason, "message: 262145 bytes, at most 262144");
        // And refused before decoding: even bytes that are no command at all
        let junk = vec![0xc1; MAX_COMMAND_BYTES + 1];
        let e = decode("mentat.cmd.deploy", &junk, Encoding::MsgPack).expect_err("too large");
        assert!(e.reason.starts_with("message: "), "{e}");
        // And a deploy at the bound decodes
        let ok = decode(
            "mentat.cmd.deploy",
            &deploy_of(MAX_COMMAND_BYTES),
            Encoding::Json,
        );
        assert!(matches!(ok, Ok(Command::Deploy(_))), "{ok:?}");
    }
}
