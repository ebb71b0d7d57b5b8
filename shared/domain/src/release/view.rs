//! `mentat.query.release`: the releases, their states, and what each
//! environment serves.

use crate::command::RejectKind;
use crate::environment;
use crate::planner::World;
use crate::release::state::Entry;
use crate::release::{EnvironmentEntry, EnvironmentView, ReleaseQuery, ReleaseReply, ReleaseView};

/// The answer to `q`.
pub fn answer(world: &World, q: &ReleaseQuery) -> ReleaseReply {
    let declared = environment::declared_or_default(world.environments.as_ref());
    if let Some(env) = q
        .environment
        .as_ref()
        .filter(|e| !declared.contains_key(*e))
    {
        return ReleaseReply::Rejected {
            kind: RejectKind::UnknownEnvironment,
            reason: format!("unknown environment `{env}`"),
        };
    }
    let rs = &world.releases;
    let releases: Vec<ReleaseView> = match &q.tag {
        Some(tag) => {
            if !rs.by_tag.contains_key(tag) {
                return ReleaseReply::Rejected {
                    kind: RejectKind::UnknownRelease,
                    reason: format!("unknown release `{tag}`"),
                };
            }
            vec![view(world, tag, true)]
        }
        None => rs
            .order
            .iter()
            .filter(|t| {
                q.environment.as_ref().is_none_or(|e| {
                    rs.environments
                        .get(e)
                        .is_some_and(|env| env.history.iter().any(|h| &h.tag == *t))
                })
            })
            .map(|t| view(world, t, false))
            .collect(),
    };
    let environments = declared
        .iter()
        .filter(|(name, _)| q.environment.as_ref().is_none_or(|e| e == *name))
        .map(|(name, spec)| {
            let env = rs.environments.get(name);
            let live = env.and_then(|e| e.live.clone());
            EnvironmentView {
                name: name.clone(),
                protected: spec.protected,
                promote_from: spec.promote_from.clone(),
                live: live.as_ref().map(|(t, _)| t.clone()),
                live_since_ms: live.map(|(_, at)| at),
                history: env
                    .map(|e| e.history.iter().map(entry).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    ReleaseReply::Ok {
        releases,
        environments,
    }
}

fn view(world: &World, tag: &str, whole: bool) -> ReleaseView {
    let rs = &world.releases;
    let r = &rs.by_tag[tag];
    let s = &r.snapshot;
    ReleaseView {
        tag: s.tag.clone(),
        description: s.description.clone(),
        hash: s.hash.clone(),
        state: rs.state(tag).as_str().to_owned(),
        deployed_in: rs.deployed_in(tag),
        rolled_back_in: rs
            .environments
            .iter()
            .filter(|(_, e)| e.rolled_back.contains(tag))
            .map(|(n, _)| n.clone())
            .collect(),
        images: s.images.clone(),
        derived_from: s.derived_from.clone(),
        actor: r.actor.clone(),
        created_at_ms: s.at_ms,
        services: if whole {
            s.services.clone()
        } else {
            Vec::new()
        },
    }
}

fn entry(e: &Entry) -> EnvironmentEntry {
    EnvironmentEntry {
        deployment_id: e.deployment_id.clone(),
        tag: e.tag.clone(),
        how: e.how,
        outcome: e.outcome.to_owned(),
        reason: e.reason.clone(),
        forced: e.forced,
        actor: e.actor.clone(),
        why: e.why.clone(),
        started_at_ms: e.started_at_ms,
        switched_at_ms: e.switched_at_ms,
        ended_at_ms: e.ended_at_ms,
    }
}
