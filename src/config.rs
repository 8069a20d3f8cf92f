//! Settings the new PostgreSQL major no longer accepts. This module finds them in the old
//! cluster's `postgresql.conf` / `postgresql.auto.conf` text and rewrites that text (replaced
//! or commented out). It is pure: the caller does the I/O and passes the text in.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

/// What the new cluster gets instead of a setting it no longer accepts.
#[derive(Debug, Clone, Copy)]
enum Successor {
    /// Nothing: the line is only commented out.
    Nothing,
    /// The same value under a new name.
    Renamed(&'static str),
    /// `wal_keep_size`, converted from a number of WAL segments to megabytes.
    WalKeepSize,
}

impl Successor {
    fn target(self) -> Option<&'static str> {
        match self {
            Successor::Nothing => None,
            Successor::Renamed(name) => Some(name),
            Successor::WalKeepSize => Some("wal_keep_size"),
        }
    }
}

struct Removed {
    name: &'static str,
    /// The first major that no longer accepts the setting.
    removed_in: u32,
    successor: Successor,
}

const fn removed(name: &'static str, removed_in: u32, successor: Successor) -> Removed {
    Removed {
        name,
        removed_in,
        successor,
    }
}

/// Settings that PostgreSQL removed or renamed, with the major that did it and what replaces
/// them. Only consulted for settings the new server does not accept; any other unaccepted
/// setting is commented out too, just without a replacement.
const REMOVED: &[Removed] = &[
    // PostgreSQL 13 replaced the segment count by a size in MB.
    removed("wal_keep_segments", 13, Successor::WalKeepSize),
    // PostgreSQL 14.
    removed("operator_precedence_warning", 14, Successor::Nothing),
    removed("vacuum_cleanup_index_scale_factor", 14, Successor::Nothing),
    // PostgreSQL 15 keeps statistics in shared memory.
    removed("stats_temp_directory", 15, Successor::Nothing),
    // PostgreSQL 16.
    removed(
        "force_parallel_mode",
        16,
        Successor::Renamed("debug_parallel_query"),
    ),
    removed("promote_trigger_file", 16, Successor::Nothing),
    removed("vacuum_defer_cleanup_age", 16, Successor::Nothing),
    // PostgreSQL 17.
    removed("db_user_namespace", 17, Successor::Nothing),
    removed("old_snapshot_threshold", 17, Successor::Nothing),
    removed("trace_recovery_messages", 17, Successor::Nothing),
    // PostgreSQL 19 has standard strings only, so nothing left to warn about.
    removed("escape_string_warning", 19, Successor::Nothing),
];

/// Settings a server accepts in its configuration files although `postgres --describe-config`
/// does not list them: that output leaves out every setting flagged `GUC_NOT_IN_SAMPLE`
/// (developer options, `application_name`, `debug_parallel_query`, ...), and old names kept as
/// aliases (`sort_mem`, `vacuum_mem`, and `ssl_ecdh_curve` since 18, now `ssl_groups`).
/// Collected by diffing `pg_settings` against `--describe-config` on PostgreSQL 13, 15, 17,
/// 18 and 19. Those removed by a major in [`REMOVED`] stop counting from that major on.
const NOT_IN_DESCRIBE_CONFIG: &[&str] = &[
    "allow_in_place_tablespaces",
    "allow_system_table_mods",
    "application_name",
    "backtrace_functions",
    // Not allowed in a file, so not described, but taken on the command line.
    "config_file",
    "data_directory",
    "external_pid_file",
    "hba_file",
    "ident_file",
    "debug_discard_caches",
    "debug_exec_backend",
    "debug_io_direct",
    "debug_logical_replication_streaming",
    "debug_parallel_query",
    "force_parallel_mode",
    "ignore_checksum_failure",
    "ignore_invalid_pages",
    "ignore_system_indexes",
    "jit_debugging_support",
    "jit_dump_bitcode",
    "jit_expressions",
    "jit_profiling_support",
    "jit_tuple_deforming",
    "post_auth_delay",
    "pre_auth_delay",
    "remove_temp_files_after_crash",
    "restrict_nonsystem_relation_kind",
    "send_abort_for_crash",
    "send_abort_for_kill",
    "sort_mem",
    "ssl_ecdh_curve",
    // 19 keeps it, but only `on`, and describes it no more.
    "standard_conforming_strings",
    "trace_connection_negotiation",
    "trace_notify",
    "trace_recovery_messages",
    "trace_sort",
    "vacuum_mem",
    "wal_consistency_checking",
    "zero_damaged_pages",
];

/// Directives that name other files; kept as they are and reported, never followed.
const INCLUDE_DIRECTIVES: &[&str] = &["include", "include_dir", "include_if_exists"];

/// One setting line changed by [`adjust`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The file, as the caller named it (e.g. `postgresql.conf`).
    pub file: String,
    /// 1-based line number in the original text.
    pub line: usize,
    /// The setting's name, lowercased.
    pub setting: String,
    /// The original line, trimmed.
    pub old: String,
    /// The line added right after the commented-out original, or `None` when the setting is
    /// only commented out.
    pub replacement: Option<String>,
    /// The major the file was adjusted for.
    pub new_major: u32,
    /// Why, as written after `# pgup: ` on the commented-out line.
    pub note: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let command = self.file == COMMAND;
        if command {
            write!(f, "{COMMAND}: {} → ", self.old)?;
        } else {
            write!(f, "{}:{}: {} → ", self.file, self.line, self.old)?;
        }
        match &self.replacement {
            Some(line) => f.write_str(line),
            None if command => write!(f, "dropped ({})", self.note),
            None => write!(f, "commented out ({})", self.note),
        }
    }
}

