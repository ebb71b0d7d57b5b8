//! `mt weight`, `mt route`, `mt spawn` and `mt stop`: act on single
//! instances of a service. Arguments are checked here first (a bad one is
//! a usage error and nothing is sent); the planner checks them again
//! against what runs.

use std::str::FromStr;

use mentat_domain::command::{Route, Spawn, Stop, Weight};
use mentat_domain::spec::is_valid_name;

use crate::error::{Error, Result};
use crate::send::{self, check_service, WhoArgs};

/// `SERVICE:INSTANCE`, the form `mt ps` lists instances in. The `*` that
/// `mt ps` puts after a spawned instance is accepted and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRef {
    /// The service.
    pub service: String,
    /// The instance (replica id).
    pub instance: String,
}

impl FromStr for InstanceRef {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let Some((service, instance)) = s.trim_end_matches('*').split_once(':') else {
            return Err(format!(
                "`{s}` is not SERVICE:INSTANCE: name the service and the instance as `mt ps` lists them, e.g. web:web-4"
            ));
        };
        if !mentat_domain::environment::is_valid_reference(service) {
            return Err(format!(
                "`{service}` is not a service name: 1-63 characters of a-z, 0-9 and -, starting with a letter"
            ));
        }
        if !is_valid_name(instance) {
            return Err(format!(
                "`{instance}` is not an instance id: 1-63 characters of a-z, 0-9 and -, starting with a letter"
            ));
        }
        Ok(Self {
            service: service.to_owned(),
            instance: instance.to_owned(),
        })
    }
}

/// A router weight: a whole number from 0 to 100.
pub fn parse_weight(s: &str) -> std::result::Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(weight) if weight <= 100 => Ok(weight),
        _ => Err(format!(
            "`{s}` is not a weight: a whole number from 0 (no traffic, still running) to 100"
        )),
    }
}

