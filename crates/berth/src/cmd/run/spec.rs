//! Turning `berth run` flags and an image's defaults into a container spec.

use crate::cli::RunArgs;
use crate::cmd::invalid;
use crate::CliError;
use berth_core::network::{NetworkMode, NetworkRequest, PublishedPort, Rate};
use berth_core::spec::SpecError;
use berth_core::{ByteSize, ContainerId, CpuQuota};
use berth_image::{LaunchOverrides, ResolvedImage};
use berth_runtime::{
    BindMount, ContainerSpec, Limits, NetworkNamespace, ProcessSpec, Rlimit, RlimitResource,
    RootfsSpec, Scratch, SwapLimit, User,
};
use std::time::Duration;

pub fn build(args: &RunArgs, image: &ResolvedImage) -> Result<ContainerSpec, CliError> {
    let id = match &args.name {
        Some(name) => ContainerId::new(name.clone()).map_err(|e| invalid(e.to_string()))?,
        None => berth_runtime::random_container_id(),
    };
    // The image's defaults and the flags that override them go through the
    // same rules as every other way of starting a container (berth-image).
    let launch = image.launch(&LaunchOverrides {
        entrypoint: args.entrypoint.as_ref().map(|e| match e.as_str() {
            // `--entrypoint ""` removes the image's entrypoint.
            "" => vec![],
            _ => vec![e.clone()],
        }),
        command: args.command.clone(),
        env: expand_env(&args.env)?,
        user: args.user.clone(),
        working_dir: args.workdir.clone(),
    })?;
    let mut env = launch.env;
    // Programs in a terminal need to know what it understands; Docker's
    // `-t` says xterm too.
    if args.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }

    Ok(ContainerSpec {
        id,
        rootfs: RootfsSpec {
            layers: image.layers.clone(),
            read_only: args.read_only,
            scratch: match args.scratch.as_str() {
                "disk" => Scratch::Disk,
                _ => Scratch::Memory,
            },
            scratch_size: args
                .scratch_size
                .as_deref()
                .map(|v| {
                    v.parse::<ByteSize>()
                        .map_err(|e| invalid(format!("--scratch-size: {e}")))
                })
                .transpose()?,
        },
        process: ProcessSpec {
            args: launch.args,
            env,
            cwd: launch.cwd,
            user: User {
                uid: launch.uid,
                gid: launch.gid,
                additional_gids: launch.additional_gids,
            },
            rlimits: args
                .ulimit
                .iter()
                .map(|u| parse_ulimit(u))
                .collect::<Result<_, _>>()?,
            terminal: args.tty,
        },
        hostname: args.hostname.clone(),
        // Networks beyond these are joined later (see `network_request`).
        network: match network_request(args)?.mode {
            NetworkMode::Host => NetworkNamespace::Host,
            _ => NetworkNamespace::New,
        },
        mounts: args
            .volume
            .iter()
            .map(|v| parse_volume(v))
            .collect::<Result<_, _>>()?,
        limits: limits(args)?,
    })
}

/// `--network`, `-p` and `--ip`, checked together.
pub fn network_request(args: &RunArgs) -> Result<NetworkRequest, CliError> {
    let mut ports = Vec::new();
    for text in &args.publish {
        ports.extend(PublishedPort::parse(text).map_err(|e| invalid(e.to_string()))?);
    }
    let request = NetworkRequest {
        mode: args
            .network
            .parse()
            .map_err(|e: SpecError| invalid(e.to_string()))?,
        ip: args.ip,
        ports,
        egress_rate: parse_rate(args.egress_rate.as_deref())?,
        ingress_rate: parse_rate(args.ingress_rate.as_deref())?,
        isolated: false,
    };
    request.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(request)
}

fn parse_rate(text: Option<&str>) -> Result<Option<Rate>, CliError> {
    text.map(|t| t.parse().map_err(|e: SpecError| invalid(e.to_string())))
        .transpose()
}

/// Docker's `-e KEY` (no `=`) copies `KEY` from berth's own environment;
/// `KEY=VALUE` entries pass through, to be checked with the image's env.
fn expand_env(entries: &[String]) -> Result<Vec<String>, CliError> {
    entries
        .iter()
        .map(|entry| {
            if entry.contains('=') {
                return Ok(entry.clone());
            }
            std::env::var(entry)
                .map(|value| format!("{entry}={value}"))
                .map_err(|_| invalid(format!("-e {entry:?}: expected KEY=VALUE")))
        })
        .collect()
}