/// The [`Change::file`] of settings given on the container's command line.
pub const COMMAND: &str = "the container's command";

/// A container's command adjusted for the new major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustedCommand {
    pub command: Vec<String>,
    /// One entry per setting dropped or replaced, in order; [`Change::line`] is the argument's
    /// position.
    pub changes: Vec<Change>,
}

/// The settings in a server container's command (`postgres -c name=value`, `-cname=value`,
/// `--name=value`; or the arguments alone, which the images' entrypoint hands to postgres)
/// that the new major does not accept, replaced as in [`adjust`] or dropped. Any other
/// command is not a server's and is left alone.
pub fn adjust_command(
    cmd: &[String],
    accepted: &BTreeSet<String>,
    new_major: u32,
    wal_segment_bytes: u64,
) -> AdjustedCommand {
    let postgres = |a: &String| a == "postgres" || a.ends_with("/postgres");
    let server = cmd
        .first()
        .is_some_and(|a| postgres(a) || a.starts_with('-'))
        || (cmd
            .first()
            .is_some_and(|a| a.ends_with("docker-entrypoint.sh"))
            && cmd.get(1).is_some_and(postgres));
    let mut adjusted = AdjustedCommand {
        command: cmd.to_vec(),
        changes: Vec::new(),
    };
    if !server {
        return adjusted;
    }
    let settings = command_settings(cmd);
    let set_here: BTreeSet<String> = settings.iter().map(|s| s.name.clone()).collect();
    let mut command = Vec::with_capacity(cmd.len());
    let mut next = 0;
    for CommandSetting {
        at,
        taken,
        prefix,
        name,
        value,
    } in settings
    {
        command.extend_from_slice(&cmd[next..at]);
        next = at + taken;
        let old = cmd[at..next].join(" ");
        if accepts(&name, accepted, new_major) {
            command.extend_from_slice(&cmd[at..next]);
            continue;
        }
        let (replacement, note) = resolve(
            &value,
            &name,
            accepted,
            &set_here,
            new_major,
            wal_segment_bytes,
        );
        let replacement = replacement.map(|(target, value)| {
            let arg = format!("{prefix}{target}={}", value.trim_matches('\''));
            command.extend(arg.split_once(' ').map_or_else(
                || vec![arg.clone()],
                |(flag, setting)| vec![flag.to_owned(), setting.to_owned()],
            ));
            arg
        });
        adjusted.changes.push(Change {
            file: COMMAND.to_owned(),
            line: at + 1,
            setting: name,
            old,
            replacement,
            new_major,
            note,
        });
    }
    command.extend_from_slice(&cmd[next..]);
    adjusted.command = command;
    adjusted
}

/// A setting given in a server's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSetting {
    /// The index of its first argument.
    pub at: usize,
    /// How many arguments it takes (`-c name=value`: 2).
    taken: usize,
    prefix: &'static str,
    /// Lowercased, `-` read as `_` as postgres does.
    pub name: String,
    /// As given.
    pub value: String,
}

/// The settings in a server's command: `-c name=value`, `-cname=value`, `--name=value`.
pub fn command_settings(cmd: &[String]) -> Vec<CommandSetting> {
    let mut settings = Vec::new();
    let mut i = 0;
    while i < cmd.len() {
        let arg = &cmd[i];
        let (taken, prefix, setting) = if arg == "-c" && i + 1 < cmd.len() {
            (2, "-c ", cmd[i + 1].as_str())
        } else if let Some(rest) = arg.strip_prefix("-c").filter(|r| !r.is_empty()) {
            (1, "-c", rest)
        } else if let Some(rest) = arg.strip_prefix("--").filter(|r| r.contains('=')) {
            (1, "--", rest)
        } else {
            i += 1;
            continue;
        };
        if let Some((name, value)) = setting.split_once('=') {
            settings.push(CommandSetting {
                at: i,
                taken,
                prefix,
                name: name.replace('-', "_").to_ascii_lowercase(),
                value: value.to_owned(),
            });
        }
        i += taken;
    }
    settings
}

/// The settings of a configuration file's text: (1-based line, lowercased name, value as
/// written), include directives left out.
pub fn file_settings(text: &str) -> Vec<(usize, String, String)> {
    text.split_inclusive('\n')
        .map(|line| split_eol(line).0)
        .enumerate()
        .filter_map(|(i, content)| {
            let setting = parse_line(content)?;
            let name = setting.name.to_ascii_lowercase();
            (!INCLUDE_DIRECTIVES.contains(&name.as_str()))
                .then(|| (i + 1, name, setting.value.to_owned()))
        })
        .collect()
}

/// A configuration file's text adjusted for the new major.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adjusted {
    /// The whole new text of the file.
    pub text: String,
    /// One entry per commented-out setting, in file order.
    pub changes: Vec<Change>,
    /// `include`, `include_if_exists` and `include_dir` directives, as written (without a
    /// trailing comment). They are kept but not followed: the caller should warn about them.
    pub includes: Vec<String>,
}

