//! Translating [`Limits`] into cgroup v1 and v2 control files.

use super::files::{write, write_each};
use super::{CgroupHost, CgroupPaths, Controller};
use crate::error::{Result, RuntimeError};
use crate::spec::{Limits, SwapLimit};
use std::path::Path;

/// The CFS period berth uses for `--cpus` (the kernel default, as Docker).
const CFS_PERIOD_US: u64 = 100_000;

/// Devices every container may use (Docker's default list).
const ALLOWED_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:1 rwm",   // console
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // pts
];

pub(super) fn check_enforceable(host: &CgroupHost, limits: &Limits) -> Result<()> {
    let unsupported = |what: &str, controller: &str| {
        Err(RuntimeError::LimitUnsupported(format!(
            "{what} needs the {controller} cgroup controller, which this host does not provide"
        )))
    };
    if limits.memory.is_some() && !host.has(Controller::Memory) {
        return unsupported("--memory", "memory");
    }
    if (limits.cpus.is_some() || limits.cpu_shares.is_some()) && !host.has(Controller::Cpu) {
        return unsupported("--cpus/--cpu-shares", "cpu");
    }
    if limits.pids.is_some() && !host.has(Controller::Pids) {
        return unsupported("--pids-limit", "pids");
    }
    check_swap_enforceable(host, limits)
}

/// A memory limit means "no swap" unless swap was allowed explicitly. With
/// swap on the host that needs swap accounting: `memory.memsw.*` on v1,
/// `memory.swap.max` on v2. Without it the no-swap promise cannot be kept.
fn check_swap_enforceable(host: &CgroupHost, limits: &Limits) -> Result<()> {
    let wants_no_or_limited_swap = !matches!(limits.memory_swap, Some(SwapLimit::Unlimited));
    if limits.memory.is_none() || !wants_no_or_limited_swap {
        return Ok(());
    }
    let accounting_file = if host.v1_has(Controller::Memory) {
        host.v1
            .iter()
            .find(|h| h.controllers.contains(&Controller::Memory))
            .map(|h| h.mount.join("memory.memsw.limit_in_bytes"))
    } else {
        host.unified
            .as_ref()
            .map(|u| u.join(&host.parent_name).join("memory.swap.max"))
    };
    // The accounting file first: one stat, where reading /proc/swaps takes
    // four system calls.
    if accounting_file.as_deref().is_some_and(Path::exists) || !host_has_swap() {
        return Ok(());
    }
    Err(RuntimeError::LimitUnsupported(
        "this host has swap but no swap accounting (memory.memsw on cgroup v1, \
         memory.swap.max on v2), so swap cannot be limited; pass --memory-swap -1 to \
         allow unlimited swap"
            .into(),
    ))
}

fn host_has_swap() -> bool {
    crate::kernel_files::read(Path::new("/proc/swaps"))
        .map(|s| s.lines().count() > 1)
        .unwrap_or(false)
}

/// Writes every limit into freshly created cgroups.
pub fn apply_limits(host: &CgroupHost, paths: &CgroupPaths, limits: &Limits) -> Result<()> {
    if let Some(dir) = paths.dir_for(Controller::Memory) {
        if paths.is_v1(Controller::Memory) {
            apply_memory_v1(dir, limits)?;
        } else if host.has(Controller::Memory) {
            apply_memory_v2(dir, limits)?;
        }
    }
    if let Some(dir) = paths.dir_for(Controller::Cpu) {
        if host.has(Controller::Cpu) {
            apply_cpu(dir, paths.is_v1(Controller::Cpu), limits)?;
        }
    }
    if let (Some(pids), Some(dir)) = (limits.pids, paths.dir_for(Controller::Pids)) {
        write(&dir.join("pids.max"), &pids.to_string())?;
    }
    if paths.is_v1(Controller::Devices) {
        if let Some(dir) = paths.dir_for(Controller::Devices) {
            restrict_devices_v1(dir)?;
        }
    }
    Ok(())
}

/// A new v1 devices cgroup starts with its parent's rules (see
/// [`give_parent_device_rules`]): reading them back proves they are berth's
/// list and spares a dozen writes per container, each a rule the kernel
/// parses and checks against the parent's. Otherwise (a parent made by
/// something else, whose rules berth leaves alone) they are written.
fn restrict_devices_v1(dir: &Path) -> Result<()> {
    if has_default_device_rules(dir) {
        return Ok(());
    }
    write_device_rules(dir)
}

