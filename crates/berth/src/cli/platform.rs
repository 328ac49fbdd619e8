//! Flags of the task-platform client commands (`code`, `task`, `schedule`):
//! they talk to a `berth server` over its IronWorker v2 HTTP API.

use crate::when::{parse_moment, parse_secs};
use clap::{ArgGroup, Args, Subcommand};
use std::path::PathBuf;

/// `after_help` text followed by where the client settings come from.
macro_rules! with_settings_help {
    ($text:literal) => {
        concat!(
            $text,
            "Settings: each of the server URL, project id and token comes from its flag, else \
its variable (BERTH_URL; BERTH_PROJECT_ID or IRON_PROJECT_ID; BERTH_TOKEN or IRON_TOKEN), else \
the client config file (--client-config, BERTH_CONFIG, default \
$XDG_CONFIG_HOME/berth/config.json or ~/.config/berth/config.json), which `berth up` writes."
        )
    };
}

/// Where the server is and who we are.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Server options")]
pub struct ClientArgs {
    /// The server, e.g. http://127.0.0.1:8380 (plain HTTP only).
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// The project's id.
    #[arg(long, global = true, value_name = "ID")]
    pub project: Option<String>,
    /// The project's API token.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The client config file (JSON: url, project_id, token).
    #[arg(
        id = "client_config",
        long = "client-config",
        global = true,
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
}

/// Where the server is, and an operator token (`berth node …`).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Server options")]
pub struct OperatorArgs {
    /// The server, e.g. http://127.0.0.1:8380 (plain HTTP only).
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// An operator token (`berth token create --operator`).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub operator_token: Option<String>,
    /// The client config file (JSON: url, operator_token).
    #[arg(
        id = "operator_client_config",
        long = "client-config",
        global = true,
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
}

/// `berth server ls` (the rest of `berth server` is berthd's daemon).
#[derive(Debug, clap::Parser)]
#[command(
    about = "List the servers sharing the control plane's store and which one leads (operator)",
    long_about = "The servers sharing the control plane's store: each serves the whole API; the \
one holding the dispatch lease (ROLE leader) also dispatches and fires schedules. A server not \
heard of for 5 s is `silent`; one stopped gracefully leaves the list. Needs an operator token \
(`berth token create --operator`).",
    after_help = "Examples:\n  berth server ls\n  berth server ls --json\n\n\
Settings: the server URL from --url, BERTH_URL or the client config's `url`; the operator \
token from --operator-token, BERTH_OPERATOR_TOKEN or the client config's `operator_token`."
)]
pub struct ServerLsArgs {
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub operator: OperatorArgs,
}

