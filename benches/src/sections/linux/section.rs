//! The Linux section's rounds, rows, comparisons and texts.

use super::*;

impl Linux {
    /// `boots` rounds of kvmini and QEMU on each kernel; a boot longer than `limit` is a hang.
    pub fn new(cx: &Context, boots: usize, limit: Duration, qemu: &Peer) -> Linux {
        let kvmini = cx.kvmini();
        let subjects = KERNELS
            .iter()
            .map(|&(k, entry)| Subject::kvmini(&kvmini, k, entry))
            .chain(KERNELS.iter().map(|&(k, _)| Subject::qemu(k, qemu)))
            .collect();
        Linux {
            boots,
            limit,
            round: 0,
            started: Instant::now(),
            subjects,
            cmdlines: Vec::new(),
        }
    }

    fn by(&self, vmm: Vmm, kernel: &str) -> &Subject {
        self.subjects
            .iter()
            .find(|s| s.vmm == vmm && s.kernel == kernel)
            .expect("subject exists")
    }

    /// Gives QEMU kvmini's command line for the same kernel (else the other kernel's: they
    /// are the same); `false` when none is known yet.
    fn give_cmdline(cmdlines: &[(&'static str, String)], s: &mut Subject) -> bool {
        let cmdline = cmdlines
            .iter()
            .find(|(k, _)| *k == s.kernel)
            .or(cmdlines.first())
            .map(|(_, c)| c.clone());
        match cmdline {
            Some(c) => {
                s.args = s.qemu_args(&c);
                true
            }
            None => {
                s.stopped =
                    Some("kvmini's first boots gave no command line (--stats=json cmdline)".into());
                false
            }
        }
    }

    /// Boots `s` once, saying so on standard error; notes kvmini's command line.
    fn boot(&mut self, i: usize) {
        let (round, boots, limit) = (self.round, self.boots, self.limit);
        let s = &mut self.subjects[i];
        let _ = write!(
            std::io::stderr(),
            "round {round}/{boots}, {}: booting ({:.0} s so far) ... ",
            s.name,
            self.started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        let (kernel, vmm) = (s.kernel, s.vmm);
        let b = s.boot(round, limit);
        let at = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} s"));
        match &b.failure {
            None => eprintln!(
                "first byte {}, user space {}, exit {}",
                at(b.launch_to_first_byte_s),
                at(b.launch_to_userspace_line_s),
                at(Some(b.launch_to_exit_s))
            ),
            Some(why) => eprintln!("FAILED after {:.1} s: {why}", b.launch_to_exit_s),
        }
        let cmdline = b.kvmini_stats.as_ref().and_then(|st| st.cmdline.clone());
        if vmm == Vmm::Kvmini && !self.cmdlines.iter().any(|(k, _)| *k == kernel) {
            if let Some(c) = cmdline {
                self.cmdlines.push((kernel, c));
            }
        }
    }

    /// The medians compared: QEMU / kvmini per kernel, bzImage - vmlinux per VMM.
    fn comparisons(&self) -> Vec<Compared> {
        let mut out = Vec::new();
        let figures = [
            ("launch->'user space up' line", OUTSIDE[1].2),
            ("launch->exit", OUTSIDE[2].2),
        ];
        for (kernel, _) in KERNELS {
            let (k, q) = (self.by(Vmm::Kvmini, kernel), self.by(Vmm::Qemu, kernel));
            for (what, of) in figures {
                let shown = match (median(&k.samples(of)), median(&q.samples(of))) {
                    (Some(km), Some(qm)) => format!(
                        "QEMU {qm:.1} s / kvmini {km:.1} s = {:.2}x",
                        qm / km.max(1e-9)
                    ),
                    _ if q.absent.is_some() => "n/a: QEMU not installed".into(),
                    _ => "n/a: a subject has no good boot".into(),
                };
                out.push(Compared {
                    what: format!("{kernel}: {what}"),
                    shown,
                });
            }
        }
        for (what, of) in figures {
            for (vmm, name) in [(Vmm::Kvmini, "kvmini"), (Vmm::Qemu, "QEMU")] {
                let (v, b) = (self.by(vmm, "vmlinux"), self.by(vmm, "bzImage"));
                if let (Some(vm), Some(bm)) = (median(&v.samples(of)), median(&b.samples(of))) {
                    out.push(Compared {
                        what: format!("{name}: bzImage - vmlinux, {what}"),
                        shown: format!("{:+.1} s", bm - vm),
                    });
                }
            }
        }
        out
    }

    /// The median launch->exit of kvmini's good boots of `kernel`, seconds.
    pub fn kvmini_exit_median_s(&self, kernel: &str) -> Option<f64> {
        median(&self.by(Vmm::Kvmini, kernel).samples(OUTSIDE[2].2))
    }

    /// The header lines after the machine's: the rounds and the kernel command line.
    pub fn header(&self) -> String {
        let mut text = format!(
            "{} boots of each subject, interleaved round by round, no warm-up; {} s limit per boot\n",
            self.boots,
            self.limit.as_secs()
        );
        match self.cmdlines.first() {
            Some((_, c)) => {
                text +=
                    &format!("kernel command line (kvmini's, given to QEMU with -append): {c}\n")
            }
            None => text += "kernel command line: none known (kvmini gave none)\n",
        }
        if self.cmdlines.windows(2).any(|w| w[0].1 != w[1].1) {
            for (k, c) in &self.cmdlines {
                text += &format!("  NOTE: differs by kernel; {k}: {c}\n");
            }
        }
        text
    }

    /// What follows the table: how to read it, the medians compared and the failed boots.
    pub fn after_table(&self) -> String {
        let mut text = String::from(
            "\n(launch->... are measured from outside, alike for every VMM; 'kvmini: ...' are kvmini's\n\
             own --stats=json milestones, from its main(); the port 0x80 marker comes after the\n\
             'user space up' line: /init runs /bin/outb to write it; QEMU has no port 0xf4, so\n\
             its launch->exit also holds /init's fallback, an exec of `reboot -f`)\n",
        );
        let comparisons = self.comparisons();
        if !comparisons.is_empty() {
            let mut t = Table::new(&[("what", Align::Left), ("shown", Align::Left)])
                .headless()
                .indent(2);
            for c in comparisons {
                t.row(vec![c.what, c.shown]);
            }
            text += "\nmedians compared:\n";
            text += &t.render();
        }
        let mut failure_lines = Vec::new();
        for s in &self.subjects {
            for b in s.failed() {
                let why = b.failure.as_deref().unwrap_or("");
                failure_lines.push(format!("  {} round {}: {why}\n", s.name, b.round));
            }
            if let Some(why) = &s.stopped {
                failure_lines.push(format!("  {}: not booted again: {why}\n", s.name));
            }
        }
        if !failure_lines.is_empty() {
            text += "\nfailed boots (left out of the numbers above):\n";
            text += &failure_lines.concat();
        }
        text
    }

    /// The results file: the machine, every boot, the comparisons, the rows and the text.
    pub fn results<'a>(
        &'a self,
        machine: &'a Machine,
        rows: Vec<Row>,
        table: String,
    ) -> Results<'a> {
        Results {
            machine,
            boots_per_subject: self.boots,
            boot_limit_s: self.limit.as_secs(),
            cmdline_by_kernel: self.cmdlines.iter().cloned().collect(),
            subjects: self.subjects.iter().map(Subject::result).collect(),
            medians_compared: self.comparisons(),
            rows,
            table,
        }
    }

