//! `kvmini oci`: an OCI runtime with runc's command line (the `kvmini-oci` crate does the
//! work). The `kvmini-runtime` binary (`src/bin/kvmini-runtime.rs`) runs it, so that a container
//! engine can be pointed at it (`podman --runtime /usr/local/bin/kvmini-runtime run ...`);
//! `kvmini oci ARGS` runs `kvmini-runtime ARGS`, so that kvmini itself does not link it.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

use kvmini_oci::commands::{self, CreateOptions};
use kvmini_oci::{Global, LogFormat, Logger};

/// The runtime's program, installed beside `kvmini`.
pub const RUNTIME_NAME: &str = "kvmini-runtime";

/// `--version`, with the runtime specification's version as runc gives it.
pub static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{}\nspec: {}",
        env!("CARGO_PKG_VERSION"),
        kvmini_oci::OCI_VERSION
    )
});

/// The runtime's command line: runc's global options and commands.
#[derive(clap::Args, Debug)]
pub struct OciArgs {
    /// The state directory: one subdirectory per container, and the root image cache.
    #[arg(long, value_name = "DIR", default_value = kvmini_oci::DEFAULT_ROOT)]
    root: PathBuf,

    /// Write errors (and with --debug, progress) to FILE instead of stderr.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,

    /// The log's format.
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    log_format: LogFormatArg,

    /// Accepted for runc compatibility: the VM's memory and vCPUs are its limits.
    #[arg(long)]
    systemd_cgroup: bool,

    /// Log progress too.
    #[arg(long)]
    debug: bool,

    #[command(subcommand)]
    command: OciCommand,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// The bundle: a directory with config.json [default: the current directory].
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    bundle: PathBuf,

    /// Write the container's PID (the VM holder's) to FILE.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,

    /// A Unix socket that receives the master side of the container's terminal
    /// (process.terminal; detached containers only), as runc sends it.
    #[arg(long, value_name = "SOCKET")]
    console_socket: Option<PathBuf>,

    /// Accepted for runc compatibility (the guest has no pivot_root to avoid).
    #[arg(long)]
    no_pivot: bool,

    /// Accepted for runc compatibility (the guest has its own keyrings).
    #[arg(long)]
    no_new_keyring: bool,

    /// Must be 0: no host file descriptors can pass into a VM.
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: u32,

    /// The container's ID.
    id: String,
}

#[derive(Subcommand, Debug)]
enum OciCommand {
    /// Prepare a container from a bundle and boot its VM; the process waits for `start`.
    Create(CreateArgs),
    /// Start a created container's process.
    Start { id: String },
    /// Print a container's state (the OCI runtime specification's JSON).
    State { id: String },
    /// Send a signal (name or number, default TERM) to a container: any terminating signal
    /// stops its VM, with the status of a process killed by it.
    Kill {
        /// Accepted for runc compatibility: one VM holds all of the container's processes.
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Remove a stopped or created container; --force also stops a running one.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container, wait for it and delete it; exits with its status.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once started, leaving the container running.
        #[arg(short, long)]
        detach: bool,
    },
    /// List containers.
    List {
        /// IDs only.
        #[arg(short, long)]
        quiet: bool,
        /// table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
    },
    /// The process that holds a container's VM (started by create).
    #[command(hide = true)]
    Holder { dir: PathBuf },
}

impl CreateArgs {
    fn options(&self) -> CreateOptions {
        CreateOptions {
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            foreground: false,
        }
    }
}

/// Runs one `kvmini oci` command; runc's statuses: 0, or 1 for a failure it reports.
pub fn main(args: OciArgs) -> i32 {
    let g = Global {
        root: args.root,
        logger: Logger {
            file: args.log,
            format: match args.log_format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            },
            debug: args.debug,
        },
    };
    let result = match args.command {
        OciCommand::Holder { dir } => return kvmini_oci::holder::main(&dir),
        OciCommand::Create(c) if c.preserve_fds > 0 => Err(kvmini_oci::Error::Unsupported {
            field: "--preserve-fds".into(),
            why: "host file descriptors cannot pass into a VM".into(),
        }),
        OciCommand::Create(c) => commands::create(&g, &c.id, &c.options()).map(|_| 0),
        OciCommand::Start { id } => commands::start(&g, &id).map(|()| 0),
        OciCommand::State { id } => commands::state(&g, &id).map(|s| {
            println!("{s}");
            0
        }),
        OciCommand::Kill { id, signal, .. } => commands::kill(&g, &id, &signal).map(|()| 0),
        OciCommand::Delete { id, force } => commands::delete(&g, &id, force).map(|()| 0),
        OciCommand::Run { create, detach } => {
            commands::run(&g, &create.id, &create.options(), detach)
        }
        OciCommand::List { quiet, format } => {
            commands::list(&g, quiet, format == "json").map(|s| {
                print!("{s}");
                0
            })
        }
    };
    result.unwrap_or_else(|e| {
        g.logger.error(&e.to_string());
        1
    })
}
