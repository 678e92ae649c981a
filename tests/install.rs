//! What `make install` puts beside the binary, written from the command line's own
//! definitions: shell completions and man pages (`kvmini completions`, `kvmini man`, both run
//! by `kvmini-manual`), and what happens when `kvmini-manual` is missing.

mod common;

use std::process::Command;

use common::{kvmini, scratch, status, texts};

/// Every long option `kvmini run --help` lists.
fn run_options() -> Vec<String> {
    let (help, _) = texts(&kvmini(&["run", "--help"]));
    let mut options: Vec<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect();
    options.sort();
    options.dedup();
    assert!(options.len() > 20, "{options:?}");
    options
}

#[test]
fn bash_completion_is_valid_bash_and_knows_every_run_option() {
    let out = kvmini(&["completions", "bash"]);
    let (script, stderr) = texts(&out);
    assert_eq!(status(&out), 0, "{stderr}");
    let path = scratch("kvmini.bash");
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for option in run_options() {
        assert!(script.contains(&option), "bash completion lacks {option}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = kvmini(&["completions", shell]);
        assert_eq!(status(&out), 0, "{shell}");
        assert!(texts(&out).0.contains("serial-limit"), "{shell}");
    }
}

#[test]
fn man_pages_cover_the_command_and_each_subcommand() {
    let dir = scratch("man");
    let out = kvmini(&["man", dir.to_str().unwrap()]);
    let (listed, stderr) = texts(&out);
    assert_eq!(status(&out), 0, "{stderr}");
    for page in ["kvmini", "kvmini-run", "kvmini-restore", "kvmini-check"] {
        let path = dir.join(format!("{page}.1"));
        assert!(listed.contains(path.to_str().unwrap()), "{listed}");
        let roff = std::fs::read_to_string(&path).unwrap();
        assert!(roff.starts_with(".ie \\n(.g .ds Aq"), "{page}: {roff:.80}");
        assert!(roff.contains(&format!(".TH {page} 1")), "{page}");
    }
    let run = std::fs::read_to_string(dir.join("kvmini-run.1")).unwrap();
    for option in run_options() {
        // roff escapes each dash: --serial-limit is \-\-serial\-limit.
        let escaped = option.replace('-', "\\-");
        assert!(run.contains(&escaped), "kvmini-run.1 lacks {option}");
    }
}

#[test]
fn unknown_shells_and_unwritable_directories_are_bad_input() {
    let out = kvmini(&["completions", "tcsh"]);
    assert_eq!(status(&out), kvmini::status::BAD_INPUT);
    assert!(
        texts(&out).1.contains("possible values: bash"),
        "{:?}",
        texts(&out)
    );

    let file = scratch("not-a-directory");
    std::fs::write(&file, "").unwrap();
    let out = kvmini(&["man", file.join("man1").to_str().unwrap()]);
    let (_, stderr) = texts(&out);
    assert_eq!(status(&out), kvmini::status::BAD_INPUT, "{stderr}");
    assert!(
        stderr.contains("cannot write the man pages into"),
        "{stderr}"
    );
}

#[test]
fn without_kvmini_manual_beside_it_kvmini_says_what_to_install() {
    let dir = scratch("lonely");
    std::fs::create_dir_all(&dir).unwrap();
    let lonely = dir.join("kvmini");
    std::fs::copy(common::kvmini_bin(), &lonely).unwrap();
    let out = Command::new(&lonely)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(status(&out), kvmini::status::INTERNAL, "{stderr}");
    assert!(stderr.contains("kvmini-manual"), "{stderr}");
    assert!(
        stderr.contains("make install, or cargo install --path cli"),
        "{stderr}"
    );
}