/// Gives berth's v1 devices parent cgroup the containers' rules when it is
/// made, so that new containers inherit them. Best effort: the kernel
/// refuses while the parent has children, and a parent that keeps other
/// rules only costs the per-container writes.
pub(super) fn give_parent_device_rules(parent: &Path) {
    if has_default_device_rules(parent) {
        return;
    }
    if let Err(e) = write_device_rules(parent) {
        tracing::debug!(error = %e, "the devices cgroup parent keeps its rules");
    }
}

fn write_device_rules(dir: &Path) -> Result<()> {
    write(&dir.join("devices.deny"), "a")?;
    write_each(&dir.join("devices.allow"), ALLOWED_DEVICES)
}

/// Whether `devices.list` holds exactly [`ALLOWED_DEVICES`] (in any order).
fn has_default_device_rules(dir: &Path) -> bool {
    crate::kernel_files::read(&dir.join("devices.list"))
        .is_ok_and(|list| is_default_device_list(&list))
}

fn is_default_device_list(list: &str) -> bool {
    let mut got: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut want = ALLOWED_DEVICES.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    got == want
}

fn apply_memory_v1(dir: &Path, limits: &Limits) -> Result<()> {
    let Some(memory) = limits.memory else {
        return Ok(());
    };
    write(
        &dir.join("memory.limit_in_bytes"),
        &memory.bytes().to_string(),
    )?;
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    match limits.memory_swap {
        Some(SwapLimit::Unlimited) => {}
        Some(SwapLimit::Limited(total)) => write(&memsw, &total.bytes().to_string())?,
        // No swap accounting (no such file) and no swap on the host: nothing
        // can swap anyway (check_enforceable refused the case where it could).
        None => match write(&memsw, &memory.bytes().to_string()) {
            Err(RuntimeError::Cgroup { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            written => written?,
        },
    }
    Ok(())
}

fn apply_memory_v2(dir: &Path, limits: &Limits) -> Result<()> {
    let Some(memory) = limits.memory else {
        return Ok(());
    };
    write(&dir.join("memory.max"), &memory.bytes().to_string())?;
    let swap_max = dir.join("memory.swap.max");
    let swap = match limits.memory_swap {
        Some(SwapLimit::Unlimited) => "max".to_owned(),
        Some(SwapLimit::Limited(total)) => (total.bytes() - memory.bytes()).to_string(),
        None => "0".to_owned(),
    };
    if swap_max.exists() {
        write(&swap_max, &swap)?;
    }
    Ok(())
}

fn apply_cpu(dir: &Path, v1: bool, limits: &Limits) -> Result<()> {
    if let Some(cpus) = limits.cpus {
        let quota = u64::from(cpus.millicpus()) * CFS_PERIOD_US / 1000;
        if v1 {
            write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        } else {
            write(&dir.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
        }
    }
    if let Some(shares) = limits.cpu_shares {
        if v1 {
            write(&dir.join("cpu.shares"), &shares.to_string())?;
        } else {
            // The conversion runc and systemd use: [2, 262144] → [1, 10000].
            let weight = 1 + ((shares - 2) * 9999) / 262_142;
            write(&dir.join("cpu.weight"), &weight.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_device_list_is_recognised_in_any_order() {
        let mut rules: Vec<&str> = ALLOWED_DEVICES.to_vec();
        assert!(is_default_device_list(&(rules.join("\n") + "\n")));
        rules.reverse();
        assert!(is_default_device_list(&rules.join("\n")));
    }

    #[test]
    fn any_other_device_list_is_not_the_default() {
        // The root's "allow everything", one rule missing, one rule extra.
        assert!(!is_default_device_list("a *:* rwm\n"));
        assert!(!is_default_device_list(&ALLOWED_DEVICES[1..].join("\n")));
        let extra = format!("{}\nb 8:0 rwm\n", ALLOWED_DEVICES.join("\n"));
        assert!(!is_default_device_list(&extra));
        assert!(!is_default_device_list(""));
    }
}