/// `mt weight`
#[derive(Debug, clap::Args)]
pub struct WeightArgs {
    /// The instance, as `mt ps` lists it.
    #[arg(value_name = "SERVICE:INSTANCE")]
    pub target: InstanceRef,
    /// Its router weight, 0 to 100; weights are normalised by their sum.
    #[arg(value_name = "WEIGHT", value_parser = parse_weight)]
    pub weight: u32,
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt route`
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// The service.
    pub service: String,
    /// Instance, or image meaning all its instances, that stops receiving traffic (weight 0).
    #[arg(long, value_name = "INSTANCE|IMAGE")]
    pub from: String,
    /// Instance, or image meaning all its instances, that receives it all (weight 100).
    #[arg(long, value_name = "INSTANCE|IMAGE")]
    pub to: String,
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt spawn`
#[derive(Debug, clap::Args)]
pub struct SpawnArgs {
    /// The service.
    pub service: String,
    /// The new instance's id, reachable as <ID>.<service>.<domain>.
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// Image to run [default: the image the service serves].
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt stop`
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The instance, as `mt ps` lists it.
    #[arg(value_name = "SERVICE:INSTANCE")]
    pub target: InstanceRef,
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The `Weight` command for `args`.
pub fn weight_command(args: &WeightArgs) -> Weight {
    Weight {
        command_id: Some(mentat_bus::new_id()),
        signature: None,
        service: args.target.service.clone(),
        instance: args.target.instance.clone(),
        weight: args.weight,
        actor: args.who.actor(),
        reason: args.who.reason.clone(),
    }
}

/// The `Route` command for `args`, or why they make no sense.
pub fn route_command(args: &RouteArgs) -> Result<Route> {
    check_service(&args.service)?;
    let (from, to) = (args.from.trim(), args.to.trim());
    if from.is_empty() || to.is_empty() {
        return Err(Error::Usage(
            "--from and --to each name an instance, or an image meaning all its instances".into(),
        ));
    }
    if from == to {
        return Err(Error::Usage(format!(
            "--from and --to are both `{from}`: traffic would move nowhere"
        )));
    }
    Ok(Route {
        command_id: Some(mentat_bus::new_id()),
        signature: None,
        service: args.service.clone(),
        from: from.to_owned(),
        to: to.to_owned(),
        actor: args.who.actor(),
        reason: args.who.reason.clone(),
    })
}

/// The `Spawn` command for `args`, or why they make no sense.
pub fn spawn_command(args: &SpawnArgs) -> Result<Spawn> {
    check_service(&args.service)?;
    if !is_valid_name(&args.id) {
        return Err(Error::Usage(format!(
            "--id `{}` is not an instance id: 1-63 characters of a-z, 0-9 and -, starting with a letter",
            args.id
        )));
    }
    let image = args.image.as_deref().map(str::trim);
    if image.is_some_and(str::is_empty) {
        return Err(Error::Usage("--image is empty".into()));
    }
    Ok(Spawn {
        command_id: Some(mentat_bus::new_id()),
        signature: None,
        service: args.service.clone(),
        id: args.id.clone(),
        image: image.map(str::to_owned),
        actor: args.who.actor(),
        reason: args.who.reason.clone(),
    })
}

/// The `Stop` command for `args`.
pub fn stop_command(args: &StopArgs) -> Stop {
    Stop {
        command_id: Some(mentat_bus::new_id()),
        signature: None,
        service: args.target.service.clone(),
        instance: args.target.instance.clone(),
        actor: args.who.actor(),
        reason: args.who.reason.clone(),
    }
}

/// `mt weight SERVICE:INSTANCE N`
pub async fn weight(nats: &str, args: WeightArgs) -> Result<()> {
    send::send_and_print(nats, "weight", &weight_command(&args), args.json).await
}

/// `mt route SERVICE --from A --to B`
pub async fn route(nats: &str, args: RouteArgs) -> Result<()> {
    send::send_and_print(nats, "route", &route_command(&args)?, args.json).await
}

/// `mt spawn SERVICE --id ID [--image REF]`
pub async fn spawn(nats: &str, args: SpawnArgs) -> Result<()> {
    send::send_and_print(nats, "spawn", &spawn_command(&args)?, args.json).await
}

/// `mt stop SERVICE:INSTANCE`
pub async fn stop(nats: &str, args: StopArgs) -> Result<()> {
    send::send_and_print(nats, "stop", &stop_command(&args), args.json).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> WhoArgs {
        WhoArgs {
            actor: Some("ana".into()),
            reason: Some("test".into()),
        }
    }

    #[test]
    fn instances_are_service_colon_instance() {
        let parsed: InstanceRef = "web:web-4".parse().expect("valid");
        assert_eq!(parsed.service, "web");
        assert_eq!(parsed.instance, "web-4");
        let marked: InstanceRef = "web:green*".parse().expect("mt ps's mark");
        assert_eq!(marked.instance, "green");
        for (bad, names) in [
            ("web", "not SERVICE:INSTANCE"),
            ("web-4", "not SERVICE:INSTANCE"),
            ("Web:web-4", "`Web` is not a service name"),
            (":web-4", "`` is not a service name"),
            ("web:", "`` is not an instance id"),
            ("web:web:4", "`web:4` is not an instance id"),
        ] {
            let err = bad.parse::<InstanceRef>().expect_err(bad);
            assert!(err.contains(names), "{bad}: {err}");
        }
    }

    #[test]
    fn weights_are_whole_numbers_from_0_to_100() {
        assert_eq!(parse_weight("0"), Ok(0));
        assert_eq!(parse_weight("100"), Ok(100));
        for bad in ["101", "-1", "50.5", "half", ""] {
            let err = parse_weight(bad).expect_err(bad);
            assert!(err.contains("0") && err.contains("100"), "{bad}: {err}");
        }
    }

    #[test]
    fn commands_carry_the_parsed_arguments_actor_and_reason() {
        let args = WeightArgs {
            target: "web:web-4".parse().expect("valid"),
            weight: 20,
            who: who(),
            json: false,
        };
        let cmd = weight_command(&args);
        assert_eq!(
            (cmd.service.as_str(), cmd.instance.as_str()),
            ("web", "web-4")
        );
        assert_eq!(cmd.weight, 20);
        assert_eq!(cmd.actor.as_deref(), Some("ana"));
        assert_eq!(cmd.reason.as_deref(), Some("test"));
        assert!(cmd.command_id.is_some());
        let stop = stop_command(&StopArgs {
            target: "web:green".parse().expect("valid"),
            who: who(),
            json: false,
        });
        assert_eq!(stop.instance, "green");
    }

    #[test]
    fn route_and_spawn_refuse_what_cannot_mean_anything() {
        let route = |from: &str, to: &str| RouteArgs {
            service: "web".into(),
            from: from.into(),
            to: to.into(),
            who: who(),
            json: false,
        };
        let cmd = route_command(&route("v1", "v2")).expect("valid");
        assert_eq!((cmd.from.as_str(), cmd.to.as_str()), ("v1", "v2"));
        for (from, to) in [("v1", "v1"), ("", "v2"), ("v1", " ")] {
            let err = route_command(&route(from, to)).expect_err("usage");
            assert_eq!(err.exit_code(), 64, "{from}->{to}");
        }
        let spawn = |id: &str, image: Option<&str>| SpawnArgs {
            service: "web".into(),
            id: id.into(),
            image: image.map(str::to_owned),
            who: who(),
            json: false,
        };
        let cmd = spawn_command(&spawn("green", None)).expect("valid");
        assert_eq!((cmd.id.as_str(), cmd.image), ("green", None));
        let cmd = spawn_command(&spawn("green", Some("v2"))).expect("valid");
        assert_eq!(cmd.image.as_deref(), Some("v2"));
        for (id, image) in [("Green", None), ("1x", None), ("green", Some(""))] {
            let err = spawn_command(&spawn(id, image)).expect_err("usage");
            assert_eq!(err.exit_code(), 64, "{id} {image:?}");
        }
    }
}
