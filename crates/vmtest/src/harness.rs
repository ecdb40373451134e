//! A minimal test harness: `ok - <name>` / `not ok - <name>: <error chain>`
//! per test and `<suite>: N passed, N failed` per suite.

use anyhow::{Context, Result};
use kern2usr::Params;

use crate::guest;
use crate::kmsg::KernelLog;

/// What a test of an independent suite gets: the kernel log from the
/// test's start and the module parameters.
pub struct Ctx {
    /// Kernel log, positioned at the test's start.
    pub klog: KernelLog,
    /// The module's parameters.
    pub params: Params,
}

impl Ctx {
    /// A context whose log starts now.
    pub fn new() -> Result<Self> {
        Ok(Self {
            klog: KernelLog::open_at_end()?,
            params: Params::new(),
        })
    }
}

/// A test of an independent suite.
pub type Test = (&'static str, fn(&mut Ctx) -> Result<()>);

/// Passed and failed counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Tests that passed.
    pub passed: u32,
    /// Tests that failed.
    pub failed: u32,
}

impl Tally {
    /// Print `ok`/`not ok` for one test and count it.
    pub fn record(&mut self, name: &str, result: &Result<()>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("ok - {name}");
            }
            Err(e) => {
                self.failed += 1;
                let msg = format!("{e:#}").replace('\n', "\n# ");
                println!("not ok - {name}: {msg}");
            }
        }
    }

    /// The suite's closing line. A suite that ran no test (a filter that
    /// selects none, or no tests at all) fails: it proves nothing.
    pub fn finish(&mut self, suite: &str) {
        if self.passed + self.failed == 0 {
            let why = anyhow::anyhow!("no test ran (does the filter select any of {suite}?)");
            self.record(suite, &Err(why));
        }
        println!("{suite}: {} passed, {} failed", self.passed, self.failed);
    }
}

/// Whether `name` is selected by `filter` (substring), if any.
pub fn selected(name: &str, filter: Option<&str>) -> bool {
    filter.is_none_or(|f| name.contains(f))
}

/// Run tests that each start from a clean guest (no module loaded, or one
/// they load themselves) and leave it clean: after each, the kernel log is
/// checked for WARN/BUG/oops lines and the module is unloaded if loaded.
pub fn run_independent(suite: &str, tests: &[Test], filter: Option<&str>) -> Tally {
    let mut tally = Tally::default();
    for (name, test) in tests {
        if !selected(name, filter) {
            continue;
        }
        let result = run_one(*test);
        tally.record(name, &result);
    }
    tally.finish(suite);
    tally
}

fn run_one(test: fn(&mut Ctx) -> Result<()>) -> Result<()> {
    let mut ctx = Ctx::new()?;
    if guest::module_loaded() {
        guest::rmmod(&mut ctx.klog).context("unloading the module left by an earlier test")?;
    }
    let result = test(&mut ctx);
    let kernel = ctx.klog.check_no_kernel_problems();
    let cleanup = guest::unload_if_loaded(&mut ctx.klog).context("cleanup: rmmod after the test");
    combine([result, kernel, cleanup])
}

/// The first error, with the messages of the later ones appended.
pub fn combine<const N: usize>(results: [Result<()>; N]) -> Result<()> {
    let mut errors = results.into_iter().filter_map(Result::err);
    let Some(first) = errors.next() else {
        return Ok(());
    };
    let rest: Vec<String> = errors.map(|e| format!("{e:#}")).collect();
    if rest.is_empty() {
        Err(first)
    } else {
        Err(anyhow::anyhow!(
            "{first:#}; also: {}",
            rest.join("; also: ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_run(_: &mut Ctx) -> Result<()> {
        anyhow::bail!("selected although the filter excludes it")
    }

    const TESTS: &[Test] = &[("one test", never_run), ("another test", never_run)];

    #[test]
    fn a_suite_that_runs_no_test_fails() {
        let t = run_independent("demo", TESTS, Some("no such test"));
        assert_eq!((t.passed, t.failed), (0, 1));
        let t = run_independent("demo", &[], None);
        assert_eq!((t.passed, t.failed), (0, 1));
    }

    #[test]
    fn a_suite_with_results_keeps_its_counts() {
        let mut t = Tally::default();
        t.record("x", &Ok(()));
        t.finish("demo");
        assert_eq!((t.passed, t.failed), (1, 0));
    }
}
