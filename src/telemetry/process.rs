//! The standard `process_*` series (CPU seconds, resident memory, open and maximum file
//! descriptors, start time, threads), read from `/proc` at each scrape.
//!
//! Hand-written because no well-kept crate fits prometheus-client 0.26: `metrics-process`
//! serves the `metrics` facade (another metrics registry and its dependencies), and the
//! `prometheus` crate's process collector belongs to that other registry. Reading a few
//! `/proc/self` files is all either does on Linux, the one platform the operator ships for;
//! elsewhere these series are simply absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// What one scrape read about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: i64,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: i64,
    /// Open file descriptors.
    pub open_fds: i64,
    /// The soft limit on open file descriptors.
    pub max_fds: i64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// OS threads.
    pub threads: i64,
}

impl ProcessStats {
    /// Reads this process's figures; `None` where `/proc` is missing or unreadable.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| soft_limit(&limits, "Max open files"));
        parse_stat(&stat, boot_time, clock_ticks(), page_size()).map(|stats| Self {
            // read_dir's own descriptor is counted too, as client_golang's is.
            open_fds: i64::try_from(open_fds).unwrap_or(i64::MAX),
            max_fds: max_fds.unwrap_or(-1),
            ..stats
        })
    }
}

/// Parses `/proc/self/stat` (see proc(5)); fds are filled in by the caller.
fn parse_stat(stat: &str, boot_time: f64, ticks: f64, page_size: i64) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let (utime, stime) = (field(14)?, field(15)?);
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let vsize = field(23)?;
    let rss_pages = field(24)?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) / ticks,
        resident_memory_bytes: rss_pages as i64 * page_size,
        virtual_memory_bytes: vsize as i64,
        open_fds: 0,
        max_fds: -1,
        start_time_seconds: boot_time + start_ticks / ticks,
        threads: threads as i64,
    })
}

/// The soft limit in `/proc/self/limits`' row `name`.
fn soft_limit(limits: &str, name: &str) -> Option<i64> {
    let row = limits.lines().find(|line| line.starts_with(name))?;
    row[name.len()..].split_whitespace().next()?.parse().ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> i64 {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as i64 } else { 4096 }
}

/// Encodes the `process_*` series at each scrape (register it on an unprefixed registry).
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?)?;
        let gauges: [(&str, &str, Option<Unit>, i64); 5] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                stats.resident_memory_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                stats.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                stats.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                stats.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                None,
                stats.threads,
            ),
        ];
        for (name, help, unit, value) in gauges {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                MetricType::Gauge,
            )?)?;
        }
        ConstGauge::new(stats.start_time_seconds).encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since unix epoch in seconds",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_a_command_name_with_spaces() {
        // A real /proc/self/stat line, with a command name holding ") (".
        let stat = "31522 (my) (cmd) R 31520 31520 8812 0 -1 4194304 99 0 0 0 250 150 0 0 20 0 3 0 416319 3133440 380 18446744073709551615 0";
        let stats = parse_stat(stat, 1_000_000.0, 100.0, 4096).unwrap();
        assert_eq!(stats.cpu_seconds, 4.0);
        assert_eq!(stats.threads, 3);
        assert_eq!(stats.start_time_seconds, 1_000_000.0 + 4163.19);
        assert_eq!(stats.virtual_memory_bytes, 3_133_440);
        assert_eq!(stats.resident_memory_bytes, 380 * 4096);
        assert_eq!(parse_stat("garbage", 0.0, 100.0, 4096), None);
        // A line cut right after the command name is refused, not a panic.
        assert_eq!(parse_stat("1 (bbo)", 0.0, 100.0, 4096), None);
    }

    #[test]
    fn soft_limit_of_open_files() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1048576              1048576              files     \n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(1_048_576));
        assert_eq!(
            soft_limit(
                "Max open files  unlimited  unlimited files",
                "Max open files"
            ),
            None
        );
    }

    #[test]
    fn this_process_is_readable() {
        let stats = ProcessStats::read().expect("/proc/self on Linux");
        assert!(
            stats.open_fds > 0 && stats.resident_memory_bytes > 0,
            "{stats:?}"
        );
        assert!(stats.start_time_seconds > 1.0e9, "{stats:?}");
    }
}