#[derive(Debug, Args)]
#[command(
    long_about = "The fleet's hosts, as the server sees them: list, inspect, drain (no new \
work; what runs finishes), undrain, label and remove. Needs an operator token \
(`berth token create --operator`).",
    after_help = "Examples:\n  berth node ls\n  berth node inspect host-1 --json\n  \
berth node drain host-1\n  berth node label host-2 gpu=true zone-\n  berth node rm host-3\n\n\
Settings: the server URL from --url, BERTH_URL or the client config's `url`; the operator \
token from --operator-token, BERTH_OPERATOR_TOKEN or the client config's `operator_token`."
)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
    #[command(flatten)]
    pub operator: OperatorArgs,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the hosts: state, address, what they offer and run.
    #[command(alias = "list")]
    Ls {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one host whole.
    Inspect {
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Give a host no new work; what runs there finishes.
    Drain {
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Let a drained host take work again.
    Undrain {
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Set (KEY=VALUE) or remove (KEY-) the operator's labels of a host.
    Label {
        name: String,
        /// KEY=VALUE to set, KEY- to remove.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        changes: Vec<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove a host from the fleet (it may join again as a new host).
    Rm {
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

impl NodeArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            NodeCommand::Ls { json }
            | NodeCommand::Inspect { json, .. }
            | NodeCommand::Drain { json, .. }
            | NodeCommand::Undrain { json, .. }
            | NodeCommand::Label { json, .. }
            | NodeCommand::Rm { json, .. } => *json,
        }
    }
}

#[derive(Debug, Args)]
#[command(
    long_about = "Fair-share pools: every task belongs to one (its project's, unless its code \
or itself names another). A pool under its guaranteed minimum is served first and stops others \
from borrowing; idle capacity is lent to pools above their share; no pool goes above its \
maximum. An unconfigured pool has weight 1, no minimum and no maximum. Needs an operator token.",
    after_help = "Examples:\n  berth pool set web --weight 2 --min cpus=4,memory=8g --max cpus=16\n  \
berth pool ls\n  berth pool rm web"
)]
pub struct PoolArgs {
    #[command(subcommand)]
    pub command: PoolCommand,
    #[command(flatten)]
    pub operator: OperatorArgs,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// List the configured pools.
    #[command(alias = "list")]
    Ls {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Configure a pool (replaces its configuration).
    Set {
        name: String,
        /// Relative claim on the fleet (1-10000).
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Guaranteed minimum, e.g. cpus=4,memory=8g (left out: 0).
        #[arg(long, value_name = "cpus=…,memory=…,disk=…,pids=…")]
        min: Option<String>,
        /// Never exceeded, e.g. cpus=16 (left out: no limit).
        #[arg(long, value_name = "cpus=…,memory=…,disk=…,pids=…")]
        max: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove a pool's configuration (back to weight 1, no minimum, no maximum).
    Rm {
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

impl PoolArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            PoolCommand::Ls { json }
            | PoolCommand::Set { json, .. }
            | PoolCommand::Rm { json, .. } => *json,
        }
    }
}

/// A task's payload: text, a file, or standard input.
#[derive(Debug, Clone, Args)]
pub struct PayloadArgs {
    /// The payload text handed to the task [default: empty].
    #[arg(long, value_name = "TEXT", conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Read the payload from a file (- for standard input).
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
}

fn past(text: &str) -> Result<i64, String> {
    parse_moment(text, false)
}

fn future(text: &str) -> Result<i64, String> {
    parse_moment(text, true)
}

#[derive(Debug, Args)]
#[command(
    long_about = "Manage codes: named, versioned programs that tasks run. A push creates the \
code or a new revision of it; queued tasks use the latest revision. A code is either an image \
and a command, or (IronWorker's classic form) a zip package run by a runtime's stack.",
    after_help = with_settings_help!(
        "Examples:\n  berth code push hello --image busybox --command 'echo hello'\n  \
berth code push report --runtime sh --file report.sh --dir ./report --env STAGE=prod\n  \
berth code ls\n  berth code show report\n  berth code download report --revision 2 -o report.zip\n  \
berth code pause report && berth code stats report\n\n"
    )
)]
pub struct CodeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: CodeCommand,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum CodeCommand {
    /// Upload a code (a new revision if the name exists).
    Push(Box<CodePushArgs>),
    /// List codes.
    #[command(alias = "list")]
    Ls {
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show a code and its latest revision.
    Show {
        /// The code's name or id.
        code: String,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Delete a code and its revisions; its queued tasks are cancelled.
    #[command(alias = "remove")]
    Rm {
        code: String,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List a code's revisions, newest first.
    Revisions {
        code: String,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Download a revision's zip package.
    Download {
        code: String,
        /// The revision [default: the latest].
        #[arg(long, value_name = "N")]
        revision: Option<u32>,
        /// Where to write it (- for standard output) [default: NAME.zip].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Pause the code's task queue: queued tasks stay queued.
    Pause {
        code: String,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused task queue.
    Resume {
        code: String,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Count the code's tasks by status.
    Stats {
        code: String,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("form").required(true).args(["image", "runtime"])),
    after_help = "Examples:\n  berth code push hello --image busybox --command 'echo hello'\n  \
berth code push etl --image etl:3 --env DB=postgres://db/etl --max-concurrency 4 --retries 2\n  \
berth code push report --runtime sh --file report.sh --dir ./report\n  \
berth code push tool --runtime binary --file tool --zip ./tool.zip --config-file tool.yml"
)]
pub struct CodePushArgs {
    /// The code's name (tasks are queued by it).
    pub name: String,
    /// Image form: the image tasks run in, NAME[:TAG].
    #[arg(long, conflicts_with_all = ["runtime", "file", "zip", "dir"])]
    pub image: Option<String>,
    /// Image form: the command (shell-like) [default: the image's].
    #[arg(long, requires = "image")]
    pub command: Option<String>,
    /// Classic form: the runtime whose stack runs the package (see `berth stack ls`).
    #[arg(long, requires = "file")]
    pub runtime: Option<String>,
    /// Classic form: the file in the package to run.
    #[arg(long, value_name = "FILE_NAME", requires = "runtime")]
    pub file: Option<String>,
    /// Classic form: the package, a zip file.
    #[arg(long, value_name = "PATH", conflicts_with = "dir")]
    pub zip: Option<PathBuf>,
    /// Classic form: zip this directory as the package.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Text handed to every task as its config file.
    #[arg(long, value_name = "TEXT", conflicts_with = "config_file")]
    pub config: Option<String>,
    /// Read the config text from a file.
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// An environment variable of the tasks, KEY=VALUE (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Tasks of this code running at once [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrency: Option<u32>,
    /// Runs again a task that exits non-zero, up to N times.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Time between such runs (SECS or e.g. 30s, 5m).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub retries_delay: Option<u64>,
    /// Priority of tasks queued without one (0-2).
    #[arg(long, value_name = "0-2", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub priority: Option<u8>,
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// The network tasks run on: bridge (the host's, NAT out; the default),
    /// none, or one of the project's overlays (`berth overlay create`).
    #[arg(long, value_name = "NETWORK")]
    pub network: Option<String>,
    /// Print JSON (the server's answer) for scripts.
    #[arg(long)]
    pub json: bool,
}

/// What tasks ask of the fleet: on `code push` their defaults, on `task
/// queue` a task's own (constraints and group rules add to its code's).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Placement")]
pub struct PlacementArgs {
    /// Memory limit, e.g. 256m; the task is killed above it.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Memory reserved on the host [default: the limit when --memory is given].
    #[arg(long, value_name = "SIZE")]
    pub memory_request: Option<String>,
    /// CPUs reserved, and the task's CPU quota, e.g. 0.5.
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Disk reserved on the host, e.g. 1g.
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    /// Processes and threads: reserved, and the task's limit.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// A host constraint (repeatable): zone==a, gpu!=true, rack==r1*, node=~^db-.
    #[arg(long = "constraint", value_name = "EXPR")]
    pub constraints: Vec<String>,
    /// Run where members of GROUP run (repeatable; GROUP:soft to prefer).
    #[arg(long = "affinity", value_name = "GROUP[:soft]")]
    pub affinity: Vec<String>,
    /// Never two members of GROUP on one host (repeatable; GROUP:soft to prefer).
    #[arg(long = "anti-affinity", value_name = "GROUP[:soft]")]
    pub anti_affinity: Vec<String>,
    /// The fair-share pool [default: the project's].
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
}

impl PlacementArgs {
    /// The fields of the API's code or task object (only those given).
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let mut fields = serde_json::Map::new();
        let mut put = |key: &str, value: serde_json::Value| {
            fields.insert(key.to_owned(), value);
        };
        if let Some(v) = &self.memory {
            put("memory", json!(v));
        }
        if let Some(v) = &self.memory_request {
            put("memory_request", json!(v));
        }
        if let Some(v) = self.cpus {
            put("cpus", json!(v));
        }
        if let Some(v) = &self.disk {
            put("disk", json!(v));
        }
        if let Some(v) = self.pids {
            put("pids", json!(v));
        }
        if !self.constraints.is_empty() {
            put("constraints", json!(self.constraints));
        }
        if !self.affinity.is_empty() {
            put("affinity", json!(self.affinity));
        }
        if !self.anti_affinity.is_empty() {
            put("anti_affinity", json!(self.anti_affinity));
        }
        if let Some(v) = &self.pool {
            put("pool", json!(v));
        }
        fields
    }
}

#[derive(Debug, Args)]
#[command(
    long_about = "Queue tasks and follow them: each task runs the latest revision of its code \
once, in a fresh container, with its payload.",
    after_help = with_settings_help!(
        "Examples:\n  berth task queue hello --payload '{\"n\": 1}'\n  \
berth task queue etl --payload-file job.json --priority 2 --timeout 10m --wait\n  \
seq 1 1000 | jq -sc . | berth task queue sum --payload-file - --count 500\n  \
berth task ls --code etl --status error --from 1h\n  berth task log -f 6650e1a2c3d4e5f601234567\n  \
berth task retry 6650e1a2c3d4e5f601234567 --delay 30s\n\n"
    )
)]
pub struct TaskArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: TaskCommand,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum TaskCommand {
    /// Queue tasks of a code (prints their ids).
    Queue(Box<TaskQueueArgs>),
    /// List tasks, newest first.
    #[command(alias = "list")]
    Ls(TaskLsArgs),
    /// Show a task.
    Show {
        id: String,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's log (its output); works while it runs.
    Log {
        id: String,
        /// Keep printing new output until the task ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a task (a running one is stopped).
    Cancel {
        id: String,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Queue a copy of an ended task.
    Retry {
        id: String,
        /// Wait this long before it may start (SECS or e.g. 30s, 5m).
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        delay: Option<u64>,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct TaskQueueArgs {
    /// The code to run.
    pub code_name: String,
    #[command(flatten)]
    pub payload: PayloadArgs,
    /// 0 (default of most codes) to 2 (first).
    #[arg(long, value_name = "0-2", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub priority: Option<u8>,
    /// Kill the task after this long (SECS or e.g. 90s, 10m) [default: the server's].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<u64>,
    /// Do not start the task before this long (SECS or e.g. 5m).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub delay: Option<u64>,
    /// A label to find the task by.
    #[arg(long)]
    pub label: Option<String>,
    /// The cluster to run on.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Queue N tasks with the same payload.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Wait until every task has ended; exit 1 if any did not complete.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Print JSON (the server's answer) for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TaskLsArgs {
    /// Only tasks of this code.
    #[arg(long, value_name = "NAME")]
    pub code: Option<String>,
    /// Only tasks with this status (repeatable).
    #[arg(long, value_name = "STATUS", value_parser = [
        "queued", "preparing", "running", "complete", "error", "cancelled", "killed", "timeout",
    ])]
    pub status: Vec<String>,
    /// Created at or after: RFC 3339, Unix seconds, or a duration ago (1h).
    #[arg(long, value_name = "TIME", value_parser = past, allow_hyphen_values = true)]
    pub from: Option<i64>,
    /// Created at or before: RFC 3339, Unix seconds, or a duration ago.
    #[arg(long, value_name = "TIME", value_parser = past, allow_hyphen_values = true)]
    pub to: Option<i64>,
    /// Page, from 0.
    #[arg(long, default_value_t = 0)]
    pub page: u32,
    /// Tasks per page (1-100).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub per_page: u32,
    /// Print JSON (the server's answer) for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    long_about = "Schedule tasks: a schedule queues a task of its code at start_at, then every \
run_every until run_times runs were made or end_at passed.",
    after_help = with_settings_help!(
        "Examples:\n  berth schedule create report --run-every 1h --payload '{\"full\": false}'\n  \
berth schedule create backup --start-at 2030-01-01T02:00:00Z --run-every 24h --run-times 30\n  \
berth schedule create ping --start-at +10m          # once, in ten minutes\n  \
berth schedule ls\n  berth schedule cancel 6650e1a2c3d4e5f601234567\n\n"
    )
)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ScheduleCommand {
    /// Create a schedule (prints its id).
    Create(Box<ScheduleCreateArgs>),
    /// List schedules.
    #[command(alias = "list")]
    Ls {
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show a schedule.
    Show {
        id: String,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a schedule: it queues no more tasks.
    Cancel {
        id: String,
        /// Print JSON (the server's answer) for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ScheduleCreateArgs {
    /// The code to run.
    pub code_name: String,
    #[command(flatten)]
    pub payload: PayloadArgs,
    /// First run: RFC 3339, `now`, Unix seconds, or +DURATION [default: now].
    #[arg(long, value_name = "TIME", value_parser = future, allow_hyphen_values = true)]
    pub start_at: Option<i64>,
    /// Time between runs (SECS or e.g. 60s, 1h) [default: run once].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub run_every: Option<u64>,
    /// Stop after N runs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub run_times: Option<u32>,
    /// Stop after this time: RFC 3339, Unix seconds, or +DURATION.
    #[arg(long, value_name = "TIME", value_parser = future, allow_hyphen_values = true)]
    pub end_at: Option<i64>,
    /// Priority of its tasks (0-2).
    #[arg(long, value_name = "0-2", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub priority: Option<u8>,
    /// Timeout of its tasks (SECS or e.g. 10m).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<u64>,
    /// A label for its tasks.
    #[arg(long)]
    pub label: Option<String>,
    /// The cluster its tasks run on.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Print JSON (the server's answer) for scripts.
    #[arg(long)]
    pub json: bool,
}

impl CodeArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            CodeCommand::Push(args) => args.json,
            CodeCommand::Ls { json }
            | CodeCommand::Show { json, .. }
            | CodeCommand::Rm { json, .. }
            | CodeCommand::Revisions { json, .. }
            | CodeCommand::Pause { json, .. }
            | CodeCommand::Resume { json, .. }
            | CodeCommand::Stats { json, .. } => *json,
            CodeCommand::Download { .. } => false,
        }
    }
}

impl TaskArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            TaskCommand::Queue(args) => args.json,
            TaskCommand::Ls(args) => args.json,
            TaskCommand::Show { json, .. }
            | TaskCommand::Cancel { json, .. }
            | TaskCommand::Retry { json, .. } => *json,
            TaskCommand::Log { .. } => false,
        }
    }
}

impl ScheduleArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            ScheduleCommand::Create(args) => args.json,
            ScheduleCommand::Ls { json }
            | ScheduleCommand::Show { json, .. }
            | ScheduleCommand::Cancel { json, .. } => *json,
        }
    }
}

#[derive(Debug, Args)]
pub struct OverlayArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: OverlayCommand,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum OverlayCommand {
    /// Make an overlay network of the project, spanning the fleet's hosts.
    /// A code joins it with `berth code push --network NAME`; its tasks reach
    /// each other by task id from any host, and keep their address when a
    /// retry moves them.
    #[command(after_help = "Examples:\n  berth overlay create backend\n  \
berth overlay create --subnet 10.42.0.0/24 --internal db\n  \
berth code push api --image web --network backend")]
    Create {
        name: String,
        /// The network's addresses, a private /16 to /29 [default: the next free
        /// /24 of 10.128.0.0/11].
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// No way out: tasks reach each other only.
        #[arg(long)]
        internal: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List the project's overlay networks.
    Ls {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show an overlay network and the tasks on it now.
    Inspect {
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove an overlay network no queued or running task is on.
    Rm {
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

impl OverlayArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            OverlayCommand::Create { json, .. }
            | OverlayCommand::Ls { json }
            | OverlayCommand::Inspect { json, .. }
            | OverlayCommand::Rm { json, .. } => *json,
        }
    }
}