    /// A subject's row for one figure.
    fn row(s: &Subject, measurement: &str, unit: &'static str, of: Of) -> Row {
        let failed = s.failed().count();
        let label = if failed > 0 {
            format!("{} [{failed} of {} boots FAILED]", s.name, s.boots.len())
        } else {
            s.name.clone()
        };
        let outcome = match (&s.absent, s.good().next(), s.boots.first()) {
            (Some(why), _, _) => Outcome::NotInstalled {
                reason: why.clone(),
            },
            (None, Some(_), _) => Outcome::measured(&s.samples(of)),
            (None, None, Some(b)) => Outcome::Failed {
                reason: format!(
                    "every boot failed; round {}: {}",
                    b.round,
                    b.failure.as_deref().unwrap_or("")
                ),
            },
            (None, None, None) => Outcome::Failed {
                reason: s.stopped.clone().unwrap_or_else(|| "never booted".into()),
            },
        };
        Row::new(&label, measurement, unit, &s.command()).with(outcome)
    }
}

impl Section for Linux {
    fn commands(&self) -> Vec<(String, String)> {
        self.subjects
            .iter()
            .map(|s| {
                let cmd = match &s.absent {
                    Some(why) => format!("{}   [not installed: {why}]", s.command()),
                    None => s.command(),
                };
                (s.name.clone(), cmd)
            })
            .collect()
    }

    fn measure(&mut self, _keep: bool) {
        self.round += 1;
        for i in 0..self.subjects.len() {
            let s = &mut self.subjects[i];
            if !s.live() {
                continue;
            }
            if s.vmm == Vmm::Qemu && s.args.is_empty() && !Linux::give_cmdline(&self.cmdlines, s) {
                continue;
            }
            self.boot(i);
        }
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for s in &self.subjects {
            let inside: &[(&str, &str, Of)] = match s.vmm {
                Vmm::Kvmini => &INSIDE,
                Vmm::Qemu => &[],
            };
            for (measurement, unit, of) in OUTSIDE.iter().chain(inside) {
                rows.push(Linux::row(s, measurement, unit, *of));
            }
        }
        rows
    }

    fn failures(&self) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|s| s.failed().next().is_some() || s.stopped.is_some())
            .map(|s| {
                let kind = match s.vmm {
                    Vmm::Kvmini => "error:",
                    Vmm::Qemu => "warning: peer",
                };
                format!(
                    "{kind} {} failed {} of {} boots\n  command: {}",
                    s.name,
                    s.failed().count(),
                    s.boots.len(),
                    s.command()
                )
            })
            .collect()
    }

    fn fatal(&self) -> bool {
        self.subjects
            .iter()
            .any(|s| s.vmm == Vmm::Kvmini && (s.failed().next().is_some() || s.stopped.is_some()))
    }
}
