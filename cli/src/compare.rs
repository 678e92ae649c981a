//! `kvmini compare`: the options, handed to the kvmini-compare crate, whose report is printed
//! here as tables, written as JSON (`--json`) and drawn as SVG (`--svg`); its errors map to
//! the exit statuses of [`kvmini_compare::EXIT_STATUS`].

use std::path::{Path, PathBuf};

use kvmini::status;
use kvmini_compare::progress::Progress;
use kvmini_compare::report::Report;

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// A workload to run: hello, compute, linux or oci (repeat for several) [default: all;
    /// linux is skipped with a message when guest/build/vmlinux is missing, oci when the
    /// Linux guest, guest/build/oci-snapshot or kvmini-runtime is].
    #[arg(long = "workload", value_name = "NAME")]
    workloads: Vec<String>,
    /// Timed runs per side (linux and oci: at most 3).
    #[arg(long, default_value_t = kvmini_compare::DEFAULT_RUNS)]
    runs: usize,
    /// Instances started at once for the density figures, comma-separated (linux and oci:
    /// at most 2).
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    parallel: Vec<usize>,
    /// The OCI runtime: a path or a name on PATH; it is run as `RUNTIME run --bundle DIR ID`.
    #[arg(long, value_name = "PATH", default_value = kvmini_compare::DEFAULT_RUNTIME)]
    runtime: PathBuf,
    /// An OCI bundle of your own for the oci workload, run by the runtime and by kvmini oci
    /// (its process must print a line and exit 0) [default: a busybox `echo hello` bundle;
    /// without --workload, only oci runs].
    #[arg(long, value_name = "DIR")]
    bundle: Option<PathBuf>,
    /// Write the whole report, raw samples included, as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write a chart of the latencies and memory as SVG to PATH.
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
    /// Where the built guests are [default: guest/build].
    #[arg(long, value_name = "DIR")]
    guest_dir: Option<PathBuf>,
    /// Where the container bundles are built and kept [default: $XDG_CACHE_HOME/kvmini-compare,
    /// else /tmp/kvmini-compare-UID].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

/// Why `kvmini compare` failed.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// The comparison could not be made.
    #[error(transparent)]
    Compare(#[from] kvmini_compare::Error),
    /// A report file could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The JSON report or the chart could not be rendered.
    #[error("cannot render the report: {0}")]
    Render(String),
}

/// The exit status for `e` (see [`kvmini_compare::EXIT_STATUS`]).
fn exit_status(e: &Error) -> i32 {
    use kvmini_compare::Error as E;
    match e {
        Error::Compare(
            E::Usage(_)
            | E::UnknownWorkload(_)
            | E::NoRuntime(_)
            | E::NotRoot
            | E::Missing { .. }
            | E::Busybox(_),
        )
        | Error::Output { .. } => status::BAD_INPUT,
        Error::Compare(E::NoKvm(_)) => status::NO_KVM,
        Error::Compare(E::Bundle(_) | E::SideFailed { .. }) | Error::Render(_) => status::INTERNAL,
    }
}

/// Fails when a report file could not be written because its directory is missing: found
/// before the comparison, not after it.
fn check_output(path: &Path) -> Result<(), Error> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if parent.is_some_and(|p| !p.is_dir()) {
        return Err(Error::Output {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "its directory does not exist",
            ),
        });
    }
    Ok(())
}

fn write(path: &Path, text: String) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Output {
        path: path.to_path_buf(),
        source,
    })
}

/// Prints the report's tables and writes the files asked for.
fn output(report: &Report, a: &CompareArgs) -> Result<(), Error> {
    print!("{report}");
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| Error::Render(format!("JSON: {e}")))?;
        write(path, text + "\n")?;
    }
    if let Some(path) = &a.svg {
        let svg =
            kvmini_compare::chart::svg(report).map_err(|e| Error::Render(format!("SVG: {e}")))?;
        write(path, svg)?;
    }
    Ok(())
}

fn compare(a: CompareArgs, progress: &mut Progress) -> Result<(), Error> {
    let opts = kvmini_compare::Options {
        workloads: a.workloads.clone(),
        runs: a.runs,
        parallel: a.parallel.clone(),
        runtime: Some(a.runtime.clone()),
        guest_dir: a.guest_dir.clone(),
        work_dir: a.work_dir.clone(),
        bundle: a.bundle.clone(),
    };
    let report = kvmini_compare::run(&opts, progress)?;
    output(&report, &a)
}

/// Runs the comparison; returns the exit status.
pub fn main(a: CompareArgs) -> i32 {
    let mut progress = Progress::new(1);
    let result = a
        .json
        .iter()
        .chain(&a.svg)
        .try_for_each(|p| check_output(p))
        .and_then(|()| compare(a, &mut progress));
    progress.clear();
    match result {
        Ok(()) => status::CLEAN,
        Err(e) => {
            eprintln!("kvmini: compare: {e}");
            exit_status(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_and_missing_kvm_have_their_statuses() {
        let unknown = kvmini_compare::parse_workloads(&["nope".into()]).unwrap_err();
        assert_eq!(exit_status(&unknown.into()), status::BAD_INPUT);
        let runtime = kvmini_compare::find_runtime(Some(Path::new("/nonexistent/runc")));
        assert_eq!(exit_status(&runtime.unwrap_err().into()), status::BAD_INPUT);
        let no_kvm = kvmini_compare::Error::NoKvm("no /dev/kvm".into());
        assert_eq!(exit_status(&no_kvm.into()), status::NO_KVM);
        assert_eq!(exit_status(&Error::Render("x".into())), status::INTERNAL);
    }

    #[test]
    fn a_report_into_a_missing_directory_is_refused_before_the_comparison() {
        let e = check_output(Path::new("/nonexistent-dir/report.json")).unwrap_err();
        assert_eq!(exit_status(&e), status::BAD_INPUT);
        assert!(
            e.to_string().contains("its directory does not exist"),
            "{e}"
        );
        assert!(check_output(Path::new("report.json")).is_ok());
    }
}