/// The setting names in the output of `postgres --describe-config` (one setting per line,
/// tab-separated fields, the name first), lowercased. Note that this output leaves some
/// accepted settings out; [`adjust`] knows about those.
pub fn parse_describe_config(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|line| line.split('\t').next())
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains(char::is_whitespace))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Finds the settings in `text` that `accepted` lacks, and returns the text with each replaced
/// (known replacement) or commented out with a note, e.g.
/// `#wal_keep_segments = 32<TAB># pgup: replaced by wal_keep_size for PostgreSQL 17`
/// followed, when replaced, by the replacement line (`wal_keep_size = '512MB'`). `<TAB>` is a
/// tab; the original line keeps its indentation and trailing comment.
/// Every other byte of the file is kept as is (line endings, comments, order).
///
/// `accepted` is what [`parse_describe_config`] returns for the new major's binaries; custom
/// (dotted) settings and those `--describe-config` omits count as accepted too. An empty
/// `accepted` would comment out every setting: the caller must treat that as a failure.
/// `wal_segment_bytes` is the cluster's WAL segment size (pg_controldata), used to convert
/// `wal_keep_segments`.
pub fn adjust(
    file: &str,
    text: &str,
    accepted: &BTreeSet<String>,
    new_major: u32,
    wal_segment_bytes: u64,
) -> Adjusted {
    let lines: Vec<(&str, &str)> = text.split_inclusive('\n').map(split_eol).collect();
    let set_here: BTreeSet<String> = lines
        .iter()
        .filter_map(|(content, _)| parse_line(content))
        .map(|setting| setting.name.to_ascii_lowercase())
        .collect();
    // Separates an added line from a last line that had no line ending.
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };

    let mut out = String::with_capacity(text.len() + 256);
    let mut changes = Vec::new();
    let mut includes = Vec::new();
    for (index, &(content, eol)) in lines.iter().enumerate() {
        let Some(setting) = parse_line(content) else {
            out.push_str(content);
            out.push_str(eol);
            continue;
        };
        let name = setting.name.to_ascii_lowercase();
        if INCLUDE_DIRECTIVES.contains(&name.as_str()) {
            includes.push(setting.directive.to_owned());
        }
        if INCLUDE_DIRECTIVES.contains(&name.as_str()) || accepts(&name, accepted, new_major) {
            out.push_str(content);
            out.push_str(eol);
            continue;
        }

        let (replacement, note) = resolve(
            setting.value,
            &name,
            accepted,
            &set_here,
            new_major,
            wal_segment_bytes,
        );
        let replacement = replacement.map(|(target, value)| format!("{target} = {value}"));
        out.push_str(setting.indent);
        out.push('#');
        out.push_str(setting.body);
        out.push_str("\t# pgup: ");
        out.push_str(&note);
        if let Some(line) = &replacement {
            out.push_str(if eol.is_empty() { newline } else { eol });
            out.push_str(setting.indent);
            out.push_str(line);
        }
        out.push_str(eol);
        changes.push(Change {
            file: file.to_owned(),
            line: index + 1,
            setting: name,
            old: setting.body.to_owned(),
            replacement,
            new_major,
            note,
        });
    }
    Adjusted {
        text: out,
        changes,
        includes,
    }
}

/// The major that removed the setting `name` (lowercased), when it is after `old` and not
/// after `new`.
pub fn removed_between(name: &str, old: u32, new: u32) -> Option<u32> {
    REMOVED
        .iter()
        .find(|r| r.name == name && old < r.removed_in && r.removed_in <= new)
        .map(|r| r.removed_in)
}

/// Whether the new server takes `name` (lowercased) in a configuration file.
fn accepts(name: &str, accepted: &BTreeSet<String>, new_major: u32) -> bool {
    if name.contains('.') || accepted.contains(name) {
        return true;
    }
    NOT_IN_DESCRIBE_CONFIG.contains(&name)
        && !REMOVED
            .iter()
            .any(|removed| removed.name == name && removed.removed_in <= new_major)
}

