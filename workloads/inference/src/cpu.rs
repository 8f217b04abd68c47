//! How many CPUs this process may really use: the container's CPU limit (cgroup quota) when
//! one is set, otherwise the CPUs the scheduler gives us. ONNX Runtime would otherwise size its
//! thread pool to every host core and thrash inside a 2-CPU pod.

use std::path::Path;

/// CPUs available to this process, at least 1.
pub fn available_cpus() -> usize {
    let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
    match cgroup_cpu_limit(Path::new("/sys/fs/cgroup")) {
        Some(limit) => limit.min(parallelism).max(1),
        None => parallelism,
    }
}

/// The CPU limit from cgroup v2 (`cpu.max`) or v1 (`cpu/cpu.cfs_quota_us`), rounded up.
pub fn cgroup_cpu_limit(root: &Path) -> Option<usize> {
    if let Ok(text) = std::fs::read_to_string(root.join("cpu.max")) {
        let mut fields = text.split_whitespace();
        let quota = fields.next()?;
        let period = fields.next()?.parse::<u64>().ok()?;
        return limit_from(quota.parse::<i64>().ok()?, period);
    }
    for dir in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
        let quota = std::fs::read_to_string(root.join(dir).join("cpu.cfs_quota_us"));
        let period = std::fs::read_to_string(root.join(dir).join("cpu.cfs_period_us"));
        if let (Ok(quota), Ok(period)) = (quota, period) {
            return limit_from(quota.trim().parse().ok()?, period.trim().parse().ok()?);
        }
    }
    None
}

fn limit_from(quota: i64, period: u64) -> Option<usize> {
    let quota = u64::try_from(quota).ok().filter(|q| *q > 0)?;
    if period == 0 {
        return None;
    }
    usize::try_from(quota.div_ceil(period)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_limit_rounds_up() {
        let dir = tempdir();
        std::fs::write(dir.path().join("cpu.max"), "150000 100000\n").expect("write");
        assert_eq!(cgroup_cpu_limit(dir.path()), Some(2));
        std::fs::write(dir.path().join("cpu.max"), "max 100000\n").expect("write");
        assert_eq!(cgroup_cpu_limit(dir.path()), None, "no limit");
    }

    #[test]
    fn cgroup_v1_limit() {
        let dir = tempdir();
        let cpu = dir.path().join("cpu");
        std::fs::create_dir(&cpu).expect("mkdir");
        std::fs::write(cpu.join("cpu.cfs_quota_us"), "250000\n").expect("write");
        std::fs::write(cpu.join("cpu.cfs_period_us"), "100000\n").expect("write");
        assert_eq!(cgroup_cpu_limit(dir.path()), Some(3));
        std::fs::write(cpu.join("cpu.cfs_quota_us"), "-1\n").expect("write");
        assert_eq!(cgroup_cpu_limit(dir.path()), None, "unlimited");
    }

    #[test]
    fn no_cgroup_files_means_no_limit() {
        assert_eq!(cgroup_cpu_limit(tempdir().path()), None);
        assert!(available_cpus() >= 1);
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }
}
