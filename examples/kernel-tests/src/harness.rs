//! A small test harness inside the kernel: it runs each test function in turn and reports
//! each on the serial port in libtest's words. A failing assertion panics; the panic handler
//! prints the message and the summary and ends the run with the failure code, since a
//! kernel without an unwinder cannot go on to the next test.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::exit::{exit, ExitCode};
use crate::{serial_print, serial_println};

/// One test: its name as the report shows it, and the function.
pub struct Test {
    /// `module::function`.
    pub name: &'static str,
    /// The test; it fails by panicking.
    pub run: fn(),
}

// Counted with plain loads and stores: one CPU and no interrupts, so nothing races.
static TOTAL: AtomicUsize = AtomicUsize::new(0);
static PASSED: AtomicUsize = AtomicUsize::new(0);

/// Runs every test, then ends the run: success when all passed.
pub fn run(tests: &[Test]) -> ! {
    TOTAL.store(tests.len(), Ordering::Relaxed);
    serial_println!("running {} tests in the kernel", tests.len());
    for test in tests {
        serial_print!("test {} ... ", test.name);
        (test.run)();
        serial_println!("ok");
        PASSED.store(PASSED.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    serial_println!("kernel test result: ok. {} passed", tests.len());
    exit(ExitCode::Success)
}

/// What the panic handler does: the panic's message and where, a summary, the failure code.
pub fn fail(info: &PanicInfo) -> ! {
    let passed = PASSED.load(Ordering::Relaxed);
    let total = TOTAL.load(Ordering::Relaxed);
    serial_println!("FAILED\n\n{info}\n");
    serial_println!(
        "kernel test result: FAILED. {passed} passed; 1 failed; {} not run",
        total.saturating_sub(passed + 1)
    );
    exit(ExitCode::Failed)
}

/// Defines the kernel's `kernel_main`, which `_start` calls: it runs the named test
/// functions with [`run`].
#[macro_export]
macro_rules! kernel_main {
    ($($test:path),* $(,)?) => {
        #[unsafe(no_mangle)]
        extern "C" fn kernel_main() -> ! {
            $crate::harness::run(&[$(
                $crate::harness::Test {
                    name: concat!(module_path!(), "::", stringify!($test)),
                    run: $test,
                },
            )*])
        }
    };
}