/// The replacement (setting and value as written, if any) and the note for a setting the
/// new server does not accept; `value` as written where it was set.
fn resolve(
    value: &str,
    name: &str,
    accepted: &BTreeSet<String>,
    set_here: &BTreeSet<String>,
    new_major: u32,
    wal_segment_bytes: u64,
) -> (Option<(&'static str, String)>, String) {
    let not_accepted = format!("not accepted by PostgreSQL {new_major}");
    let Some(removed) = REMOVED.iter().find(|removed| removed.name == name) else {
        return (None, not_accepted);
    };
    let target = match removed.successor.target() {
        Some(target) if accepts(target, accepted, new_major) => target,
        _ => {
            let note = format!(
                "{not_accepted}; removed in PostgreSQL {}",
                removed.removed_in
            );
            return (None, note);
        }
    };
    if set_here.contains(target) {
        let note = format!("{not_accepted}; {target} is already set in this file");
        return (None, note);
    }
    let value = match removed.successor {
        Successor::WalKeepSize => {
            wal_keep_size_mb(value, wal_segment_bytes).map(|mb| format!("'{mb}MB'"))
        }
        _ => Ok(value.to_owned()),
    };
    match value {
        Ok(value) => (
            Some((target, value)),
            format!("replaced by {target} for PostgreSQL {new_major}"),
        ),
        Err(why) => (None, format!("{not_accepted}; set {target} by hand: {why}")),
    }
}

/// `wal_keep_size` in MB for a `wal_keep_segments` value as written.
fn wal_keep_size_mb(value: &str, wal_segment_bytes: u64) -> Result<u64, String> {
    const MIB: u64 = 1024 * 1024;
    let segments =
        parse_count(value).ok_or_else(|| format!("{value} is not a number of segments"))?;
    if wal_segment_bytes == 0 {
        return Err("the WAL segment size is unknown".to_owned());
    }
    segments
        .checked_mul(wal_segment_bytes)
        .map(|bytes| bytes.div_ceil(MIB))
        .filter(|&mb| mb <= i32::MAX as u64)
        .ok_or_else(|| format!("{value} segments is out of range"))
}

/// A non-negative integer as PostgreSQL reads one (`strtol` with base 0: decimal, `0x` hex,
/// leading-zero octal), optionally single-quoted.
fn parse_count(value: &str) -> Option<u64> {
    let value = match value.strip_prefix('\'') {
        Some(quoted) => quoted.strip_suffix('\'')?,
        None => value,
    };
    let value = value.trim_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let value = value.strip_prefix('+').unwrap_or(value);
    let (digits, radix) = if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        (hex, 16)
    } else if value.len() > 1 && value.starts_with('0') {
        (&value[1..], 8)
    } else {
        (value, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Splits a line from `split_inclusive('\n')` into its content and its line ending
/// (`"\r\n"`, `"\n"` or `""`).
fn split_eol(line: &str) -> (&str, &str) {
    let content_len = if let Some(content) = line.strip_suffix("\r\n") {
        content.len()
    } else if let Some(content) = line.strip_suffix('\n') {
        content.len()
    } else {
        line.len()
    };
    line.split_at(content_len)
}

/// A `name [=] value [# comment]` line, every part a slice of the line as written.
#[derive(Debug, PartialEq, Eq)]
struct Setting<'a> {
    /// Leading whitespace.
    indent: &'a str,
    /// The setting's name, case as written.
    name: &'a str,
    /// The value, quotes and escapes included.
    value: &'a str,
    /// From the name to the end of the value.
    directive: &'a str,
    /// From the name to the end of the line, trailing whitespace trimmed.
    body: &'a str,
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c')
}

/// Parses one line (without its line ending) the way PostgreSQL's configuration lexer does;
/// `None` for blank lines, comments and anything that does not start with a name.
fn parse_line(content: &str) -> Option<Setting<'_>> {
    let bytes = content.as_bytes();
    let start = bytes.iter().position(|&b| !is_space(b))?;
    let first = bytes[start];
    if !(first.is_ascii_alphabetic() || first == b'_' || first >= 0x80) {
        return None;
    }
    let is_name_byte =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$') || b >= 0x80;
    let skip_space = |mut i: usize| {
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        i
    };

    let mut i = start;
    while i < bytes.len() && is_name_byte(bytes[i]) {
        i += 1;
    }
    let name_end = i;
    i = skip_space(i);
    if bytes.get(i) == Some(&b'=') {
        i = skip_space(i + 1);
    }
    let value_start = i;
    if bytes.get(i) == Some(&b'\'') {
        // A quoted string: `''` and backslash escapes stay inside it, and so does `#`.
        i += 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                b'\'' => {
                    i += 1;
                    break;
                }
                _ => i += 1,
            }
        }
        i = i.min(bytes.len());
    } else {
        while i < bytes.len() && !is_space(bytes[i]) && bytes[i] != b'#' {
            i += 1;
        }
    }
    let value_end = i;
    let body_end = bytes.len() - bytes.iter().rev().take_while(|&&b| is_space(b)).count();
    Some(Setting {
        indent: &content[..start],
        name: &content[start..name_end],
        value: &content[value_start..value_end],
        directive: &content[start..value_end],
        body: &content[start..body_end],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What PostgreSQL 17's `--describe-config` lists, as far as these tests care.
    fn accepted17() -> BTreeSet<String> {
        [
            "shared_buffers",
            "work_mem",
            "max_connections",
            "log_line_prefix",
            "wal_keep_size",
            "listen_addresses",
            "shared_preload_libraries",
            "search_path",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    const SEG16: u64 = 16 * 1024 * 1024;

    fn adjust17(text: &str) -> Adjusted {
        adjust("postgresql.conf", text, &accepted17(), 17, SEG16)
    }

    #[test]
    fn parses_describe_config_output() {
        let output = "allow_in_place_tablespaces\tsuperuser\tDeveloper Options\tBOOL\tfalse\t\t\tAllows tablespaces directly inside pg_tblspc, for testing.\t\n\
                      wal_keep_size\tsighup\tReplication / Sending Servers\tINTEGER\t0\t0\t2147483647\tSets the size of WAL files held for standby servers.\t\n\
                      \n\
                      Work_Mem\tuser\tResource Usage / Memory\tINTEGER\t4096\t64\t2147483647\tSets the maximum memory.\t\n";
        let names: Vec<String> = parse_describe_config(output).into_iter().collect();
        assert_eq!(
            names,
            ["allow_in_place_tablespaces", "wal_keep_size", "work_mem"]
        );
    }

    #[test]
    fn parses_describe_config_with_crlf_and_blank_lines() {
        let output = "\r\nshared_buffers\tpostmaster\tx\r\n\r\n";
        let names: Vec<String> = parse_describe_config(output).into_iter().collect();
        assert_eq!(names, ["shared_buffers"]);
        assert!(parse_describe_config("").is_empty());
    }

    #[test]
    fn accepted_text_is_returned_byte_identical() {
        let text = "# PostgreSQL configuration\n\
                    \n\
                    shared_buffers = 128MB\t\t# min 128kB\n\
                    \tWORK_MEM 4MB\n\
                    #wal_keep_segments = 32\n\
                    log_line_prefix = '%m [%p] # %q%u@%d '   # special values\n\
                    pg_stat_statements.max = 10000\n\
                    include_if_exists 'extra.conf'\n\
                    \n";
        let adjusted = adjust17(text);
        assert_eq!(adjusted.text, text);
        assert!(adjusted.changes.is_empty());
        assert_eq!(adjusted.includes, ["include_if_exists 'extra.conf'"]);
    }

    #[test]
    fn empty_text_stays_empty() {
        let adjusted = adjust17("");
        assert_eq!(adjusted.text, "");
        assert!(adjusted.changes.is_empty());
        assert!(adjusted.includes.is_empty());
    }

    #[test]
    fn converts_wal_keep_segments_with_16_mib_segments() {
        let adjusted = adjust17("max_connections = 100\nwal_keep_segments = 32\n");
        assert_eq!(
            adjusted.text,
            "max_connections = 100\n\
             #wal_keep_segments = 32\t# pgup: replaced by wal_keep_size for PostgreSQL 17\n\
             wal_keep_size = '512MB'\n"
        );
        assert_eq!(
            adjusted.changes,
            [Change {
                file: "postgresql.conf".into(),
                line: 2,
                setting: "wal_keep_segments".into(),
                old: "wal_keep_segments = 32".into(),
                replacement: Some("wal_keep_size = '512MB'".into()),
                new_major: 17,
                note: "replaced by wal_keep_size for PostgreSQL 17".into(),
            }]
        );
        assert_eq!(
            adjusted.changes[0].to_string(),
            "postgresql.conf:2: wal_keep_segments = 32 → wal_keep_size = '512MB'"
        );
    }

    #[test]
    fn converts_wal_keep_segments_with_64_mib_segments() {
        let adjusted = adjust(
            "postgresql.conf",
            "wal_keep_segments = 10\n",
            &accepted17(),
            13,
            64 * 1024 * 1024,
        );
        assert_eq!(
            adjusted.text,
            "#wal_keep_segments = 10\t# pgup: replaced by wal_keep_size for PostgreSQL 13\n\
             wal_keep_size = '640MB'\n"
        );
        assert_eq!(
            adjusted.changes[0].replacement.as_deref(),
            Some("wal_keep_size = '640MB'")
        );
    }

    #[test]
    fn wal_keep_segments_value_forms() {
        let replacement = |line: &str| adjust17(line).changes[0].replacement.clone();
        // Trailing comment, no `=`, quoted, odd case, PostgreSQL's hex and octal.
        let cases = [
            (
                "wal_keep_segments = 32  # keep some",
                "wal_keep_size = '512MB'",
            ),
            ("wal_keep_segments 32", "wal_keep_size = '512MB'"),
            ("wal_keep_segments='32'", "wal_keep_size = '512MB'"),
            ("WAL_Keep_Segments = 0", "wal_keep_size = '0MB'"),
            ("wal_keep_segments = 0x10", "wal_keep_size = '256MB'"),
            ("wal_keep_segments = 010", "wal_keep_size = '128MB'"),
        ];
        for (line, expected) in cases {
            assert_eq!(replacement(line).as_deref(), Some(expected), "{line}");
        }
    }

    #[test]
    fn wal_keep_segments_that_is_not_an_integer_is_only_commented_out() {
        for value in ["'lots'", "32MB", "-1", "3.5", "''", "0x", "09"] {
            let text = format!("wal_keep_segments = {value}\n");
            let adjusted = adjust17(&text);
            let change = &adjusted.changes[0];
            assert_eq!(change.replacement, None, "{value}");
            assert_eq!(
                adjusted.text,
                format!("#wal_keep_segments = {value}\t# pgup: {}\n", change.note)
            );
            assert!(
                change
                    .note
                    .starts_with("not accepted by PostgreSQL 17; set wal_keep_size by hand: "),
                "{}",
                change.note
            );
        }
    }

    #[test]
    fn wal_keep_segments_without_a_segment_size_is_only_commented_out() {
        let adjusted = adjust(
            "postgresql.conf",
            "wal_keep_segments = 8\n",
            &accepted17(),
            17,
            0,
        );
        assert_eq!(adjusted.changes[0].replacement, None);
        assert_eq!(
            adjusted.changes[0].note,
            "not accepted by PostgreSQL 17; set wal_keep_size by hand: the WAL segment size is unknown"
        );
    }

    #[test]
    fn renames_force_parallel_mode_keeping_the_value() {
        // debug_parallel_query is GUC_NOT_IN_SAMPLE: --describe-config does not list it.
        let text = "force_parallel_mode = 'regress'   # testing\n";
        let adjusted = adjust("postgresql.auto.conf", text, &accepted17(), 17, SEG16);
        assert_eq!(
            adjusted.text,
            "#force_parallel_mode = 'regress'   # testing\t# pgup: replaced by debug_parallel_query for PostgreSQL 17\n\
             debug_parallel_query = 'regress'\n"
        );
        assert_eq!(
            adjusted.changes[0].to_string(),
            "postgresql.auto.conf:1: force_parallel_mode = 'regress'   # testing → debug_parallel_query = 'regress'"
        );

        let adjusted = adjust17("Force_Parallel_Mode on\n");
        assert_eq!(
            adjusted.changes[0].replacement.as_deref(),
            Some("debug_parallel_query = on")
        );
        assert_eq!(adjusted.changes[0].setting, "force_parallel_mode");
    }

    #[test]
    fn settings_hidden_from_describe_config_are_accepted() {
        // force_parallel_mode was still valid in 15, though --describe-config omits it there.
        let text = "application_name = 'app'\n\
                    zero_damaged_pages = off\n\
                    ssl_ecdh_curve = 'prime256v1'\n\
                    force_parallel_mode = off\n";
        let adjusted = adjust("postgresql.conf", text, &accepted17(), 15, SEG16);
        assert_eq!(adjusted.text, text);
        assert!(adjusted.changes.is_empty());
    }

    #[test]
    fn hidden_settings_removed_by_the_new_major_are_commented_out() {
        let adjusted = adjust17("trace_recovery_messages = log\n");
        assert_eq!(
            adjusted.text,
            "#trace_recovery_messages = log\t# pgup: not accepted by PostgreSQL 17; removed in PostgreSQL 17\n"
        );
    }

    #[test]
    fn replacement_already_set_in_the_file_is_not_duplicated() {
        let text = "wal_keep_segments = 32\nwal_keep_size = 1GB\n";
        let adjusted = adjust17(text);
        assert_eq!(
            adjusted.text,
            "#wal_keep_segments = 32\t# pgup: not accepted by PostgreSQL 17; wal_keep_size is already set in this file\n\
             wal_keep_size = 1GB\n"
        );
        let change = &adjusted.changes[0];
        assert_eq!(change.replacement, None);
        assert_eq!(
            change.to_string(),
            "postgresql.conf:1: wal_keep_segments = 32 → commented out (not accepted by PostgreSQL 17; wal_keep_size is already set in this file)"
        );

        // A commented-out replacement does not count as set.
        let adjusted = adjust17("#wal_keep_size = 1GB\nwal_keep_segments = 2\n");
        assert_eq!(
            adjusted.changes[0].replacement.as_deref(),
            Some("wal_keep_size = '32MB'")
        );
    }

    #[test]
    fn known_removed_setting_is_commented_out() {
        let text = "listen_addresses = '*'\nstats_temp_directory = '/x'\n";
        let adjusted = adjust17(text);
        assert_eq!(
            adjusted.text,
            "listen_addresses = '*'\n\
             #stats_temp_directory = '/x'\t# pgup: not accepted by PostgreSQL 17; removed in PostgreSQL 15\n"
        );
        assert_eq!(
            adjusted.changes[0].to_string(),
            "postgresql.conf:2: stats_temp_directory = '/x' → commented out (not accepted by PostgreSQL 17; removed in PostgreSQL 15)"
        );
    }

    #[test]
    fn every_table_entry_is_handled() {
        for removed in REMOVED {
            let text = format!("{} = 1\n", removed.name);
            let adjusted = adjust17(&text);
            assert_eq!(adjusted.changes.len(), 1, "{}", removed.name);
            assert!(adjusted.text.starts_with('#'), "{}", removed.name);
            assert_eq!(
                adjusted.changes[0].replacement.is_some(),
                removed.successor.target().is_some(),
                "{}",
                removed.name
            );
        }
    }

    #[test]
    fn unknown_unaccepted_setting_is_commented_out() {
        let adjusted = adjust17("  extension_destdir = '/opt/ext'  \nwork_mem = 4MB\n");
        assert_eq!(
            adjusted.text,
            "  #extension_destdir = '/opt/ext'\t# pgup: not accepted by PostgreSQL 17\nwork_mem = 4MB\n"
        );
        let change = &adjusted.changes[0];
        assert_eq!(change.setting, "extension_destdir");
        assert_eq!(change.old, "extension_destdir = '/opt/ext'");
        assert_eq!(change.replacement, None);
        assert_eq!(
            change.to_string(),
            "postgresql.conf:1: extension_destdir = '/opt/ext' → commented out (not accepted by PostgreSQL 17)"
        );
    }

    #[test]
    fn equals_sign_is_optional_and_names_are_case_insensitive() {
        let text = "Shared_Buffers 128MB\nSHARED_BUFFERS=1GB\nMax_Connections\t= 10\n";
        let adjusted = adjust17(text);
        assert_eq!(adjusted.text, text);
        assert!(adjusted.changes.is_empty());

        let adjusted = adjust17("DB_User_Namespace off\n");
        assert_eq!(adjusted.changes[0].setting, "db_user_namespace");
        assert_eq!(adjusted.changes[0].old, "DB_User_Namespace off");
        assert_eq!(
            adjusted.text,
            "#DB_User_Namespace off\t# pgup: not accepted by PostgreSQL 17; removed in PostgreSQL 17\n"
        );
    }

    #[test]
    fn quoted_values_keep_hash_and_escaped_quotes() {
        let line = r"promote_trigger_file = '/tmp/it''s # \' here' # why";
        let setting = parse_line(line).unwrap();
        assert_eq!(setting.name, "promote_trigger_file");
        assert_eq!(setting.value, r"'/tmp/it''s # \' here'");
        assert_eq!(
            setting.directive,
            r"promote_trigger_file = '/tmp/it''s # \' here'"
        );
        assert_eq!(setting.body, line);

        let adjusted = adjust17(&format!("{line}\n"));
        assert_eq!(
            adjusted.text,
            format!("#{line}\t# pgup: not accepted by PostgreSQL 17; removed in PostgreSQL 16\n")
        );
    }

    #[test]
    fn parse_line_finds_the_parts() {
        let setting = parse_line("\t work_mem=4MB#comment").unwrap();
        assert_eq!(
            setting,
            Setting {
                indent: "\t ",
                name: "work_mem",
                value: "4MB",
                directive: "work_mem=4MB",
                body: "work_mem=4MB#comment",
            }
        );
        for line in [
            "",
            "   ",
            "# comment",
            "  #wal_keep_segments = 32",
            "= 3",
            "'x' = 1",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
        assert_eq!(parse_line("unterminated = 'abc").unwrap().value, "'abc");
        assert_eq!(
            parse_line("trailing_backslash = 'abc\\").unwrap().value,
            "'abc\\"
        );
    }

    #[test]
    fn commented_out_settings_are_ignored() {
        let text =
            "#wal_keep_segments = 32\n   # stats_temp_directory = '/x'\n#force_parallel_mode on\n";
        let adjusted = adjust17(text);
        assert_eq!(adjusted.text, text);
        assert!(adjusted.changes.is_empty());
    }

    #[test]
    fn custom_dotted_settings_are_always_accepted() {
        let text = "pg_stat_statements.max = 10000\nAuto_Explain.Log_Min_Duration '5s'\nmyapp.tenant = 'x'\n";
        let adjusted = adjust("postgresql.conf", text, &BTreeSet::new(), 17, SEG16);
        assert_eq!(adjusted.text, text);
        assert!(adjusted.changes.is_empty());
    }

    #[test]
    fn include_directives_are_kept_and_reported() {
        let text = "include 'common.conf'\n\
                    INCLUDE_IF_EXISTS = 'maybe.conf'   # optional\n\
                    include_dir 'conf.d'\n\
                    wal_keep_segments = 1\n";
        let adjusted = adjust17(text);
        assert_eq!(
            adjusted.includes,
            [
                "include 'common.conf'",
                "INCLUDE_IF_EXISTS = 'maybe.conf'",
                "include_dir 'conf.d'"
            ]
        );
        assert!(adjusted.text.starts_with(
            "include 'common.conf'\nINCLUDE_IF_EXISTS = 'maybe.conf'   # optional\ninclude_dir 'conf.d'\n#"
        ));
        assert_eq!(adjusted.changes.len(), 1);
        assert_eq!(adjusted.changes[0].line, 4);
    }

    #[test]
    fn crlf_line_endings_are_preserved() {
        let text = "shared_buffers = 1GB\r\nwal_keep_segments = 4\r\nstats_temp_directory = 'x'\r\nwork_mem = 4MB\r\n";
        let adjusted = adjust17(text);
        assert_eq!(
            adjusted.text,
            "shared_buffers = 1GB\r\n\
             #wal_keep_segments = 4\t# pgup: replaced by wal_keep_size for PostgreSQL 17\r\n\
             wal_keep_size = '64MB'\r\n\
             #stats_temp_directory = 'x'\t# pgup: not accepted by PostgreSQL 17; removed in PostgreSQL 15\r\n\
             work_mem = 4MB\r\n"
        );
        assert_eq!(adjusted.changes[0].old, "wal_keep_segments = 4");
        assert_eq!(adjusted.changes[1].old, "stats_temp_directory = 'x'");

        let unchanged = "work_mem = 1\r\n\r\n# note\r\n";
        assert_eq!(adjust17(unchanged).text, unchanged);
    }

    #[test]
    fn mixed_line_endings_are_each_kept() {
        let text = "work_mem = 1\r\nold_snapshot_threshold = -1\nshared_buffers = 1\r\n";
        let adjusted = adjust17(text);
        assert_eq!(
            adjusted.text,
            "work_mem = 1\r\n\
             #old_snapshot_threshold = -1\t# pgup: not accepted by PostgreSQL 17; removed in PostgreSQL 17\n\
             shared_buffers = 1\r\n"
        );
    }

    #[test]
    fn file_without_trailing_newline() {
        let adjusted = adjust17("work_mem = 4MB\nwal_keep_segments = 2");
        assert_eq!(
            adjusted.text,
            "work_mem = 4MB\n\
             #wal_keep_segments = 2\t# pgup: replaced by wal_keep_size for PostgreSQL 17\n\
             wal_keep_size = '32MB'"
        );

        let adjusted = adjust17("work_mem = 4MB\r\nwal_keep_segments = 2");
        assert!(adjusted.text.ends_with("17\r\nwal_keep_size = '32MB'"));

        let adjusted = adjust17("work_mem = 4MB\nvacuum_defer_cleanup_age = 0");
        assert_eq!(
            adjusted.text,
            "work_mem = 4MB\n#vacuum_defer_cleanup_age = 0\t# pgup: not accepted by PostgreSQL 17; removed in PostgreSQL 16"
        );

        let text = "work_mem = 4MB";
        assert_eq!(adjust17(text).text, text);
    }

    #[test]
    fn line_numbers_are_one_based_and_count_every_line() {
        let text = "# header\n\
                    \n\
                    wal_keep_segments = 1\n\
                    work_mem = 4MB\n\
                    \r\n\
                    promote_trigger_file = '/x'\n\
                    include 'x.conf'\n\
                    operator_precedence_warning = off";
        let adjusted = adjust17(text);
        let lines: Vec<(usize, &str)> = adjusted
            .changes
            .iter()
            .map(|change| (change.line, change.setting.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (3, "wal_keep_segments"),
                (6, "promote_trigger_file"),
                (8, "operator_precedence_warning")
            ]
        );
    }

    #[test]
    fn setting_accepted_by_the_new_server_is_kept_even_if_in_the_table() {
        let mut accepted = accepted17();
        accepted.insert("wal_keep_segments".into());
        let text = "wal_keep_segments = 32\n";
        let adjusted = adjust("postgresql.conf", text, &accepted, 12, SEG16);
        assert_eq!(adjusted.text, text);
        assert!(adjusted.changes.is_empty());
    }

    #[test]
    fn replacement_the_new_server_lacks_is_not_added() {
        let accepted: BTreeSet<String> = ["work_mem".to_owned()].into();
        let adjusted = adjust(
            "postgresql.conf",
            "wal_keep_segments = 3\n",
            &accepted,
            17,
            SEG16,
        );
        assert_eq!(adjusted.changes[0].replacement, None);
        assert_eq!(
            adjusted.changes[0].note,
            "not accepted by PostgreSQL 17; removed in PostgreSQL 13"
        );
    }

    #[test]
    fn changes_serialize_to_json() {
        let adjusted = adjust17("wal_keep_segments = 32\n");
        let json = serde_json::to_value(&adjusted.changes[0]).unwrap();
        assert_eq!(json["line"], 1);
        assert_eq!(json["replacement"], "wal_keep_size = '512MB'");
        assert_eq!(json["new_major"], 17);
    }

    fn accepted(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn args(cmd: &[&str]) -> Vec<String> {
        cmd.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn command_line_settings_are_dropped_or_replaced() {
        let accepted = accepted(&["shared_buffers", "wal_keep_size", "debug_parallel_query"]);
        let cmd = args(&[
            "postgres",
            "-c",
            "stats_temp_directory=/tmp/st",
            "-c",
            "shared_buffers=256MB",
            "--wal-keep-segments=4",
            "-cforce_parallel_mode=on",
            "-N",
            "50",
        ]);
        let got = adjust_command(&cmd, &accepted, 17, 16 * 1024 * 1024);
        assert_eq!(
            got.command,
            args(&[
                "postgres",
                "-c",
                "shared_buffers=256MB",
                "--wal_keep_size=64MB",
                "-cdebug_parallel_query=on",
                "-N",
                "50",
            ])
        );
        let shown: Vec<String> = got.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "the container's command: -c stats_temp_directory=/tmp/st → dropped (not accepted by PostgreSQL 17; removed in PostgreSQL 15)",
                "the container's command: --wal-keep-segments=4 → --wal_keep_size=64MB",
                "the container's command: -cforce_parallel_mode=on → -cdebug_parallel_query=on",
            ]
        );
        assert_eq!(got.changes[0].line, 2);
    }

    #[test]
    fn other_commands_and_accepted_settings_are_left_alone() {
        let accepted = accepted(&["shared_buffers"]);
        for cmd in [
            args(&["bash", "-c", "stats_temp_directory=/x"]),
            args(&["postgres", "-c", "shared_buffers=1GB"]),
            args(&["-c", "my.custom=1"]),
            args(&[]),
        ] {
            let got = adjust_command(&cmd, &accepted, 17, 16 * 1024 * 1024);
            assert_eq!(got.command, cmd);
            assert!(got.changes.is_empty(), "{cmd:?}");
        }
        // The configuration file the official images document, and the entrypoint named.
        let cmd = args(&[
            "postgres",
            "-c",
            "config_file=/etc/postgresql/postgresql.conf",
        ]);
        assert!(
            adjust_command(&cmd, &accepted, 17, 16 * 1024 * 1024)
                .changes
                .is_empty()
        );
        let cmd = args(&[
            "docker-entrypoint.sh",
            "postgres",
            "-c",
            "stats_temp_directory=/x",
        ]);
        assert_eq!(
            adjust_command(&cmd, &accepted, 17, 16 * 1024 * 1024).command,
            args(&["docker-entrypoint.sh", "postgres"])
        );
        // Arguments alone go to postgres through the entrypoint.
        let got = adjust_command(
            &args(&["-c", "stats_temp_directory=/x"]),
            &accepted,
            17,
            16 * 1024 * 1024,
        );
        assert!(got.command.is_empty());
        assert_eq!(got.changes.len(), 1);
    }
}
