//! How much memory this machine has and how much a process may still take: `/proc/meminfo`
//! and the memory limit of the process's cgroup (v1 or v2), so that a run inside a container
//! or a capped group sees its own limit rather than the host's.

use std::path::{Path, PathBuf};

/// `MemTotal` of `/proc/meminfo`.
pub fn physical_bytes() -> Option<u64> {
    meminfo_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal")
}

/// What the process may still allocate: `MemAvailable`, or less when its cgroup's limit leaves
/// less (the limit minus what the group uses, reclaimable file pages not counted).
pub fn available_bytes() -> Option<u64> {
    let system = meminfo_field(
        &std::fs::read_to_string("/proc/meminfo").ok()?,
        "MemAvailable",
    );
    match (system, cgroup_headroom()) {
        (Some(system), Some(group)) => Some(system.min(group)),
        (system, group) => system.or(group),
    }
}

/// Field `name` (in kB) of a `/proc/meminfo` text, in bytes.
pub fn meminfo_field(meminfo: &str, name: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find(|l| l.split(':').next() == Some(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The limit of this process's memory cgroup minus its use, without inactive file pages
/// (what `docker stats` shows); `None` without a limit.
fn cgroup_headroom() -> Option<u64> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (dir, v2) = cgroup_dir(&groups)?;
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let (limit, usage, inactive_key) = if v2 {
        (
            read("memory.max")?,
            read("memory.current")?,
            "inactive_file",
        )
    } else {
        let usage = read("memory.usage_in_bytes")?;
        (read("memory.limit_in_bytes")?, usage, "total_inactive_file")
    };
    let limit: u64 = limit.trim().parse().ok()?;
    let usage: u64 = usage.trim().parse().ok()?;
    let inactive = read("memory.stat")
        .and_then(|stat| stat_field(&stat, inactive_key))
        .unwrap_or(0);
    Some(limit.saturating_sub(usage.saturating_sub(inactive)))
}

/// The memory cgroup's folder of a `/proc/self/cgroup` text, and whether it is cgroup v2.
fn cgroup_dir(groups: &str) -> Option<(PathBuf, bool)> {
    let root = Path::new("/sys/fs/cgroup");
    for line in groups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some((root.join("memory").join(path), false));
        }
        if controllers.is_empty() && root.join(path).join("memory.max").exists() {
            return Some((root.join(path), true));
        }
    }
    None
}

/// A `name value` line of a `memory.stat` text.
fn stat_field(stat: &str, name: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_fields_in_kib() {
        let meminfo = "MemTotal:       24683584 kB\nMemFree:  1 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_field(meminfo, "MemTotal"), Some(24683584 * 1024));
        assert_eq!(meminfo_field(meminfo, "MemAvailable"), Some(2048 * 1024));
        assert_eq!(meminfo_field(meminfo, "Mem"), None);
    }

    #[test]
    fn finds_the_memory_cgroup_and_stat_fields() {
        let v1 = "12:cpu,cpuacct:/a\n5:memory:/bench/run\n0::/\n";
        let (dir, v2) = cgroup_dir(v1).unwrap();
        assert_eq!(dir, Path::new("/sys/fs/cgroup/memory/bench/run"));
        assert!(!v2);
        let stat = "cache 10\ntotal_inactive_file 4096\ninactive_file 7\n";
        assert_eq!(stat_field(stat, "total_inactive_file"), Some(4096));
        assert_eq!(stat_field(stat, "inactive_file"), Some(7));
        assert_eq!(stat_field(stat, "active_file"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn available_memory_is_at_most_the_machine_s() {
        let total = physical_bytes().expect("MemTotal");
        let available = available_bytes().expect("MemAvailable");
        assert!(available <= total, "{available} > {total}");
    }
}