fn parse_volume(text: &str) -> Result<BindMount, CliError> {
    let mount = BindMount::parse(text)?;
    if !mount.source.exists() {
        return Err(invalid(format!(
            "volume {text:?}: host path {} does not exist",
            mount.source.display()
        )));
    }
    Ok(mount)
}

fn parse_ulimit(text: &str) -> Result<Rlimit, CliError> {
    let bad = |why: &str| invalid(format!("--ulimit {text:?}: {why}"));
    let (name, values) = text
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=SOFT[:HARD]"))?;
    let resource = RlimitResource::from_name(name).ok_or_else(|| {
        bad("unknown resource (nofile, nproc, core, fsize, stack, memlock, cpu, as)")
    })?;
    let parse = |v: &str| -> Result<u64, CliError> {
        if v == "unlimited" || v == "-1" {
            Ok(u64::MAX)
        } else {
            v.parse()
                .map_err(|_| bad("limits must be numbers or 'unlimited'"))
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (parse(s)?, parse(h)?),
        None => {
            let v = parse(values)?;
            (v, v)
        }
    };
    Ok(Rlimit {
        resource,
        soft,
        hard,
    })
}

fn limits(args: &RunArgs) -> Result<Limits, CliError> {
    let size = |flag: &str, v: &str| -> Result<ByteSize, CliError> {
        v.parse().map_err(|e| invalid(format!("{flag}: {e}")))
    };
    let memory = args
        .memory
        .as_deref()
        .map(|m| size("--memory", m))
        .transpose()?;
    let memory_swap = match args.memory_swap.as_deref() {
        None => None,
        Some("-1") => Some(SwapLimit::Unlimited),
        Some(v) => Some(SwapLimit::Limited(size("--memory-swap", v)?)),
    };
    let cpus = args
        .cpus
        .as_deref()
        .map(|c| {
            c.parse::<CpuQuota>()
                .map_err(|e| invalid(format!("--cpus: {e}")))
        })
        .transpose()?;
    let timeout = args.timeout.as_deref().map(parse_duration).transpose()?;
    Ok(Limits {
        memory,
        memory_swap,
        cpus,
        cpu_shares: args.cpu_shares,
        pids: args.pids_limit,
        timeout,
    })
}

/// The longest `--timeout`: beyond it a deadline is no deadline, and far
/// beyond it (`1e20`) the arithmetic overflows.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// `500ms`, `30s`, `5m`, `1h30m`; a bare number means seconds.
fn parse_duration(text: &str) -> Result<Duration, CliError> {
    let parsed = match text.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|e| e.to_string()),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(timeout) if timeout <= MAX_TIMEOUT => Ok(timeout),
        Ok(_) => Err(invalid(format!("--timeout {text:?}: at most 365 days"))),
        Err(e) => Err(invalid(format!(
            "--timeout {text:?}: {e} (examples: 500ms, 30s, 5m)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timeouts_are_bounded_and_never_panic() {
        use super::parse_duration;
        assert_eq!(
            parse_duration("1.5").ok(),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(
            parse_duration("5m").ok(),
            Some(std::time::Duration::from_secs(300))
        );
        for bad in ["1e20", "-1", "NaN", "inf", "400d", "1000000000y", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn ulimits_parse_like_docker() {
        let r = parse_ulimit("nofile=1024:4096").unwrap();
        assert_eq!((r.soft, r.hard), (1024, 4096));
        let r = parse_ulimit("core=unlimited").unwrap();
        assert_eq!((r.soft, r.hard), (u64::MAX, u64::MAX));
        assert!(parse_ulimit("bogus=1").is_err());
        assert!(parse_ulimit("nofile").is_err());
        assert!(parse_ulimit("nofile=x").is_err());
    }

    #[test]
    fn env_keys_alone_copy_from_our_environment() {
        // PATH is set wherever tests run; if not, `-e PATH` must be refused.
        let copied = expand_env(&["A=1".to_owned(), "PATH".to_owned()]);
        match std::env::var("PATH") {
            Ok(path) => assert_eq!(
                copied.unwrap(),
                vec!["A=1".to_owned(), format!("PATH={path}")]
            ),
            Err(_) => assert!(copied.is_err()),
        }
        let unset = "BERTH_TEST_SURELY_NOT_SET_ANYWHERE";
        assert!(std::env::var(unset).is_err());
        assert!(expand_env(&[unset.to_owned()]).is_err());
        assert!(expand_env(&[String::new()]).is_err());
    }
}
